package natprobe_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun"

	"github.com/a2alnode/a2al/natprobe"
)

// startLoopbackServer runs a server on 127.0.0.1 (+127.0.0.2 as second IP
// when twoIPs) with ephemeral ports.
func startLoopbackServer(t *testing.T, cfg natprobe.ServerConfig, twoIPs bool) *natprobe.Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if twoIPs {
		cfg.AltIP = "127.0.0.2"
	}
	srv, err := natprobe.NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("server close: %v", err)
		}
	})
	return srv
}

func udpClient(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// exchange sends req and returns the first reply (or nil after wait).
func exchange(t *testing.T, c *net.UDPConn, to *net.UDPAddr, req []byte, wait time.Duration) ([]byte, *net.UDPAddr) {
	t.Helper()
	if _, err := c.WriteToUDP(req, to); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	n, from, err := c.ReadFromUDP(buf)
	if err != nil {
		return nil, nil
	}
	return buf[:n], from
}

func changeReq(flags uint32) stun.Setter {
	return stun.RawAttribute{Type: stun.AttrChangeRequest, Value: binary.BigEndian.AppendUint32(nil, flags)}
}

func build(t *testing.T, pad int, setters ...stun.Setter) *stun.Message {
	t.Helper()
	all := []stun.Setter{stun.BindingRequest, stun.TransactionID}
	if pad > 0 {
		all = append(all, stun.RawAttribute{Type: stun.AttrPadding, Value: make([]byte, pad)})
	}
	all = append(all, setters...)
	m, err := stun.Build(all...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestServerLoopback(t *testing.T) {
	srv := startLoopbackServer(t, natprobe.ServerConfig{}, true)
	c := udpClient(t)
	local := c.LocalAddr().(*net.UDPAddr)
	primary := srv.Addr()
	other := srv.AltAddr()
	if !other.IP.Equal(net.IPv4(127, 0, 0, 2)) || other.Port == primary.Port {
		t.Fatalf("OTHER-ADDRESS %v does not differ in IP and port from %v", other, primary)
	}

	cases := []struct {
		name     string
		flags    uint32
		wantFrom *net.UDPAddr
	}{
		{"plain", 0, primary},
		{"change-port", 0x02, &net.UDPAddr{IP: primary.IP, Port: other.Port}},
		{"change-ip", 0x04, &net.UDPAddr{IP: other.IP, Port: primary.Port}},
		{"change-both", 0x06, other},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := build(t, 100, changeReq(tc.flags))
			raw, from := exchange(t, c, primary, req.Raw, 2*time.Second)
			if raw == nil {
				t.Fatal("no reply")
			}
			if len(raw) > len(req.Raw) {
				t.Fatalf("reply %d bytes > request %d", len(raw), len(req.Raw))
			}
			if from.String() != tc.wantFrom.String() {
				t.Fatalf("reply from %v, want %v", from, tc.wantFrom)
			}
			m := new(stun.Message)
			if err := stun.Decode(raw, m); err != nil {
				t.Fatal(err)
			}
			if m.Type != stun.BindingSuccess || m.TransactionID != req.TransactionID {
				t.Fatalf("bad reply %v", m)
			}
			var xa stun.XORMappedAddress
			var ma stun.MappedAddress
			var ro stun.ResponseOrigin
			var oa stun.OtherAddress
			if err := m.Parse(&xa, &ma, &ro, &oa); err != nil {
				t.Fatalf("parse reply: %v", err)
			}
			if xa.String() != local.String() || ma.String() != local.String() {
				t.Fatalf("mapped %v / %v, want %v", xa, ma, local)
			}
			if ro.String() != tc.wantFrom.String() {
				t.Fatalf("RESPONSE-ORIGIN %v, want %v", ro, tc.wantFrom)
			}
			if oa.String() != other.String() {
				t.Fatalf("OTHER-ADDRESS %v, want %v", oa, other)
			}
		})
	}
	// The server counts a response after the send returns, which can be after
	// the client already read it: wait (bounded) for the counters to settle.
	st := waitStats(t, srv, func(st natprobe.ServerStats) bool {
		return st.Requests == 4 && st.Responses == 4 && st.ChangeRequests == 3
	})
	if st.Requests != 4 || st.Responses != 4 || st.ChangeRequests != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestServerHardening(t *testing.T) {
	srv := startLoopbackServer(t, natprobe.ServerConfig{}, false)
	c := udpClient(t)
	to := srv.Addr()
	const wait = 200 * time.Millisecond

	// Unpadded 20-byte request: the reply would be larger, so it is dropped.
	if raw, _ := exchange(t, c, to, build(t, 0).Raw, wait); raw != nil {
		t.Fatalf("unpadded request answered with %d bytes", len(raw))
	}
	// Garbage, truncated STUN, wrong length field, bad fingerprint.
	good := build(t, 100, stun.Fingerprint).Raw
	badFP := bytes.Clone(good)
	badFP[len(badFP)-1] ^= 0xff
	trailing := append(bytes.Clone(build(t, 100).Raw), 0, 0, 0, 0)
	for _, pkt := range [][]byte{[]byte("hello"), good[:30], trailing, badFP} {
		if raw, _ := exchange(t, c, to, pkt, wait); raw != nil {
			t.Fatalf("malformed %x answered", pkt)
		}
	}
	// A Binding success response or indication is ignored.
	resp, _ := stun.Build(stun.BindingSuccess, stun.TransactionID, stun.RawAttribute{Type: stun.AttrPadding, Value: make([]byte, 100)})
	ind, _ := stun.Build(stun.NewType(stun.MethodBinding, stun.ClassIndication), stun.TransactionID, stun.RawAttribute{Type: stun.AttrPadding, Value: make([]byte, 100)})
	for _, pkt := range [][]byte{resp.Raw, ind.Raw} {
		if raw, _ := exchange(t, c, to, pkt, wait); raw != nil {
			t.Fatal("non-request answered")
		}
	}
	// Change-IP on a single-IP server is refused.
	if raw, _ := exchange(t, c, to, build(t, 100, changeReq(0x04)).Raw, wait); raw != nil {
		t.Fatal("change-IP answered without a second IP")
	}
	// The valid padded request with fingerprint still works afterwards.
	raw, _ := exchange(t, c, to, good, 2*time.Second)
	if raw == nil {
		t.Fatal("valid request not answered")
	}
	m := new(stun.Message)
	if err := stun.Decode(raw, m); err != nil {
		t.Fatal(err)
	}
	if err := stun.Fingerprint.Check(m); err != nil {
		t.Fatalf("reply fingerprint: %v", err)
	}
	want := natprobe.ServerStats{Requests: 3, Responses: 1, Malformed: 4, Ignored: 2, DroppedAmplify: 1, ChangeRequests: 1, ChangeUnsupported: 1}
	st := waitStats(t, srv, func(st natprobe.ServerStats) bool { return st == want })
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
}

// ReplySlack lets plain clients (pion ICE sends 20-byte requests) get the
// minimal XOR-MAPPED-ADDRESS reply.
func TestServerReplySlack(t *testing.T) {
	srv := startLoopbackServer(t, natprobe.ServerConfig{ReplySlack: 12}, false)
	c := udpClient(t)
	req := build(t, 0)
	raw, _ := exchange(t, c, srv.Addr(), req.Raw, 2*time.Second)
	if raw == nil {
		t.Fatal("no reply")
	}
	if len(raw) > len(req.Raw)+12 {
		t.Fatalf("reply %d bytes exceeds request %d + slack", len(raw), len(req.Raw))
	}
	m := new(stun.Message)
	if err := stun.Decode(raw, m); err != nil {
		t.Fatal(err)
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err != nil || xa.String() != c.LocalAddr().String() {
		t.Fatalf("XOR-MAPPED-ADDRESS %v (%v), want %v", xa, err, c.LocalAddr())
	}
}

// Classify on a real loopback socket sees no translation: open.
func TestClassifyLoopbackOpen(t *testing.T) {
	srv := startLoopbackServer(t, natprobe.ServerConfig{}, true)
	c := udpClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := natprobe.Classify(ctx, natprobe.ClassifyConfig{Conn: c, Servers: []string{srv.Addr().String()}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Type != natprobe.TypeOpen || res.MappedAddr.String() != c.LocalAddr().String() {
		t.Fatalf("got %s, want open at %v", res, c.LocalAddr())
	}
	// The caller's socket is still usable.
	if _, err := c.WriteToUDP([]byte{0}, srv.Addr()); err != nil {
		t.Fatalf("socket unusable after Classify: %v", err)
	}
}

// Classify on a socket that also receives foreign traffic (junk and STUN
// answers to someone else's transactions) ignores it.
func TestClassifyIgnoresForeignPackets(t *testing.T) {
	srv := startLoopbackServer(t, natprobe.ServerConfig{}, true)
	c := udpClient(t)
	noise := udpClient(t)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		foreign, _ := stun.Build(stun.BindingSuccess, stun.TransactionID, &stun.XORMappedAddress{IP: net.IPv4(9, 9, 9, 9), Port: 9})
		tk := time.NewTicker(time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				_, _ = noise.WriteTo([]byte("not stun"), c.LocalAddr())
				_, _ = noise.WriteTo(foreign.Raw, c.LocalAddr())
			}
		}
	}()
	defer func() { close(stop); <-done }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := natprobe.Classify(ctx, natprobe.ClassifyConfig{Conn: c, Servers: []string{srv.Addr().String()}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Type != natprobe.TypeOpen || res.MappedAddr.String() != c.LocalAddr().String() {
		t.Fatalf("got %s", res)
	}
}

func TestClassifyCancel(t *testing.T) {
	c := udpClient(t)
	// A server address nobody answers on.
	dead := udpClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := natprobe.Classify(ctx, natprobe.ClassifyConfig{Conn: c, Servers: []string{dead.LocalAddr().String()}, Timeout: 5 * time.Second})
	if err == nil || ctx.Err() == nil {
		t.Fatalf("want cancellation error, got %v", err)
	}
}

func TestClassifyConfigErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := natprobe.Classify(ctx, natprobe.ClassifyConfig{Servers: []string{"127.0.0.1:1"}}); err == nil {
		t.Fatal("nil Conn accepted")
	}
	c := udpClient(t)
	if _, err := natprobe.Classify(ctx, natprobe.ClassifyConfig{Conn: c}); err == nil {
		t.Fatal("no servers accepted")
	}
	if _, err := natprobe.Classify(ctx, natprobe.ClassifyConfig{Conn: c, Servers: []string{"no-port"}}); err == nil {
		t.Fatal("bad server accepted")
	}
}

// Server and Classify leave no goroutines behind.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		srv, err := natprobe.NewServer(natprobe.ServerConfig{Addr: "127.0.0.1:0", AltIP: "127.0.0.2"})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := natprobe.Classify(ctx, natprobe.ClassifyConfig{Conn: c, Servers: []string{srv.Addr().String()}, Timeout: 500 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type fakeResolver map[string]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return []netip.Addr{netip.MustParseAddr("::1"), a}, nil // IPv4 must be preferred
	}
	return nil, errors.New("no such host")
}

// Server names go through the resolver; unresolvable ones are skipped.
func TestClassifyResolver(t *testing.T) {
	srv := startLoopbackServer(t, natprobe.ServerConfig{}, true)
	c := udpClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	port := strconv.Itoa(srv.Addr().Port)
	res, err := natprobe.Classify(ctx, natprobe.ClassifyConfig{
		Conn:     c,
		Servers:  []string{"missing.test:" + port, "stun.test:" + port},
		Timeout:  time.Second,
		Resolver: fakeResolver{"stun.test": netip.MustParseAddr("127.0.0.1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Type != natprobe.TypeOpen || res.Server.String() != srv.Addr().String() {
		t.Fatalf("got %s via %v", res, res.Server)
	}
	if _, err := natprobe.Classify(ctx, natprobe.ClassifyConfig{Conn: c, Servers: []string{"missing.test:1"}, Resolver: fakeResolver{}}); err == nil {
		t.Fatal("unresolvable server accepted")
	}
}

// waitStats polls the server's counters until cond holds or 2 s pass and
// returns the last snapshot (the caller asserts on it).
func waitStats(t *testing.T, srv *natprobe.Server, cond func(natprobe.ServerStats) bool) natprobe.ServerStats {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		st := srv.Stats()
		if cond(st) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(5 * time.Millisecond)
	}
}
