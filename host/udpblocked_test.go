package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"net"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/internal/testcert"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
)

// udpBlockedConn is a UDP socket behind a network that drops UDP: writes
// vanish, nothing arrives.
type udpBlockedConn struct{ net.PacketConn }

func (udpBlockedConn) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }

// tcpRelay is a hub whose TURN server listens on loopback TCP (or TLS)
// only and may relay to loopback peers.
type tcpRelay struct {
	hubURL, turnAddr string
	auth             *signal.TURNAuth
	tls              *tls.Config // nil: plain TCP
	mu               sync.Mutex
	srv              *signal.TURNServer
}

func tcpRelayHub(t *testing.T) *tcpRelay { return streamRelayHub(t, nil) }

// streamRelayHub is tcpRelayHub over TLS when tc is not nil.
func streamRelayHub(t *testing.T, tc *tls.Config) *tcpRelay {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &tcpRelay{turnAddr: ln.Addr().String(), tls: tc}
	url := "turn:" + r.turnAddr + "?transport=tcp"
	if tc != nil {
		url = "turns:" + r.turnAddr + "?transport=tcp"
	}
	r.auth, err = signal.NewTURNAuth(signal.TURNAuthConfig{URLs: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	r.start(t, ln)
	t.Cleanup(func() { r.mu.Lock(); r.srv.Close(); r.mu.Unlock() })
	cfg := signal.DefaultHubConfig()
	cfg.TURN = r.auth
	hub, err := signal.NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(hub.Handler())
	t.Cleanup(func() { hs.Close(); hub.Close() })
	r.hubURL = "ws://" + strings.TrimPrefix(hs.URL, "http://")
	return r
}

func (r *tcpRelay) start(t *testing.T, ln net.Listener) {
	t.Helper()
	if r.tls != nil {
		ln = tls.NewListener(ln, r.tls)
	}
	srv, err := signal.NewTURNServer(signal.TURNServerConfig{Auth: r.auth, Listeners: []net.Listener{ln},
		RelayIP: net.IPv4(127, 0, 0, 1), RelayBind: "127.0.0.1", AllowPeer: func(net.IP) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
}

// restart stops the TURN server (its streams close) and starts a new one
// on the same port.
func (r *tcpRelay) restart(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	r.srv.Close()
	r.mu.Unlock()
	ln, err := net.Listen("tcp4", r.turnAddr)
	if err != nil {
		t.Fatal(err)
	}
	r.start(t, ln)
}

// ubTestHost starts a host on loopback with the hub; blocked: its UDP
// writes vanish. mod may change the config.
func ubTestHost(t *testing.T, hubURL string, blocked bool, boot string, mod func(*Config)) *Host {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if blocked {
		pc = udpBlockedConn{pc}
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cfg := Config{Key: key, PacketConn: pc, Logger: testLogger(), DisableMaintenance: true, IncludeLoopback: true,
		HubURLs: []string{hubURL}, STUNServers: []string{"127.0.0.1:9"}, NATTimeout: 200 * time.Millisecond,
		HandshakeLimit: 3 * time.Second}
	if boot != "" {
		cfg.Bootstrap = []string{boot}
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	waitFor(t, "hub registration", func() bool { return h.HubsRegistered() == 1 })
	return h
}

// enterRelaySocket classifies a (which must find UDP blocked) and waits
// for its relay socket, as the maintenance loop does.
func enterRelaySocket(t *testing.T, ctx context.Context, a *Host) *net.UDPAddr {
	t.Helper()
	nr, err := a.ClassifyNAT(ctx)
	if err != nil || nr.Type != natprobe.TypeUDPBlocked {
		t.Fatalf("classification %v, %v; want udp-blocked", nr, err)
	}
	// Without the relay socket there is nothing worth publishing.
	before := counterValue(t, a.m.reg, "a2al_endpoint_publish_total", "")
	a.publishIfNeeded(ctx)
	if n := counterValue(t, a.m.reg, "a2al_endpoint_publish_total", ""); n != before {
		t.Fatalf("a UDP-blocked node without its relay socket published (%v records)", n)
	}
	a.useRelaySocket()
	waitFor(t, "relay socket", func() bool { _, _, ok := a.RelaySocket(); return ok })
	relayed, _, _ := a.RelaySocket()
	return relayed
}

// TestUDPBlockedJoinsThroughRelaySocket: a node whose UDP is dropped
// classifies itself udp-blocked, puts its socket on a TURN-over-TCP
// allocation at its hub, joins the DHT through it, publishes the relayed
// address with the relay as a hint, and is then both reachable (a peer
// dials it through the hub, Mode A and a FIND_NODE over Mode B) and able to
// dial, every path labelled relayed.
func TestUDPBlockedJoinsThroughRelaySocket(t *testing.T) {
	relay := tcpRelayHub(t)
	hubURL, turnAddr := relay.hubURL, relay.turnAddr
	b := ubTestHost(t, hubURL, false, "", nil)
	a := ubTestHost(t, hubURL, true, b.LocalAddr().String(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if err := a.Bootstrap(ctx); err == nil {
		t.Fatal("bootstrap over a blocked UDP socket succeeded")
	}
	relayed := enterRelaySocket(t, ctx, a)
	if _, server, _ := a.RelaySocket(); server != "turn:"+turnAddr+"?transport=tcp" {
		t.Fatalf("relay socket on %q, want the hub's TCP relay %s", server, turnAddr)
	}
	waitFor(t, "DHT join through the relay socket", func() bool { return a.node.DebugStatsData().RPCOK > 0 })
	if !a.relaySocketAnswers(ctx, a.sock.cur()) {
		t.Fatal("the TURN server does not answer the relay socket's keepalive")
	}

	rec, err := a.Publish(ctx)
	if err != nil {
		t.Fatalf("publish through the relay socket: %v", err)
	}
	er, err := protocol.ParseEndpointRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(er.Endpoints) != 1 || er.Endpoints[0] != "quic://"+relayed.String() || er.NatType != protocol.NATRestricted ||
		len(er.Turns) == 0 || er.Turns[0] != "turn://"+turnAddr+"?transport=tcp" {
		t.Fatalf("record %+v: want the relayed address %s, nat restricted, the TCP relay hint first", er, relayed)
	}
	if !relayedEndpoint(er, relayed) {
		t.Fatal("the record does not mark its endpoint as relayed")
	}
	// b's DHT reaches a at its relayed address over plain UDP (the TURN
	// permission a made when it bootstrapped through b lets b in).
	if _, err := b.node.FindNode(ctx, relayed, b.NodeID()); err != nil {
		t.Fatalf("FIND_NODE from b to a's relayed address: %v", err)
	}
	// (The DHT replicates the record to b in time; hand it over to not wait.)
	if err := b.node.LocalStorePut(a.NodeID(), rec); err != nil && !errors.Is(err, dht.ErrStaleRecord) {
		t.Fatal(err)
	}

	// b calls a through the hub: a's ICE runs over its relay socket.
	go echoAccept(ctx, a)
	c, err := b.Dial(ctx, a.Address())
	if err != nil {
		t.Fatalf("dial the UDP-blocked node: %v", err)
	}
	defer c.Close()
	if c.Path != string(PathRelayed) {
		t.Fatalf("b's path to a %q, want relayed", c.Path)
	}
	echoOver(t, ctx, c, "through the relay socket")
	waitFor(t, "callee pooled", func() bool { return a.pool.HasConn(b.NodeID()) })
	for _, x := range []struct {
		h    *Host
		peer *Host
	}{{a, b}, {b, a}} {
		if pt, _, _ := x.h.pool.Path(x.peer.NodeID()); pt != PathRelayed {
			t.Fatalf("pool path %q on %s, want relayed", pt, x.h.Address().String())
		}
	}
	findNodeOverPool(t, b, a)
	findNodeOverPool(t, a, b)

	// a dials b's published address: through its relay socket.
	recB, err := b.Publish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.node.LocalStorePut(b.NodeID(), recB); err != nil && !errors.Is(err, dht.ErrStaleRecord) {
		t.Fatal(err)
	}
	go echoAccept(ctx, b)
	c2, err := a.Dial(ctx, b.Address())
	if err != nil {
		t.Fatalf("the UDP-blocked node dials: %v", err)
	}
	defer c2.Close()
	if c2.Path != string(PathRelayed) {
		t.Fatalf("a's path to b %q, want relayed", c2.Path)
	}
	echoOver(t, ctx, c2, "out through the relay socket")

	// Close releases the allocation and stops the supervisor (the test's
	// leak check is the race detector plus Close returning).
	if err := a.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, _, ok := a.RelaySocket(); ok {
		t.Fatal("relay socket still attached after Close")
	}
}

// TestUDPBlockedRelaySocketRenewAndLeave: the relay socket is re-allocated
// after RelaySocketRenew (new relayed address, the DHT rejoined through it,
// the old allocation released) and left on a network change (the socket is
// UDP again, and the record no longer names the relay).
func TestUDPBlockedRelaySocketRenewAndLeave(t *testing.T) {
	hubURL := tcpRelayHub(t).hubURL
	b := ubTestHost(t, hubURL, false, "", nil)
	a := ubTestHost(t, hubURL, true, b.LocalAddr().String(), func(c *Config) { c.RelaySocketRenew = 2 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := enterRelaySocket(t, ctx, a)
	var second *net.UDPAddr
	waitFor(t, "a renewed relay socket", func() bool {
		second, _, _ = a.RelaySocket()
		return second != nil && second.String() != first.String()
	})
	if n := counterValue(t, a.m.reg, "a2al_relay_socket_events_total", "renewed"); n < 1 {
		t.Fatalf("renewals counted: %v", n)
	}
	// b reaches a at the new address once a rejoined through it.
	waitFor(t, "FIND_NODE to the renewed address", func() bool {
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := b.node.FindNode(fctx, second, b.NodeID())
		return err == nil
	})
	if p := a.Payload(); len(p.Endpoints) != 1 || p.Endpoints[0] != "quic://"+second.String() {
		t.Fatalf("payload endpoints %v after renewal, want %s", p.Endpoints, second)
	}

	if !a.leaveRelaySocket() {
		t.Fatal("leaveRelaySocket found no relay socket")
	}
	if _, _, ok := a.RelaySocket(); ok {
		t.Fatal("relay socket still attached")
	}
	// The socket reads UDP again: a datagram to a's own port arrives.
	rx := a.node.DebugStatsData().RxPackets
	waitFor(t, "a reads its UDP socket again", func() bool {
		fctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, _ = b.node.FindNode(fctx, a.LocalAddr(), b.NodeID()) // a's answer vanishes (blocked)
		return a.node.DebugStatsData().RxPackets > rx
	})
	if p := a.Payload(); slices.Contains(p.Endpoints, "quic://"+second.String()) {
		t.Fatalf("payload still names the relayed address: %v", p.Endpoints)
	}
}

// FuzzRelayedEndpoint: the relayed-endpoint marker reads untrusted record
// strings; it never panics, and it only marks an address the record lists.
func FuzzRelayedEndpoint(f *testing.F) {
	f.Add("quic://203.0.113.2:40000", "turn://203.0.113.2:3480?transport=tcp", "203.0.113.2", 40000)
	f.Add("quic://[2001:db8::2]:1", "turns://[2001:db8::2]:5349?transport=tcp", "2001:db8::2", 1)
	f.Add("quic://relay.example:1", "turn://relay.example:3480", "192.0.2.1", 1)
	f.Fuzz(func(t *testing.T, ep, hint, ip string, port int) {
		addr := &net.UDPAddr{IP: net.ParseIP(ip), Port: port}
		er := &protocol.EndpointRecord{Endpoints: []string{ep}, Turns: []string{hint}}
		if !relayedEndpoint(er, addr) {
			return
		}
		host, p, err := protocol.ParseEndpointURL(ep)
		if err != nil || int(p) != addr.Port || !net.ParseIP(host).Equal(addr.IP) {
			t.Fatalf("marked %v relayed though %q does not list it", addr, ep)
		}
	})
}

// TestUDPBlockedRelaySocketStreamLost: when the TURN server goes away (its
// stream to us closes), the node re-allocates once the server is back, and
// the DHT works at the new relayed address.
func TestUDPBlockedRelaySocketStreamLost(t *testing.T) {
	relay := tcpRelayHub(t)
	b := ubTestHost(t, relay.hubURL, false, "", nil)
	a := ubTestHost(t, relay.hubURL, true, b.LocalAddr().String(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := enterRelaySocket(t, ctx, a)
	relay.restart(t)
	var second *net.UDPAddr
	waitFor(t, "a new relay socket after the server restart", func() bool {
		second, _, _ = a.RelaySocket()
		return second != nil && second.String() != first.String()
	})
	if n := counterValue(t, a.m.reg, "a2al_relay_socket_events_total", "stream-lost"); n < 1 {
		t.Fatalf("stream losses counted: %v", n)
	}
	waitFor(t, "FIND_NODE to the new address", func() bool {
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := b.node.FindNode(fctx, second, b.NodeID())
		return err == nil
	})
}

// TestUDPBlockedRelaySocketOverTLS: a hub that offers TURN only over TLS
// carries the relay socket over a verified TLS stream; a certificate the
// node does not trust gets no allocation.
func TestUDPBlockedRelaySocketOverTLS(t *testing.T) {
	cert, pool, err := testcert.Loopback("a2al test relay")
	if err != nil {
		t.Fatal(err)
	}
	relay := streamRelayHub(t, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	b := ubTestHost(t, relay.hubURL, false, "", nil)
	a := ubTestHost(t, relay.hubURL, true, b.LocalAddr().String(), func(c *Config) { c.RelayRootCAs = pool })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	relayed := enterRelaySocket(t, ctx, a)
	if _, server, _ := a.RelaySocket(); server != "turns:"+relay.turnAddr+"?transport=tcp" {
		t.Fatalf("relay socket on %q, want the hub's TLS relay", server)
	}
	if p := a.Payload(); len(p.Turns) == 0 || p.Turns[0] != "turns://"+relay.turnAddr+"?transport=tcp" {
		t.Fatalf("hints %v, want the TLS relay first", p.Turns)
	}
	waitFor(t, "FIND_NODE to the relayed address", func() bool {
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := b.node.FindNode(fctx, relayed, b.NodeID())
		return err == nil
	})

	// Not trusted (system roots): no allocation.
	c := ubTestHost(t, relay.hubURL, true, b.LocalAddr().String(), nil)
	if nr, err := c.ClassifyNAT(ctx); err != nil || nr.Type != natprobe.TypeUDPBlocked {
		t.Fatalf("classification %v, %v", nr, err)
	}
	c.useRelaySocket()
	waitFor(t, "a refused TLS relay", func() bool {
		return counterValue(t, c.m.reg, "a2al_relay_socket_events_total", "failed") >= 1
	})
	if _, _, ok := c.RelaySocket(); ok {
		t.Fatal("relay socket over a TLS relay whose certificate is not trusted")
	}
}
