package dht

import (
	"context"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/clock"
)

// stepClock advances the fake clock one maintenance tick at a time and
// waits until the tick's probes have finished.
func stepClock(t *testing.T, n *Node, fc *clock.Fake, total time.Duration) {
	t.Helper()
	for done := time.Duration(0); done < total; done += probeTick {
		waitFor(t, 5*time.Second, "maintenance timer armed", func() bool { return fc.Pending() >= 1 })
		fc.Advance(probeTick)
		waitFor(t, 10*time.Second, "probes finished", func() bool {
			for _, s := range n.allRepSets() {
				s.mu.Lock()
				busy := s.renewing
				for _, m := range s.members {
					busy = busy || m.probing
				}
				s.mu.Unlock()
				if busy {
					return false
				}
			}
			return n.tasks.queued() == 0
		})
	}
}

func TestReplicaStateMachineFakeClock(t *testing.T) {
	c := newMemCluster(t)
	fc := clock.NewFake(time.Now())
	rp := &recPunch{}
	c.build(1, func(cfg *Config) { cfg.Clock = fc; cfg.PunchTransport = rp })
	c.build(24, nil)
	pub := c.nodes[0]
	key := pub.NodeID()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec := endpointRecord(t, c.keys[0], 1, fc.Now(), 3600, "")
	if err := pub.PublishEndpointRecord(ctx, rec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "replicas", func() bool { return pub.RepSetSize(key, key) >= nRep })
	waitFor(t, 10*time.Second, "renewal done", func() bool {
		s := pub.getRepSet(repKey{key, key}, false)
		s.mu.Lock()
		defer s.mu.Unlock()
		return !s.renewing
	})
	// Kill one member.
	s := pub.getRepSet(repKey{key, key}, false)
	s.mu.Lock()
	var victim a2al.NodeID
	for id := range s.members {
		victim = id
		break
	}
	s.mu.Unlock()
	for i, n := range c.nodes {
		if n.NodeID() == victim {
			_ = n.Close()
			// The victim published a signalling hub: a punch can be tried.
			if err := pub.LocalStorePut(a2al.NodeID{}, endpointRecord(t, c.keys[i], 1, fc.Now(), 3600, "ws://hub")); err != nil {
				t.Fatal(err)
			}
		}
	}
	member := func() *repMember {
		s.mu.Lock()
		defer s.mu.Unlock()
		if m := s.members[victim]; m != nil {
			cp := *m
			return &cp
		}
		return nil
	}
	// First probe at +30 s fails: suspect, retry in 30 s.
	stepClock(t, pub, fc, 45*time.Second)
	if m := member(); m == nil || m.failCount != 1 || !m.badSince.IsZero() {
		t.Fatalf("after first failure: %+v", m)
	}
	// Second and third failures: bad, grace window starts (a member
	// confirmed in the current cycle gets one extra retry).
	stepClock(t, pub, fc, 90*time.Second)
	m := member()
	if m == nil || m.badSince.IsZero() {
		t.Fatalf("member not in grace window: %+v", m)
	}
	if pub.RepSetSize(key, key) < nRep {
		t.Fatalf("bad member counted out of RepSetSize too early: %d", pub.RepSetSize(key, key))
	}
	rp.mu.Lock()
	fired := len(rp.punches) > 0 && rp.punches[0].id == victim && rp.punches[0].prio == PunchPriorityLow
	rp.mu.Unlock()
	if !fired {
		t.Fatalf("Low punch for the newly bad replica did not fire: %+v", rp.punches)
	}
	// Grace window (30 min) then eviction.
	stepClock(t, pub, fc, probeBadDelay+time.Minute)
	if member() != nil {
		t.Fatal("dead member not evicted after the grace window")
	}
	if pub.RepSetSize(key, key) < nRep {
		t.Fatalf("set not refilled: %d", pub.RepSetSize(key, key))
	}
}

func TestOutageDoesNotMarkPeersBad(t *testing.T) {
	// A node with no network traffic: a live cluster's own RPC outcomes
	// would interleave with the ones the test records.
	c := newMemCluster(t)
	fc := clock.NewFake(time.Now())
	a := c.newNode(1, func(cfg *Config) { cfg.Clock = fc })
	ids := make([]a2al.NodeID, 0, 8)
	for i := 0; i < 8; i++ {
		ids = append(ids, newTestKeys(uint64(10+i)).addr.NodeID())
	}
	// Simulate a local network loss: lots of distinct peers fail at once
	// after we had successes.
	a.recordSuccess(ids[0], time.Millisecond)
	fc.Advance(20 * time.Second)
	for round := 0; round < 3; round++ {
		for _, id := range ids {
			a.recordFailure(id)
		}
	}
	bad := 0
	for _, id := range ids {
		if a.PeerHealthOf(id) == PeerHealthBad {
			bad++
		}
	}
	if bad > correlatedPeers {
		t.Fatalf("%d peers marked Bad during a local outage", bad)
	}
	if !a.inOutage() {
		t.Fatal("outage not detected")
	}
	a.recordSuccess(ids[0], time.Millisecond)
	if a.inOutage() {
		t.Fatal("outage not cleared by a success")
	}
	for _, id := range ids {
		if !a.PeerAllowContact(id) {
			t.Fatal("back-off survived recovery")
		}
	}
}

func TestHealthLadderAndIdleFailure(t *testing.T) {
	c := newMemCluster(t)
	fc := clock.NewFake(time.Now())
	a := c.newNode(1, func(cfg *Config) { cfg.Clock = fc })
	p1, p2 := newTestKeys(10).addr.NodeID(), newTestKeys(11).addr.NodeID()
	a.recordSuccess(p1, time.Millisecond)
	// Long idle, then one dead peer: that is not an outage.
	fc.Advance(10 * time.Minute)
	a.recordFailure(p2)
	if a.inOutage() {
		t.Fatal("idle node declared an outage on one failure")
	}
	if a.PeerAllowContact(p2) {
		t.Fatal("failure not charged")
	}
	a.recordFailure(p2)
	if a.PeerHealthOf(p2) != PeerHealthBad {
		t.Fatal("two failures should make the peer Bad")
	}
	// Back-off ladder: 2 failures -> 1 min.
	fc.Advance(59 * time.Second)
	if a.PeerAllowContact(p2) {
		t.Fatal("back-off shorter than 1 min")
	}
	fc.Advance(2 * time.Second)
	if !a.PeerAllowContact(p2) {
		t.Fatal("back-off longer than 1 min")
	}
	// Fresh inbound traffic means not Bad.
	a.noteInbound(p2)
	if a.PeerHealthOf(p2) == PeerHealthBad {
		t.Fatal("peer that just talked to us reported Bad")
	}
	a.recordSuccess(p2, 0)
	if a.PeerHealthOf(p2) != PeerHealthGood {
		t.Fatal("success did not restore Good")
	}
}
