package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/stun"
	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
)

// The relay of last resort (docs/relay.md). ICE gathers relay candidates on
// the caller side only, so a path is relayed exactly when the caller's
// selected local candidate is its TURN allocation. Its QUIC connection then
// runs over the ICE agent (the allocation) instead of the shared socket; the
// callee still sees an ordinary QUIC connection on its shared socket, from
// the relay's address. Both sides keep their ICE agents for as long as the
// pooled connection lives: the caller's holds the allocation, and the
// callee's answers its keepalives. (A UDP-blocked node's whole socket is a
// relay allocation instead: udpblocked.go.)

// PathType says how a pooled connection reaches its peer.
type PathType string

// Path types.
const (
	PathDirect  PathType = "direct"  // punched, and the peer's published address answers unsolicited (D6 evidence)
	PathPunched PathType = "punched" // through NAT holes ICE opened
	PathRelayed PathType = "relayed" // through a TURN allocation
)

// TURNServer is a relay of our own choosing (coturn or any standard TURN
// server), used besides the relays of our hubs.
type TURNServer struct {
	// URL is "turn:host:port?transport=udp|tcp" or "turns:host:port".
	URL string
	// Username and Password are static long-term credentials.
	Username, Password string
	// Secret is a coturn static-auth-secret: credentials are derived per
	// session (REST style, one hour). Set either Secret or Username/Password.
	Secret string
}

// ParseTURNFlag parses "turn:host:port?transport=udp" with credentials in the
// query: "&user=U&pass=P" (static) or "&secret=S" (coturn shared secret).
func ParseTURNFlag(s string) (TURNServer, error) {
	base, q, _ := strings.Cut(s, "?")
	vals, err := url.ParseQuery(q)
	if err != nil {
		return TURNServer{}, fmt.Errorf("turn %q: query: %w", s, err)
	}
	t := TURNServer{Username: vals.Get("user"), Password: vals.Get("pass"), Secret: vals.Get("secret")}
	vals.Del("user")
	vals.Del("pass")
	vals.Del("secret")
	t.URL = base
	if enc := vals.Encode(); enc != "" {
		t.URL += "?" + enc
	}
	return t, t.validate()
}

func (t TURNServer) validate() error {
	if _, err := stun.ParseURI(t.URL); err != nil || !strings.HasPrefix(t.URL, "turn") {
		return fmt.Errorf("turn server %q: want turn:host:port or turns:host:port (%v)", t.URL, err)
	}
	if (t.Secret == "") == (t.Username == "" || t.Password == "") {
		return fmt.Errorf("turn server %q: give either user and pass, or secret", t.URL)
	}
	return nil
}

// defaultRelayWait: see Config.RelayWait.
const defaultRelayWait = 1500 * time.Millisecond

// extTURNTTL is the lifetime of credentials we derive from a shared secret.
const extTURNTTL = time.Hour

// hubTURNWait bounds asking a hub for credentials before a punch.
const hubTURNWait = 2 * time.Second

// relayURIs collects relay servers with credentials for one ICE session: the
// configured ones and those of every connected hub (credentials fetched over
// signaling, cached and renewed by the hub client before they expire).
func (h *Host) relayURIs(ctx context.Context) []*stun.URI {
	if h.relayedSocket() {
		return nil // our socket is relayed already (docs/relay.md §1a)
	}
	// One allocation per hub: over UDP, or over TCP/TLS when UDP is blocked
	// (pion allocates on every URL it is given).
	nr, ok := h.NATResult()
	return h.relayURIsFor(ctx, !ok || nr.Type != natprobe.TypeUDPBlocked)
}

