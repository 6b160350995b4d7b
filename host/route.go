package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// Mode A close codes (QUIC application error codes) with the reason text
// sent beside them; docs/modea.md lists them.
const (
	CodeClosed      quic.ApplicationErrorCode = 0
	CodeIdentity    quic.ApplicationErrorCode = 1
	CodeUnexpectedB quic.ApplicationErrorCode = 2
	CodeBusy        quic.ApplicationErrorCode = 3
	CodeALPN        quic.ApplicationErrorCode = 4
	CodeRoute       quic.ApplicationErrorCode = 5 // missing, late or malformed agent-route stream
	CodeLimit       quic.ApplicationErrorCode = 6 // per-IP / per-identity / total connection cap
	CodeIdle        quic.ApplicationErrorCode = 7 // no application activity for the idle timeout
	CodeNotAllowed  quic.ApplicationErrorCode = 8 // caller not on the service's allow-list
)

// routeStreamReset resets a route stream we will not read; maxCtrlMsgs
// bounds the control messages read per side (each at most 4096 bytes).
const (
	routeStreamReset quic.StreamErrorCode = 5
	maxCtrlMsgs                           = 16
)

// ErrRouteRefused wraps the peer's close reason when it ends a Mode A
// connection during or right after the agent-route exchange.
var ErrRouteRefused = errors.New("host: peer refused the connection")

// openRoute is the dialer's half of the agent-route exchange: it opens the
// first stream, writes the a2r2 frame for target plus an AgentInfoHint and
// FIN, and reads the acceptor's answer in the background so application
// streams can open at once (docs/modea.md).
func (h *Host) openRoute(ctx context.Context, qc *quic.Conn, target a2al.Address, path string) (*Conn, error) {
	s, err := qc.OpenStreamSync(ctx)
	if err != nil {
		_ = qc.CloseWithError(CodeRoute, "route stream")
		return nil, fmt.Errorf("host: open route stream: %w", err)
	}
	maxSeq := h.heldTopicSeq(target)
	out := dialerRouteBytes(target, maxSeq)
	_ = s.SetDeadline(time.Now().Add(h.cfg.ModeA.RouteTimeout))
	if _, err := s.Write(out); err != nil {
		_ = qc.CloseWithError(CodeRoute, "route stream")
		return nil, fmt.Errorf("host: write route frame: %w", err)
	}
	_ = s.Close()
	c := newConn(h, qc, target, h.id.Address, path)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		c.routeErr = h.readRouteAnswer(c, s, target, maxSeq)
		close(c.routeDone)
	}()
	return c, nil
}

// dialerRouteBytes is everything the dialer writes on the route stream before
// its FIN: the a2r2 frame and one AgentInfoHint.
func dialerRouteBytes(target a2al.Address, maxSeq uint64) []byte {
	out := protocol.EncodeRouteFrame(protocol.RouteMagicV2, target)
	out, _ = protocol.AppendCtrlMsg(out, protocol.CtrlMsg{Type: protocol.CtrlAgentInfoHint,
		Payload: protocol.EncodeAgentInfoHint(target, maxSeq)})
	return out
}

// acceptorAnswer is everything the acceptor writes before its FIN: the
// dialer's observed address and, when given, one AgentInfo record.
func acceptorAnswer(remote net.Addr, record []byte) []byte {
	out, _ := protocol.AppendCtrlMsg(nil, protocol.CtrlMsg{Type: protocol.CtrlObservedAddr, Payload: observedWire(remote)})
	if record != nil {
		out, _ = protocol.AppendCtrlMsg(out, protocol.CtrlMsg{Type: protocol.CtrlAgentInfo, Payload: record})
	}
	return out
}

// readRouteAnswer reads the acceptor's control messages up to its FIN (the
// stream deadline bounds the wait): ObservedAddr is kept on the Conn, an
// AgentInfo topic record is checked and counted. A refusal by the acceptor
// arrives as the connection's close reason and is returned.
func (h *Host) readRouteAnswer(c *Conn, s *quic.Stream, target a2al.Address, maxSeq uint64) error {
	msgs, err := protocol.ReadCtrlMsgs(s, maxCtrlMsgs)
	if err != nil {
		var ae *quic.ApplicationError
		if errors.As(err, &ae) && ae.Remote {
			return fmt.Errorf("%w: %s (code %d)", ErrRouteRefused, ae.ErrorMessage, ae.ErrorCode)
		}
		return fmt.Errorf("host: agent-route answer: %w", err)
	}
	for _, m := range msgs {
		switch m.Type {
		case protocol.CtrlObservedAddr:
			if a, err := protocol.DecodeUDPAddr(m.Payload); err == nil {
				c.setObserved(a)
			}
		case protocol.CtrlAgentInfo:
			rec, err := protocol.DecodeRecord(m.Payload)
			if err != nil || rec.Address != target || rec.RecType != protocol.RecTypeTopic || rec.Seq <= maxSeq ||
				protocol.VerifySignedRecord(rec, h.cfg.Clock.Now()) != nil {
				h.m.agentInfo.WithLabelValues("rejected").Inc()
				continue
			}
			h.m.agentInfo.WithLabelValues("verified").Inc()
		}
	}
	return nil
}

