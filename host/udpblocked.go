package host

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/pion/stun"
	"github.com/pion/turn/v2"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
)

// A node whose network blocks UDP runs its whole shared socket (DHT, STUN,
// ICE checks, QUIC) over one TURN allocation that it reaches over TCP or
// TLS (docs/relay.md §1a). The allocation's relayed address
// behaves like an address-restricted NAT mapping: a peer gets in once we
// sent to its IP (the TURN permission), so everything that works behind
// such a NAT works here, end to end encrypted as usual.

// defaultRelaySocketRenew: see Config.RelaySocketRenew.
const defaultRelaySocketRenew = 45 * time.Minute

// Bounds of the relay socket's set-up and retry.
const (
	relaySockSetup    = 10 * time.Second // dial, TLS, credentials and Allocate, per server
	relaySockRetryMin = 2 * time.Second  // first back-off after a failed attempt
	relaySockRetryMax = time.Minute      // back-off cap
	relaySockRTO      = 300 * time.Millisecond
	// relaySockKeepalive is below our hub's 2 min idle limit on TURN streams.
	relaySockKeepalive     = 25 * time.Second
	relaySockKeepaliveWait = 10 * time.Second
)

// sockSwitch is the packet conn under the demux. It is the UDP socket until
// a relay socket is attached, then the allocation: writes go through it and
// reads come from it (the UDP socket is no longer read; nothing arrives on
// it anyway). Detaching returns to the UDP socket. Its lock is a leaf.
type sockSwitch struct {
	base net.PacketConn

	mu    sync.Mutex
	relay *turnSocket // nil: the UDP socket carries everything
}

func (s *sockSwitch) cur() *turnSocket {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.relay
}

// attach makes ts the socket and returns the one it replaces (for the
// caller to close). The UDP socket's blocked read is woken by a deadline in
// the past so the reader moves over.
func (s *sockSwitch) attach(ts *turnSocket) *turnSocket {
	s.mu.Lock()
	old := s.relay
	s.relay = ts
	s.mu.Unlock()
	if old == nil {
		_ = s.base.SetReadDeadline(time.Unix(1, 0))
	}
	return old
}

// detach returns to the UDP socket and returns the relay socket it left.
func (s *sockSwitch) detach() *turnSocket {
	s.mu.Lock()
	old := s.relay
	s.relay = nil
	s.mu.Unlock()
	if old != nil {
		_ = s.base.SetReadDeadline(time.Time{})
	}
	return old
}

func (s *sockSwitch) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		ts := s.cur()
		if ts == nil {
			n, from, err := s.base.ReadFrom(b)
			var ne net.Error
			if err != nil && errors.As(err, &ne) && ne.Timeout() && s.cur() != nil {
				continue // woken to move to the relay socket
			}
			return n, from, err
		}
		n, from, err := ts.conn.ReadFrom(b)
		if err != nil && s.cur() != ts {
			continue // replaced or detached meanwhile
		}
		return n, from, err
	}
}

func (s *sockSwitch) WriteTo(b []byte, to net.Addr) (int, error) {
	if ts := s.cur(); ts != nil {
		return ts.conn.WriteTo(b, to)
	}
	return s.base.WriteTo(b, to)
}

// Close closes the UDP socket and the relay socket, ending any read.
func (s *sockSwitch) Close() error {
	if ts := s.detach(); ts != nil {
		ts.close()
	}
	return s.base.Close()
}

func (s *sockSwitch) LocalAddr() net.Addr { return s.base.LocalAddr() }

func (s *sockSwitch) SetDeadline(t time.Time) error {
	if err := s.SetReadDeadline(t); err != nil {
		return err
	}
	return s.SetWriteDeadline(t)
}

func (s *sockSwitch) SetReadDeadline(t time.Time) error {
	if ts := s.cur(); ts != nil {
		return ts.conn.SetReadDeadline(t)
	}
	return s.base.SetReadDeadline(t)
}

func (s *sockSwitch) SetWriteDeadline(t time.Time) error {
	if ts := s.cur(); ts != nil {
		return ts.conn.SetWriteDeadline(t)
	}
	return s.base.SetWriteDeadline(t)
}

// turnSocket is one allocation made over a TCP or TLS stream.
type turnSocket struct {
	conn   net.PacketConn // the relayed conn (pion's)
	client *turn.Client
	stream net.Conn
	url    string        // the server's URL, credential-free
	addr   *net.UDPAddr  // the relayed address
	dead   chan struct{} // closed when the stream failed
	once   sync.Once
}

