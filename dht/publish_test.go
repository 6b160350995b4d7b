package dht

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
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

// A fill STOREs to the closest candidates in one parallel round; those
// that do not answer (here the two closest, gone silent after the lookup
// named them) are replaced by the next candidates in a further round, so
// the set ends with nRep live replicas without waiting for the probe tick.
func TestFillMovesPastSilentCandidates(t *testing.T) {
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
	mute := map[a2al.NodeID]*muteTransport{}
	for i, n := range c.nodes[1:] {
		ids = append(ids, n.NodeID())
		mute[n.NodeID()] = mutes[i+1]
	}
	sortIDs(ids, key)
	silent := map[a2al.NodeID]bool{ids[0]: true, ids[1]: true}
	for id := range silent {
		mute[id].mute.Store(true)
	}
	rec := endpointRecord(t, c.keys[0], 1, time.Now(), 3600, "")
	s := pub.getRepSet(repKey{key: key, pub: key}, true)
	s.mu.Lock()
	s.rec = rec
	s.mu.Unlock()
	cands := make([]protocol.NodeInfo, len(ids))
	for i, id := range ids {
		cands[i] = protocol.NodeInfo{NodeID: id}
	}
	pub.fill(s, rec, cands)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.members) != nRep {
		t.Fatalf("fill ended with %d replicas, want %d", len(s.members), nRep)
	}
	for id := range s.members {
		if silent[id] {
			t.Fatalf("silent node %x counted as a replica", id[:4])
		}
	}
}
