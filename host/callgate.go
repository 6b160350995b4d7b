package host

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
)

// callGate admits incoming calls at a bounded rate, in total and per caller
// identity, so callers cannot keep the host running ICE sessions (and
// sending checks) for them back to back (docs/security.md).
type callGate struct {
	now       func() time.Time
	rate, per float64 // tokens per second: total, per caller
	burst, pb float64
	mu        sync.Mutex // guards all below
	total     bucket
	callers   map[a2al.NodeID]*bucket
	overflow  bucket // shared by callers beyond maxCallers
}

type bucket struct {
	tokens float64
	last   time.Time
}

// take refills b at rate up to burst and spends one token if it can.
func (b *bucket) take(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(burst, b.tokens+el*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// full reports whether b would be back at burst by now (nothing to remember).
func (b *bucket) full(now time.Time, rate, burst float64) bool {
	return b.tokens+now.Sub(b.last).Seconds()*rate >= burst
}

// maxCallers bounds the per-caller table; callers past it share one bucket.
const maxCallers = 1024

// Bursts: a few calls at once from everyone, two from one caller (a retry).
const (
	callBurstTotal  = 40
	callBurstCaller = 2
)

func newCallGate(l PunchLimits, now func() time.Time) *callGate {
	return &callGate{now: now, rate: l.CallsPerMinute / 60, per: l.CallsPerCallerPerMinute / 60,
		burst: min(callBurstTotal, max(1, l.CallsPerMinute)), pb: min(callBurstCaller, max(1, l.CallsPerCallerPerMinute)),
		callers: make(map[a2al.NodeID]*bucket)}
}

// admit spends a token of the caller's bucket and of the total one; a call
// refused by either spends nothing from the total.
func (g *callGate) admit(id a2al.NodeID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	b := g.callers[id]
	if b == nil {
		if len(g.callers) >= maxCallers {
			for k, v := range g.callers {
				if v.full(now, g.per, g.pb) {
					delete(g.callers, k)
				}
			}
		}
		if len(g.callers) < maxCallers {
			b = &bucket{}
			g.callers[id] = b
		} else {
			b = &g.overflow
		}
	}
	// Check the total first without spending: a caller over the total limit
	// must not lose its own tokens.
	probe := g.total
	if !probe.take(now, g.rate, g.burst) || !b.take(now, g.per, g.pb) {
		return false
	}
	g.total = probe
	return true
}

// inCall is one incoming call being answered (peerPath.call).
type inCall struct {
	cancel context.CancelFunc
	start  time.Time
	peer   a2al.Address               // the identity the caller's QUIC connection must have
	conn   chan *quic.Conn            // the caller's Mode B connection, from the accept loop
	ice    atomic.Pointer[iceSession] // set once ICE runs
	// evicted is set (under peerTable.mu) when a newer call took this one's slot.
	evicted bool
}

// productive: the caller has shown it is at one of its candidates (an
// address answered our check, or it sent us an authenticated check).
func (c *inCall) productive() bool {
	is := c.ice.Load()
	return is != nil && is.productive()
}

// evictGrace is how long a new call is left to prove itself before a newer
// call may take its place when all slots are taken.
const evictGrace = time.Second

// admitCallLocked decides whether to answer a call from p's peer
// (peerTable.mu held): one call per caller at a time; the caller's and the
// total per-minute budgets; at most Limits.CallsConcurrent at once — when
// all are taken, the oldest call that has run evictGrace without the caller
// proving any address is ended to make room, so callers who never answer
// cannot hold the slots (docs/security.md). On true, call is p's call.
// Lock order: peerTable.mu, then the check guard's lock (productive); the
// guard never calls back into the host.
func (h *Host) admitCallLocked(p *peerPath, call *inCall) bool {
	if p.call != nil {
		return false
	}
	live, total := 0, 0
	var oldest *inCall
	for _, q := range h.peers.m {
		c := q.call
		if c == nil {
			continue
		}
		total++
		if c.evicted {
			continue
		}
		live++
		if h.cfg.Clock.Now().Sub(c.start) >= evictGrace && !c.productive() && (oldest == nil || c.start.Before(oldest.start)) {
			oldest = c
		}
	}
	if live >= h.cfg.Limits.CallsConcurrent && oldest == nil {
		return false
	}
	if total >= 2*h.cfg.Limits.CallsConcurrent || !h.callRate.admit(p.id) {
		return false
	}
	if live >= h.cfg.Limits.CallsConcurrent {
		oldest.evicted = true
		oldest.cancel()
	}
	p.call = call
	return true
}
