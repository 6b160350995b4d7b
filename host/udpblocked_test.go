package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
)

// udpBlockedConn is a UDP socket behind a network that drops UDP: writes
// vanish, nothing arrives.
type udpBlockedConn struct{ net.PacketConn }

func (udpBlockedConn) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }

// tcpRelayHub runs a hub whose TURN server listens on loopback TCP only and
// may relay to loopback peers.
func tcpRelayHub(t *testing.T) (hubURL, turnAddr string, srv *signal.TURNServer) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	turnAddr = ln.Addr().String()
	auth, err := signal.NewTURNAuth(signal.TURNAuthConfig{URLs: []string{"turn:" + turnAddr + "?transport=tcp"}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err = signal.NewTURNServer(signal.TURNServerConfig{Auth: auth, Listeners: []net.Listener{ln},
		RelayIP: net.IPv4(127, 0, 0, 1), RelayBind: "127.0.0.1", AllowPeer: func(net.IP) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cfg := signal.DefaultHubConfig()
	cfg.TURN = auth
	hub, err := signal.NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(hub.Handler())
	t.Cleanup(func() { hs.Close(); hub.Close() })
	return "ws://" + strings.TrimPrefix(hs.URL, "http://"), turnAddr, srv
}

// TestUDPBlockedJoinsThroughRelaySocket: a node whose UDP is dropped
// classifies itself udp-blocked, puts its socket on a TURN-over-TCP
// allocation at its hub, joins the DHT through it, publishes the relayed
// address with the relay as a hint, and is then both reachable (a peer
// dials it through the hub, Mode A and a FIND_NODE over Mode B) and able to
// dial, every path labelled relayed.
func TestUDPBlockedJoinsThroughRelaySocket(t *testing.T) {
	hubURL, turnAddr, _ := tcpRelayHub(t)
	mk := func(blocked bool, boot string) *Host {
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
		h, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		waitFor(t, "hub registration", func() bool { return h.HubsRegistered() == 1 })
		return h
	}
	b := mk(false, "")
	a := mk(true, b.LocalAddr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if err := a.Bootstrap(ctx); err == nil {
		t.Fatal("bootstrap over a blocked UDP socket succeeded")
	}
	nr, err := a.ClassifyNAT(ctx)
	if err != nil || nr.Type != natprobe.TypeUDPBlocked {
		t.Fatalf("classification %v, %v; want udp-blocked", nr, err)
	}
	a.useRelaySocket()
	waitFor(t, "relay socket", func() bool { _, _, ok := a.RelaySocket(); return ok })
	relayed, server, _ := a.RelaySocket()
	if server != "turn:"+turnAddr+"?transport=tcp" {
		t.Fatalf("relay socket on %q, want the hub's TCP relay %s", server, turnAddr)
	}
	waitFor(t, "DHT join through the relay socket", func() bool { return a.node.EstimatedNetworkSize() > 0 || len(a.node.BootstrapCandidateAddrs(4)) > 0 })

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
	if err := b.node.LocalStorePut(a.NodeID(), rec); err != nil {
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
	if err := a.node.LocalStorePut(b.NodeID(), recB); err != nil {
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
