package portmap

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

const testPort = 4121

type change struct {
	m  Mapping
	ok bool
}

type testEnv struct {
	m       *Mapper
	changes chan change
}

func startMapper(t *testing.T, cfg Config) *testEnv {
	t.Helper()
	e := &testEnv{changes: make(chan change, 64)}
	cfg.InternalPort = testPort
	if cfg.Gateway == nil {
		cfg.Gateway = testGatewayIP() // nothing listens there
	}
	cfg.LocalIP = net.IPv4(127, 0, 0, 1)
	if cfg.Timeout == 0 {
		cfg.Timeout = 500 * time.Millisecond
	}
	if cfg.SSDPAddr == nil {
		cfg.SSDPAddr = deadUDP(t)
	}
	cfg.OnChange = func(m Mapping, ok bool) {
		select {
		case e.changes <- change{m, ok}:
		default:
		}
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	m.Start()
	t.Cleanup(func() { _ = m.Close() })
	return e
}

// deadUDP is a loopback port where nothing listens.
func deadUDP(t *testing.T) *net.UDPAddr {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	a := c.LocalAddr().(*net.UDPAddr)
	_ = c.Close()
	return a
}

// next waits for the next mapping change (bounded).
func (e *testEnv) next(t *testing.T) change {
	t.Helper()
	select {
	case c := <-e.changes:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no mapping change within 10 s")
		return change{}
	}
}

// waitFor polls cond until it holds (bounded).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPMPMapRenewDelete(t *testing.T) {
	for _, p := range []Protocol{NATPMP, PCP} {
		t.Run(string(p), func(t *testing.T) {
			gw := newFakePMP(t, p == NATPMP, p == PCP)
			e := startMapper(t, Config{Mode: string(p), Gateway: gw.ip, Lease: 2 * time.Second})
			c := e.next(t)
			if !c.ok || c.m.Protocol != p || c.m.External.Port != testPort || !c.m.External.IP.Equal(gw.extIP) {
				t.Fatalf("first change = %+v", c)
			}
			select {
			case <-e.m.FirstAttempt():
			case <-time.After(10 * time.Second):
				t.Fatal("FirstAttempt still open after the first mapping")
			}
			if ext, ok := gw.mapped(testPort); !ok || ext != testPort {
				t.Fatalf("gateway table: %d %v", ext, ok)
			}
			// A 2 s lease is renewed at half-life, again and again.
			waitFor(t, "two renewals", func() bool { return gw.count("map") >= 3 })
			if _, ok := e.m.Current(); !ok {
				t.Fatal("mapping lost after renewal")
			}
			if err := e.m.Close(); err != nil {
				t.Fatal(err)
			}
			if _, ok := gw.mapped(testPort); ok || gw.count("delete") != 1 {
				t.Fatalf("after Close: still mapped=%v deletes=%d", ok, gw.count("delete"))
			}
			if _, ok := e.m.Current(); ok {
				t.Fatal("Current still reports a mapping after Close")
			}
		})
	}
}

func TestAutoPrefersPCPAndFallsBack(t *testing.T) {
	for _, tc := range []struct {
		natpmp, pcp bool
		want        Protocol
	}{{true, true, PCP}, {true, false, NATPMP}, {false, true, PCP}} {
		gw := newFakePMP(t, tc.natpmp, tc.pcp)
		e := startMapper(t, Config{Gateway: gw.ip})
		if c := e.next(t); !c.ok || c.m.Protocol != tc.want {
			t.Fatalf("natpmp=%v pcp=%v: got %+v, want %s", tc.natpmp, tc.pcp, c, tc.want)
		}
		_ = e.m.Close()
	}
}

func TestPMPGatewayRebootRemaps(t *testing.T) {
	for _, p := range []Protocol{NATPMP, PCP} {
		t.Run(string(p), func(t *testing.T) {
			gw := newFakePMP(t, p == NATPMP, p == PCP)
			e := startMapper(t, Config{Mode: string(p), Gateway: gw.ip, CheckInterval: 50 * time.Millisecond})
			if c := e.next(t); !c.ok {
				t.Fatal("no mapping")
			}
			gw.reboot() // epoch back to 0, table empty
			waitFor(t, "re-mapping after the epoch went back", func() bool {
				_, ok := gw.mapped(testPort)
				return ok
			})
			if gw.count("map") != 2 {
				t.Fatalf("map requests = %d, want 2", gw.count("map"))
			}
		})
	}
}