// relayURIsFor is relayURIs with the hubs' URLs of one kind: UDP, or TCP
// and TLS.
func (h *Host) relayURIsFor(ctx context.Context, wantUDP bool) []*stun.URI {
	var out []*stun.URI
	add := func(raw, user, pass string) {
		u, err := stun.ParseURI(raw)
		if err != nil || (u.Scheme != stun.SchemeTypeTURN && u.Scheme != stun.SchemeTypeTURNS) {
			return
		}
		u.Username, u.Password = user, pass
		out = append(out, u)
	}
	for _, t := range h.cfg.TURN {
		user, pass := t.Username, t.Password
		if t.Secret != "" {
			user = signal.TURNUsername(h.id.NodeID, h.cfg.Clock.Now().Add(extTURNTTL))
			pass = signal.TURNPassword([]byte(t.Secret), user)
		}
		add(t.URL, user, pass)
	}
	if h.cfg.NoHubTURN {
		return out
	}
	for _, c := range h.hubs {
		if !c.Registered() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, hubTURNWait)
		cr, err := c.TURNCredentials(cctx)
		cancel()
		if err != nil {
			if !errors.Is(err, signal.ErrNoTURN) {
				h.log.Debug("no relay credentials from hub", "hub", c.URL(), "err", err)
			}
			continue
		}
		for _, raw := range cr.URLs {
			u, err := stun.ParseURI(raw)
			if err == nil && (u.Proto == stun.ProtoTypeUDP) == wantUDP {
				add(raw, cr.Username, cr.Password)
			}
		}
	}
	return out
}

// turnHints are the credential-free relay hints of our endpoint record:
// "turn://host:port?transport=..." for each configured relay and each relay
// our hubs handed out (wire format, see docs/relay.md).
func (h *Host) turnHints() []string {
	var raw []string
	for _, t := range h.cfg.TURN {
		raw = append(raw, t.URL)
	}
	if !h.cfg.NoHubTURN {
		for _, c := range h.hubs {
			raw = append(raw, c.CachedTURNURLs()...)
		}
	}
	var out []string
	seen := map[string]bool{}
	for _, r := range raw {
		hint := hintOf(r)
		if hint != "" && !seen[hint] && len(out) < protocol.MaxTurns {
			seen[hint] = true
			out = append(out, hint)
		}
	}
	return out
}

// hintOf is the record's hint for a relay URL ("turn:host:port?..."):
// "turn://host:port?transport=udp|tcp" ("turns://" for TLS); "" when the
// URL does not parse or the hint would be too long.
func hintOf(raw string) string {
	u, err := stun.ParseURI(raw)
	if err != nil {
		return ""
	}
	scheme := "turn"
	if u.Scheme == stun.SchemeTypeTURNS {
		scheme = "turns"
	}
	hint := fmt.Sprintf("%s://%s?transport=%s", scheme, net.JoinHostPort(u.Host, fmt.Sprint(u.Port)), u.Proto)
	if len(hint) > protocol.MaxTurnLen {
		return ""
	}
	return hint
}

// relayWait is how long the caller's ICE prefers a direct path before it may
// nominate a relayed one: none when both NAT types are known and cannot be
// punched (natprobe.Punchable) and the pair has no IPv6 path to try (the NAT
// types describe IPv4 only; behind IPv6 firewalls a pair of symmetric IPv4
// NATs still punches), else RelayWait.
func (h *Host) relayWait(er *protocol.EndpointRecord) time.Duration {
	nr, ok := h.NATResult()
	if ok && er != nil {
		own, peer := nr.Type, natprobe.TypeFromWire(er.NatType)
		if own != natprobe.TypeUnknown && peer != natprobe.TypeUnknown && !natprobe.Punchable(own, peer) {
			h.mu.Lock()
			ownV6 := hasGlobalV6(h.pub.last.Endpoints)
			h.mu.Unlock()
			if !ownV6 || !hasGlobalV6(er.Endpoints) {
				return 0
			}
		}
	}
	return h.cfg.RelayWait
}

// hasGlobalV6 reports whether endpoints list a global IPv6 literal.
func hasGlobalV6(endpoints []string) bool {
	for _, ep := range endpoints {
		host, _, err := protocol.ParseEndpointURL(ep)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.To4() == nil && ip.IsGlobalUnicast() {
			return true
		}
	}
	return false
}

