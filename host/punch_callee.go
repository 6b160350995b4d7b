package host

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
)

// The callee side of a punch (docs/host.md §3): a peer calls us through a
// hub; we answer within our budgets (callgate.go), run ICE as the
// controlled agent and wait for the caller's QUIC connection.

// onCall handles an incoming hub call (callee side of a punch).
func (h *Host) onCall(s *signal.Session) {
	defer s.Close()
	h.handleCall(s.Peer(), s)
}

// callVerdict is what admitCall decided about an incoming call.
type callVerdict int

const (
	callAnswered   callVerdict = iota // answer it; no attempt of ours for the peer
	callSupersedes                    // answer it; it took over our queued or running attempt
	callGlare                         // we keep our own attempt (smaller NodeID); the peer answers it
	callRefused                       // over a budget (callgate.go)
)

// admitCall registers call as the peer's call, deciding glare in the same
// step as the peer's caller-side state is read: when both sides punch at
// once, the smaller NodeID keeps its outgoing attempt and the other side
// abandons its own (cancelled here) and answers.
func (h *Host) admitCall(pid a2al.NodeID, call *inCall) callVerdict {
	t := h.peers
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.getLocked(pid)
	defer t.tidyLocked(p)
	if p.running != nil && lessID(h.id.NodeID, pid) {
		return callGlare
	}
	if !h.admitCallLocked(p, call) {
		return callRefused
	}
	if p.queued == nil && p.running == nil {
		return callAnswered
	}
	h.sched.cancelLocked(p)
	return callSupersedes
}

// endCall unregisters call and closes a connection handed over after
// the call stopped waiting for it.
func (h *Host) endCall(pid a2al.NodeID, call *inCall) {
	t := h.peers
	t.mu.Lock()
	if p := t.m[pid]; p != nil && p.call == call {
		p.call = nil
		t.tidyLocked(p)
	}
	var late *quic.Conn
	select {
	case late = <-call.conn:
	default:
	}
	t.mu.Unlock()
	if late != nil {
		_ = late.CloseWithError(2, "late")
	}
}

// handleCall is the callee side for a caller the hub claims is peer. The
// claim is only trusted as far as "expect this identity": the QUIC connection
// is pooled only if its TLS identity is exactly peer.
func (h *Host) handleCall(peer a2al.Address, s signaler) {
	pid := a2al.NodeIDFromAddress(peer)
	if peer == h.id.Address {
		return
	}
	h.heardFrom(pid) // the peer is online and wants to reach us
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.PunchTimeout)
	defer cancel()
	call := &inCall{cancel: cancel, start: h.cfg.Clock.Now(), peer: peer, conn: make(chan *quic.Conn, 1)}
	verdict := h.admitCall(pid, call)
	switch verdict {
	case callGlare, callSupersedes:
		h.m.glare.Inc()
	case callRefused:
		h.m.callsRefused.Inc()
	}
	if verdict == callGlare || verdict == callRefused {
		return
	}
	defer h.endCall(pid, call)

	rec := PunchRecord{Peer: peer.String(), Role: "callee", Priority: -1, At: h.cfg.Clock.Now()}
	er := h.node.LocalEndpointRecord(pid, func(r *protocol.EndpointRecord) bool { return r.Address == peer })
	rec.NATPair = h.natPair(pid, er)
	ev := h.startDirectEvidence(ctx, er)
	defer ev.stop()
	qc, path, rel, err := h.punchIn(ctx, s, call)
	rec.Duration, rec.Path = h.cfg.Clock.Now().Sub(call.start), path
	end := punchEnd{rec: rec, id: pid, peer: peer, err: err, report: verdict == callSupersedes}
	if err != nil {
		h.finish(end)
		return
	}
	end.remote = qc.RemoteAddr()
	via := PoolPath{Type: PathPunched}
	if rel != nil {
		via = PoolPath{Type: PathRelayed, Release: rel.Close}
	}
	if !h.pool.AddOn(peer, qc, pid, via) && !h.pool.HasConn(pid) {
		end.rec.Reason, end.err, end.report = "pool refused", errors.New("pool refused the connection"), false
		h.finish(end)
		return
	}
	end.rec.Direct = rel == nil && ev.wait()
	end.rec.PathType = pathOf(rel != nil, end.rec.Direct)
	h.pool.setPath(pid, qc, end.rec.PathType)
	end.report = true
	h.finish(end)
}

// punchIn runs controlled ICE and waits for the caller's QUIC connection,
// whose TLS identity the accept loop has already matched to the expected
// peer. The caller dials as soon as one of our checks reaches it, usually
// before ICE nominates anything, so the connection is awaited alongside ICE.
func (h *Host) punchIn(ctx context.Context, s signaler, call *inCall) (qc *quic.Conn, path string, relayed *iceSession, err error) {
	is, err := startICE(ctx, h.env, s, false, h.iceHint(), nil)
	if err != nil {
		return nil, "", nil, err
	}
	call.ice.Store(is)
	defer func() {
		// A connection from the caller's relay keeps our agent: it answers
		// the keepalives that keep the caller's allocation in use.
		if err == nil && is.viaPeerRelay(qc.RemoteAddr()) {
			relayed = is
			return
		}
		is.Close()
	}()
	wait := h.cfg.HandshakeLimit
	done := is.done
	var late <-chan time.Time
	for {
		select {
		case qc := <-call.conn:
			return qc, is.Known().String(), nil, nil
		case <-done:
			select {
			case qc := <-call.conn:
				return qc, is.Known().String(), nil, nil
			default:
			}
			if is.err != nil {
				return nil, is.Known().String(), nil, is.err
			}
			done = nil
			t := h.cfg.Clock.NewTimer(wait + 2*time.Second)
			defer t.Stop()
			late = t.C()
		case <-late:
			return nil, is.Known().String(), nil, fmt.Errorf("%w: caller's QUIC connection with the expected identity did not arrive", ErrIdentity)
		case <-ctx.Done():
			return nil, is.Known().String(), nil, ctx.Err()
		}
	}
}
