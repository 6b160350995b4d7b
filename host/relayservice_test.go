package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/natprobe"
)

// lockedBuffer collects a host's log lines (written from many goroutines).
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// greetServer half-closes first: on each TCP connection it reads the
// caller's hello, sends greeting and shuts down its write side, then reads
// the caller's remaining bytes to EOF and hands hello and the rest to got.
// A caller sees it work only if the service's FIN reaches it while its own
// direction stays open, and if its own FIN reaches the service.
//
// (The caller speaks first because a tunnel stream reaches the service only
// with its first bytes: docs/services.md.)
func greetServer(t *testing.T, greeting []byte) (net.Addr, <-chan []byte) {
	t.Helper()
	got := make(chan []byte, 16)
	addr := tcpServer(t, 30*time.Second, func(c net.Conn) {
		hello := make([]byte, len(tunnelHello))
		if _, err := io.ReadFull(c, hello); err != nil {
			return
		}
		if _, err := c.Write(greeting); err != nil {
			return
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return
		}
		rest, err := io.ReadAll(c)
		if err != nil {
			return
		}
		select {
		case got <- append(hello, rest...):
		default:
		}
	})
	return addr, got
}

const tunnelHello = "hello "

// greetRoundTrip sends tunnelHello, reads the service's greeting to EOF,
// then sends msg and half-closes.
func greetRoundTrip(addr string, msg []byte) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte(tunnelHello)); err != nil {
		return nil, err
	}
	greeting, err := io.ReadAll(c)
	if err != nil {
		return greeting, fmt.Errorf("read greeting: %w", err)
	}
	if _, err := c.Write(msg); err != nil {
		return greeting, fmt.Errorf("write after the service's FIN: %w", err)
	}
	return greeting, c.(*net.TCPConn).CloseWrite()
}

// relayTunnel runs from's tunnel to remote as `a2al-node tunnel` does
// (resolving the address, no known UDP endpoint), on a loopback listener.
func relayTunnel(t *testing.T, from *Host, remote a2al.Address, onConnect func(*Conn)) (addr string, errc chan error, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc = make(chan error, 1)
	go func() { errc <- from.Tunnel(ctx, TunnelConfig{Remote: remote, Listener: ln, OnConnect: onConnect}) }()
	t.Cleanup(cancel)
	return ln.Addr().String(), errc, cancel
}

func tunnelResult(t *testing.T, errc chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(40 * time.Second):
		t.Fatal("tunnel did not return")
		return nil
	}
}

// TestVNetRelayServiceTunnel: a service on b (symmetric NAT) is reached
// through a's tunnel (symmetric NAT) over the hub's TURN relay; bytes flow
// both ways with half-close in each direction, on parallel TCP connections.
// A third symmetric node not on the allow-list reaches b over the relay too
// and is refused: its tunnel fails with the reason, and b logs the reason
// for a connection that came from the relay's address.
func TestVNetRelayServiceTunnel(t *testing.T) {
	s := newSim(t, 0)
	var logB lockedBuffer
	b, _ := s.addNodeCfg(natprobe.TypeSymmetric, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logB, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	a, _ := s.addNode(natprobe.TypeSymmetric)
	stranger, _ := s.addNode(natprobe.TypeSymmetric)
	learnRecord(t, a, b)
	learnRecord(t, stranger, b)
	greeting := bytes.Repeat([]byte("from b "), 10000)
	target, got := greetServer(t, greeting)
	if err := b.Serve(ServiceConfig{Name: "greet", Target: target.String(), Allow: []a2al.Address{a.Address()}}); err != nil {
		t.Fatal(err)
	}

	var conn atomic.Pointer[Conn]
	addr, errc, stop := relayTunnel(t, a, b.Address(), func(c *Conn) { conn.Store(c) })
	const conns = 4
	want := make(map[string]bool, conns)
	for i := range conns {
		want[fmt.Sprintf("from a %d %s", i, strings.Repeat("y", 60000))] = true
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for msg := range want {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, err := greetRoundTrip(addr, []byte(msg))
			if err != nil || !bytes.Equal(g, greeting) {
				errs <- fmt.Errorf("conn %.8q: greeting %d bytes, err %v", msg, len(g), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for range conns {
		select {
		case m := <-got:
			msg, ok := strings.CutPrefix(string(m), tunnelHello)
			if !ok || !want[msg] {
				t.Errorf("service received %d unexpected bytes %.20q", len(m), m)
			}
			delete(want, msg)
		case <-time.After(30 * time.Second):
			t.Fatal("a caller's bytes and FIN did not reach the service")
		}
	}
	c := conn.Load()
	if c == nil || c.Path != string(PathRelayed) {
		t.Fatalf("tunnel connection %+v, want a relayed path", c)
	}
	if pt, _, _ := b.pool.Path(a.NodeID()); pt != PathRelayed {
		t.Fatalf("service side pool path %q, want relayed", pt)
	}
	stop()
	if err := tunnelResult(t, errc); err != nil {
		t.Fatalf("tunnel: %v", err)
	}

	// The stranger: the relayed Mode A dial succeeds, the route is refused.
	_, errc2, _ := relayTunnel(t, stranger, b.Address(), func(*Conn) { t.Error("stranger admitted") })
	err := tunnelResult(t, errc2)
	if !errors.Is(err, ErrRouteRefused) || !strings.Contains(err.Error(), "not on the allow-list") {
		t.Fatalf("stranger's tunnel error %v", err)
	}
	var m dto.Metric
	if err := stranger.m.dialsA.WithLabelValues(string(PathRelayed), "ok").Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("stranger's relayed Mode A dials: %v (%v)", m.GetCounter().GetValue(), err)
	}
	if err := b.m.modeARefused.WithLabelValues("not_allowed").Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("refusals counted on b: %v (%v)", m.GetCounter().GetValue(), err)
	}
	relayHost, _, _ := net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(s.turn.URLs()[0], "turn:"), "?transport=udp"))
	var refused string
	for _, line := range strings.Split(logB.String(), "\n") {
		if strings.Contains(line, "application connection refused") && strings.Contains(line, stranger.Address().String()) {
			refused = line
		}
	}
	if !strings.Contains(refused, "not on the allow-list") || !strings.Contains(refused, "remote="+relayHost+":") {
		t.Fatalf("b's refusal log %q, want the reason and the relay %s as remote", refused, relayHost)
	}
}
