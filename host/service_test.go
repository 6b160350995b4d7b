package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/internal/testserve"
)

// tcpServer serves handle on every connection accepted on a loopback port
// until the test ends; each connection is closed after handle and has the
// given deadline.
func tcpServer(t testing.TB, deadline time.Duration, handle func(net.Conn)) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return testserve.Serve(t, ln, deadline, handle)
}

// upperServer reads each TCP connection to EOF, then answers the bytes
// upper-cased and closes: it only answers if half-close reaches it.
func upperServer(t testing.TB) net.Addr {
	return tcpServer(t, 20*time.Second, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		c.Write(bytes.ToUpper(b))
	})
}

// startTunnel runs a's tunnel to b's address on a fresh local listener.
func startTunnel(t testing.TB, a, b *Host, remote a2al.Address) (addr string, errc chan error, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc = make(chan error, 1)
	go func() { errc <- a.Tunnel(ctx, TunnelConfig{Remote: remote, At: b.LocalAddr(), Listener: ln}) }()
	return ln.Addr().String(), errc, cancel
}

func roundTrip(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestServiceThroughTunnel: a service on b reached through a's tunnel, eight
// TCP connections at once, half-close carried end to end; the tunnel stops
// cleanly when its context ends.
func TestServiceThroughTunnel(t *testing.T) {
	a := loopbackHostCfg(t, Config{})
	b := loopbackHostCfg(t, Config{})
	// MaxStreams 3 < 8 connections: the rest wait for a slot, none is lost.
	if err := b.Serve(ServiceConfig{Name: "upper", Target: upperServer(t).String(), Allow: []a2al.Address{a.Address()}, MaxStreams: 3}); err != nil {
		t.Fatal(err)
	}
	addr, errc, stop := startTunnel(t, a, b, b.Address())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := fmt.Sprintf("hello %d %s", i, strings.Repeat("x", 100000))
			got, err := roundTrip(addr, msg)
			if err != nil || got != strings.ToUpper(msg) {
				errs <- fmt.Errorf("conn %d: %d bytes, err %v", i, len(got), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	stop()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("tunnel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tunnel did not stop")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("tunnel listener still open after stop")
	}
}

// TestServiceRefusesStranger: a caller not on the allow-list is refused with
// the reason on both sides (its tunnel fails with it, the host counts it).
func TestServiceRefusesStranger(t *testing.T) {
	a := loopbackHostCfg(t, Config{})
	b := loopbackHostCfg(t, Config{})
	if err := b.Serve(ServiceConfig{Name: "upper", Target: upperServer(t).String()}); err != nil {
		t.Fatal(err)
	}
	_, errc, stop := startTunnel(t, a, b, b.Address())
	defer stop()
	var err error
	select {
	case err = <-errc:
	case <-time.After(20 * time.Second):
		t.Fatal("tunnel was not refused")
	}
	if !errors.Is(err, ErrRouteRefused) || !strings.Contains(err.Error(), "not on the allow-list") {
		t.Fatalf("tunnel error %v", err)
	}
	var m dto.Metric
	if err := b.m.modeARefused.WithLabelValues("not_allowed").Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		n := m.GetCounter().GetValue()
		t.Fatalf("refusals counted: %v", n)
	}
	// --public lets the same caller in.
	c := loopbackHostCfg(t, Config{})
	if err := c.Serve(ServiceConfig{Name: "upper", Target: upperServer(t).String(), Public: true}); err != nil {
		t.Fatal(err)
	}
	addr, _, stop2 := startTunnel(t, a, c, c.Address())
	defer stop2()
	if got, err := roundTrip(addr, "hi"); err != nil || got != "HI" {
		t.Fatalf("public service: %q %v", got, err)
	}
}

// TestServiceConfigChecks: bad service configurations are refused up front.
func TestServiceConfigChecks(t *testing.T) {
	b := loopbackHostCfg(t, Config{})
	other := newRawPeer(t, "127.0.0.1", nil).id.Address
	for name, cfg := range map[string]ServiceConfig{
		"no target":    {Name: "x"},
		"bad target":   {Name: "x", Target: "nocolon"},
		"foreign addr": {Name: "x", Target: "127.0.0.1:1", Address: other},
		"no name":      {Target: "127.0.0.1:1"},
	} {
		if err := b.Serve(cfg); !errors.Is(err, ErrService) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := b.Serve(ServiceConfig{Name: "one", Target: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(ServiceConfig{Name: "two", Target: "127.0.0.1:2"}); !errors.Is(err, ErrService) {
		t.Fatalf("second service on one address: %v", err)
	}
}

// TestModeACaps: connections beyond the per-IP cap are refused with
// CodeLimit while another IP still gets in; the per-identity cap holds
// across IPs.
func TestModeACaps(t *testing.T) {
	b := loopbackHostCfg(t, Config{ModeA: ModeAConfig{MaxPerIP: 3, MaxPerPeer: 2}})
	go func() { // the application takes every connection and keeps it
		for {
			if _, err := b.Accept(context.Background()); err != nil {
				return
			}
		}
	}()
	hold := func(p *rawPeer) *quic.Conn {
		// The refusal may arrive while the handshake is still finishing on
		// our side (dial fails) or on the route stream (sendRoute fails).
		qc, err := p.tryDial(b)
		if err == nil {
			t.Cleanup(func() { qc.CloseWithError(0, "") })
			_, err = sendRoute(t, qc, dialerRouteBytes(b.Address(), 0))
		}
		if err != nil {
			var ae *quic.ApplicationError
			if errors.As(err, &ae) && ae.ErrorCode == CodeLimit {
				return nil
			}
			t.Fatalf("route: %v", err)
		}
		return qc
	}
	for i := range 3 {
		if hold(newRawPeer(t, "127.0.0.1", nil)) == nil {
			t.Fatalf("connection %d refused below the cap", i)
		}
	}
	if hold(newRawPeer(t, "127.0.0.1", nil)) != nil {
		t.Fatal("fourth connection from one IP admitted")
	}
	p := newRawPeer(t, "127.0.0.2", nil)
	if hold(p) == nil || hold(p) == nil {
		t.Fatal("other IP refused")
	}
	p.tr.Conn.(*net.UDPConn).Close()
	q := newRawPeer(t, "127.0.0.3", p.id.Key)
	if hold(q) != nil {
		t.Fatal("third connection of one identity admitted")
	}
}

// TestModeAIdleTimeout: a connection that keeps QUIC alive but does nothing
// is closed with CodeIdle.
func TestModeAIdleTimeout(t *testing.T) {
	b := loopbackHostCfg(t, Config{ModeA: ModeAConfig{IdleTimeout: 300 * time.Millisecond}})
	go func() {
		for {
			if _, err := b.Accept(context.Background()); err != nil {
				return
			}
		}
	}()
	qc := newRawPeer(t, "127.0.0.1", nil).dial(t, b)
	if _, err := sendRoute(t, qc, dialerRouteBytes(b.Address(), 0)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-qc.Context().Done():
	case <-time.After(15 * time.Second):
		t.Fatal("idle connection kept open")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != CodeIdle {
		t.Fatalf("close cause %v", err)
	}
}

func TestRemoteIPKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:1":            "192.0.2.7",
		"[::ffff:192.0.2.7]:1":   "192.0.2.7",
		"[2001:db8:1:2:3::9]:1":  "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::]:": "2001:db8:1:2::/64",
	} {
		a, err := net.ResolveUDPAddr("udp", in)
		if err != nil {
			t.Fatal(err)
		}
		if got := remoteIP(a); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}
