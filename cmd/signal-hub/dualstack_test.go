package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun"
)

func skipWithoutIPv6(t *testing.T) {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	c.Close()
}

// With the default wildcard addresses the hub serves WebSocket/HTTP and STUN
// on both families: one dual-stack socket each.
func TestHubListensOnBothFamilies(t *testing.T) {
	skipWithoutIPv6(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", ":0", "-stun-addr", "off", "-log-level", "warn"}, io.Discard, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"127.0.0.1", "::1"} {
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://" + net.JoinHostPort(ip, port) + "/healthz")
		if err != nil {
			t.Fatalf("healthz over %s: %v", ip, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("healthz over %s: %d", ip, resp.StatusCode)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no shutdown")
	}

	s, err := startSTUN(&options{stunAddr: ":0", stunSlack: 12}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sport := strconv.Itoa(s.Addr().Port)
	for _, tc := range []struct{ network, ip string }{{"udp4", "127.0.0.1"}, {"udp6", "::1"}} {
		raddr, _ := net.ResolveUDPAddr(tc.network, net.JoinHostPort(tc.ip, sport))
		c, err := net.DialUDP(tc.network, nil, raddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("STUN over %s: %v", tc.network, err)
		}
		resp := &stun.Message{Raw: buf[:n]}
		var xor stun.XORMappedAddress
		if err := resp.Decode(); err != nil || xor.GetFrom(resp) != nil {
			t.Fatalf("STUN over %s: bad answer", tc.network)
		}
		if la := c.LocalAddr().(*net.UDPAddr); !xor.IP.Equal(la.IP) || xor.Port != la.Port {
			t.Fatalf("STUN over %s: mapped %v, want %v", tc.network, xor, la)
		}
	}
}
