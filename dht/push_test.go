package dht

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

type pushed struct {
	key  a2al.NodeID
	rec  protocol.SignedRecord
	from a2al.NodeID
}

// replicaHolding returns a node other than skip that holds a record at key.
func replicaHolding(t *testing.T, c *memCluster, key a2al.NodeID, skip ...*Node) *Node {
	t.Helper()
	var r *Node
	waitFor(t, 10*time.Second, "a replica holding the record", func() bool {
	next:
		for _, n := range c.nodes {
			for _, s := range skip {
				if n == s {
					continue next
				}
			}
			if len(n.LocalStoreGet(key, protocol.RecTypeEndpoint)) > 0 {
				r = n
				return true
			}
		}
		return false
	})
	return r
}

// A subscriber gets each new record a replica stores while it keeps asking
// for the next one, and nothing once it stops.
func TestPushToSubscriberMultiNode(t *testing.T) {
	c := newMemCluster(t)
	c.build(8, func(cfg *Config) { cfg.RecordAuth = SecureRecordAuth })
	pub, sub := c.nodes[1], c.nodes[2]
	key := pub.NodeID()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := pub.PublishEndpointRecord(ctx, endpointRecord(t, c.keys[1], 1, time.Now(), 3600, "")); err != nil {
		t.Fatal(err)
	}
	rep := replicaHolding(t, c, key, pub, sub)

	got := make(chan pushed, 8)
	var stop atomic.Bool
	sub.SetPushHandler(func(k a2al.NodeID, rec protocol.SignedRecord, from a2al.NodeID) bool {
		got <- pushed{k, rec, from}
		return !stop.Load()
	})
	recs, _, err := sub.FindValueSubscribe(ctx, rep.LocalAddr(), key, 0)
	if err != nil || len(recs) == 0 {
		t.Fatalf("FindValueSubscribe: %d records, %v", len(recs), err)
	}
	waitFor(t, 5*time.Second, "subscriber's address proven", func() bool {
		rep.subs.mu.Lock()
		defer rep.subs.mu.Unlock()
		return rep.subs.isProvenLocked(sub.NodeID(), sub.LocalAddr(), time.Now())
	})

	for seq := uint64(2); seq <= 3; seq++ {
		// A STORE from the publisher (what replication sends) adds the record.
		if ok, err := pub.StoreAt(ctx, rep.LocalAddr(), key, endpointRecord(t, c.keys[1], seq, time.Now(), 3600, "")); err != nil || !ok {
			t.Fatalf("StoreAt seq %d: %v %v", seq, ok, err)
		}
		select {
		case p := <-got:
			if p.key != key || p.rec.Seq != seq || p.from != rep.NodeID() {
				t.Fatalf("push: key %x seq %d from %x", p.key[:4], p.rec.Seq, p.from[:4])
			}
		case <-ctx.Done():
			t.Fatalf("no push for seq %d; replica %v; subscriber %v", seq, rep.PushStatsData(), sub.PushStatsData())
		}
		if seq == 2 {
			stop.Store(true) // the ACK for seq 3 ends the subscription
			waitFor(t, 5*time.Second, "ACK with resubscribe", func() bool { return rep.PushStatsData().Acked == 1 })
		}
	}
	waitFor(t, 5*time.Second, "second ACK", func() bool { return rep.PushStatsData().Acked == 2 })
	if _, err := pub.StoreAt(ctx, rep.LocalAddr(), key, endpointRecord(t, c.keys[1], 4, time.Now(), 3600, "")); err != nil {
		t.Fatal(err)
	}
	// Seq 4 is stored after the last ACK has been counted: no subscription
	// is left, so nothing may be sent.
	if st := rep.PushStatsData(); st.Sent != 2 || st.AckBad != 0 {
		t.Fatalf("replica stats after unsubscribe: %v", st)
	}
	select {
	case p := <-got:
		t.Fatalf("push after the subscriber stopped: seq %d", p.rec.Seq)
	default:
	}
}

