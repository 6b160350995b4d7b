package host

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/a2alnode/a2al/portmap"
	"github.com/a2alnode/a2al/protocol"
)

// natpmpGateway is a minimal NAT-PMP server on loopback (the portmap package
// tests the protocols in depth; here only the host's use of a mapping counts).
type natpmpGateway struct {
	ip   net.IP
	conn *net.UDPConn
	mu   sync.Mutex
	maps map[uint16]uint16 // internal -> external
}

var gatewayIPs atomic.Uint32

func newNATPMPGateway(t *testing.T) *natpmpGateway {
	// NAT-PMP clients always send to port 5351: each gateway gets a loopback
	// address of its own (127.0.60.x; the portmap package's tests use
	// 127.0.53.x-127.0.56.x).
	ip := net.IPv4(127, 0, 60, byte(1+gatewayIPs.Add(1)%254)).To4()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: 5351})
	if err != nil {
		t.Fatalf("fake gateway on %v:5351: %v", ip, err)
	}
	g := &natpmpGateway{ip: ip, conn: c, maps: map[uint16]uint16{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			b := buf[:n]
			switch {
			case n == 2 && b[0] == 0 && b[1] == 0:
				_, _ = c.WriteToUDP([]byte{0, 0x80, 0, 0, 0, 0, 1, 0, 198, 51, 100, 7}, from)
			case n == 12 && b[0] == 0 && b[1] == 1:
				in, life := binary.BigEndian.Uint16(b[4:6]), binary.BigEndian.Uint32(b[8:12])
				r := make([]byte, 16)
				r[1], r[6] = 0x81, 1
				binary.BigEndian.PutUint16(r[8:10], in)
				g.mu.Lock()
				if life == 0 {
					delete(g.maps, in)
				} else {
					g.maps[in] = in + 1000
					binary.BigEndian.PutUint16(r[10:12], in+1000)
					binary.BigEndian.PutUint32(r[12:16], life)
				}
				g.mu.Unlock()
				_, _ = c.WriteToUDP(r, from)
			}
		}
	}()
	t.Cleanup(func() { _ = c.Close(); <-done })
	return g
}

func (g *natpmpGateway) mapped() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.maps)
}

func newMappedHost(t *testing.T, g *natpmpGateway, public string) *Host {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Key: key, PacketConn: pc, Logger: testLogger(), DisableMaintenance: true, DisableNAT: true,
		PortMapping: "natpmp", PublicAddr: public,
		PortMap: portmap.Config{Gateway: g.ip, LocalIP: net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func waitMapping(t *testing.T, h *Host) MappingStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, m := range h.Status().PortMapping {
			if !m.Manual {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no port mapping in Status within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMappingPublishedOnlyAfterProofAndFirst(t *testing.T) {
	g := newNATPMPGateway(t)
	h := newMappedHost(t, g, "")
	m := waitMapping(t, h)
	port := h.LocalAddr().(*net.UDPAddr).Port
	want := "198.51.100.7:" + strconv.Itoa(port+1000)
	if m.Protocol != "natpmp" || m.External != want || m.Verified || m.LeaseLeftS <= 0 {
		t.Fatalf("status %+v, want unverified natpmp %s", m, want)
	}
	for _, ep := range h.Payload().Endpoints {
		if strings.Contains(ep, want) {
			t.Fatalf("unproven mapping published: %v", h.Payload().Endpoints)
		}
	}
	// Nobody in the routing table can prove it: it stays unpublished.
	h.verifyMapping(t.Context())
	if h.Status().PortMapping[0].Verified {
		t.Fatal("verified without any peer")
	}
	// Once a peer's echo proved it, it goes first and the record says full cone.
	h.mu.Lock()
	h.pm.verified = true
	h.mu.Unlock()
	p := h.Payload()
	if len(p.Endpoints) == 0 || p.Endpoints[0] != "quic://"+want || p.NatType != protocol.NATFullCone {
		t.Fatalf("payload %+v: want %s first, nat full cone", p, want)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(h.Registry(), promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if !strings.Contains(string(body), `a2al_port_mapping_lease_seconds{external="`+want+`",protocol="natpmp",verified="true"}`) {
		t.Fatalf("metrics lack the mapping:\n%s", body)
	}
	// A new external address must be proven again.
	h.onMapping(portmap.Mapping{Protocol: portmap.NATPMP, External: &net.UDPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 9},
		Internal: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}, Lease: time.Hour, Obtained: time.Now()}, true)
	if ep := h.Payload().Endpoints; len(ep) > 0 && strings.Contains(ep[0], "198.51.100.7") {
		t.Fatalf("moved mapping published before proof: %v", ep)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if g.mapped() != 0 {
		t.Fatal("mapping left on the router after Close")
	}
}

func TestManualPublicAddrFirst(t *testing.T) {
	g := newNATPMPGateway(t)
	h := newMappedHost(t, g, "198.51.100.20:4000")
	p := h.Payload()
	if p.Endpoints[0] != "quic://198.51.100.20:4000" || p.NatType != protocol.NATFullCone {
		t.Fatalf("payload %+v", p)
	}
	if st := h.Status().PortMapping; len(st) == 0 || !st[0].Manual {
		t.Fatalf("status %+v", st)
	}
}

func TestPortMappingConfigValidated(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	for _, c := range []Config{
		{PortMapping: "igd"},
		{PublicAddr: "nothing"},
		{PublicAddr: "0.0.0.0:1"},
		{PublicAddr: "198.51.100.1:70000"},
		{PortMapping: "pcp", PortMap: portmap.Config{Lease: time.Millisecond}},
	} {
		c.Key, c.ListenAddr, c.Logger = key, "127.0.0.1:0", testLogger()
		if h, err := New(c); err == nil {
			_ = h.Close()
			t.Errorf("accepted %+v", c)
		}
	}
	// Loopback, PacketConn and DisableMaintenance setups never touch a router
	// by default; a loopback socket not even when asked.
	for _, c := range []Config{{ListenAddr: "127.0.0.1:0"}, {ListenAddr: "127.0.0.1:0", PortMapping: "auto"},
		{ListenAddr: ":0", DisableMaintenance: true}, {PacketConn: &net.UDPConn{}}} {
		if m, err := c.portMappingMode(); err != nil || m != portmap.ModeOff {
			t.Errorf("%+v: mode %q %v", c, m, err)
		}
	}
	if m, _ := (&Config{ListenAddr: ":4121"}).portMappingMode(); m != portmap.ModeAuto {
		t.Errorf("default mode %q", m)
	}
}
