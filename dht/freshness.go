package dht

import (
	"context"
	"hash/maphash"
	"net"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// Freshness of signed requests and of dial addresses (docs/dht-security.md,
// "Replays" and "Address moves"). A signed DHT message carries no
// timestamp, so anyone who captured one can send it again, from anywhere.

// replayCache remembers (sender, tx_id) of verified requests for at least
// the window, in two generations of bounded hash sets: the current one is
// retired when it is older than the window or full. A full generation
// shortens the effective window (counted); memory never grows past two
// generations.
type replayCache struct {
	mu       sync.Mutex
	seed     maphash.Seed
	window   time.Duration
	capacity int
	cur      map[uint64]struct{}
	prev     map[uint64]struct{}
	curSince time.Time
	early    uint64 // generations retired because they were full
}

func (c *replayCache) init(window time.Duration, capacity int) {
	c.seed = maphash.MakeSeed()
	c.window, c.capacity = window, capacity
	c.cur = make(map[uint64]struct{})
	c.prev = make(map[uint64]struct{})
}

// seen records (sender, tx) and reports whether it was already there. The
// 64-bit keyed hash stands for the pair: a collision (odds ~2^-64 per pair)
// drops one genuine request, which its sender retries with a new tx_id.
func (c *replayCache) seen(sender a2al.NodeID, tx [protocol.TxIDLen]byte, now time.Time) bool {
	var h maphash.Hash
	h.SetSeed(c.seed)
	_, _ = h.Write(sender[:])
	_, _ = h.Write(tx[:])
	k := h.Sum64()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.curSince.IsZero() {
		c.curSince = now
	}
	switch age := now.Sub(c.curSince); {
	case age >= 2*c.window: // both generations are older than the window
		clear(c.prev)
		clear(c.cur)
		c.curSince = now
	case age >= c.window || len(c.cur) >= c.capacity:
		if len(c.cur) >= c.capacity {
			c.early++
		}
		c.prev, c.cur = c.cur, make(map[uint64]struct{}, len(c.cur))
		c.curSince = now
	}
	if _, ok := c.cur[k]; ok {
		return true
	}
	if _, ok := c.prev[k]; ok {
		return true
	}
	c.cur[k] = struct{}{}
	return false
}

func (c *replayCache) stats() (entries int, early uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.prev), c.early
}

// challenges bounds the PINGs a node sends to prove a peer's new address:
// one in flight per peer, at most max at once, and a token budget shared by
// all (these go to addresses not yet proven, D14).
type challenges struct {
	mu       sync.Mutex
	inflight map[a2al.NodeID]struct{}
	max      int
	bucket   tokenBucket
	spec     rateSpec
}

func (c *challenges) init(max int, spec rateSpec) {
	c.inflight = make(map[a2al.NodeID]struct{})
	c.max, c.spec = max, spec
	c.bucket.tokens = spec.burst
}

// begin reserves a challenge slot for id; false means none is sent.
func (c *challenges) begin(id a2al.NodeID, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, busy := c.inflight[id]; busy || len(c.inflight) >= c.max {
		return false
	}
	if !c.bucket.take(c.spec, now) {
		return false
	}
	c.inflight[id] = struct{}{}
	return true
}

func (c *challenges) end(id a2al.NodeID) {
	c.mu.Lock()
	delete(c.inflight, id)
	c.mu.Unlock()
}

// challengeTimeout bounds one address challenge (all its attempts).
const challengeTimeout = 3 * time.Second

// challengeAddr checks, off the receive path, that id answers at from: a
// PING with fresh tx_ids sent to from, whose PONG must come from from and be
// signed by id. Only then does the dial address (book and routing table)
// move there. A replayed request from another address therefore moves
// nothing: the replayer cannot sign the answer.
func (n *Node) challengeAddr(id a2al.NodeID, from net.Addr) {
	if !n.chal.begin(id, n.now()) {
		n.cnt.dropChallenge.Add(1)
		return
	}
	if !n.spawn(func() {
		defer n.chal.end(id)
		n.cnt.challenges.Add(1)
		ctx, cancel := context.WithTimeout(n.ctx, challengeTimeout)
		defer cancel()
		// hasID=false: matched by address, sent over UDP, and a failure is
		// not charged to id (the request may have been a replay).
		r, err := n.roundTripTo(ctx, from, a2al.NodeID{}, false, false, protocol.BodyPing{Address: n.addr})
		if err != nil || a2al.NodeIDFromAddress(r.msg.SenderAddr) != id {
			return
		}
		n.onRPCSuccess(r)
		if n.book.bind(id, from, rankAnswered) {
			n.cnt.addrMoves.Add(1)
		}
		n.tabAddDirect(contactFor(r.msg.SenderAddr, id, from), from, true)
	}) {
		n.chal.end(id)
	}
}

// knownAddr is where we dial id today: its address-book binding, else its
// routing-table entry (rank 0 when none).
func (n *Node) knownAddr(id a2al.NodeID) (net.Addr, uint8) {
	if a, rank := n.book.get(id); a != nil {
		return a, rank
	}
	n.tabMu.RLock()
	c, ok := n.tab.Get(id)
	n.tabMu.RUnlock()
	if !ok || c.Info.Port == 0 {
		return nil, 0
	}
	rank := rankHearsay
	if c.Verified() {
		rank = rankInbound
	}
	return &net.UDPAddr{IP: c.Info.IP, Port: int(c.Info.Port)}, rank
}

// take spends one token of b refilled per spec; false when empty.
func (b *tokenBucket) take(s rateSpec, now time.Time) bool {
	if b.last.IsZero() {
		b.last = now
	}
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(s.burst, b.tokens+dt*s.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
