package natprobe_test

import (
	"net"
	"testing"
	"time"

	"github.com/a2alnode/a2al/clock"
	"github.com/a2alnode/a2al/natprobe"
)

// The STUN server answers one source at most BurstPerSource times at once
// (then RatePerSource per second) and counts the rest; other sources are
// unaffected. Before, every request was answered, so forged requests could
// aim any volume of replies at one address.
func TestServerRateLimitsPerSource(t *testing.T) {
	srv := startLoopbackServer(t, natprobe.ServerConfig{RatePerSource: 0.001, BurstPerSource: 10}, false)
	flooder := udpClient(t)
	const sent = 30
	for i := 0; i < sent; i++ {
		if _, err := flooder.WriteToUDP(build(t, 100).Raw, srv.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for st := srv.Stats(); st.Responses+st.RateLimited < sent; st = srv.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("server handled %d+%d of %d requests", st.Responses, st.RateLimited, sent)
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := 0
	buf := make([]byte, 1500)
	for {
		flooder.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, _, err := flooder.ReadFromUDP(buf); err != nil {
			break
		}
		got++
	}
	if st := srv.Stats(); got != 10 || st.RateLimited != sent-10 {
		t.Fatalf("replies to one source: got %d (rate limited %d), want 10 (%d)", got, st.RateLimited, sent-10)
	}
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if reply, _ := exchange(t, other, srv.Addr(), build(t, 100).Raw, 2*time.Second); reply == nil {
		t.Fatal("another source is not answered")
	}
}

// DisableRateLimit switches the limit off.
func TestServerRateLimitDisabled(t *testing.T) {
	srv := startLoopbackServer(t, natprobe.ServerConfig{DisableRateLimit: true}, false)
	c := udpClient(t)
	for i := 0; i < 2*natprobe.DefaultBurstPerSource; i++ {
		if reply, _ := exchange(t, c, srv.Addr(), build(t, 100).Raw, 2*time.Second); reply == nil {
			t.Fatalf("request %d not answered", i)
		}
	}
}

// Negative limits are refused before any socket opens; switching the limit
// off takes DisableRateLimit.
func TestServerConfigRejectsNegative(t *testing.T) {
	for _, cfg := range []natprobe.ServerConfig{{RatePerSource: -1}, {BurstPerSource: -1}, {ReplySlack: -1}} {
		cfg.Addr = "127.0.0.1:0"
		if s, err := natprobe.NewServer(cfg); err == nil {
			s.Close()
			t.Errorf("%+v: accepted", cfg)
		}
	}
	if d := natprobe.DefaultServerConfig(); d.RatePerSource != natprobe.DefaultRatePerSource || d.BurstPerSource != natprobe.DefaultBurstPerSource {
		t.Errorf("DefaultServerConfig %+v", d)
	}
}

// The buckets refill on the configured clock: with a fake one, a source over
// its burst is answered again exactly when the clock has moved on.
func TestServerRateLimitClock(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	srv := startLoopbackServer(t, natprobe.ServerConfig{RatePerSource: 1, BurstPerSource: 2, Clock: clk}, false)
	c := udpClient(t)
	for i := 0; i < 2; i++ {
		if reply, _ := exchange(t, c, srv.Addr(), build(t, 100).Raw, 2*time.Second); reply == nil {
			t.Fatalf("request %d within the burst not answered", i)
		}
	}
	if _, err := c.WriteToUDP(build(t, 100).Raw, srv.Addr()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().RateLimited == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("request over the burst not limited: %+v", srv.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	clk.Advance(time.Second)
	if reply, _ := exchange(t, c, srv.Addr(), build(t, 100).Raw, 2*time.Second); reply == nil {
		t.Fatal("request after one second of the fake clock not answered")
	}
}