func TestPMPConflictPicksAnotherPortAndReports(t *testing.T) {
	for _, p := range []Protocol{NATPMP, PCP} {
		t.Run(string(p), func(t *testing.T) {
			gw := newFakePMP(t, p == NATPMP, p == PCP)
			gw.mu.Lock()
			gw.held[testPort] = true // another LAN host has our port already
			gw.mu.Unlock()
			e := startMapper(t, Config{Mode: string(p), Gateway: gw.ip, CheckInterval: 50 * time.Millisecond})
			c := e.next(t)
			if !c.ok || c.m.External.Port == testPort {
				t.Fatalf("first mapping %+v should avoid the held port", c)
			}
			first := c.m.External.Port
			// The router restarts and someone else grabs our external port.
			gw.steal(uint16(first))
			gw.reboot()
			c = e.next(t)
			if !c.ok || c.m.External.Port == first || c.m.External.Port == testPort {
				t.Fatalf("after the steal: %+v (first %d)", c, first)
			}
			if ext, ok := gw.mapped(testPort); !ok || int(ext) != c.m.External.Port {
				t.Fatalf("gateway table %d %v vs reported %v", ext, ok, c.m.External)
			}
		})
	}
}

func TestUPnPMapRenewDelete(t *testing.T) {
	igd := newFakeIGD(t)
	e := startMapper(t, Config{Mode: string(UPnP), SSDPAddr: igd.addr(), Lease: 2 * time.Second})
	c := e.next(t)
	if !c.ok || c.m.Protocol != UPnP || c.m.External.String() != "203.0.113.9:4121" {
		t.Fatalf("first change = %+v", c)
	}
	if en, ok := igd.entry(testPort); !ok || en.client != "127.0.0.1" || en.port != testPort || en.lease != 2 {
		t.Fatalf("gateway entry %+v %v", en, ok)
	}
	waitFor(t, "two renewals", func() bool { a, _ := igd.counts(); return a >= 3 })
	if err := e.m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := igd.entry(testPort); ok {
		t.Fatal("mapping still on the gateway after Close")
	}
	if _, d := igd.counts(); d != 1 {
		t.Fatalf("deletes = %d", d)
	}
}

func TestUPnPConflict(t *testing.T) {
	igd := newFakeIGD(t)
	igd.mu.Lock()
	igd.maps[testPort] = igdEntry{client: "127.0.0.99", port: testPort} // another LAN host
	igd.mu.Unlock()
	e := startMapper(t, Config{Mode: string(UPnP), SSDPAddr: igd.addr(), CheckInterval: 50 * time.Millisecond})
	c := e.next(t)
	if !c.ok || c.m.External.Port == testPort {
		t.Fatalf("first mapping %+v should avoid the held port", c)
	}
	first := uint16(c.m.External.Port)
	// Another host takes over our external port (e.g. after a router reset).
	igd.mu.Lock()
	igd.maps[first] = igdEntry{client: "127.0.0.98", port: 9999}
	igd.mu.Unlock()
	c = e.next(t)
	if !c.ok || c.m.External.Port == int(first) || c.m.External.Port == testPort {
		t.Fatalf("after the takeover: %+v", c)
	}
	if en, ok := igd.entry(uint16(c.m.External.Port)); !ok || en.client != "127.0.0.1" {
		t.Fatalf("new entry %+v %v", en, ok)
	}
	if en, _ := igd.entry(first); en.client != "127.0.0.98" {
		t.Fatalf("we must not overwrite the other host's entry: %+v", en)
	}
}

func TestUPnPRouterRebootRemaps(t *testing.T) {
	igd := newFakeIGD(t)
	e := startMapper(t, Config{Mode: string(UPnP), SSDPAddr: igd.addr(), CheckInterval: 50 * time.Millisecond})
	if c := e.next(t); !c.ok {
		t.Fatal("no mapping")
	}
	igd.mu.Lock()
	igd.maps = map[uint16]igdEntry{}
	igd.mu.Unlock()
	waitFor(t, "re-mapping after the table was lost", func() bool { _, ok := igd.entry(testPort); return ok })
}

