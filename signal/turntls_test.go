package signal

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/a2alnode/a2al/internal/testcert"
)

// selfSigned makes a certificate for 127.0.0.1 and the pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	cert, pool, err := testcert.Loopback("a2al test hub")
	if err != nil {
		t.Fatal(err)
	}
	return cert, pool
}

// testTURNTLS is a hub whose TURN server listens only on TLS, set up as
// cmd/signal-hub does with -tls-cert.
type testTURNTLS struct {
	hub  *testHub
	srv  *TURNServer
	addr string // host:port of the TLS listener
	pool *x509.CertPool
}

func startTURNTLS(t *testing.T) *testTURNTLS {
	t.Helper()
	cert, pool := selfSigned(t)
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	tt := &testTURNTLS{addr: ln.Addr().String(), pool: pool}
	auth, err := NewTURNAuth(TURNAuthConfig{TTL: 10 * time.Minute, URLs: []string{"turns:" + tt.addr + "?transport=tcp"}})
	if err != nil {
		t.Fatal(err)
	}
	tt.srv, err = NewTURNServer(TURNServerConfig{Auth: auth, Listeners: []net.Listener{ln},
		RelayIP: net.IPv4(127, 0, 0, 1), RelayBind: "127.0.0.1", AllowPeer: func(net.IP) bool { return true },
		Registerer: prometheus.NewRegistry()})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { tt.srv.Close() })
	cfg := fastConfig()
	cfg.TURN = auth
	tt.hub = startHub(t, cfg)
	return tt
}

// allocate runs a pion TURN client over a verified TLS connection.
func (tt *testTURNTLS) allocate(t *testing.T, user, pass string) (net.PacketConn, error) {
	t.Helper()
	d := &net.Dialer{Timeout: testWait}
	c, err := tls.DialWithDialer(d, "tcp4", tt.addr, &tls.Config{RootCAs: tt.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("tls dial: %v", err)
	}
	conn := turn.NewSTUNConn(c)
	cl, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: tt.addr, Conn: conn, Username: user, Password: pass,
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

// TestTURNOverTLS: a node gets relay credentials from the hub naming a
// turns: URL, allocates over TLS with them and relays; allocations without
// valid credentials are refused on the TLS listener too.
func TestTURNOverTLS(t *testing.T) {
	tt := startTURNTLS(t)
	a := newIdent(t)
	c := newClient(t, tt.hub, a, nil)
	cr, err := c.TURNCredentials(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(cr.URLs) != 1 || !strings.HasPrefix(cr.URLs[0], "turns:"+tt.addr) {
		t.Fatalf("credential urls %v, want the turns: url of the TLS listener", cr.URLs)
	}

	b := newIdent(t)
	crB := tt.srv.Auth().Issue(b.id)
	for name, up := range map[string][2]string{
		"no credentials":             {"", ""},
		"made-up username":           {"alice", "secret"},
		"A's name with B's password": {cr.Username, crB.Password},
	} {
		if _, err := tt.allocate(t, up[0], up[1]); err == nil {
			t.Errorf("%s: allocation over TLS accepted", name)
		}
	}
	if allocs, _ := tt.srv.Allocations(); allocs != 0 {
		t.Fatalf("%d allocations after refused requests, want 0", allocs)
	}

	relay, err := tt.allocate(t, cr.Username, cr.Password)
	if err != nil {
		t.Fatalf("allocate over TLS: %v", err)
	}
	if ra, ok := relay.LocalAddr().(*net.UDPAddr); !ok || !ra.IP.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Fatalf("relayed address %v, want the relay IP", relay.LocalAddr())
	}
	if allocs, nodes := tt.srv.Allocations(); allocs != 1 || nodes != 1 {
		t.Fatalf("allocations=%d nodes=%d, want 1 and 1", allocs, nodes)
	}
	peer, _ := echoPeer(t)
	if err := roundTrip(t, relay, peer.LocalAddr()); err != nil {
		t.Fatalf("relay round trip over TLS: %v", err)
	}
	if got := testutil.ToFloat64(tt.srv.m.relayed.WithLabelValues("in")); got == 0 {
		t.Fatal("bytes relayed over TLS not counted")
	}
}

// TestTURNTLSRefusesPlainTCP: the TLS port does not speak TURN in the clear.
func TestTURNTLSRefusesPlainTCP(t *testing.T) {
	tt := startTURNTLS(t)
	cr := tt.srv.Auth().Issue(newIdent(t).id)
	c, err := net.DialTimeout("tcp4", tt.addr, testWait)
	if err != nil {
		t.Fatal(err)
	}
	conn := turn.NewSTUNConn(c)
	cl, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: tt.addr, Conn: conn, Username: cr.Username,
		Password: cr.Password, Realm: "a2al", RTO: 100 * time.Millisecond, LoggerFactory: pionLogs()})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Listen(); err != nil {
		t.Fatal(err)
	}
	defer func() { cl.Close(); conn.Close() }()
	if _, err := cl.Allocate(); err == nil {
		t.Fatal("plain-TCP allocation on the TLS port accepted")
	}
}