// heldTopicSeq is the highest topic-record seq we hold for addr (0 if none).
func (h *Host) heldTopicSeq(addr a2al.Address) uint64 {
	var seq uint64
	for _, r := range h.node.LocalStoreGetByAddress(addr, protocol.RecTypeTopic) {
		seq = max(seq, r.Seq)
	}
	return seq
}

// closeError is an acceptor-side refusal: the connection is closed with code
// and msg as the reason the dialer reads.
type closeError struct {
	code quic.ApplicationErrorCode
	msg  string
}

func (e *closeError) Error() string { return e.msg }

func routeError(msg string) error { return &closeError{CodeRoute, "agent-route: " + msg} }

// answerRoute is the acceptor's half: read the frame from the first stream
// within RouteTimeout, pick the local identity it names (frame target if we
// host it, else the TLS SNI if we host that, else the node), and for a2r2
// read the dialer's messages to FIN, answer ObservedAddr (and AgentInfo when
// we hold a newer topic record of the target), then FIN. admit decides, before
// anything is answered, whether the caller may reach the chosen identity. The
// stream is never seen by the application.
func (h *Host) answerRoute(c *Conn, admit func(local a2al.Address) error) (a2al.Address, error) {
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.ModeA.RouteTimeout)
	defer cancel()
	s, err := c.qc.AcceptStream(ctx)
	if err != nil {
		return a2al.Address{}, routeError("no route stream in time")
	}
	_ = s.SetDeadline(time.Now().Add(h.cfg.ModeA.RouteTimeout))
	var fr [protocol.RouteFrameSize]byte
	if _, err := io.ReadFull(s, fr[:]); err != nil {
		s.CancelRead(routeStreamReset)
		return a2al.Address{}, routeError("route frame truncated")
	}
	local := h.id.Address
	if sni := h.agentBySNI(c.qc.ConnectionState().TLS.ServerName); sni != nil {
		local = sni.Address
	}
	magic, target, err := protocol.DecodeRouteFrame(fr[:])
	if err != nil {
		h.m.routeFrames.WithLabelValues("unknown").Inc()
		// Unknown magic: route by SNI alone; the stream carries nothing for us.
		s.CancelRead(routeStreamReset)
		s.CancelWrite(routeStreamReset)
		return local, admit(local)
	}
	h.m.routeFrames.WithLabelValues(magic).Inc()
	if h.localIdentity(target) != nil {
		local = target
	}
	if magic == protocol.RouteMagicV1 {
		s.CancelRead(0)
		if err := admit(local); err != nil {
			return local, err
		}
		_ = s.Close()
		return local, nil
	}
	msgs, err := protocol.ReadCtrlMsgs(s, maxCtrlMsgs)
	if err != nil {
		s.CancelRead(routeStreamReset)
		return a2al.Address{}, routeError(err.Error())
	}
	if err := admit(local); err != nil {
		return local, err
	}
	var record []byte
	for _, m := range msgs {
		if m.Type != protocol.CtrlAgentInfoHint {
			continue
		}
		if hintTarget, seq, ok := protocol.DecodeAgentInfoHint(m.Payload); ok && hintTarget == local {
			record = h.newerTopicRecord(local, seq)
		}
		break
	}
	out := acceptorAnswer(c.qc.RemoteAddr(), record)
	if _, err := s.Write(out); err != nil {
		return a2al.Address{}, routeError("answer: " + err.Error())
	}
	_ = s.Close()
	return local, nil
}

func observedWire(a net.Addr) []byte {
	if u, ok := a.(*net.UDPAddr); ok {
		return protocol.EncodeUDPAddr(u.IP, uint16(u.Port))
	}
	return nil
}

// newerTopicRecord returns the encoding of our newest stored topic record of
// addr when its seq is above seq and it fits a control message.
func (h *Host) newerTopicRecord(addr a2al.Address, seq uint64) []byte {
	var best *protocol.SignedRecord
	for _, r := range h.node.LocalStoreGetByAddress(addr, protocol.RecTypeTopic) {
		if r.Seq > seq && (best == nil || r.Seq > best.Seq) {
			best = &r
		}
	}
	if best == nil {
		return nil
	}
	b, err := protocol.EncodeRecord(*best)
	if err != nil || len(b) > protocol.MaxCtrlPayload {
		return nil
	}
	return b
}