func TestUPnPPermanentOnlyGateway(t *testing.T) {
	igd := newFakeIGD(t)
	igd.mu.Lock()
	igd.permOnly = true
	igd.mu.Unlock()
	e := startMapper(t, Config{Mode: string(UPnP), SSDPAddr: igd.addr(), Lease: time.Hour})
	if c := e.next(t); !c.ok || c.m.Lease != time.Hour {
		t.Fatalf("got %+v", c)
	}
	if en, ok := igd.entry(testPort); !ok || en.lease != 0 {
		t.Fatalf("entry %+v %v", en, ok)
	}
	_ = e.m.Close()
	if _, ok := igd.entry(testPort); ok {
		t.Fatal("permanent mapping not deleted on Close")
	}
}

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestNoGatewayLogsOneLine(t *testing.T) {
	var logs syncBuf
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := startMapper(t, Config{Logger: log, Retry: 20 * time.Millisecond, Timeout: 100 * time.Millisecond})
	select {
	case <-e.m.FirstAttempt():
	case <-time.After(10 * time.Second):
		t.Fatal("FirstAttempt not closed after a failed search")
	}
	waitFor(t, "three attempts", func() bool { return strings.Count(logs.String(), "still none") >= 2 })
	_ = e.m.Close()
	out := logs.String()
	if n := strings.Count(out, "level=INFO"); n != 1 || !strings.Contains(out, "the router offers none") {
		t.Fatalf("want exactly one info line, got:\n%s", out)
	}
	if _, ok := e.m.Current(); ok {
		t.Fatal("mapping without a gateway")
	}
}

func TestModeOffSendsNothing(t *testing.T) {
	gw := newFakePMP(t, true, true)
	e := startMapper(t, Config{Mode: ModeOff, Gateway: gw.ip})
	<-e.m.FirstAttempt() // closed at once: there is nothing to wait for
	_ = e.m.Close()
	if gw.count("map")+gw.count("external")+gw.count("announce") != 0 {
		t.Fatal("mode off talked to the gateway")
	}
}

func TestConfigValidation(t *testing.T) {
	bad := []Config{
		{InternalPort: 0},
		{InternalPort: 70000},
		{InternalPort: 1, Mode: "igd"},
		{InternalPort: 1, Lease: time.Second},
		{InternalPort: 1, Gateway: net.ParseIP("::1")},
	}
	for _, c := range bad {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	for _, s := range Modes {
		if _, err := ParseMode(s); err != nil {
			t.Errorf("ParseMode(%q): %v", s, err)
		}
	}
}

func TestParseRouteTable(t *testing.T) {
	tbl := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth1\t00000000\t0102A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n" +
		"eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
		"eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
	gw, err := parseRouteTable([]byte(tbl))
	if err != nil || !gw.Equal(net.IPv4(10, 0, 0, 1)) {
		t.Fatalf("gateway %v, %v", gw, err)
	}
	if _, err := parseRouteTable([]byte("Iface\tDestination\n")); err == nil {
		t.Fatal("no default route accepted")
	}
}

func TestEpochTracker(t *testing.T) {
	var e epochTracker
	t0 := time.Unix(1000, 0)
	if e.observe(500, t0) {
		t.Fatal("first observation reported a reset")
	}
	if e.observe(560, t0.Add(60*time.Second)) {
		t.Fatal("steady clock reported a reset")
	}
	if !e.observe(10, t0.Add(120*time.Second)) {
		t.Fatal("epoch going back not noticed")
	}
	if !e.observe(20, t0.Add(1120*time.Second)) {
		t.Fatal("epoch advancing far slower than our clock not noticed")
	}
}

func TestSSDPLocationStaysOnSender(t *testing.T) {
	ok := "HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n"
	if _, err := ssdpLocation([]byte(ok), net.IPv4(192, 168, 1, 1)); err != nil {
		t.Fatal(err)
	}
	for _, from := range []net.IP{net.IPv4(192, 168, 1, 2)} {
		if _, err := ssdpLocation([]byte(ok), from); err == nil {
			t.Fatal("LOCATION on another host accepted")
		}
	}
	public := strings.Replace(ok, "192.168.1.1", "198.51.100.1", 1)
	if _, err := ssdpLocation([]byte(public), net.IPv4(192, 168, 1, 1)); err == nil {
		t.Fatal("LOCATION on a public host accepted")
	}
	for _, bad := range []string{"", "garbage", strings.Replace(ok, "http://", "file://", 1), strings.Replace(ok, "InternetGatewayDevice", "MediaServer", 1)} {
		if _, err := ssdpLocation([]byte(bad), net.IPv4(192, 168, 1, 1)); err == nil {
			t.Fatalf("accepted %q", bad)
		}
	}
}
