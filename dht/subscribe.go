package dht

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// Replica side of one-shot push subscriptions (docs/dht-push.md): a
// FIND_VALUE with one_shot_subscribe that found records registers the
// requester for the next record newly stored at that key; the next STORE
// that adds one consumes the subscription and pushes the record.
const (
	subTTL         = 60 * time.Second // a subscription lives this long unless renewed
	subsPerKey     = 32               // subscribers kept per key
	subsPerPeer    = 64               // keys one subscriber may watch here
	subsPerSource  = 128              // subscriptions from one source IP (or mem endpoint)
	subsTotal      = 8192             // all subscriptions of this node
	pushTimeout    = 2 * time.Second  // DHT_PUSH -> DHT_PUSH_ACK
	pushesInFlight = 16               // concurrent pushes; beyond, pushes are dropped and counted
	pushRate       = 50.0             // pushes per second, all subscribers together
	pushBurst      = 100.0            // ... with this burst
)

// subscription is one subscriber of one key.
type subscription struct {
	addr     net.Addr
	src      string // sourceKey(addr): per-source accounting
	injected bool   // arrived on a punched (authenticated) channel
	recType  uint8  // 0 = any record type
	expires  time.Time
}

// subTable holds the subscriptions this node serves. Pushes go only to
// proven addresses: the source of a UDP request can be forged, and pushing
// full records to a forged source would make us a reflector (docs/reference-defects.md W-36,
// docs/dht-push.md). Proof is the address book's: the subscriber answered
// our own fresh tx_id at that address (Node.provenAt).
type subTable struct {
	// mu guards everything below. provenFunc (the address book's lock) may
	// be called under it; nothing takes mu while holding the book's lock.
	mu        sync.Mutex
	byKey     map[a2al.NodeID]map[a2al.NodeID]*subscription
	total     int
	perPeer   map[a2al.NodeID]int
	perSrc    map[string]int
	tokens    float64
	tokensAt  time.Time
	lastSweep time.Time // full sweeps on the receive path at most once a second

	inFlight atomic.Int32
	cnt      pushCounters
}

// provenFunc reports whether id has proven that it receives at addr.
type provenFunc func(id a2al.NodeID, addr net.Addr) bool

// pushCounters are reported by PushStatsData and /debug/health.
type pushCounters struct {
	registered, refused, sent, acked, ackBad, dropped, unproven atomic.Uint64
	received, unsolicited, invalid                              atomic.Uint64
}

func (s *subTable) init() {
	s.byKey = make(map[a2al.NodeID]map[a2al.NodeID]*subscription)
	s.perPeer = make(map[a2al.NodeID]int)
	s.perSrc = make(map[string]int)
	s.tokens = pushBurst
}

// register adds or renews id's subscription to key. It refuses (and counts)
// when a bound is reached; live subscriptions are never displaced, except
// unproven ones by a proven newcomer. needProof reports that addr is not
// yet proven for id.
func (s *subTable) register(key, id a2al.NodeID, sub subscription, now time.Time, proven provenFunc) (ok, needProof bool) {
	needProof = !sub.injected && !proven(id, sub.addr)
	s.mu.Lock()
	defer s.mu.Unlock()
	subs := s.byKey[key]
	if old := subs[id]; old != nil {
		if old.src != sub.src {
			s.perSrc[old.src]--
			if s.perSrc[old.src] <= 0 {
				delete(s.perSrc, old.src)
			}
			s.perSrc[sub.src]++
		}
		*old = sub
		s.cnt.registered.Add(1)
		return true, needProof
	}
	if len(subs) >= subsPerKey || s.perPeer[id] >= subsPerPeer || s.perSrc[sub.src] >= subsPerSource || s.total >= subsTotal {
		if now.Sub(s.lastSweep) >= time.Second {
			s.sweepLocked(now)
		}
		subs = s.byKey[key]
		if len(subs) >= subsPerKey && !needProof {
			// A proven subscriber may take the place of an unproven one:
			// forged sources must not be able to fill a key's list.
			for oid, o := range subs {
				if !o.injected && !proven(oid, o.addr) {
					s.removeLocked(key, oid)
					break
				}
			}
			subs = s.byKey[key]
		}
		if len(subs) >= subsPerKey || s.perPeer[id] >= subsPerPeer || s.perSrc[sub.src] >= subsPerSource || s.total >= subsTotal {
			s.cnt.refused.Add(1)
			return false, false
		}
	}
	if subs == nil {
		subs = make(map[a2al.NodeID]*subscription)
		s.byKey[key] = subs
	}
	c := sub
	subs[id] = &c
	s.total++
	s.perPeer[id]++
	s.perSrc[sub.src]++
	s.cnt.registered.Add(1)
	return true, needProof
}

func (s *subTable) removeLocked(key, id a2al.NodeID) {
	subs := s.byKey[key]
	sub := subs[id]
	if sub == nil {
		return
	}
	delete(subs, id)
	if len(subs) == 0 {
		delete(s.byKey, key)
	}
	s.total--
	if s.perPeer[id]--; s.perPeer[id] <= 0 {
		delete(s.perPeer, id)
	}
	if s.perSrc[sub.src]--; s.perSrc[sub.src] <= 0 {
		delete(s.perSrc, sub.src)
	}
}

