package signal

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun"
	"github.com/pion/turn/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testTURN is a hub with a TURN server on loopback (UDP and TCP).
type testTURN struct {
	hub  *testHub
	srv  *TURNServer
	auth *TURNAuth
	udp  string // host:port
	tcp  string
	reg  *prometheus.Registry
	clk  *fakeClock
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func startTURN(t *testing.T, lim TURNLimits) *testTURN {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Now()}
	tt := &testTURN{udp: pc.LocalAddr().String(), tcp: ln.Addr().String(), reg: prometheus.NewRegistry(), clk: clk}
	tt.auth, err = NewTURNAuth(TURNAuthConfig{TTL: 10 * time.Minute, Now: clk.Now,
		URLs: []string{"turn:" + tt.udp + "?transport=udp", "turn:" + tt.tcp + "?transport=tcp"}})
	if err != nil {
		t.Fatal(err)
	}
	tt.srv, err = NewTURNServer(TURNServerConfig{Auth: tt.auth, PacketConn: pc, Listeners: []net.Listener{ln},
		RelayIP: net.IPv4(127, 0, 0, 1), RelayBind: "127.0.0.1", AllowPeer: func(net.IP) bool { return true },
		Limits: lim, Registerer: tt.reg, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tt.srv.Close() })
	cfg := fastConfig()
	cfg.TURN = tt.auth
	tt.hub = startHub(t, cfg)
	return tt
}

// allocate runs a pion TURN client over UDP (or TCP) with the given credentials.
func (tt *testTURN) allocate(t *testing.T, tcp bool, user, pass string) (net.PacketConn, error) {
	t.Helper()
	var conn net.PacketConn
	server := tt.udp
	if tcp {
		server = tt.tcp
		c, err := net.Dial("tcp4", tt.tcp)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	} else {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	}
	cl, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: server, Conn: conn, Username: user, Password: pass,
		Realm: "a2al", RTO: 100 * time.Millisecond, LoggerFactory: pionLogs()})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close(); conn.Close() })
	return cl.Allocate()
}

