package dht

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// Subscriber side of one-shot push subscriptions (docs/dht-push.md).

// maxOwnSubs bounds the subscriptions this node holds at replicas.
const maxOwnSubs = 1024

// PushHandler receives a verified record that a replica pushed because we
// subscribed there (FindValueSubscribe). from is the pushing replica. Return
// true to stay subscribed at that replica for the next record. It runs on
// the receive path: it must return quickly and must not block.
type PushHandler func(key a2al.NodeID, rec protocol.SignedRecord, from a2al.NodeID) (resubscribe bool)

type ownSubKey struct {
	key, peer a2al.NodeID
}

type ownSub struct {
	expires time.Time
	last    [32]byte // SHA-256 of the last pushed record's signature, to spot repeats
	stay    bool     // what the handler answered for it
}

// ownSubs are the subscriptions we hold at replicas. A push is accepted only
// from a replica we subscribed at, for that key, before the subscription
// expired; anything else is dropped unanswered.
type ownSubs struct {
	mu      sync.Mutex // guards m
	m       map[ownSubKey]*ownSub
	handler atomic.Pointer[PushHandler]
}

func (o *ownSubs) init() { o.m = make(map[ownSubKey]*ownSub) }

func (o *ownSubs) add(k ownSubKey, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if s := o.m[k]; s != nil {
		s.expires = now.Add(subTTL)
		return
	}
	if len(o.m) >= maxOwnSubs {
		o.sweepLocked(now)
		if len(o.m) >= maxOwnSubs {
			return
		}
	}
	o.m[k] = &ownSub{expires: now.Add(subTTL)}
}

func (o *ownSubs) sweepLocked(now time.Time) {
	for k, s := range o.m {
		if !now.Before(s.expires) {
			delete(o.m, k)
		}
	}
}

func (o *ownSubs) sweep(now time.Time) {
	o.mu.Lock()
	o.sweepLocked(now)
	o.mu.Unlock()
}

// SetPushHandler installs the handler for pushed records (nil removes it).
// Without a handler pushes from replicas we subscribed at are acknowledged
// without asking for the next record.
func (n *Node) SetPushHandler(h PushHandler) {
	if n == nil {
		return
	}
	if h == nil {
		n.own.handler.Store(nil)
		return
	}
	n.own.handler.Store(&h)
}

// FindValueSubscribe is FindValueWithNodes with the HEAD one-shot
// subscription: if peer holds records at key it will push the next record
// newly stored there (within about a minute) to the PushHandler. v0.1.8
// peers drop such requests, so the call then times out; use
// FindValueWithNodes for them.
func (n *Node) FindValueSubscribe(ctx context.Context, peer net.Addr, key a2al.NodeID, recType uint8) ([]protocol.SignedRecord, []protocol.NodeInfo, error) {
	if n == nil {
		return nil, nil, errNilNode
	}
	return n.findValue(ctx, peer, key, recType, true)
}

// handlePush answers a DHT_PUSH from replica id. It returns false when the
// push was dropped unanswered (unsolicited or invalid record).
func (n *Node) handlePush(b protocol.BodyDHTPush, p inPath, tx [protocol.TxIDLen]byte) bool {
	id := p.id
	now := n.now()
	k := ownSubKey{key: b.Key, peer: id}
	n.own.mu.Lock()
	s := n.own.m[k]
	if s != nil && !now.Before(s.expires) {
		delete(n.own.m, k)
		s = nil
	}
	n.own.mu.Unlock()
	if s == nil {
		n.subs.cnt.unsolicited.Add(1)
		return false
	}
	if !n.acceptRecord(b.Key, b.Record) {
		n.subs.cnt.invalid.Add(1)
		return false
	}
	n.subs.cnt.received.Add(1)
	// msg_id covers only the payload, which an endpoint re-publish often
	// repeats; the signature tells records apart.
	msgID := protocol.PushMsgID(b.Record)
	sig := sha256.Sum256(b.Record.Signature)
	n.own.mu.Lock()
	fresh := s.last != sig
	s.last = sig
	resub := s.stay // a repeat (our ACK was lost) gets the same answer
	n.own.mu.Unlock()
	if h := n.own.handler.Load(); fresh {
		resub = h != nil && (*h)(b.Key, b.Record, id)
	}
	n.own.mu.Lock()
	s.stay = resub
	if resub {
		s.expires = now.Add(subTTL)
	} else if n.own.m[k] == s {
		delete(n.own.m, k)
	}
	n.own.mu.Unlock()
	n.reply(p, tx, protocol.BodyDHTPushAck{Key: b.Key, MsgID: msgID, OneShotSubscribe: resub})
	return true
}

// pushTick expires subscriptions on both sides (maintenance tick).
func (n *Node) pushTick() {
	now := n.now()
	n.subs.sweep(now)
	n.own.sweep(now)
}

// PushStats counts push-subscription activity since start.
type PushStats struct {
	Subscriptions uint64 `json:"subscriptions"` // registered or renewed at this replica
	Refused       uint64 `json:"refused"`       // not registered: a bound was reached
	Sent          uint64 `json:"sent"`          // pushes sent
	Acked         uint64 `json:"acked"`         // pushes acknowledged correctly
	AckBad        uint64 `json:"ack_bad"`       // ACKs naming another key or record
	Dropped       uint64 `json:"dropped"`       // pushes skipped by the rate or concurrency bound
	Unproven      uint64 `json:"unproven"`      // subscriptions never proven to receive at their address
	Received      uint64 `json:"received"`      // pushes accepted from replicas we subscribed at
	Unsolicited   uint64 `json:"unsolicited"`   // pushes dropped: no subscription of ours
	Invalid       uint64 `json:"invalid"`       // pushes dropped: record failed verification or authority
}

// PushStatsData returns the push counters.
func (n *Node) PushStatsData() PushStats {
	c := &n.subs.cnt
	return PushStats{
		Subscriptions: c.registered.Load(), Refused: c.refused.Load(), Sent: c.sent.Load(),
		Acked: c.acked.Load(), AckBad: c.ackBad.Load(), Dropped: c.dropped.Load(),
		Unproven: c.unproven.Load(), Received: c.received.Load(),
		Unsolicited: c.unsolicited.Load(), Invalid: c.invalid.Load(),
	}
}

// String renders the counters for logs.
func (s PushStats) String() string {
	return fmt.Sprintf("subs=%d refused=%d sent=%d acked=%d ack_bad=%d dropped=%d unproven=%d received=%d unsolicited=%d invalid=%d",
		s.Subscriptions, s.Refused, s.Sent, s.Acked, s.AckBad, s.Dropped, s.Unproven, s.Received, s.Unsolicited, s.Invalid)
}
