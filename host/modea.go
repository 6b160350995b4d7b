package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
	"github.com/quic-go/quic-go"
)

// Conn is an authenticated Mode A connection: Peer is the TLS-verified identity
// of the other side. Streams are plain QUIC streams.
type Conn struct {
	qc   *quic.Conn
	Peer a2al.Address
	Path string // "direct" or "punched" (dialer side); "" for accepted
}

// OpenStream opens a bidirectional application stream.
func (c *Conn) OpenStream(ctx context.Context) (*quic.Stream, error) { return c.qc.OpenStreamSync(ctx) }

// AcceptStream waits for the peer's next stream.
func (c *Conn) AcceptStream(ctx context.Context) (*quic.Stream, error) { return c.qc.AcceptStream(ctx) }

// RemoteAddr is the network address of the peer.
func (c *Conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// Context ends when the connection closes.
func (c *Conn) Context() context.Context { return c.qc.Context() }

// Close closes the connection.
func (c *Conn) Close() error { return c.qc.CloseWithError(0, "closed") }

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
		return nil, errors.New("host: dial: that is our own address")
	}
	id := a2al.NodeIDFromAddress(addr)
	er, err := h.endpointRecord(ctx, id, nil)
	if err != nil {
		return nil, fmt.Errorf("host: dial %s: %w", AddressText(addr), err)
	}
	c, derr := h.dialDirect(ctx, er)
	if derr == nil {
		h.m.dialsA.WithLabelValues("direct", "ok").Inc()
		return c, nil
	}
	if len(hubsOf(er)) == 0 {
		h.m.dialsA.WithLabelValues("direct", "fail").Inc()
		h.node.LocalStoreInvalidate(id, protocol.RecTypeEndpoint)
		return nil, fmt.Errorf("%w: %s: direct: %w", ErrNoRoute, AddressText(addr), derr)
	}
	c, perr := h.dialPunched(ctx, er)
	if perr != nil {
		h.m.dialsA.WithLabelValues("punched", "fail").Inc()
		h.node.LocalStoreInvalidate(id, protocol.RecTypeEndpoint)
		return nil, fmt.Errorf("%w: %s: direct: %v; punch: %w", ErrNoRoute, AddressText(addr), derr, perr)
	}
	h.m.dialsA.WithLabelValues("punched", "ok").Inc()
	return c, nil
}

func (h *Host) dialA(ctx context.Context, to net.Addr, peer a2al.Address, timeout time.Duration) (*quic.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return h.qtr.Dial(dctx, to, h.id.ClientTLS(peer, ALPNModeA), quicConfig(h.cfg.HandshakeLimit))
}

func (h *Host) dialDirect(ctx context.Context, er *protocol.EndpointRecord) (*Conn, error) {
	restricted := er.NatType == protocol.NATRestricted || er.NatType == protocol.NATPortRestricted || er.NatType == protocol.NATSymmetric
	if restricted && len(hubsOf(er)) > 0 {
		return nil, errors.New("skipped: peer is behind a filtering NAT")
	}
	var addrs []net.Addr
	for _, ep := range er.Endpoints {
		if len(addrs) == 4 {
			break
		}
		if a, err := parseEndpoint(h.cfg.Net, ep); err == nil {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("record has no usable endpoints")
	}
	// Happy Eyeballs: start endpoint i after i*250 ms; the first handshake
	// wins and the others are cancelled (or closed if they also finished).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		qc  *quic.Conn
		err error
	}
	results := make(chan result, len(addrs))
	for i, a := range addrs {
		go func() {
			t := time.NewTimer(time.Duration(i) * happyEyeballsStagger)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				results <- result{err: ctx.Err()}
				return
			}
			qc, err := h.dialA(ctx, a, er.Address, directDialTimeout)
			results <- result{qc, err}
		}()
	}
	var win *quic.Conn
	var lastErr error
	for range addrs {
		r := <-results
		switch {
		case r.err != nil:
			if lastErr == nil || !errors.Is(r.err, context.Canceled) {
				lastErr = r.err
			}
		case win == nil:
			win = r.qc
			cancel()
		default:
			_ = r.qc.CloseWithError(0, "superseded")
		}
	}
	if win == nil {
		return nil, lastErr
	}
	return &Conn{qc: win, Peer: er.Address, Path: "direct"}, nil
}

func (h *Host) dialPunched(ctx context.Context, er *protocol.EndpointRecord) (*Conn, error) {
	id := a2al.NodeIDFromAddress(er.Address)
	if !h.pool.HasConn(id) {
		h.sched.Enqueue(id, er, PrioHigh)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for !h.pool.HasConn(id) {
			if !h.sched.Pending(id) {
				// The attempt ended; the callee side may still be finishing a glare.
				time.Sleep(100 * time.Millisecond)
				if !h.pool.HasConn(id) {
					return nil, errors.New("punch failed")
				}
				break
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-tick.C:
			}
		}
	}
	remote, ok := h.pool.RemoteAddr(id)
	if !ok {
		return nil, errors.New("punched connection vanished")
	}
	qc, err := h.dialA(ctx, remote, er.Address, quicHandshakeTimeout)
	if err != nil {
		return nil, fmt.Errorf("quic over punched path %v: %w", remote, err)
	}
	return &Conn{qc: qc, Peer: er.Address, Path: "punched"}, nil
}

// Accept returns the next inbound Mode A connection.
func (h *Host) Accept(ctx context.Context) (*Conn, error) {
	select {
	case c := <-h.acceptA:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-h.ctx.Done():
		return nil, errors.New("host: closed")
	}
}

// PunchPeer makes sure a Mode B (DHT) connection to addr exists: it resolves
// the endpoint record and, unless a connection is already pooled, punches at
// high priority and waits for the outcome. It returns the record of the
// attempt that settled it (zero if the peer was already pooled).
func (h *Host) PunchPeer(ctx context.Context, addr a2al.Address) (PunchRecord, error) {
	id := a2al.NodeIDFromAddress(addr)
	if h.pool.HasConn(id) {
		return PunchRecord{Peer: AddressText(addr), OK: true, Reason: "already pooled"}, nil
	}
	er, err := h.endpointRecord(ctx, id, nil)
	if err != nil {
		return PunchRecord{}, err
	}
	h.mu.Lock()
	mark := len(h.punchLog)
	h.mu.Unlock()
	h.sched.Enqueue(id, er, PrioHigh)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	want := AddressText(addr)
	for {
		h.mu.Lock()
		var found *PunchRecord
		start := min(mark, len(h.punchLog))
		for i := len(h.punchLog) - 1; i >= start; i-- {
			r := h.punchLog[i]
			if r.Peer == want && r.Reason != "superseded" {
				found = &r
				break
			}
		}
		h.mu.Unlock()
		if found != nil {
			if !found.OK {
				return *found, fmt.Errorf("%w: punch to %s failed: %s", ErrNoRoute, want, found.Reason)
			}
			return *found, nil
		}
		select {
		case <-ctx.Done():
			return PunchRecord{}, ctx.Err()
		case <-tick.C:
		}
	}
}
