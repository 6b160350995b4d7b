package dht

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/transport"
)

// muteTransport drops everything its node sends once muted: the node
// hears requests but never answers, like a peer gone without notice.
type muteTransport struct {
	transport.Transport
	mute atomic.Bool
}

func (m *muteTransport) Send(to net.Addr, data []byte) error {
	if m.mute.Load() {
		return nil
	}
	return m.Transport.Send(to, data)
}

// A publish stores on the closest candidates of its node lookup in one
// parallel round; candidates that do not answer (here the two nodes
// closest to the key, gone silent) are replaced by the next ones in a
// further round of the same renewal, so the set ends with nRep live
// replicas without waiting for the probe tick.
func TestPublishFillMovesPastSilentCandidates(t *testing.T) {
	c := newMemCluster(t)
	var mutes []*muteTransport
	c.build(40, func(cfg *Config) {
		m := &muteTransport{Transport: cfg.Transport}
		cfg.Transport = m
		mutes = append(mutes, m)
	})
	pub := c.nodes[0]
	key := pub.NodeID()
	ids := make([]a2al.NodeID, 0, len(c.nodes)-1)
	byID := map[a2al.NodeID]*muteTransport{}
	for i, n := range c.nodes[1:] {
		ids = append(ids, n.NodeID())
		byID[n.NodeID()] = mutes[i+1]
	}
	sortIDs(ids, key)
	dead := map[a2al.NodeID]bool{ids[0]: true, ids[1]: true}
	for id := range dead {
		byID[id].mute.Store(true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := pub.PublishEndpointRecord(ctx, endpointRecord(t, c.keys[0], 1, time.Now(), 3600, "")); err != nil {
		t.Fatal(err)
	}
	s := pub.getRepSet(repKey{key: key, pub: key}, false)
	if s == nil {
		t.Fatal("no replica set after publish")
	}
	waitFor(t, 20*time.Second, "the renewal to finish", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return !s.renewing && !s.epoch.IsZero()
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.members) != nRep {
		t.Fatalf("renewal ended with %d replicas, want %d", len(s.members), nRep)
	}
	for id := range s.members {
		if dead[id] {
			t.Fatalf("silent node %x counted as a replica", id[:4])
		}
	}
}
