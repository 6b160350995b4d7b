package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v2"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/clock"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
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
			got, to, err := raceDial(ctx, clock.Real{}, targets, happyEyeballsStagger, f.dial, func(string) {})
			if err != nil || got != tc.want || familyName(to.IP) != tc.want {
				t.Fatalf("won %q via %v (err %v), want %s", got, to, err, tc.want)
			}
		})
	}
	f := &fakeDial{refused: map[string]bool{"ipv4": true, "ipv6": true}}
	if _, _, err := raceDial(context.Background(), clock.Real{}, targets, time.Hour, f.dial, func(string) {}); err == nil || f.tried.Load() != 2 {
		t.Fatalf("all refused: err %v after %d attempts, want an error after 2 (a failure starts the next one)", err, f.tried.Load())
	}
	if _, _, err := raceDial(context.Background(), clock.Real{}, nil, time.Hour, f.dial, func(string) {}); !errors.Is(err, errNoTargets) {
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
	got, _, err := raceDial(context.Background(), clock.Real{}, targets, time.Millisecond, dial, func(v string) {
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

func newHostAt(t *testing.T, laddr string) *Host {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	h, err := New(Config{Key: key, ListenAddr: laddr, Logger: testLogger(), DisableMaintenance: true, DisableNAT: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// The DHT over both families: an IPv6-only node and an IPv4-only node join
// through a dual-stack one; the IPv6-only node publishes an IPv6 endpoint
// that the IPv4-only node resolves (through the dual-stack node) and the
// dual-stack node dials over IPv6. Contacts keep their family's IP length.
func TestDHTAcrossFamilies(t *testing.T) {
	t.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	dual := newDualHost(t)
	v6 := newHostAt(t, "[::1]:0")
	v4 := newHostAt(t, "127.0.0.1:0")
	if v6.fam != (transport.Families{V6: true}) || v4.fam != (transport.Families{V4: true}) {
		t.Fatalf("families: %v %v", v6.fam, v4.fam)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	port := strconv.Itoa(dual.LocalAddr().(*net.UDPAddr).Port)
	if err := v6.Bootstrap(ctx, "[::1]:"+port); err != nil {
		t.Fatalf("IPv6-only bootstrap: %v", err)
	}
	if err := v4.Bootstrap(ctx, "127.0.0.1:"+port); err != nil {
		t.Fatalf("IPv4-only bootstrap: %v", err)
	}
	// A seed of a family the socket lacks is refused up front.
	if err := v4.Bootstrap(ctx, "[::1]:"+port); err == nil {
		t.Error("IPv4-only node accepted an IPv6 seed")
	}
	rec, err := v6.Publish(ctx)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	er, err := protocol.ParseEndpointRecord(rec)
	if err != nil || len(er.Endpoints) == 0 || !slices.ContainsFunc(er.Endpoints, func(s string) bool { return s == "quic://[::1]:"+strconv.Itoa(v6.LocalAddr().(*net.UDPAddr).Port) }) {
		t.Fatalf("IPv6-only node published %v (%v)", er, err)
	}
	// Publishing replicates in the background; wait until the dual-stack node holds it.
	for len(dual.Node().LocalStoreGet(v6.NodeID(), protocol.RecTypeEndpoint)) == 0 {
		if ctx.Err() != nil {
			t.Fatal("the record never reached the dual-stack node")
		}
		time.Sleep(20 * time.Millisecond)
	}
	got, err := v4.endpointRecord(ctx, v6.NodeID(), nil)
	if err != nil || got.Address != v6.Address() {
		t.Fatalf("IPv4-only node resolving the IPv6-only node: %v %v", got, err)
	}
	if _, err := v4.ResolveEndpoint(ctx, got.Endpoints[0]); err == nil {
		t.Error("IPv4-only node claims to reach an IPv6 endpoint")
	}
	for _, c := range dual.Node().BootstrapCandidateAddrs(8) {
		ua := c.(*net.UDPAddr)
		if ua.IP.To4() == nil && len(ua.IP) != net.IPv6len || ua.IP.To4() != nil && len(ua.IP) != net.IPv4len {
			t.Errorf("dual-stack node keeps contact %v with a %d-byte IP", ua, len(ua.IP))
		}
	}
	go func() {
		if c, err := v6.Accept(ctx); err == nil {
			<-c.Context().Done()
		}
	}()
	c, err := dual.dialDirect(ctx, got)
	if err != nil {
		t.Fatalf("dual-stack node dialling the IPv6-only node: %v", err)
	}
	defer c.Close()
	if familyName(c.RemoteAddr().(*net.UDPAddr).IP) != "ipv6" {
		t.Fatalf("connected over %v", c.RemoteAddr())
	}
}

func TestICENetworkTypes(t *testing.T) {
	for _, tc := range []struct {
		la   net.Addr
		want []ice.NetworkType
	}{
		{&net.UDPAddr{IP: net.IPv6unspecified, Port: 1}, []ice.NetworkType{ice.NetworkTypeUDP4, ice.NetworkTypeUDP6}},
		{&net.UDPAddr{IP: net.IPv4zero, Port: 1}, []ice.NetworkType{ice.NetworkTypeUDP4}},
		{&net.UDPAddr{IP: net.IPv6loopback, Port: 1}, []ice.NetworkType{ice.NetworkTypeUDP6}},
		{&net.UDPAddr{IP: net.IPv4(192, 168, 1, 2), Port: 1}, []ice.NetworkType{ice.NetworkTypeUDP4}},
	} {
		if got := iceNetworkTypes(tc.la); !slices.Equal(got, tc.want) {
			t.Errorf("%v: %v, want %v", tc.la, got, tc.want)
		}
	}
}

// FuzzEndpointAddrs: endpoint text comes from peers' records; literals only
// (a nil-context resolver would look names up), never a panic, never port 0
// or a zoned address.
func FuzzEndpointAddrs(f *testing.F) {
	for _, s := range []string{"quic://203.0.113.5:4121", "quic://[2001:db8::1]:4121", "udp://[::ffff:1.2.3.4]:7", "quic://[fe80::1%eth0]:1", "quic://:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // names fail at once instead of reaching a resolver
		as, err := endpointAddrs(ctx, nil, s)
		if err != nil {
			return
		}
		for _, a := range as {
			if a.Port == 0 || a.Zone != "" || (a.IP.To4() != nil && len(a.IP) != net.IPv4len) {
				t.Fatalf("%q gave %v", s, a)
			}
		}
	})
}

func TestNATServersFamily(t *testing.T) {
	all := []string{"203.0.113.2:3478", "[2001:db8::2]:3478", "stun.example:3478"}
	if got := natServers(all, transport.Families{V4: true, V6: true}); !slices.Equal(got, []string{"203.0.113.2:3478", "stun.example:3478"}) {
		t.Errorf("dual stack: %v", got)
	}
	if got := natServers(all, transport.Families{V6: true}); !slices.Equal(got, []string{"[2001:db8::2]:3478", "stun.example:3478"}) {
		t.Errorf("IPv6 only: %v", got)
	}
}

// On a dual-stack socket only IPv4 observed_addr reports decide our public
// address: more IPv6 reporter networks must not make the IPv6 address win
// (and flip SelfExtIP, evicting punched paths, whenever the counts change).
func TestObservedVotesIgnoreIPv6OnDualStack(t *testing.T) {
	h := newDualHost(t)
	report := func(obs *net.UDPAddr, reporters ...string) {
		for _, r := range reporters {
			h.onObserved(a2al.NodeID{}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(r)), protocol.EncodeUDPAddr(obs.IP, uint16(obs.Port)))
		}
	}
	v6 := &net.UDPAddr{IP: net.ParseIP("2001:db8:5::7"), Port: 4121}
	v4 := &net.UDPAddr{IP: net.IPv4(198, 51, 100, 7).To4(), Port: 5000}
	report(v6, "[2001:db8:1::1]:4121", "[2001:db8:2::1]:4121", "[2001:db8:3::1]:4121", "[2001:db8:4::1]:4121")
	report(v4, "203.0.113.1:4121", "192.0.2.1:4121", "8.8.4.1:4121")
	if ip := h.Node().SelfExtIP(); !ip.Equal(v4.IP) {
		t.Fatalf("SelfExtIP %v, want %v", ip, v4.IP)
	}
	if pub, _ := h.PeerPublic(); pub == nil || pub.String() != v4.String() {
		t.Fatalf("peer-agreed public address %v, want %v", pub, v4)
	}
}

// ICE on a dual-stack socket gathers host and server-reflexive candidates of
// both families through the one mux (STUN servers given as an IPv4 and an
// IPv6 literal, the latter needing stunURIs' brackets).
func TestICEGathersBothFamilies(t *testing.T) {
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	srv, err := natprobe.NewServer(natprobe.ServerConfig{Addr: "[::]:0", ReplySlack: 12})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	port := strconv.Itoa(srv.Addr().Port)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	h, err := New(Config{Key: key, ListenAddr: "[::]:0", Logger: testLogger(), DisableMaintenance: true, DisableNAT: true,
		IncludeLoopback: true, STUNServers: []string{"127.0.0.1:" + port, "[::1]:" + port}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if !h.fam.V4 || !h.fam.V6 {
		t.Skipf("no dual-stack socket here (%v)", h.fam)
	}
	ours, peer := memSigPair()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	is, err := startICE(ctx, h.env, ours, true, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	got := map[string]bool{} // "host/ipv4", "srflx/ipv6", ...
	for {
		m, err := peer.Recv(ctx)
		if err != nil {
			t.Fatalf("gathering did not finish: %v (have %v)", err, got)
		}
		if m.Kind == signal.KindDone {
			break
		}
		if m.Kind != signal.KindCand {
			continue
		}
		c, err := ice.UnmarshalCandidate(m.Candidate)
		if err != nil {
			t.Fatalf("candidate %q: %v", m.Candidate, err)
		}
		got[c.Type().String()+"/"+familyName(net.ParseIP(c.Address()))] = true
	}
	for _, want := range []string{"host/ipv4", "host/ipv6", "srflx/ipv4", "srflx/ipv6"} {
		if !got[want] {
			t.Errorf("no %s candidate; gathered %v", want, got)
		}
	}
}
