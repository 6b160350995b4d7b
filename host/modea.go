package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/protocol"
)

// Conn is an authenticated Mode A connection: Peer is the TLS-verified identity
// of the other side, Local the identity of ours it was made for (the dialled
// agent on accepted connections). The agent-route stream is handled by the
// host; OpenStream and AcceptStream only ever see application streams.
type Conn struct {
	qc    *quic.Conn
	Peer  a2al.Address
	Local a2al.Address
	Path  string // "direct", "punched" or "relayed" (dialer side); "" for accepted

	now       func() time.Time
	last      atomic.Int64 // unix nanos of the last application activity
	routeDone chan struct{}
	routeErr  error // set before routeDone closes
	obsMu     sync.Mutex
	observed  *net.UDPAddr // our address as the acceptor saw it (dialer side)
}

func newConn(h *Host, qc *quic.Conn, peer, local a2al.Address, path string) *Conn {
	c := &Conn{qc: qc, Peer: peer, Local: local, Path: path, now: h.cfg.Clock.Now, routeDone: make(chan struct{})}
	c.touch()
	return c
}

func (c *Conn) touch() { c.last.Store(c.now().UnixNano()) }

// idleFor is how long the connection has had no application activity.
func (c *Conn) idleFor() time.Duration { return c.now().Sub(time.Unix(0, c.last.Load())) }

// OpenStream opens a bidirectional application stream.
func (c *Conn) OpenStream(ctx context.Context) (*Stream, error) {
	s, err := c.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	c.touch()
	return &Stream{Stream: s, c: c}, nil
}

// AcceptStream waits for the peer's next application stream.
func (c *Conn) AcceptStream(ctx context.Context) (*Stream, error) {
	s, err := c.qc.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	c.touch()
	return &Stream{Stream: s, c: c}, nil
}

