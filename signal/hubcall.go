package signal

import (
	"net/netip"
	"time"

	"github.com/a2alnode/a2al"
)

// bucket is a token bucket; its owner serialises access.
type bucket struct {
	tokens, rate, burst float64
	last                time.Time
}

func newBucket(rate float64, burst int, now time.Time) bucket {
	return bucket{tokens: float64(burst), rate: rate, burst: float64(burst), last: now}
}

func (b *bucket) refill(now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
	}
	b.last = now
}

// ready reports whether a token is available, without spending it.
func (b *bucket) ready(now time.Time) bool {
	b.refill(now)
	return b.tokens >= 1
}

func (b *bucket) take(now time.Time) bool {
	if !b.ready(now) {
		return false
	}
	b.tokens--
	return true
}

// callerState is what a callee's connection keeps about callers at one
// address: their call bucket and how many sessions they hold with it.
type callerState struct {
	calls    bucket
	sessions int
}

// maxCallerStates bounds a callee's callers map. An entry is needed while
// its address holds sessions (at most MaxSessionsPerNode) or its bucket is
// refilling (a few seconds after its last admitted call, and admitted calls
// are bounded by CalleeCallRate): well below this with the defaults.
const maxCallerStates = 256

// Call refusal reasons (a2al_signal_calls_refused_total).
const (
	refuseSessions       = "sessions"        // MaxSessions or MaxSessionsPerNode
	refuseCalleeRate     = "callee_rate"     // CalleeCallRate
	refuseSourceRate     = "source_rate"     // SourceCallRate
	refuseSourceSessions = "source_sessions" // MaxSessionsPerSource
	refuseCallers        = "callers"         // maxCallerStates
	refuseCalleeQueue    = "callee_queue"    // the callee's relay queue is full
)

// handleCall creates a session, unless a limit protecting the callee or the
// hub refuses it (error{cid}). Caller holds h.mu.
func (c *hubConn) handleCall(f Frame) {
	h := c.h
	target, _ := a2al.ParseNodeID(f.Target)
	if target == c.id {
		c.send(Frame{T: TError, CID: f.CID, Code: CodeBadTarget, Msg: "cannot call yourself"})
		return
	}
	callee := h.registered[target]
	if callee == nil || callee.failed.Load() {
		h.m.noAgent.Inc()
		c.send(Frame{T: TNoAgent, CID: f.CID})
		return
	}
	refuse := func(reason, code, msg string) {
		h.m.callsRefused.WithLabelValues(reason).Inc()
		c.send(Frame{T: TError, CID: f.CID, Code: code, Msg: msg})
	}
	max := h.cfg.MaxSessionsPerNode
	if len(h.sessions) >= h.cfg.MaxSessions || h.nodeSessions[c.id] >= max || h.nodeSessions[target] >= max {
		refuse(refuseSessions, CodeTooManySessions, "session limit reached")
		return
	}
	now := h.cfg.Clock.Now()
	// Peek at the callee's bucket first and spend from it last, so that
	// calls refused for their address do not use up the callee's budget.
	if !callee.calls.ready(now) {
		refuse(refuseCalleeRate, CodeCalleeBusy, "this node is receiving too many calls; retry later")
		return
	}
	cs := callee.callerState(c.ip, now)
	switch {
	case cs == nil:
		refuse(refuseCallers, CodeCalleeBusy, "this node is being called from too many addresses; retry later")
		return
	case cs.sessions >= h.cfg.MaxSessionsPerSource:
		refuse(refuseSourceSessions, CodeCalleeBusy, "too many sessions with this node from your address")
		return
	case !cs.calls.take(now):
		refuse(refuseSourceRate, CodeCalleeBusy, "too many calls to this node from your address; retry later")
		return
	}
	callee.calls.take(now)
	s := &hubSession{id: newSID(), cid: f.CID, caller: c, callee: callee, created: now}
	if !callee.relay(Frame{T: TIncoming, SID: s.id, Peer: c.addrHex}) {
		refuse(refuseCalleeQueue, CodeCalleeBusy, "this node is not reading fast enough; retry later")
		return
	}
	cs.sessions++
	h.sessions[s.id] = s
	h.nodeSessions[c.id]++
	h.nodeSessions[target]++
	for _, p := range []*hubConn{c, callee} {
		if p.sessions == nil {
			p.sessions = map[string]*hubSession{}
		}
		p.sessions[s.id] = s
	}
	h.m.sessionsTotal.Inc()
	c.send(Frame{T: TRinging, CID: f.CID, SID: s.id, Peer: callee.addrHex})
}

