package dht

import (
	"context"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/clock"
	"github.com/a2alnode/a2al/dht/internal/routing"
	"github.com/a2alnode/a2al/protocol"
)

// heldSeq returns the seq of n's stored endpoint record of id, 0 if none.
func heldSeq(n *Node, id a2al.NodeID) uint64 {
	if r := n.store.Get(id, n.now()); r != nil {
		return r.Seq
	}
	return 0
}

// waitRenewed waits until the publisher's replication set for its own
// endpoint record has no renewal running.
func waitRenewed(t *testing.T, pub *Node) *repSet {
	t.Helper()
	key := pub.NodeID()
	var s *repSet
	waitFor(t, 20*time.Second, "renewal done", func() bool {
		s = pub.getRepSet(repKey{key, key}, false)
		if s == nil {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return !s.renewing
	})
	return s
}

// checkNoStaleCopy fails when any node of c holds an endpoint record of
// pub older than seq.
func checkNoStaleCopy(t *testing.T, c *memCluster, pub *Node, seq uint64) {
	t.Helper()
	for i, n := range c.nodes {
		if n == pub {
			continue
		}
		if got := heldSeq(n, pub.NodeID()); got != 0 && got < seq {
			t.Errorf("node %d keeps stale seq %d (want %d)", i, got, seq)
		}
	}
}

// A node that took the first record while the network was tiny (the
// bootstrap node) and later fell out of the replica set because closer
// nodes joined still gets the republished record: otherwise it keeps
// answering lookups, and its own resolves (local short-cut), with the old
// one until the TTL runs out.
func TestRepublishReachesFormerReplica(t *testing.T) {
	c := newMemCluster(t)
	fc := clock.NewFake(time.Now())
	c.build(1, nil) // B: the bootstrap node
	// Seed chosen so that B ends up outside the K closest to the key.
	pub := c.newNode(101, func(cfg *Config) { cfg.Clock = fc })
	pub.Start()
	boot := c.nodes[0]
	boot.BindPeerAddr(pub.NodeID(), pub.LocalAddr())
	pub.BindPeerAddr(boot.NodeID(), boot.LocalAddr())
	ctx := context.Background()
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pub.BootstrapAddrs(bctx, []net.Addr{boot.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	key := pub.NodeID()
	if err := pub.PublishEndpointRecord(ctx, endpointRecord(t, c.keys[1], 1, fc.Now(), 3600, "")); err != nil {
		t.Fatal(err)
	}
	s := waitRenewed(t, pub)
	if heldSeq(boot, key) != 1 {
		t.Fatal("bootstrap node did not take the first record")
	}

	// The network grows; B ends up far from the key.
	c.build(30, nil)
	ids := make([]a2al.NodeID, 0, len(c.nodes))
	for _, n := range c.nodes[2:] {
		ids = append(ids, n.NodeID())
	}
	ids = append(ids, boot.NodeID())
	sort.Slice(ids, func(i, j int) bool { return a2al.Closer(ids[i], ids[j], key) })
	for _, id := range ids[:routing.K] {
		if id == boot.NodeID() {
			t.Fatal("test setup: bootstrap node is among the closest to the key; change seeds")
		}
	}
	// Replication restarts (same record, as on a periodic republish):
	// the closer nodes take it and B leaves the member set.
	if err := pub.PublishEndpointRecord(ctx, endpointRecord(t, c.keys[1], 1, fc.Now(), 3600, "")); err != nil {
		t.Fatal(err)
	}
	waitRenewed(t, pub)
	s.mu.Lock()
	_, member := s.members[boot.NodeID()]
	s.mu.Unlock()
	if member {
		t.Fatal("test setup: bootstrap node still a replica member")
	}

	// Corrected record ~7 s later.
	fc.Advance(7 * time.Second)
	if err := pub.PublishEndpointRecord(ctx, endpointRecord(t, c.keys[1], 2, fc.Now(), 3600, "")); err != nil {
		t.Fatal(err)
	}
	waitRenewed(t, pub)
	checkNoStaleCopy(t, c, pub, 2)
	if got := heldSeq(boot, key); got != 2 {
		t.Fatalf("former replica holds seq %d, want 2", got)
	}
	// A resolve at B answers from its local store: it must be the new one.
	er, err := NewQuery(boot).Resolve(ctx, key)
	if err != nil || er.Seq != 2 {
		t.Fatalf("resolve at former replica: %+v, %v", er, err)
	}
}

// A second publish while the first one's replication is still in flight
// is coalesced into the running renewal, which must then store the newer
// record everywhere the older one went (docs/reference-defects.md W-19).
// Every STORE of the second record reaches nodes that got the first one
// moments before from the same source, so this also shows the inbound
// hardening (replay cache, STORE rate limit, fair store) lets it through.
func TestRepublishDuringRenewalReplacesEverywhere(t *testing.T) {
	c := newMemCluster(t)
	fc := clock.NewFake(time.Now())
	c.build(1, nil)
	c.build(24, nil)
	c.build(1, func(cfg *Config) { cfg.Clock = fc })
	pub := c.nodes[len(c.nodes)-1]
	pk := c.keys[len(c.keys)-1]
	c.net.SetLatency(20 * time.Millisecond) // the renewal takes many round trips
	ctx := context.Background()
	if err := pub.PublishEndpointRecord(ctx, endpointRecord(t, pk, 1, fc.Now(), 3600, "")); err != nil {
		t.Fatal(err)
	}
	s := pub.getRepSet(repKey{pub.NodeID(), pub.NodeID()}, false)
	fc.Advance(7 * time.Second)
	rec2 := endpointRecord(t, pk, 2, fc.Now(), 3600, "")
	if err := pub.PublishEndpointRecord(ctx, rec2); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	coalesced := s.renewing && s.rec.Seq == 2
	s.mu.Unlock()
	if !coalesced {
		t.Fatal("test setup: second publish did not meet a running renewal")
	}
	waitRenewed(t, pub)
	s.mu.Lock()
	members := make([]a2al.NodeID, 0, len(s.members))
	for id := range s.members {
		members = append(members, id)
	}
	s.mu.Unlock()
	if len(members) < nRep {
		t.Fatalf("only %d replicas", len(members))
	}
	byID := map[a2al.NodeID]*Node{}
	for _, n := range c.nodes {
		byID[n.NodeID()] = n
	}
	for _, id := range members {
		if got := heldSeq(byID[id], pub.NodeID()); got != 2 {
			t.Errorf("replica %x holds seq %d, want 2", id[:4], got)
		}
	}
	checkNoStaleCopy(t, c, pub, 2)
}

// Two STOREs of one publisher's record a few seconds apart, the second
// newer, both go through the inbound path: the second replaces the first.
func TestSecondStoreFromSamePublisherAccepted(t *testing.T) {
	c := newMemCluster(t)
	fc := clock.NewFake(time.Now())
	c.build(1, func(cfg *Config) { cfg.Clock = fc })
	c.build(1, func(cfg *Config) { cfg.Clock = fc })
	holder, pub := c.nodes[0], c.nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for seq := uint64(1); seq <= 3; seq++ {
		rec := endpointRecord(t, c.keys[1], seq, fc.Now(), 3600, "")
		r, err := pub.roundTripTo(ctx, holder.LocalAddr(), holder.NodeID(), true, true, protocol.BodyStore{Record: rec})
		if err != nil {
			t.Fatalf("STORE seq %d: %v", seq, err)
		}
		resp, _ := r.msg.Body.(protocol.BodyStoreResp)
		if !resp.Stored || resp.AlreadyHad {
			t.Fatalf("STORE seq %d answered %+v", seq, resp)
		}
		if got := heldSeq(holder, pub.NodeID()); got != seq {
			t.Fatalf("holder has seq %d after STORE of %d", got, seq)
		}
		fc.Advance(7 * time.Second)
	}
}

// The former-holder list is bounded and keeps the holders nearest the key.
func TestFormerHoldersBounded(t *testing.T) {
	var key a2al.NodeID
	s := &repSet{k: repKey{key: key}, members: map[a2al.NodeID]*repMember{}, former: map[a2al.NodeID]protocol.SignedRecord{}}
	var ids []a2al.NodeID
	for i := 0; i < 3*repHardCap; i++ {
		var id a2al.NodeID
		id[0], id[1] = byte(i*37), byte(i)
		ids = append(ids, id)
		s.addFormerLocked(id, protocol.SignedRecord{Seq: 1})
	}
	if len(s.former) != repHardCap {
		t.Fatalf("%d former holders kept, want %d", len(s.former), repHardCap)
	}
	sort.Slice(ids, func(i, j int) bool { return a2al.Closer(ids[i], ids[j], key) })
	for _, id := range ids[:repHardCap] {
		if _, ok := s.former[id]; !ok {
			t.Fatalf("near holder %x forgotten", id[:2])
		}
	}
}

// A renewal STOREs a newer record on the nodes known to hold the old one
// before it starts the neighbourhood lookup, which can take seconds when
// candidates do not answer. The test holds the lookup at an unanswering
// contact nearest the key and checks the members at the moment its
// FIND_NODE arrives.
func TestRepublishReachesMembersBeforeLookup(t *testing.T) {
	c := newMemCluster(t)
	fc := clock.NewFake(time.Now())
	c.build(1, nil)
	c.build(12, nil)
	c.build(1, func(cfg *Config) { cfg.Clock = fc })
	pub := c.nodes[len(c.nodes)-1]
	pk := c.keys[len(c.keys)-1]
	key := pub.NodeID()
	ctx := context.Background()
	if err := pub.PublishEndpointRecord(ctx, endpointRecord(t, pk, 1, fc.Now(), 3600, "")); err != nil {
		t.Fatal(err)
	}
	s := waitRenewed(t, pub)

	hole, err := c.net.NewTransport("hole")
	if err != nil {
		t.Fatal(err)
	}
	// The silent contact's identity: the test key nearest the record key.
	var holeAddr a2al.Address
	var holeID a2al.NodeID
	for seed := uint64(1000); seed < 2000; seed++ {
		a := newTestKeys(seed).addr
		if id := a2al.NodeIDFromAddress(a); seed == 1000 || a2al.Closer(id, holeID, key) {
			holeAddr, holeID = a, id
		}
	}
	pub.BindPeerAddr(holeID, hole.LocalAddr())
	pub.tabAddDirect(contactFor(holeAddr, holeID, hole.LocalAddr()), hole.LocalAddr(), false)
	pub.tabMu.RLock()
	inTable := pub.tab.Contains(holeID)
	pub.tabMu.RUnlock()
	if !inTable {
		t.Fatal("test setup: silent contact not in the table")
	}
	findNode := make(chan struct{}, 1)
	go func() {
		for {
			data, _, err := hole.Receive()
			if err != nil {
				return
			}
			if m, err := protocol.DecodeMessage(data); err == nil && m.Header.MsgType == protocol.MsgFindNode {
				select {
				case findNode <- struct{}{}:
				default:
				}
			}
		}
	}()

	fc.Advance(7 * time.Second)
	if err := pub.PublishEndpointRecord(ctx, endpointRecord(t, pk, 2, fc.Now(), 3600, "")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-findNode:
	case <-time.After(10 * time.Second):
		t.Fatal("renewal lookup never asked the silent contact")
	}
	byID := map[a2al.NodeID]*Node{}
	for _, n := range c.nodes {
		byID[n.NodeID()] = n
	}
	s.mu.Lock()
	var stale []a2al.NodeID
	for id := range s.members {
		if heldSeq(byID[id], key) != 2 {
			stale = append(stale, id)
		}
	}
	n := len(s.members)
	s.mu.Unlock()
	if n == 0 || len(stale) > 0 {
		t.Fatalf("%d of %d members still hold the old record when the lookup starts", len(stale), n)
	}
	_ = hole.Close()
	waitRenewed(t, pub)
}
