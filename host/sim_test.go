package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/natprobe/natsim"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
)

// sim is a vnet world with an in-process hub (real TCP on loopback; vnet has
// no TCP) and an open bootstrap host on the WAN.
type sim struct {
	t        testing.TB
	w        *natsim.World
	hubMu    sync.Mutex
	hub      *signal.Hub
	srv      *http.Server
	hubAt    string // loopback host:port, kept across restarts
	hubURL   string
	boot     *Host
	bootAt   string
	turn     *signal.TURNAuth // the hub's relay credentials (TURN server on an open vnet host)
	relay    *signal.TURNServer
	relayReg *prometheus.Registry
}

func testLogger() *slog.Logger {
	if os.Getenv("A2AL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func vnetICETimers() ICETimers {
	return ICETimers{CredWait: 5 * time.Second, Connect: 6 * time.Second, Check: 50 * time.Millisecond,
		Disconnected: 2 * time.Second, Failed: 5 * time.Second, Keepalive: time.Second}
}

func newSim(t testing.TB, latency time.Duration) *sim {
	t.Helper()
	return newSimTURN(t, latency, signal.TURNAuthConfig{}, signal.TURNLimits{})
}

// simTURNSecret is the sim relay's HMAC secret (a coturn-style shared secret).
const simTURNSecret = "sim-turn-shared-secret"

// newSimTURN is newSim with the relay's credential and limit settings.
func newSimTURN(t testing.TB, latency time.Duration, auth signal.TURNAuthConfig, lim signal.TURNLimits) *sim {
	t.Helper()
	w, err := natsim.NewWorld(natsim.Options{MinDelay: latency})
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{t: t, w: w, hubAt: "127.0.0.1:0"}
	s.startTURN(auth, lim)
	s.startHub()
	s.hubURL = "ws://" + s.hubAt
	t.Cleanup(func() {
		s.stopHub()
		w.Close()
	})
	bh, err := w.AddOpenHost()
	if err != nil {
		t.Fatal(err)
	}
	s.boot = s.startHost(bh, false)
	s.bootAt = bh.Bind(4121)
	return s
}

// startHub runs a fresh hub on s.hubAt (the same port after a stop).
func (s *sim) startHub() {
	s.t.Helper()
	s.hubMu.Lock()
	defer s.hubMu.Unlock()
	cfg := signal.DefaultHubConfig()
	cfg.Logger = testLogger()
	cfg.TURN = s.turn
	hub, err := signal.NewHub(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", s.hubAt)
	if err != nil {
		hub.Close()
		s.t.Fatal(err)
	}
	s.hubAt = ln.Addr().String()
	s.hub, s.srv = hub, &http.Server{Handler: hub.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln)
}

// startTURN runs the hub's TURN server (UDP) on an open host of the world;
// the hub hands out its credentials.
func (s *sim) startTURN(auth signal.TURNAuthConfig, lim signal.TURNLimits) {
	s.t.Helper()
	th, err := s.w.AddOpenHost()
	if err != nil {
		s.t.Fatal(err)
	}
	pc, err := th.Net.ListenPacket("udp4", th.Bind(3480))
	if err != nil {
		s.t.Fatal(err)
	}
	s.relayReg = prometheus.NewRegistry()
	auth.URLs = []string{"turn:" + th.Bind(3480) + "?transport=udp"}
	auth.Secret = []byte(simTURNSecret)
	s.turn, err = signal.NewTURNAuth(auth)
	if err != nil {
		s.t.Fatal(err)
	}
	s.relay, err = signal.NewTURNServer(signal.TURNServerConfig{Auth: s.turn, PacketConn: pc, RelayIP: th.IP,
		RelayBind: th.IP.String(), Net: th.Net, Logger: testLogger(), Limits: lim, Registerer: s.relayReg})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { s.relay.Close() })
}

// stopHub takes the hub down: every node connection is dropped and nothing
// listens on its port until startHub.
func (s *sim) stopHub() {
	s.hubMu.Lock()
	defer s.hubMu.Unlock()
	if s.srv == nil {
		return
	}
	_ = s.srv.Close()
	_ = s.hub.Close()
	s.srv, s.hub = nil, nil
}

func (s *sim) startHost(nh *natsim.Host, withHub bool) *Host {
	return s.startHostCfg(nh, withHub, func(*Config) {})
}

func (s *sim) startHostCfg(nh *natsim.Host, withHub bool, mod func(*Config)) *Host {
	s.t.Helper()
	pc, err := nh.Net.ListenPacket("udp4", nh.Bind(4121))
	if err != nil {
		s.t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cfg := Config{
		Key: key, PacketConn: pc, Net: nh.Net, STUNServers: s.w.STUNServers(),
		Logger: testLogger(), ICE: vnetICETimers(), PunchTimeout: 15 * time.Second,
		NATTimeout: 500 * time.Millisecond, DisableMaintenance: true, HandshakeLimit: 3 * time.Second,
	}
	if withHub {
		cfg.HubURLs = []string{s.hubURL}
	}
	mod(&cfg)
	h, err := New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { h.Close() })
	return h
}

// addNode creates a host behind a NAT of the given kind, bootstraps it, waits
// for its hub registration, classifies its NAT and publishes its record.
func (s *sim) addNode(kind natprobe.NATType) (*Host, *protocol.EndpointRecord) {
	s.t.Helper()
	return s.addNodeCfg(kind, func(*Config) {})
}

// addNodeCfg is addNode with a config change.
func (s *sim) addNodeCfg(kind natprobe.NATType, mod func(*Config)) (*Host, *protocol.EndpointRecord) {
	s.t.Helper()
	nh, err := s.w.AddNAT(kind)
	if err != nil {
		s.t.Fatal(err)
	}
	h := s.startHostCfg(nh, true, mod)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.Bootstrap(ctx, s.bootAt); err != nil {
		s.t.Fatalf("bootstrap %s: %v", kind, err)
	}
	waitFor(s.t, "hub registration", func() bool { return h.HubsRegistered() == 1 })
	if _, err := h.ClassifyNAT(ctx); err != nil {
		s.t.Fatalf("classify %s: %v", kind, err)
	}
	rec, err := h.Publish(ctx)
	if err != nil {
		s.t.Fatalf("publish %s: %v", kind, err)
	}
	er, err := protocol.ParseEndpointRecord(rec)
	if err != nil {
		s.t.Fatal(err)
	}
	return h, er
}

func TestVNetPunchPair(t *testing.T) {
	s := newSim(t, 0)
	a, _ := s.addNode(natprobe.TypePortRestricted)
	b, erB := s.addNode(natprobe.TypePortRestricted)
	if nr, _ := a.NATResult(); nr.Type != natprobe.TypePortRestricted {
		t.Logf("note: A classified as %s", nr.Type)
	}
	a.sched.Enqueue(b.NodeID(), erB, PrioHigh)
	waitFor(t, "punch to finish", func() bool { return len(a.Punches()) > 0 })
	p := a.Punches()[0]
	t.Logf("punch: %+v", p)
	if !p.OK {
		t.Fatalf("punch failed: %s", p.Reason)
	}
	if !a.pool.HasConn(b.NodeID()) {
		t.Fatal("no pooled connection after success")
	}
	waitFor(t, "callee pooled", func() bool { return b.pool.HasConn(a.NodeID()) })
	remote, _ := a.pool.RemoteAddr(b.NodeID())
	before := a.pool.Stats().SentDatagrams.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.node.FindNode(ctx, remote, a.NodeID()); err != nil {
		t.Fatalf("FIND_NODE over the pool: %v", err)
	}
	if a.pool.Stats().SentDatagrams.Load() == before {
		t.Fatal("FIND_NODE did not travel over Mode B")
	}
}