// sweepLocked drops expired subscriptions.
func (s *subTable) sweepLocked(now time.Time) {
	s.lastSweep = now
	for key, subs := range s.byKey {
		for id, sub := range subs {
			if !now.Before(sub.expires) {
				s.removeLocked(key, id)
			}
		}
	}
}

func (s *subTable) sweep(now time.Time) {
	s.mu.Lock()
	s.sweepLocked(now)
	s.mu.Unlock()
}

// pushTarget is a consumed subscription about to receive a push.
type pushTarget struct {
	id  a2al.NodeID
	sub subscription
}

// take consumes the live subscriptions of key that want rec's type and whose
// address is proven (or whose channel is authenticated). Unproven ones stay
// (their proof may still arrive) and are counted. hasConn reports whether
// a punched connection to id exists: only then does a push to a subscriber
// that came over one travel on that channel.
func (s *subTable) take(key a2al.NodeID, recType uint8, now time.Time, proven provenFunc, hasConn func(a2al.NodeID) bool) []pushTarget {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []pushTarget
	for id, sub := range s.byKey[key] {
		if !now.Before(sub.expires) {
			s.removeLocked(key, id)
			continue
		}
		if sub.recType != 0 && sub.recType != recType {
			continue
		}
		if !sub.injected && !proven(id, sub.addr) || sub.injected && !hasConn(id) {
			s.cnt.unproven.Add(1)
			continue
		}
		out = append(out, pushTarget{id: id, sub: *sub})
		s.removeLocked(key, id)
	}
	return out
}

// allowPush takes one token of the node-wide push budget.
func (s *subTable) allowPush(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dt := now.Sub(s.tokensAt).Seconds(); dt > 0 {
		s.tokens = min(pushBurst, s.tokens+dt*pushRate)
	}
	s.tokensAt = now
	if s.tokens < 1 {
		return false
	}
	s.tokens--
	return true
}

// acquirePush takes one of the pushesInFlight slots.
func (s *subTable) acquirePush() bool {
	for {
		v := s.inFlight.Load()
		if v >= pushesInFlight {
			return false
		}
		if s.inFlight.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// onSubscribe handles FIND_VALUE key 3 after the answer went out: the
// requester is registered only when the answer carried records (as the
// reference does). An unproven UDP source is challenged (one PING to it,
// within the node's challenge budget) before anything is pushed to it.
func (n *Node) onSubscribe(b protocol.BodyFindValue, p inPath, answered int) {
	if !b.OneShotSubscribe || answered == 0 {
		return
	}
	now := n.now()
	sub := subscription{addr: p.from, src: sourceKey(p.from), injected: p.punched(), recType: b.RecType, expires: now.Add(subTTL)}
	if ok, needProof := n.subs.register(b.Target, p.id, sub, now, n.provenAt); ok && needProof {
		n.challengeAddr(p.id, p.from)
	}
}

// provenAt reports whether id answered our own fresh tx_id at addr: its
// address-book binding is addr with at least rankAnswered.
func (n *Node) provenAt(id a2al.NodeID, addr net.Addr) bool {
	a, rank := n.book.get(id)
	return rank >= rankAnswered && sameAddr(a, addr)
}

// onNewRecord pushes rec, newly stored at key (by a STORE, after the
// STORE_RESP went out, or by our own publish), to key's subscribers.
func (n *Node) onNewRecord(key a2al.NodeID, rec protocol.SignedRecord) {
	now := n.now()
	hasConn := func(id a2al.NodeID) bool { return n.punch != nil && n.punch.HasConn(id) }
	for _, t := range n.subs.take(key, rec.RecType, now, n.provenAt, hasConn) {
		if !n.subs.acquirePush() {
			n.subs.cnt.dropped.Add(1)
			continue
		}
		if !n.subs.allowPush(now) {
			n.subs.inFlight.Add(-1)
			n.subs.cnt.dropped.Add(1)
			continue
		}
		t := t
		if !n.spawn(func() {
			defer n.subs.inFlight.Add(-1)
			n.push(key, rec, t)
		}) {
			n.subs.inFlight.Add(-1)
		}
	}
}

// push sends one DHT_PUSH and checks the ACK: it must name the key and the
// record (msg_id = SHA-256 of the payload). An ACK asking for the next
// record renews the subscription.
func (n *Node) push(key a2al.NodeID, rec protocol.SignedRecord, t pushTarget) {
	ctx, cancel := context.WithTimeout(n.ctx, pushTimeout)
	defer cancel()
	n.subs.cnt.sent.Add(1)
	r, err := n.roundTripTo(ctx, t.sub.addr, t.id, true, true, protocol.BodyDHTPush{Key: key, Record: rec})
	if err != nil {
		n.log.Debug("dht: push failed", "to", t.sub.addr, "err", err)
		return
	}
	n.onRPCSuccess(r)
	ack, ok := r.msg.Body.(protocol.BodyDHTPushAck)
	if !ok || ack.Key != key || ack.MsgID != protocol.PushMsgID(rec) {
		n.subs.cnt.ackBad.Add(1)
		return
	}
	if ack.OneShotSubscribe {
		now := n.now()
		sub := t.sub
		sub.expires = now.Add(subTTL)
		n.subs.register(key, t.id, sub, now, n.provenAt)
	}
	n.subs.cnt.acked.Add(1) // after the renewal: a counted ACK is in effect
}