// A subscribing FIND_VALUE whose UDP source is forged must not make the
// replica push records to that source (docs/reference-defects.md W-36): the victim
// never answered for the subscriber's key, so its address is not proven.
func TestPushNotReflectedToForgedSource(t *testing.T) {
	c := newMemCluster(t)
	c.build(3, func(cfg *Config) { cfg.RecordAuth = SecureRecordAuth })
	rep, attacker, victim := c.nodes[0], c.nodes[1], c.nodes[2]
	owner := newTestKeys(99)
	key := a2al.NodeIDFromAddress(owner.addr)
	now := time.Now()
	if err := rep.LocalStorePut(key, endpointRecord(t, owner, 1, now, 3600, "")); err != nil {
		t.Fatal(err)
	}
	raw, err := attacker.encode(newTxID(), protocol.BodyFindValue{Target: key, OneShotSubscribe: true})
	if err != nil {
		t.Fatal(err)
	}
	rep.handlePacket(raw, victim.LocalAddr(), false) // attacker's request, victim's source
	waitFor(t, 5*time.Second, "subscription registered", func() bool { return rep.PushStatsData().Subscriptions == 1 })
	// The proof PING goes to the victim, whose PONG is not the attacker's.
	waitFor(t, 5*time.Second, "proof ping over", func() bool {
		rep.subs.mu.Lock()
		defer rep.subs.mu.Unlock()
		return len(rep.subs.probing) == 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ok, err := attacker.StoreAt(ctx, rep.LocalAddr(), key, endpointRecord(t, owner, 2, now, 3600, "")); err != nil || !ok {
		t.Fatalf("StoreAt: %v %v", ok, err)
	}
	st := rep.PushStatsData()
	if st.Sent != 0 || st.Unproven != 1 {
		t.Fatalf("replica pushed to a forged source: %v", st)
	}
	if v := victim.PushStatsData(); v.Unsolicited != 0 {
		t.Fatalf("victim received pushes: %v", v)
	}
}

// Pushes from a node we never subscribed at are dropped unanswered.
func TestUnsolicitedPushDropped(t *testing.T) {
	c := newMemCluster(t)
	c.build(2, nil)
	a, b := c.nodes[0], c.nodes[1]
	owner := newTestKeys(77)
	key := a2al.NodeIDFromAddress(owner.addr)
	var called atomic.Bool
	b.SetPushHandler(func(a2al.NodeID, protocol.SignedRecord, a2al.NodeID) bool { called.Store(true); return true })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := a.roundTripTo(ctx, b.LocalAddr(), b.NodeID(), true, true, protocol.BodyDHTPush{Key: key, Record: endpointRecord(t, owner, 1, time.Now(), 3600, "")})
	if err == nil {
		t.Fatal("unsolicited push was acknowledged")
	}
	if st := b.PushStatsData(); st.Unsolicited == 0 || st.Received != 0 || called.Load() {
		t.Fatalf("subscriber stats %v, handler called %v", st, called.Load())
	}
}

// The replica's tables are bounded: per key, and existing subscriptions
// are never displaced by newcomers; expired ones make room.
func TestSubTableBounds(t *testing.T) {
	var s subTable
	s.init()
	now := time.Now()
	var key a2al.NodeID
	c := newMemCluster(t)
	addr := c.newNode(1, nil).LocalAddr()
	for i := 0; i < subsPerKey+5; i++ {
		var id a2al.NodeID
		id[0], id[1] = byte(i), 1
		ok, _ := s.register(key, id, subscription{addr: addr, src: sourceKey(addr), expires: now.Add(subTTL)}, now)
		if ok != (i < subsPerKey) {
			t.Fatalf("subscriber %d: registered=%v", i, ok)
		}
	}
	if s.total != subsPerKey || s.cnt.refused.Load() != 5 {
		t.Fatalf("total %d refused %d", s.total, s.cnt.refused.Load())
	}
	later := now.Add(subTTL)
	var id a2al.NodeID
	id[0] = 0xff
	if ok, _ := s.register(key, id, subscription{addr: addr, src: sourceKey(addr), expires: later.Add(subTTL)}, later); !ok {
		t.Fatal("expired subscriptions did not make room")
	}
	if s.total != 1 || len(s.perPeer) != 1 || s.perSrc[sourceKey(addr)] != 1 {
		t.Fatalf("accounting after sweep: total %d peers %d src %d", s.total, len(s.perPeer), s.perSrc[sourceKey(addr)])
	}
	// Unproven subscriptions are consumed without a push.
	if got := s.take(key, protocol.RecTypeEndpoint, later); len(got) != 0 || s.total != 1 || s.cnt.unproven.Load() != 1 {
		t.Fatalf("take unproven: %d targets, total %d", len(got), s.total)
	}
	s.prove(id, addr, later)
	if got := s.take(key, protocol.RecTypeEndpoint, later); len(got) != 1 || s.total != 0 {
		t.Fatalf("take proven: %d targets, total %d", len(got), s.total)
	}
}