// close releases the allocation (pion sends a zero-lifetime refresh) and
// closes the stream, which ends pion's read loop.
func (ts *turnSocket) close() {
	ts.once.Do(func() {
		_ = ts.conn.Close()
		ts.client.Close()
		_ = ts.stream.Close()
	})
}

// watchedStream tells when a read on the stream fails (the server or the
// path is gone).
type watchedStream struct {
	net.Conn
	once sync.Once
	dead chan struct{}
}

func (w *watchedStream) Read(b []byte) (int, error) {
	n, err := w.Conn.Read(b)
	if err != nil {
		w.once.Do(func() { close(w.dead) })
	}
	return n, err
}

// relaySockServer is one TURN server reachable over a stream, with
// credentials.
type relaySockServer struct {
	uri *stun.URI
	raw string // credential-free URL
}

// relaySockServers lists the stream (TCP/TLS) relays we could put the socket
// on: configured ones first, then each registered hub's (TCP before TLS).
func (h *Host) relaySockServers(ctx context.Context) []relaySockServer {
	var out []relaySockServer
	for _, u := range h.relayURIsFor(ctx, false) {
		if u.Proto != stun.ProtoTypeTCP {
			continue
		}
		raw := fmt.Sprintf("turn:%s?transport=tcp", net.JoinHostPort(u.Host, strconv.Itoa(u.Port)))
		if u.Scheme == stun.SchemeTypeTURNS {
			raw = "turns:" + raw[len("turn:"):]
		}
		out = append(out, relaySockServer{uri: u, raw: raw})
	}
	return out
}

// dialRelaySocket allocates on one server over a stream. ctx bounds the
// whole set-up; the allocation then lives on its own (pion refreshes it and
// its permissions) until close.
func (h *Host) dialRelaySocket(ctx context.Context, srv relaySockServer) (*turnSocket, error) {
	addr := net.JoinHostPort(srv.uri.Host, strconv.Itoa(srv.uri.Port))
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("relay socket: dial %s: %w", srv.raw, err)
	}
	stream := raw
	if srv.uri.Scheme == stun.SchemeTypeTURNS {
		tc := tls.Client(raw, &tls.Config{ServerName: srv.uri.Host, RootCAs: h.cfg.RelayRootCAs, MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, fmt.Errorf("relay socket: tls to %s: %w", srv.raw, err)
		}
		stream = tc
	}
	ws := &watchedStream{Conn: stream, dead: make(chan struct{})}
	cl, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: addr, Conn: turn.NewSTUNConn(ws),
		Username: srv.uri.Username, Password: srv.uri.Password, RTO: relaySockRTO, LoggerFactory: quietPion()})
	if err != nil {
		_ = stream.Close()
		return nil, fmt.Errorf("relay socket: turn client for %s: %w", srv.raw, err)
	}
	// Closing the client and the stream is what ends a pending Allocate when
	// ctx ends first.
	stop := context.AfterFunc(ctx, func() { cl.Close(); _ = stream.Close() })
	defer stop()
	if err := cl.Listen(); err != nil {
		cl.Close()
		_ = stream.Close()
		return nil, fmt.Errorf("relay socket: %s: %w", srv.raw, err)
	}
	pc, err := cl.Allocate()
	if err != nil {
		cl.Close()
		_ = stream.Close()
		return nil, fmt.Errorf("relay socket: allocate on %s: %w", srv.raw, err)
	}
	ra, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok || ctx.Err() != nil {
		_ = pc.Close()
		cl.Close()
		_ = stream.Close()
		return nil, fmt.Errorf("relay socket: allocate on %s: %w", srv.raw, errors.Join(ctx.Err(), errors.New("no relayed UDP address")))
	}
	return &turnSocket{conn: pc, client: cl, stream: stream, url: srv.raw, addr: ra, dead: ws.dead}, nil
}

// relaySockState is what the host knows of its relay socket (under h.mu).
type relaySockState struct {
	cancel context.CancelFunc // stops the supervisor; nil when none runs
	done   chan struct{}      // closed when the supervisor returned
}

// RelaySocket says whether our socket runs over a TURN allocation because
// UDP is blocked, and which: the relayed address and the server's URL.
func (h *Host) RelaySocket() (relayed *net.UDPAddr, server string, ok bool) {
	if ts := h.sock.cur(); ts != nil {
		return ts.addr, ts.url, true
	}
	return nil, "", false
}

