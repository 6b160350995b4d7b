package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

func TestDialTargetsOrder(t *testing.T) {
	eps := []string{
		"quic://203.0.113.1:1", "quic://203.0.113.2:2", "quic://[2001:db8::1]:3",
		"quic://203.0.113.1:1", // duplicate
		"quic://[2001:db8::2]:4", "quic://[::ffff:203.0.113.3]:5", "quic://0.0.0.0:6", "tcp://x:1",
	}
	str := func(as []*net.UDPAddr) []string {
		var out []string
		for _, a := range as {
			out = append(out, a.String())
		}
		return out
	}
	ctx := context.Background()
	dual := dialTargets(ctx, nil, eps, transport.Families{V4: true, V6: true}, 10)
	want := []string{"[2001:db8::1]:3", "203.0.113.1:1", "[2001:db8::2]:4", "203.0.113.2:2", "203.0.113.3:5"}
	if !slices.Equal(str(dual), want) {
		t.Errorf("dual stack: %v, want %v", str(dual), want)
	}
	if got := str(dialTargets(ctx, nil, eps, transport.Families{V4: true}, 10)); !slices.Equal(got, []string{"203.0.113.1:1", "203.0.113.2:2", "203.0.113.3:5"}) {
		t.Errorf("IPv4 only: %v", got)
	}
	if got := str(dialTargets(ctx, nil, eps, transport.Families{V6: true}, 10)); !slices.Equal(got, []string{"[2001:db8::1]:3", "[2001:db8::2]:4"}) {
		t.Errorf("IPv6 only: %v", got)
	}
	if got := str(dialTargets(ctx, nil, eps, transport.Families{V4: true, V6: true}, 2)); !slices.Equal(got, want[:2]) {
		t.Errorf("limit 2: %v, want one per family", got)
	}
}

// fakeDial answers per family: broken families hang until cancelled (a
// black-holed path), refused ones fail at once, working ones succeed.
type fakeDial struct {
	broken, refused map[string]bool
	tried           atomic.Int32
}

func (f *fakeDial) dial(ctx context.Context, a *net.UDPAddr) (string, error) {
	f.tried.Add(1)
	fam := familyName(a.IP)
	switch {
	case f.broken[fam]:
		<-ctx.Done()
		return "", ctx.Err()
	case f.refused[fam]:
		return "", errors.New("refused")
	}
	return fam, nil
}

func TestRaceDialFamilies(t *testing.T) {
	targets := dialTargets(context.Background(), nil,
		[]string{"quic://203.0.113.1:1", "quic://[2001:db8::1]:1"}, transport.Families{V4: true, V6: true}, 4)
	for _, tc := range []struct {
		name            string
		broken, refused map[string]bool
		want            string
	}{
		{"both work: IPv6 preferred", nil, nil, "ipv6"},
		{"IPv6 black-holed: falls back to IPv4", map[string]bool{"ipv6": true}, nil, "ipv4"},
		{"IPv6 refused: IPv4 at once", nil, map[string]bool{"ipv6": true}, "ipv4"},
		{"IPv4 broken: IPv6", map[string]bool{"ipv4": true}, nil, "ipv6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeDial{broken: tc.broken, refused: tc.refused}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, to, err := raceDial(ctx, targets, happyEyeballsStagger, f.dial, func(string) {})
			if err != nil || got != tc.want || familyName(to.IP) != tc.want {
				t.Fatalf("won %q via %v (err %v), want %s", got, to, err, tc.want)
			}
		})
	}
	f := &fakeDial{refused: map[string]bool{"ipv4": true, "ipv6": true}}
	if _, _, err := raceDial(context.Background(), targets, time.Hour, f.dial, func(string) {}); err == nil || f.tried.Load() != 2 {
		t.Fatalf("all refused: err %v after %d attempts, want an error after 2 (a failure starts the next one)", err, f.tried.Load())
	}
	if _, _, err := raceDial(context.Background(), nil, time.Hour, f.dial, func(string) {}); !errors.Is(err, errNoTargets) {
		t.Fatalf("no targets: %v", err)
	}
}

// An attempt that succeeds after another already won is discarded, and
// raceDial does not return before it ended.
func TestRaceDialDiscardsLateWinner(t *testing.T) {
	targets := dialTargets(context.Background(), nil,
		[]string{"quic://[2001:db8::1]:1", "quic://203.0.113.1:1"}, transport.Families{V4: true, V6: true}, 4)
	var discarded atomic.Int32
	dial := func(ctx context.Context, a *net.UDPAddr) (string, error) {
		if a.IP.To4() == nil {
			<-ctx.Done() // cancelled by the winner, then "succeeds" anyway
			return "late", nil
		}
		return "v4", nil
	}
	got, _, err := raceDial(context.Background(), targets, time.Millisecond, dial, func(v string) {
		if v == "late" {
			discarded.Add(1)
		}
	})
	if err != nil || got != "v4" || discarded.Load() != 1 {
		t.Fatalf("won %q err %v, late winner discarded %d times", got, err, discarded.Load())
	}
}

// newDualHost starts a host on a dual-stack loopback-capable socket.
func newDualHost(t *testing.T) *Host {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	h, err := New(Config{Key: key, ListenAddr: "[::]:0", Logger: testLogger(), DisableMaintenance: true, DisableNAT: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if !h.fam.V4 || !h.fam.V6 {
		t.Skipf("no dual-stack socket here (%v)", h.fam)
	}
	return h
}

// Mode A direct dial over real sockets: with both families working the
// connection runs over IPv6 even though the record lists IPv4 first; with
// the IPv6 endpoint dead it falls back to IPv4.
func TestDialDirectHappyEyeballs(t *testing.T) {
	t.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	a, b := newDualHost(t), newDualHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		for {
			c, err := b.Accept(ctx)
			if err != nil {
				return
			}
			go func() { <-c.Context().Done() }()
		}
	}()
	port := b.LocalAddr().(*net.UDPAddr).Port
	dead, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}) // bound, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	deadPort := dead.LocalAddr().(*net.UDPAddr).Port
	ep := func(ip string, p int) string { return "quic://" + net.JoinHostPort(ip, strconv.Itoa(p)) }
	for _, tc := range []struct {
		name string
		eps  []string
		want string
	}{
		{"both work", []string{ep("127.0.0.1", port), ep("::1", port)}, "ipv6"},
		{"IPv6 broken", []string{ep("::1", deadPort), ep("127.0.0.1", port)}, "ipv4"},
	} {
		er := &protocol.EndpointRecord{Address: b.Address(), Endpoints: tc.eps}
		c, err := a.dialDirect(ctx, er)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := familyName(c.RemoteAddr().(*net.UDPAddr).IP); got != tc.want {
			t.Errorf("%s: connected over %s (%v), want %s", tc.name, got, c.RemoteAddr(), tc.want)
		}
		c.Close()
	}
}