// relayPath is a QUIC transport over an ICE agent whose selected pair uses
// our TURN allocation. It owns the ICE session; close tears both down.
type relayPath struct {
	tr   *quic.Transport
	ln   *quic.Listener
	is   *iceSession
	once sync.Once
}

// newRelayPath builds the transport over is's connection and accepts Mode A
// (and expected Mode B) connections the peer opens through it.
func (h *Host) newRelayPath(is *iceSession) (*relayPath, error) {
	conn := is.iceConn()
	if conn == nil {
		return nil, fmt.Errorf("%w: relayed pair has no ICE connection", ErrICEFailed)
	}
	rp := &relayPath{is: is, tr: &quic.Transport{Conn: newICEPacketConn(conn)}}
	ln, err := rp.tr.Listen(h.id.ServerTLS(h.agentBySNI), relayQUICConfig(h.cfg.HandshakeLimit))
	if err != nil {
		_ = rp.tr.Close()
		return nil, fmt.Errorf("relay quic listen: %w", err)
	}
	rp.ln = ln
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.acceptFrom(ln)
	}()
	return rp, nil
}

func (rp *relayPath) close() {
	rp.once.Do(func() {
		_ = rp.ln.Close()
		// The agent first: quic-go's Transport.Close only sets a read
		// deadline on a conn it did not open, which pion's conn ignores;
		// closing the agent ends the blocked read.
		rp.is.Close()
		_ = rp.tr.Close()
	})
}

// relayQUICConfig: no path MTU discovery through the relay (the allocation
// adds headers and the ICE conn cannot set DF).
func relayQUICConfig(handshake time.Duration) *quic.Config {
	c := quicConfig(handshake)
	c.DisablePathMTUDiscovery = true
	return c
}

// icePacketConn turns an ICE connection into the packet conn QUIC wants: it
// reads from and writes to the selected pair. The local address is a
// snapshot: pion returns nil once the pair is gone, and quic-go asks for it
// while tearing down.
type icePacketConn struct {
	c     *ice.Conn
	local net.Addr
}

func newICEPacketConn(c *ice.Conn) *icePacketConn {
	local := c.LocalAddr()
	if local == nil {
		local = &net.UDPAddr{}
	}
	return &icePacketConn{c: c, local: local}
}

func (p *icePacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, err := p.c.Read(b)
	if err != nil {
		return n, nil, err
	}
	from := p.c.RemoteAddr()
	if from == nil {
		from = &net.UDPAddr{}
	}
	return n, from, nil
}

func (p *icePacketConn) WriteTo(b []byte, _ net.Addr) (int, error) { return p.c.Write(b) }
func (p *icePacketConn) Close() error                              { return p.c.Close() }
func (p *icePacketConn) LocalAddr() net.Addr                       { return p.local }
func (p *icePacketConn) SetDeadline(t time.Time) error             { return p.c.SetDeadline(t) }
func (p *icePacketConn) SetReadDeadline(t time.Time) error         { return p.c.SetReadDeadline(t) }
func (p *icePacketConn) SetWriteDeadline(t time.Time) error        { return p.c.SetWriteDeadline(t) }

// pathOf names the path of a punched connection: relayed when ICE's pair
// uses a relay candidate on either side, direct on D6 evidence, else punched.
func pathOf(relayed, direct bool) PathType {
	switch {
	case relayed:
		return PathRelayed
	case direct:
		return PathDirect
	}
	return PathPunched
}

// noteConnection counts a pooled connection by role, path type and NAT pair,
// with its time to connection (the first bytes exchanged over it).
func (h *Host) noteConnection(role string, path PathType, natPair string, took time.Duration) {
	h.m.conns.WithLabelValues(role, string(path), natPair).Inc()
	h.m.connTime.WithLabelValues(string(path)).Observe(took.Seconds())
}