// useRelaySocket starts the relay socket's supervisor unless it runs
// already; called when the NAT classification says UDP is blocked.
func (h *Host) useRelaySocket() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rsock.cancel != nil || h.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithCancel(h.ctx)
	h.rsock = relaySockState{cancel: cancel, done: make(chan struct{})}
	done := h.rsock.done
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(done)
		h.relaySockLoop(ctx)
	}()
}

// leaveRelaySocket stops the supervisor and returns the socket to UDP (on a
// network change: the new network may pass UDP). Reports whether a relay
// socket was in use.
func (h *Host) leaveRelaySocket() bool {
	h.mu.Lock()
	st := h.rsock
	h.rsock = relaySockState{}
	h.mu.Unlock()
	if st.cancel == nil {
		return false
	}
	st.cancel()
	<-st.done
	if ts := h.sock.detach(); ts != nil {
		ts.close()
	}
	// What we knew of our mapping was the relay's: classify afresh.
	h.mu.Lock()
	h.nat, h.natKnown, h.sense.byPeers = natprobe.Result{}, false, false
	h.peerPublic, h.peerIP = nil, nil
	h.mu.Unlock()
	h.votes.reset()
	h.pool.EvictAll("left the relay socket")
	h.kickPublish()
	return true
}

// relaySockLoop keeps a relay socket attached: it allocates, attaches, and
// re-allocates when the stream dies or RelaySocketRenew passed (before the
// server's allocation lifetime cap), with back-off between failures.
func (h *Host) relaySockLoop(ctx context.Context) {
	backoff := relaySockRetryMin
	for ctx.Err() == nil {
		ts, err := h.allocRelaySocket(ctx)
		if err != nil {
			h.log.Warn("UDP is blocked and no relay socket could be made; will retry", "err", err, "in", backoff)
			t := h.cfg.Clock.NewTimer(backoff)
			select {
			case <-ctx.Done():
			case <-t.C():
			}
			t.Stop()
			backoff = min(2*backoff, relaySockRetryMax)
			continue
		}
		if ctx.Err() != nil {
			ts.close()
			return
		}
		backoff = relaySockRetryMin
		h.onRelaySocket(ctx, ts)
		h.keepRelaySocket(ctx, ts)
	}
}

// keepRelaySocket returns when ts must be replaced: its stream failed or
// stopped answering, or RelaySocketRenew passed (or ctx ended). A Binding
// request every relaySockKeepalive keeps the stream busy (the server closes
// idle ones) and proves the server still answers over it.
func (h *Host) keepRelaySocket(ctx context.Context, ts *turnSocket) {
	renew := h.cfg.Clock.NewTimer(h.cfg.RelaySocketRenew)
	defer renew.Stop()
	ka := newTicker(h.cfg.Clock, relaySockKeepalive)
	defer ka.stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew.C():
			h.m.relaySock.WithLabelValues("renewed").Inc()
			return
		case <-ts.dead:
		case <-ka.C():
			ka.next()
			if h.relaySocketAnswers(ctx, ts) {
				continue
			}
		}
		if ctx.Err() != nil {
			return
		}
		h.log.Warn("relay socket's stream to the TURN server failed; re-allocating", "server", ts.url)
		h.m.relaySock.WithLabelValues("stream-lost").Inc()
		return
	}
}

// relaySocketAnswers sends one Binding request to the TURN server over the
// relay socket's stream and waits at most relaySockKeepaliveWait.
func (h *Host) relaySocketAnswers(ctx context.Context, ts *turnSocket) bool {
	done := make(chan error, 1)
	go func() { // ends with the answer, or when ts closes (pion fails the transaction)
		_, err := ts.client.SendBindingRequestTo(ts.client.TURNServerAddr())
		done <- err
	}()
	t := h.cfg.Clock.NewTimer(relaySockKeepaliveWait)
	defer t.Stop()
	select {
	case err := <-done:
		return err == nil
	case <-t.C():
		return false
	case <-ctx.Done():
		return true // not a verdict; the caller sees ctx
	}
}

