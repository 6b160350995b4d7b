package dht

import (
	"context"
	"net"
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

// A subscriber gets each new record a replica stores while it keeps asking
// for the next one, and nothing once it stops.
func TestPushToSubscriberMultiNode(t *testing.T) {
	c := newMemCluster(t)
	c.build(8, func(cfg *Config) { cfg.RecordAuth = SecureRecordAuth })
	pub, sub := c.nodes[1], c.nodes[2]
	key := pub.NodeID()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The replica gets seq 1 directly, so no replication STORE races with
	// the subscription (a STORE that lands after it would rightly be pushed).
	rep := c.nodes[5]
	if err := rep.LocalStorePut(key, endpointRecord(t, c.keys[1], 1, time.Now(), 3600, "")); err != nil {
		t.Fatal(err)
	}

	got := make(chan pushed, 8)
	var stop atomic.Bool
	sub.SetPushHandler(func(k a2al.NodeID, rec protocol.SignedRecord, from a2al.NodeID) bool {
		keep := !stop.Load() // read before the send: the test sets stop once it has the record
		got <- pushed{k, rec, from}
		return keep
	})
	recs, _, err := sub.FindValueSubscribe(ctx, rep.LocalAddr(), key, 0)
	if err != nil || len(recs) == 0 {
		t.Fatalf("FindValueSubscribe: %d records, %v", len(recs), err)
	}
	waitFor(t, 5*time.Second, "subscriber's address proven", func() bool { return rep.provenAt(sub.NodeID(), sub.LocalAddr()) })

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
	// The last ACK did not ask for more: no subscription is left.
	rep.subs.mu.Lock()
	left := len(rep.subs.byKey[key])
	rep.subs.mu.Unlock()
	if st := rep.PushStatsData(); left != 0 || st.Sent != 2 || st.AckBad != 0 {
		t.Fatalf("after the subscriber stopped: %d subscriptions left, %v", left, st)
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
	rep.handlePacket(raw, inPath{from: victim.LocalAddr(), via: viaUDP}) // attacker's request, victim's source
	waitFor(t, 5*time.Second, "subscription registered", func() bool { return rep.PushStatsData().Subscriptions == 1 })
	// The proof PING goes to the victim, whose PONG is not the attacker's.
	waitFor(t, 5*time.Second, "proof ping over", func() bool {
		rep.chal.mu.Lock()
		defer rep.chal.mu.Unlock()
		return len(rep.chal.inflight) == 0 && rep.cnt.challenges.Load() > 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ok, err := attacker.StoreAt(ctx, rep.LocalAddr(), key, endpointRecord(t, owner, 2, now, 3600, "")); err != nil || !ok {
		t.Fatalf("StoreAt: %v %v", ok, err)
	}
	// The STORE_RESP goes out before the subscribers are looked at.
	waitFor(t, 5*time.Second, "the new record offered to the subscription", func() bool { return rep.PushStatsData().Unproven == 1 })
	if st := rep.PushStatsData(); st.Sent != 0 {
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
	provenSet := map[a2al.NodeID]bool{}
	proven := func(id a2al.NodeID, _ net.Addr) bool { return provenSet[id] }
	now := time.Now()
	var key a2al.NodeID
	c := newMemCluster(t)
	addr := c.newNode(1, nil).LocalAddr()
	for i := 0; i < subsPerKey+5; i++ {
		var id a2al.NodeID
		id[0], id[1] = byte(i), 1
		ok, _ := s.register(key, id, subscription{addr: addr, src: sourceKey(addr), expires: now.Add(subTTL)}, now, proven)
		if ok != (i < subsPerKey) {
			t.Fatalf("subscriber %d: registered=%v", i, ok)
		}
	}
	if s.total != subsPerKey || s.cnt.refused.Load() != 5 {
		t.Fatalf("total %d refused %d", s.total, s.cnt.refused.Load())
	}
	// A proven newcomer displaces an unproven subscriber of the full key.
	var fresh a2al.NodeID
	fresh[0] = 0xfe
	provenSet[fresh] = true
	if ok, need := s.register(key, fresh, subscription{addr: addr, src: sourceKey(addr), expires: now.Add(subTTL)}, now, proven); !ok || need {
		t.Fatalf("proven subscriber: registered=%v needProof=%v", ok, need)
	}
	if s.total != subsPerKey || s.byKey[key][fresh] == nil {
		t.Fatalf("after displacement: total %d", s.total)
	}
	noConn := func(a2al.NodeID) bool { return false }
	if got := s.take(key, protocol.RecTypeEndpoint, now, proven, noConn); len(got) != 1 || got[0].id != fresh {
		t.Fatalf("take: %d targets", len(got))
	}
	var refill a2al.NodeID
	refill[0] = 0xfd
	if ok, _ := s.register(key, refill, subscription{addr: addr, src: sourceKey(addr), expires: now.Add(subTTL)}, now, proven); !ok || s.total != subsPerKey {
		t.Fatalf("refill: %v, total %d", ok, s.total)
	}
	later := now.Add(subTTL)
	var id a2al.NodeID
	id[0] = 0xff
	if ok, _ := s.register(key, id, subscription{addr: addr, src: sourceKey(addr), expires: later.Add(subTTL)}, later, proven); !ok {
		t.Fatal("expired subscriptions did not make room")
	}
	if s.total != 1 || len(s.perPeer) != 1 || s.perSrc[sourceKey(addr)] != 1 {
		t.Fatalf("accounting after sweep: total %d peers %d src %d", s.total, len(s.perPeer), s.perSrc[sourceKey(addr)])
	}
	// Unproven subscriptions are consumed without a push.
	unproven := s.cnt.unproven.Load()
	if got := s.take(key, protocol.RecTypeEndpoint, later, proven, noConn); len(got) != 0 || s.total != 1 || s.cnt.unproven.Load() != unproven+1 {
		t.Fatalf("take unproven: %d targets, total %d", len(got), s.total)
	}
	provenSet[id] = true
	if got := s.take(key, protocol.RecTypeEndpoint, later, proven, noConn); len(got) != 1 || s.total != 0 {
		t.Fatalf("take proven: %d targets, total %d", len(got), s.total)
	}
}

// A node's own publish is a new record at its key like a STORE is: a
// subscriber at the publisher gets it pushed.
func TestPushOwnPublish(t *testing.T) {
	c := newMemCluster(t)
	c.build(3, func(cfg *Config) { cfg.RecordAuth = SecureRecordAuth })
	pub, sub := c.nodes[0], c.nodes[1]
	key := pub.NodeID()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pub.PublishEndpointRecord(ctx, endpointRecord(t, c.keys[0], 1, time.Now(), 3600, "")); err != nil {
		t.Fatal(err)
	}
	got := make(chan uint64, 4)
	sub.SetPushHandler(func(_ a2al.NodeID, rec protocol.SignedRecord, _ a2al.NodeID) bool { got <- rec.Seq; return false })
	if recs, _, err := sub.FindValueSubscribe(ctx, pub.LocalAddr(), key, protocol.RecTypeEndpoint); err != nil || len(recs) == 0 {
		t.Fatalf("FindValueSubscribe: %d records, %v", len(recs), err)
	}
	waitFor(t, 5*time.Second, "subscriber's address proven", func() bool { return pub.provenAt(sub.NodeID(), sub.LocalAddr()) })
	if err := pub.PublishEndpointRecord(ctx, endpointRecord(t, c.keys[0], 2, time.Now(), 3600, "")); err != nil {
		t.Fatal(err)
	}
	select {
	case seq := <-got:
		if seq != 2 {
			t.Fatalf("pushed seq %d", seq)
		}
	case <-ctx.Done():
		t.Fatalf("no push of our own publish: %v", pub.PushStatsData())
	}
}

// A push repeated because our ACK was lost gets the same answer, and the
// handler sees the record once.
func TestRepeatedPushSameAnswer(t *testing.T) {
	c := newMemCluster(t)
	c.build(2, func(cfg *Config) { cfg.RecordAuth = SecureRecordAuth })
	rep, sub := c.nodes[0], c.nodes[1]
	owner := newTestKeys(88)
	key := a2al.NodeIDFromAddress(owner.addr)
	var calls atomic.Int32
	sub.SetPushHandler(func(a2al.NodeID, protocol.SignedRecord, a2al.NodeID) bool { calls.Add(1); return true })
	sub.own.add(ownSubKey{key: key, peer: rep.NodeID()}, time.Now()) // as FindValueSubscribe does
	rec := endpointRecord(t, owner, 1, time.Now(), 3600, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 0; i < 2; i++ {
		r, err := rep.roundTripTo(ctx, sub.LocalAddr(), sub.NodeID(), true, true, protocol.BodyDHTPush{Key: key, Record: rec})
		if err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
		ack := r.msg.Body.(protocol.BodyDHTPushAck)
		if ack.Key != key || ack.MsgID != protocol.PushMsgID(rec) || !ack.OneShotSubscribe {
			t.Fatalf("push %d: ack %+v", i, ack)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("handler called %d times", calls.Load())
	}
}
