package host

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
)

// peerPath is the one owner of what the host knows about reaching one peer
// while it is trying to (docs/architecture.md "Peer paths"): the caller-side
// punch queued or in flight, the peer's call we are answering (callee side),
// the Dial/PunchPeer calls waiting for the outcome, and the back-off after
// failures. The rest of the path has exactly one home elsewhere: the
// connection, its path type (direct / punched / relayed, the D6 evidence's
// verdict) and its remote address are the peer's Pool entry; the published
// addresses are the peer's endpoint record in the DHT store, read once per
// attempt (PunchJob.Record).
//
// Every field is guarded by peerTable.mu.
type peerPath struct {
	id a2al.NodeID

	// Caller side (the scheduler's): a queued job or a running attempt,
	// never both.
	queued  *PunchJob
	running context.CancelFunc // cancels the running attempt; nil: none
	backoff backoffState       // zero: none

	// Callee side: the peer's call we are answering (nil: none).
	call *inCall

	// waiters are Dial/PunchPeer calls waiting for the next outcome.
	waiters []chan error
}

// busy: the peer has an attempt queued or running, a call being answered
// or someone waiting; such an entry is never evicted.
func (p *peerPath) busy() bool {
	return p.queued != nil || p.running != nil || p.call != nil || len(p.waiters) > 0
}

// punching: an attempt on either side is queued or running.
func (p *peerPath) punching() bool { return p.queued != nil || p.running != nil || p.call != nil }

type backoffState struct {
	fails int
	until time.Time
}

func (b backoffState) active(now time.Time) bool { return b.fails > 0 && now.Before(b.until) }

// peerTable holds the peerPaths. It is bounded: an entry lives while the peer
// is busy or backed off and is dropped as soon as it is neither (tidy, and
// the host's janitor sweep). Busy entries are bounded by the scheduler's
// queues and concurrency cap and the call gate; at max, the idle entry whose
// back-off ends soonest is evicted to make room.
//
// Locks (docs/architecture.md "Lock order"): mu guards the map, every
// peerPath and the scheduler's queues (the Scheduler locks it as its own).
// Holding it, the host takes only two leaves, the call gate's and the ICE
// check guard's (admitting a call), and cancels contexts; it never calls the
// pool, the DHT, a hub client or ICE. Nothing takes mu while holding another
// host lock but a tunnel's.
type peerTable struct {
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[a2al.NodeID]*peerPath
}

func newPeerTable(max int, now func() time.Time) *peerTable {
	return &peerTable{max: max, now: now, m: make(map[a2al.NodeID]*peerPath)}
}

// getLocked returns id's entry, creating it (and evicting an idle entry at
// max) if there is none.
func (t *peerTable) getLocked(id a2al.NodeID) *peerPath {
	if p := t.m[id]; p != nil {
		return p
	}
	if len(t.m) >= t.max {
		t.pruneLocked()
	}
	p := &peerPath{id: id}
	t.m[id] = p
	return p
}

// tidyLocked is called after every change to p: it wakes p's waiters when
// no attempt is left that could report to them (so none sits out its
// deadline), and drops p when nothing about it is worth keeping.
func (t *peerTable) tidyLocked(p *peerPath) {
	if !p.punching() && len(p.waiters) > 0 {
		wake(p.waiters, errNoOutcome)
		p.waiters = nil
	}
	if !p.busy() && !p.backoff.active(t.now()) && t.m[p.id] == p {
		delete(t.m, p.id)
	}
}

// pruneLocked drops every idle entry whose back-off is over, or else the
// idle one whose back-off ends soonest.
func (t *peerTable) pruneLocked() {
	now := t.now()
	var soonest *peerPath
	for id, p := range t.m {
		if p.busy() {
			continue
		}
		if !p.backoff.active(now) {
			delete(t.m, id)
			continue
		}
		if soonest == nil || p.backoff.until.Before(soonest.backoff.until) {
			soonest = p
		}
	}
	if len(t.m) >= t.max && soonest != nil {
		delete(t.m, soonest.id)
	}
}

// sweep drops the entries that went idle by time alone (back-off over).
func (t *peerTable) sweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for id, p := range t.m {
		if !p.busy() && !p.backoff.active(now) {
			delete(t.m, id)
		}
	}
}

// handOver gives the caller's Mode B connection c, whose TLS identity is
// peer, to the call from peer we are answering. expected is false when we
// are answering no call from peer; taken is false for a second connection.
// The hand-over and endCall's drain both run under mu, so a connection
// can neither slip past an ending call nor leak.
func (t *peerTable) handOver(peer a2al.Address, c *quic.Conn) (expected, taken bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.m[a2al.NodeIDFromAddress(peer)]
	if p == nil || p.call == nil || p.call.peer != peer {
		return false, false
	}
	select {
	case p.call.conn <- c:
		return true, true
	default:
		return true, false
	}
}

// answering reports whether we are answering a call from id.
func (t *peerTable) answering(id a2al.NodeID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.m[id]
	return p != nil && p.call != nil
}

// errNoOutcome wakes a waiter whose peer has no attempt left that could
// report (e.g. a glare answered by a call that did not take over our
// attempt); the waiter then looks at the pool.
var errNoOutcome = errors.New("punch attempt ended without a connection")

// report hands a punch outcome (nil: a connection is pooled) to id's
// waiters.
func (t *peerTable) report(id a2al.NodeID, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.m[id]; p != nil {
		wake(p.waiters, err)
		p.waiters = nil
		t.tidyLocked(p)
	}
}

func wake(ws []chan error, err error) {
	for _, c := range ws {
		select {
		case c <- err:
		default:
		}
	}
}

// unwait removes the waiter ch of id, if still there.
func (t *peerTable) unwait(id a2al.NodeID, ch chan error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.m[id]
	if p == nil {
		return
	}
	for i, c := range p.waiters {
		if c == ch {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			break
		}
	}
	t.tidyLocked(p)
}