// allocRelaySocket tries each stream relay in turn.
func (h *Host) allocRelaySocket(ctx context.Context) (*turnSocket, error) {
	servers := h.relaySockServers(ctx)
	if len(servers) == 0 {
		return nil, errors.New("relay socket: no TURN server over TCP or TLS (hubs give none, none configured)")
	}
	var errs []error
	for _, srv := range servers {
		sctx, cancel := context.WithTimeout(ctx, relaySockSetup)
		ts, err := h.dialRelaySocket(sctx, srv)
		cancel()
		if err == nil {
			return ts, nil
		}
		h.m.relaySock.WithLabelValues("failed").Inc()
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// onRelaySocket attaches a fresh allocation: the NAT result names the
// relayed address as our mapping, paths over a previous allocation are
// stale, and the DHT is joined (again) through it before republishing.
func (h *Host) onRelaySocket(ctx context.Context, ts *turnSocket) {
	old := h.sock.attach(ts)
	h.m.relaySock.WithLabelValues("allocated").Inc()
	h.mu.Lock()
	h.nat = natprobe.Result{Type: natprobe.TypeUDPBlocked, MappedAddr: ts.addr, PublicIP: ts.addr.IP,
		MappedPort: ts.addr.Port}
	h.natKnown, h.sense.byPeers = true, false
	h.peerPublic, h.peerIP = nil, nil
	h.mu.Unlock()
	h.votes.reset()
	h.node.SetSelfExtIP(ts.addr.IP)
	if old != nil {
		old.close()
		h.pool.EvictAll("relay socket re-allocated")
		h.sched.ResetAll()
	}
	h.log.Info("UDP is blocked: the socket runs over a TURN allocation", "server", ts.url, "relayed", ts.addr.String())
	if len(h.cfg.Bootstrap) > 0 || len(h.cachedPeers()) > 0 {
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := h.Bootstrap(bctx); err != nil {
			h.log.Warn("bootstrap over the relay socket failed", "err", err)
		}
		cancel()
	}
	h.kickPublish()
}

// relayedSocket reports whether our socket runs over a TURN allocation, so
// every path on it is relayed.
func (h *Host) relayedSocket() bool { return h.sock.cur() != nil }

var _ net.PacketConn = (*sockSwitch)(nil)

// relaySocketPayload is the endpoint payload of a node on a relay socket:
// the relayed address as its only endpoint, NAT type restricted (TURN
// permissions filter by peer IP, as an address-restricted NAT does), and
// the relay it uses as the first TURN hint. A peer recognises the endpoint
// as relayed by its IP being a hint's host (relayedEndpoint).
func (h *Host) relaySocketPayload() (protocol.EndpointPayload, bool) {
	ts := h.sock.cur()
	if ts == nil {
		return protocol.EndpointPayload{}, false
	}
	p := protocol.EndpointPayload{
		Endpoints: []string{"quic://" + ts.addr.String()},
		NatType:   protocol.NATRestricted,
	}
	h.addSignals(&p)
	own := hintOf(ts.url)
	if own != "" {
		p.Turns = []string{own}
	}
	for _, t := range h.turnHints() {
		if t != own && len(p.Turns) < protocol.MaxTurns {
			p.Turns = append(p.Turns, t)
		}
	}
	return p, true
}

// relayedTo is the pool's Relayed hook: a connection is relayed when our
// own socket is a relay socket, or when it reaches the peer at an endpoint
// its record marks as a relay allocation.
func (h *Host) relayedTo(id a2al.NodeID, remote net.Addr) bool {
	if h.relayedSocket() {
		return true
	}
	ra, ok := remote.(*net.UDPAddr)
	if !ok {
		return false
	}
	er := h.node.LocalEndpointRecord(id, nil)
	return er != nil && relayedEndpoint(er, ra)
}

// relayedEndpoint reports whether addr is one of er's endpoints and lies on
// a relay the record names: its IP is the host of one of the record's TURN
// hints. That is how a UDP-blocked node's record says its endpoint is a
// relay allocation (docs/relay.md §1a); a hint naming the
// relay by host name does not mark anything.
func relayedEndpoint(er *protocol.EndpointRecord, addr *net.UDPAddr) bool {
	listed := false
	for _, ep := range er.Endpoints {
		host, port, err := protocol.ParseEndpointURL(ep)
		if err != nil || int(port) != addr.Port {
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap() == addrOf(addr.IP) {
			listed = true
			break
		}
	}
	if !listed {
		return false
	}
	for _, t := range er.Turns {
		u, err := url.Parse(t)
		if err != nil {
			continue
		}
		if ip, err := netip.ParseAddr(u.Hostname()); err == nil && ip.Unmap() == addrOf(addr.IP) {
			return true
		}
	}
	return false
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