// echoPeer is a UDP socket on loopback that answers what it gets.
func echoPeer(t *testing.T) (net.PacketConn, *int64Counter) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := &int64Counter{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			got.add(1)
			pc.WriteTo(b[:n], from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc, got
}

type int64Counter struct {
	mu sync.Mutex
	n  int64
}

func (c *int64Counter) add(d int64) { c.mu.Lock(); c.n += d; c.mu.Unlock() }
func (c *int64Counter) get() int64  { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

// roundTrip sends a packet through relay to peer until the echo comes back
// (a few tries: the first packets may race the channel binding).
func roundTrip(t *testing.T, relay net.PacketConn, peer net.Addr) error {
	t.Helper()
	b := make([]byte, 64)
	var err error
	for i := 0; i < 5; i++ {
		if _, err = relay.WriteTo([]byte("ping"), peer); err != nil {
			return err
		}
		relay.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
		var n int
		if n, _, err = relay.ReadFrom(b); err == nil {
			if string(b[:n]) != "ping" {
				return errors.New("bad echo")
			}
			return nil
		}
	}
	return err
}

func TestTURNCredentialsOverSignalingRelay(t *testing.T) {
	tt := startTURN(t, TURNLimits{})
	a := newIdent(t)
	c := newClient(t, tt.hub, a, nil)
	cr, err := c.TURNCredentials(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(cr.Username, ":"+a.idHex()) || len(cr.URLs) != 2 {
		t.Fatalf("credential %+v does not name our node id or lacks urls", cr)
	}
	if cr2, _ := c.TURNCredentials(ctxT(t)); cr2.Username != cr.Username || c.TURNRenewals() != 1 {
		t.Fatal("second request did not use the cached credential")
	}
	peer, _ := echoPeer(t)
	for _, tcp := range []bool{false, true} {
		relay, err := tt.allocate(t, tcp, cr.Username, cr.Password)
		if err != nil {
			t.Fatalf("allocate (tcp=%v): %v", tcp, err)
		}
		if err := roundTrip(t, relay, peer.LocalAddr()); err != nil {
			t.Fatalf("relay round trip (tcp=%v): %v", tcp, err)
		}
	}
	if got := testutil.ToFloat64(tt.srv.m.relayed.WithLabelValues("in")); got == 0 {
		t.Fatal("relayed bytes not counted")
	}
}

func TestTURNNoCredentialsWithoutTURN(t *testing.T) {
	th := startHub(t, fastConfig())
	c := newClient(t, th, newIdent(t), nil)
	if _, err := c.TURNCredentials(ctxT(t)); !errors.Is(err, ErrNoTURN) {
		t.Fatalf("err = %v, want ErrNoTURN", err)
	}
}

func TestTURNRefusesUnauthenticated(t *testing.T) {
	tt := startTURN(t, TURNLimits{})
	a, b := newIdent(t), newIdent(t)
	crA := tt.auth.Issue(a.id)
	crB := tt.auth.Issue(b.id)
	forged, _ := NewTURNAuth(TURNAuthConfig{URLs: tt.auth.URLs()}) // another secret
	crF := forged.Issue(a.id)
	cases := map[string][2]string{
		"no credentials":             {"", ""},
		"made-up username":           {"alice", "secret"},
		"A's name with B's password": {crA.Username, crB.Password},
		"B's name with A's password": {crB.Username, crA.Password},
		"A's name, other secret":     {crF.Username, crF.Password},
		"A's name, later expiry":     {strings.Replace(crA.Username, crA.Username[:3], "999", 1), crA.Password},
	}
	for name, c := range cases {
		if _, err := tt.allocate(t, false, c[0], c[1]); err == nil {
			t.Errorf("%s: allocation accepted", name)
		}
	}
	if _, err := tt.allocate(t, false, crA.Username, crA.Password); err != nil {
		t.Fatalf("valid credential refused: %v", err)
	}
}

func TestTURNExpiredCredentialRefused(t *testing.T) {
	tt := startTURN(t, TURNLimits{})
	a := newIdent(t)
	cr := tt.auth.Issue(a.id)
	tt.clk.Add(11 * time.Minute)
	if _, err := tt.allocate(t, false, cr.Username, cr.Password); err == nil {
		t.Fatal("expired credential created an allocation")
	}
	if got := testutil.ToFloat64(tt.srv.m.authFails.WithLabelValues("expired")); got == 0 {
		t.Fatal("expired refusal not counted")
	}
}

func TestTURNExpiredCredentialKeepsLiveAllocation(t *testing.T) {
	tt := startTURN(t, TURNLimits{})
	a := newIdent(t)
	cr := tt.auth.Issue(a.id)
	tt.clk.Add(9 * time.Minute)
	relay, err := tt.allocate(t, false, cr.Username, cr.Password)
	if err != nil {
		t.Fatal(err)
	}
	tt.clk.Add(2 * time.Minute) // credential expired, allocation (10 min) live
	// A new peer needs a CreatePermission, authenticated with the now
	// expired credential: allowed on the node's own live allocation.
	peer, _ := echoPeer(t)
	if err := roundTrip(t, relay, peer.LocalAddr()); err != nil {
		t.Fatalf("live allocation stopped working when its credential expired: %v", err)
	}
}

func TestTURNAllocationQuotaPerNode(t *testing.T) {
	tt := startTURN(t, TURNLimits{MaxAllocsPerNode: 2})
	a, b := newIdent(t), newIdent(t)
	crA := tt.auth.Issue(a.id)
	for i := 0; i < 2; i++ {
		if _, err := tt.allocate(t, false, crA.Username, crA.Password); err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
	}
	if _, err := tt.allocate(t, false, crA.Username, crA.Password); err == nil {
		t.Fatal("third allocation of one node accepted")
	}
	if _, err := tt.allocate(t, true, crA.Username, crA.Password); err == nil {
		t.Fatal("third allocation over TCP accepted")
	}
	crB := tt.auth.Issue(b.id)
	if _, err := tt.allocate(t, false, crB.Username, crB.Password); err != nil {
		t.Fatalf("another node's allocation refused: %v", err)
	}
	if allocs, nodes := tt.srv.Allocations(); allocs != 3 || nodes != 2 {
		t.Fatalf("allocations=%d nodes=%d, want 3 and 2", allocs, nodes)
	}
	if got := testutil.ToFloat64(tt.srv.m.allocs.WithLabelValues("quota")); got != 2 {
		t.Fatalf("quota refusals counted %v, want 2", got)
	}
}

func TestTURNBandwidthLimit(t *testing.T) {
	tt := startTURN(t, TURNLimits{AllocBandwidth: 1000}) // 1 kB/s, burst 64 KiB
	a := newIdent(t)
	cr := tt.auth.Issue(a.id)
	relay, err := tt.allocate(t, false, cr.Username, cr.Password)
	if err != nil {
		t.Fatal(err)
	}
	peer, got := echoPeer(t)
	if err := roundTrip(t, relay, peer.LocalAddr()); err != nil { // permission + channel
		t.Fatal(err)
	}
	// The clock does not move: only the 64 KiB burst may pass, ~60 of the
	// 300 packets of 1 kB (each counted once in, once out if echoed).
	payload := make([]byte, 1000)
	for i := 0; i < 300; i++ {
		relay.WriteTo(payload, peer.LocalAddr())
		time.Sleep(200 * time.Microsecond)
	}
	waitFor(t, "policer drops", func() bool {
		return testutil.ToFloat64(tt.srv.m.dropped.WithLabelValues("allocation")) > 0
	})
	time.Sleep(100 * time.Millisecond)
	if n := got.get(); n > 70 {
		t.Fatalf("peer received %d packets of 1 kB; the 64 KiB burst allows at most ~65", n)
	}
}

func TestTURNAllocationLifetimeCap(t *testing.T) {
	tt := startTURN(t, TURNLimits{AllocLifetime: 30 * time.Minute})
	a := newIdent(t)
	cr := tt.auth.Issue(a.id)
	relay, err := tt.allocate(t, false, cr.Username, cr.Password)
	if err != nil {
		t.Fatal(err)
	}
	peer, _ := echoPeer(t)
	if err := roundTrip(t, relay, peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	tt.clk.Add(31 * time.Minute)
	if err := roundTrip(t, relay, peer.LocalAddr()); err == nil {
		t.Fatal("allocation past its lifetime cap still relays")
	}
	if got := testutil.ToFloat64(tt.srv.m.dropped.WithLabelValues("lifetime")); got == 0 {
		t.Fatal("lifetime drops not counted")
	}
}

func TestTURNUsernameParse(t *testing.T) {
	a := newIdent(t)
	exp := time.Unix(1700000000, 0)
	u := TURNUsername(a.id, exp)
	e, id, err := ParseTURNUsername(u)
	if err != nil || !e.Equal(exp) || id != a.id {
		t.Fatalf("round trip: %v %v %v", e, id, err)
	}
	for _, bad := range []string{"", ":", "1:", "x:" + a.idHex(), "-5:" + a.idHex(), "1:" + strings.ToUpper(a.idHex()),
		"1:" + a.idHex()[:63], "1234567890123:" + a.idHex(), "1:" + a.idHex() + "00"} {
		if _, _, err := ParseTURNUsername(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func FuzzParseTURNUsername(f *testing.F) {
	f.Add("1700000000:" + strings.Repeat("ab", 32))
	f.Add("1:zz")
	f.Fuzz(func(t *testing.T, s string) {
		exp, id, err := ParseTURNUsername(s)
		if err != nil {
			return
		}
		if TURNUsername(id, exp) != s {
			t.Fatalf("%q parsed but does not round-trip", s)
		}
	})
}

// TestTURNCloseEndsStreamConns: Close also ends accepted TCP connections
// (pion only closes its listeners).
func TestTURNCloseEndsStreamConns(t *testing.T) {
	tt := startTURN(t, TURNLimits{})
	c, err := net.Dial("tcp4", tt.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := c.Write(req.Raw); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 512)
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("binding over tcp: %v", err)
	}
	tt.srv.Close()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = c.Read(buf)
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read after Close: %v, want the connection closed", err)
	}
}