// callerState returns the entry for callers at ip, creating it if there is
// room; nil when the map is full of entries still in use. Caller holds h.mu.
func (c *hubConn) callerState(ip netip.Addr, now time.Time) *callerState {
	if cs := c.callers[ip]; cs != nil {
		return cs
	}
	if len(c.callers) >= maxCallerStates {
		// Entries without sessions and with a full bucket carry no state.
		for k, cs := range c.callers {
			cs.calls.refill(now)
			if cs.sessions == 0 && cs.calls.tokens >= cs.calls.burst {
				delete(c.callers, k)
			}
		}
		if len(c.callers) >= maxCallerStates {
			return nil
		}
	}
	if c.callers == nil {
		c.callers = map[netip.Addr]*callerState{}
	}
	cfg := &c.h.cfg
	cs := &callerState{calls: newBucket(cfg.SourceCallRate, cfg.SourceCallBurst, now)}
	c.callers[ip] = cs
	return cs
}

// replyTo returns the session f answers when f is a callee's well-formed
// answer in a session another node opened (accept or reject while ringing,
// sig once accepted, hangup); such frames go to the reply budget. Caller
// holds h.mu.
func (c *hubConn) replyTo(f Frame) *hubSession {
	switch f.T {
	case TAccept, TReject, THangup, TSig:
	default:
		return nil
	}
	s := c.sessions[f.SID]
	if s == nil || s.callee != c {
		return nil
	}
	if (f.T == TAccept || f.T == TReject) && s.active || f.T == TSig && !s.active {
		return nil
	}
	return s
}

// handleSession processes accept, reject, hangup and sig. Caller holds h.mu.
func (c *hubConn) handleSession(f Frame) {
	h := c.h
	s := c.sessions[f.SID]
	if s == nil {
		// Normal when the session just ended; not fatal.
		c.send(Frame{T: TError, SID: f.SID, Code: CodeUnknownSession, Msg: "no such session on this connection"})
		return
	}
	switch f.T {
	case TAccept, TReject:
		if c != s.callee || s.active {
			c.send(Frame{T: TError, SID: f.SID, Code: CodeBadState, Msg: "only the callee answers, once"})
			return
		}
		if f.T == TReject {
			h.endSession(s, ReasonReject)
			return
		}
		s.active = true
		s.caller.send(Frame{T: TAccepted, CID: s.cid, SID: s.id, Peer: s.callee.addrHex})
	case THangup:
		h.endSession(s, ReasonHangup)
	case TSig:
		if !s.active {
			c.send(Frame{T: TError, SID: f.SID, Code: CodeBadState, Msg: "session not accepted yet"})
			return
		}
		sig, _ := f.Signal() // validated by DecodeFrame
		s.bytes += sig.size()
		if s.bytes > h.cfg.MaxSessionBytes {
			h.endSession(s, ReasonLimit)
			return
		}
		if !s.other(c).relay(sigFrame(s.id, sig)) {
			h.endSession(s, ReasonBusy)
			return
		}
		h.m.relayedBytes.Add(float64(sig.size()))
		if sig.Kind == KindDone {
			if c == s.caller {
				s.doneCaller = true
			} else {
				s.doneCallee = true
			}
			if s.doneCaller && s.doneCallee {
				h.endSession(s, ReasonDone)
			}
		}
	}
}
