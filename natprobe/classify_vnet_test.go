package natprobe_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/natprobe/natsim"
)

const testTimeout = 400 * time.Millisecond

func newWorld(t *testing.T, opts ...natsim.Options) *natsim.World {
	t.Helper()
	w, err := natsim.NewWorld(opts...)
	if err != nil {
		t.Fatalf("NewWorld: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("world close: %v", err)
		}
	})
	return w
}

func classifyHost(t *testing.T, w *natsim.World, h *natsim.Host, cfg natprobe.ClassifyConfig) natprobe.Result {
	t.Helper()
	conn, err := h.Net.ListenPacket("udp4", h.Bind(0))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	cfg.Conn = conn
	if cfg.Servers == nil {
		cfg.Servers = w.STUNServers()
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = testTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := natprobe.Classify(ctx, cfg)
	if err != nil {
		t.Fatalf("Classify: %v", err)
	}
	t.Logf("%s: %s in %v\n  trace: %q", h.Kind, res, res.Duration, res.Trace)
	return res
}

func TestClassifyVNet(t *testing.T) {
	for _, kind := range natprobe.AllTypes {
		t.Run(string(kind), func(t *testing.T) {
			w := newWorld(t)
			h, err := w.AddNAT(kind)
			if err != nil {
				t.Fatalf("AddNAT: %v", err)
			}
			res := classifyHost(t, w, h, natprobe.ClassifyConfig{})
			if res.Type != kind {
				t.Fatalf("classified %s as %s", kind, res)
			}
			if kind == natprobe.TypeUDPBlocked {
				if res.MappedAddr != nil {
					t.Fatalf("blocked host has mapped address %v", res.MappedAddr)
				}
				return
			}
			if !res.PublicIP.Equal(h.PublicIP) {
				t.Fatalf("public IP %v, want %v", res.PublicIP, h.PublicIP)
			}
			if res.MappedPort == 0 {
				t.Fatalf("no mapped port")
			}
			if got := res.Type.WireNATType(); got == 0 {
				t.Fatalf("wire type 0 for %s", res.Type)
			}
		})
	}
}

// With a single-IP server the classifier must fall back to the echo probe
// (from a WAN peer the host never contacted) to tell full cone from
// address-restricted, and to a second server for the mapping test.
func TestClassifyEchoProbe(t *testing.T) {
	for _, kind := range []natprobe.NATType{natprobe.TypeFullCone, natprobe.TypeAddressRestricted, natprobe.TypePortRestricted, natprobe.TypeSymmetric} {
		t.Run(string(kind), func(t *testing.T) {
			_, peer, servers, conn := echoWorld(t, kind)
			mux := newTestMux(conn)
			t.Cleanup(mux.close)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := natprobe.Classify(ctx, natprobe.ClassifyConfig{
				Conn:        conn,
				Servers:     servers,
				Timeout:     testTimeout,
				EchoProbe:   mux.echoProbe(peer),
				InstallHook: mux.install,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s\n  trace: %q", kind, res, res.Trace)
			if res.Type != kind {
				t.Fatalf("classified %s as %s", kind, res)
			}
			if mux.foreign.Load() == 0 && kind == natprobe.TypeFullCone {
				t.Fatalf("echo never reached the host")
			}
		})
	}
}

// echoWorld is the single-IP-server setup of the echo tests: a host behind
// kind, a WAN peer the host never contacted (for the echo), the STUN servers
// (the world's plus a second single-IP one for the mapping test) and the
// host's socket.
func echoWorld(t *testing.T, kind natprobe.NATType) (h, peer *natsim.Host, servers []string, conn net.PacketConn) {
	t.Helper()
	w := newWorld(t, natsim.Options{SingleIPSTUN: true})
	h, err := w.AddNAT(kind)
	if err != nil {
		t.Fatal(err)
	}
	if peer, err = w.AddOpenHost(); err != nil {
		t.Fatal(err)
	}
	servers = append(w.STUNServers(), secondServer(t, w))
	if conn, err = h.Net.ListenPacket("udp4", h.Bind(0)); err != nil {
		t.Fatal(err)
	}
	return h, peer, servers, conn
}

// secondServer starts a plain (single-IP) STUN server on another WAN host.
func secondServer(t *testing.T, w *natsim.World) string {
	t.Helper()
	h, err := w.AddOpenHost()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natprobe.NewServer(natprobe.ServerConfig{Net: h.Net, Addr: h.Bind(3478)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv.Addr().String()
}

// testMux plays the host's socket demultiplexer: it owns the reads, hands
// STUN to the classifier's hook and counts everything else.
type testMux struct {
	conn    net.PacketConn
	mu      sync.Mutex
	hook    func([]byte, net.Addr) bool
	echoes  chan struct{}
	foreign atomic.Int64
	done    chan struct{}
}

func newTestMux(conn net.PacketConn) *testMux {
	m := &testMux{conn: conn, echoes: make(chan struct{}, 4), done: make(chan struct{})}
	go m.run()
	return m
}

func (m *testMux) run() {
	defer close(m.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := m.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m.mu.Lock()
		h := m.hook
		m.mu.Unlock()
		if h != nil && h(buf[:n], from) {
			continue
		}
		m.foreign.Add(1)
		if string(buf[:n]) == "echo" {
			select {
			case m.echoes <- struct{}{}:
			default:
			}
		}
	}
}

func (m *testMux) install(h func([]byte, net.Addr) bool) (func(), error) {
	m.mu.Lock()
	m.hook = h
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		m.hook = nil
		m.mu.Unlock()
	}, nil
}

func (m *testMux) close() {
	_ = m.conn.Close()
	<-m.done
}

func (m *testMux) echoProbe(peer *natsim.Host) func(context.Context, *net.UDPAddr) (bool, error) {
	return func(ctx context.Context, claimed *net.UDPAddr) (bool, error) {
		pc, err := peer.Net.ListenPacket("udp4", peer.Bind(0))
		if err != nil {
			return false, err
		}
		defer pc.Close()
		if _, err := pc.WriteTo([]byte("echo"), claimed); err != nil {
			return false, err
		}
		t := time.NewTimer(300 * time.Millisecond)
		defer t.Stop()
		select {
		case <-m.echoes:
			return true, nil
		case <-t.C:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// A server on caller-supplied sockets leaves them open on Close.
func TestServerCallerConns(t *testing.T) {
	w := newWorld(t, natsim.Options{NoSTUN: true})
	h, err := w.AddOpenHost()
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Net.ListenPacket("udp4", h.Bind(4000))
	if err != nil {
		t.Fatal(err)
	}
	alt, err := h.Net.ListenPacket("udp4", h.Bind(4001))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natprobe.NewServer(natprobe.ServerConfig{Conns: natprobe.ServerConns{Primary: p, AltPort: alt}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := w.AddNAT(natprobe.TypePortRestricted)
	if err != nil {
		t.Fatal(err)
	}
	res := classifyHost(t, w, client, natprobe.ClassifyConfig{Servers: []string{srv.Addr().String()}})
	// One IP only and no echo probe: port-restricted is still provable
	// (the change-port reply is blocked), the mapping test uses the other port.
	if res.Type != natprobe.TypePortRestricted {
		t.Fatalf("got %s", res)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	// Both sockets still work.
	for _, c := range []net.PacketConn{p, alt} {
		if _, err := c.WriteTo([]byte("x"), p.LocalAddr()); err != nil {
			t.Fatalf("socket closed by server: %v", err)
		}
	}
	_ = p.Close()
	_ = alt.Close()
}