// WaitRoute waits for the agent-route exchange (dialer side) and returns its
// outcome: nil, or why the peer refused the connection (ErrRouteRefused with
// the peer's reason). Accepted connections return nil at once.
func (c *Conn) WaitRoute(ctx context.Context) error {
	select {
	case <-c.routeDone:
		return c.routeErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Observed is our address as the acceptor reported it (nil until known).
func (c *Conn) Observed() *net.UDPAddr {
	c.obsMu.Lock()
	defer c.obsMu.Unlock()
	return c.observed
}

func (c *Conn) setObserved(a *net.UDPAddr) {
	c.obsMu.Lock()
	c.observed = a
	c.obsMu.Unlock()
}

// RemoteAddr is the network address of the peer.
func (c *Conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// Context ends when the connection closes.
func (c *Conn) Context() context.Context { return c.qc.Context() }

// Close closes the connection.
func (c *Conn) Close() error { return c.qc.CloseWithError(CodeClosed, "closed") }

// CloseWithReason closes the connection with a close code and a reason the
// peer can read.
func (c *Conn) CloseWithReason(code quic.ApplicationErrorCode, reason string) error {
	return c.qc.CloseWithError(code, reason)
}

// Stream is an application stream; reads and writes count as activity for
// the connection's idle timeout.
type Stream struct {
	*quic.Stream
	c *Conn
}

func (s *Stream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if n > 0 {
		s.c.touch()
	}
	return n, err
}

func (s *Stream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	if n > 0 {
		s.c.touch()
	}
	return n, err
}

// ErrNoRoute means neither a direct dial nor a punch reached the peer.
var ErrNoRoute = errors.New("host: peer unreachable")

const (
	directDialTimeout    = 4 * time.Second
	happyEyeballsStagger = 250 * time.Millisecond
)

// Dial resolves addr's endpoint record, tries its published endpoints directly,
// and if that fails and the record names a hub, punches (over the Mode B
// machinery, at high priority) and dials through the opened path.
func (h *Host) Dial(ctx context.Context, addr a2al.Address) (*Conn, error) {
	if addr == h.id.Address {
		return nil, fmt.Errorf("host: dial: %w", ErrSelf)
	}
	id := a2al.NodeIDFromAddress(addr)
	er, err := h.endpointRecord(ctx, id, nil)
	if err != nil {
		return nil, fmt.Errorf("host: dial %s: %w", addr.String(), err)
	}
	c, derr := h.dialDirect(ctx, er)
	if derr == nil {
		if h.relayedSocket() { // our socket is a relay allocation
			c.Path = string(PathRelayed)
		}
		h.m.dialsA.WithLabelValues(c.Path, "ok").Inc()
		return c, nil
	}
	if len(er.SignalURLs()) == 0 {
		h.m.dialsA.WithLabelValues("direct", "fail").Inc()
		h.node.LocalStoreInvalidate(id, protocol.RecTypeEndpoint)
		return nil, fmt.Errorf("%w: %s: direct: %w", ErrNoRoute, addr.String(), derr)
	}
	c, perr := h.dialPunched(ctx, er)
	if perr != nil {
		h.m.dialsA.WithLabelValues("punched", "fail").Inc()
		h.node.LocalStoreInvalidate(id, protocol.RecTypeEndpoint)
		return nil, fmt.Errorf("%w: %s: direct: %v; punch: %w", ErrNoRoute, addr.String(), derr, perr)
	}
	h.m.dialsA.WithLabelValues(c.Path, "ok").Inc()
	return c, nil
}

// DialEndpoint opens a Mode A connection to peer at a known UDP address,
// skipping the DHT lookup (known peers, tests, the interop suite).
func (h *Host) DialEndpoint(ctx context.Context, to net.Addr, peer a2al.Address) (*Conn, error) {
	if peer == h.id.Address {
		return nil, fmt.Errorf("host: dial: %w", ErrSelf)
	}
	qc, err := h.dialA(ctx, to, peer, directDialTimeout)
	if err != nil {
		return nil, fmt.Errorf("host: dial %s at %v: %w", peer.String(), to, err)
	}
	return h.openRoute(ctx, qc, peer, "direct")
}

func (h *Host) dialA(ctx context.Context, to net.Addr, peer a2al.Address, timeout time.Duration) (*quic.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return h.qtr.Dial(dctx, to, h.id.ClientTLS(peer, ALPNModeA), quicConfig(h.cfg.HandshakeLimit))
}

func (h *Host) dialDirect(ctx context.Context, er *protocol.EndpointRecord) (*Conn, error) {
	restricted := er.NatType == protocol.NATRestricted || er.NatType == protocol.NATPortRestricted || er.NatType == protocol.NATSymmetric
	if restricted && len(er.SignalURLs()) > 0 {
		return nil, errors.New("skipped: peer is behind a filtering NAT")
	}
	// Happy Eyeballs (docs/host.md §6.2): IPv6 first, the next family
	// happyEyeballsStagger later; the first handshake wins.
	targets := dialTargets(ctx, h.cfg.Net, er.Endpoints, h.fam, 4)
	win, to, err := raceDial(ctx, h.cfg.Clock, targets, happyEyeballsStagger,
		func(ctx context.Context, a *net.UDPAddr) (*quic.Conn, error) {
			return h.dialA(ctx, a, er.Address, directDialTimeout)
		},
		func(qc *quic.Conn) { _ = qc.CloseWithError(0, "superseded") })
	if err != nil {
		return nil, err
	}
	h.log.Debug("direct dial", "peer", er.Address.String(), "to", to.String(), "family", familyName(to.IP))
	return h.openRoute(ctx, win, er.Address, "direct")
}

// A pooled connection that delivered a DHT message this recently is taken as
// alive; otherwise Dial probes it for at least minProbeWait (a few RTTs)
// before punching a fresh path.
const (
	freshRx      = 1500 * time.Millisecond
	minProbeWait = time.Second
)

func (h *Host) dialPunched(ctx context.Context, er *protocol.EndpointRecord) (*Conn, error) {
	id := a2al.NodeIDFromAddress(er.Address)
	// A path the NAT forgot (conntrack flush, outage) still looks pooled until
	// keepalives or the silence check notice; a probe settles it within a
	// few RTTs, and a silent entry is dropped so a fresh punch replaces it.
	if h.pool.HasConn(id) && !h.pool.Probe(ctx, id, freshRx, h.pool.probeWait(id, minProbeWait)) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h.log.Debug("pooled path to peer did not answer a probe; punching again", "peer", er.Address.String())
	}
	if !h.pool.HasConn(id) {
		if err := h.punchAndWait(ctx, id, er); err != nil {
			return nil, err
		}
	}
	remote, ok := h.pool.RemoteAddr(id)
	path, tr, _ := h.pool.Path(id)
	if !ok {
		return nil, &PunchError{Reason: dht.PunchFailOther, Code: "other", Err: errors.New("punched connection vanished")}
	}
	var qc *quic.Conn
	var err error
	if tr != nil { // our relay allocation carries the path
		dctx, cancel := context.WithTimeout(ctx, DefaultHandshakeLimit)
		qc, err = tr.Dial(dctx, remote, h.id.ClientTLS(er.Address, ALPNModeA), relayQUICConfig(h.cfg.HandshakeLimit))
		cancel()
	} else {
		qc, err = h.dialA(ctx, remote, er.Address, DefaultHandshakeLimit)
	}
	if err != nil {
		return nil, fmt.Errorf("quic over %s path %v: %w", path, remote, err)
	}
	if path != PathRelayed {
		path = PathPunched
	}
	return h.openRoute(ctx, qc, er.Address, string(path))
}

// punchAndWait runs a user-requested punch (bypassing back-off) and waits
// for the peer's next outcome (docs/architecture.md "A punch"); the error is
// a *PunchError.
func (h *Host) punchAndWait(ctx context.Context, id a2al.NodeID, er *protocol.EndpointRecord) error {
	ch := make(chan error, 1)
	defer h.peers.unwait(id, ch)
	h.sched.enqueueWaiting(id, er, PrioHigh, ch)
	select {
	case err := <-ch:
		if h.pool.HasConn(id) {
			return nil
		}
		if err == nil {
			err = errors.New("punched connection closed at once")
		}
		return newPunchError(err)
	case <-ctx.Done():
		return ctx.Err()
	case <-h.ctx.Done():
		return ErrClosed
	}
}

// Accept returns the next inbound Mode A connection.
func (h *Host) Accept(ctx context.Context) (*Conn, error) {
	select {
	case c := <-h.acceptA:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-h.ctx.Done():
		return nil, ErrClosed
	}
}

// PunchPeer makes sure a Mode B (DHT) connection to addr exists: it resolves
// the endpoint record and, unless a connection is already pooled, punches at
// high priority (bypassing back-off: a user asked) and waits for the outcome.
// It returns the record of the attempt that settled it (zero if the peer was
// already pooled); a failed punch is a *PunchError wrapped in ErrNoRoute.
func (h *Host) PunchPeer(ctx context.Context, addr a2al.Address) (PunchRecord, error) {
	id := a2al.NodeIDFromAddress(addr)
	if h.pool.HasConn(id) {
		return PunchRecord{Peer: addr.String(), OK: true, Reason: "already pooled"}, nil
	}
	er, err := h.endpointRecord(ctx, id, nil)
	if err != nil {
		return PunchRecord{}, err
	}
	h.mu.Lock()
	mark := len(h.punchLog)
	h.mu.Unlock()
	perr := h.punchAndWait(ctx, id, er)
	want := addr.String()
	var found PunchRecord
	h.mu.Lock()
	for i := len(h.punchLog) - 1; i >= min(mark, len(h.punchLog)); i-- {
		if r := h.punchLog[i]; r.Peer == want && r.Reason != "superseded" {
			found = r
			break
		}
	}
	h.mu.Unlock()
	if perr != nil {
		if errors.Is(perr, ErrPunchFailed) {
			return found, fmt.Errorf("%w: %s: %w", ErrNoRoute, want, perr)
		}
		return found, perr
	}
	if found.Peer == "" {
		found = PunchRecord{Peer: want, OK: true}
	}
	return found, nil
}
