package natlab

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// behaviour is what a NAT type must do, in RFC 4787 terms.
type behaviour struct {
	eim           bool // same mapping towards two destinations
	preservePort  int  // expected external port for inner port 4000 (0 = don't check)
	fromOtherPort bool // unsolicited packet from a contacted IP, other port, gets in
	fromOtherIP   bool // unsolicited packet from a never-contacted IP gets in
}

var expected = map[NATType]behaviour{
	FullCone:          {eim: true, preservePort: 4000, fromOtherPort: true, fromOtherIP: true},
	AddressRestricted: {eim: true, preservePort: 4000, fromOtherPort: true},
	PortRestricted:    {eim: true, preservePort: 4000},
	Symmetric:         {eim: false},
	PortShifted:       {eim: true, preservePort: 4000 + ShiftOffset},
	DoubleNAT:         {eim: true, preservePort: 4000},
}

const (
	innerPort = 4000
	posWait   = 2 * time.Second        // deadline for packets that must arrive
	negWait   = 700 * time.Millisecond // how long we listen for packets that must not
)

// TestNATBehaviour checks each router type's mapping and filtering with raw
// UDP from inside the namespaces, before any product code relies on them.
func TestNATBehaviour(t *testing.T) {
	l := New(t)
	x1 := net.ParseIP(WANNet + ".50").To4()
	x2 := net.ParseIP(WANNet + ".51").To4()
	x3 := net.ParseIP(WANNet + ".52").To4()
	prober := l.AddWANHost("probe", x1, x2, x3)

	types := append([]NATType(nil), AllNATTypes...)
	hosts := map[NATType]*Host{}
	for i, typ := range types {
		hosts[typ] = l.AddNATHost(fmt.Sprintf("n%d", i), typ)
	}
	var (
		mu    sync.Mutex
		table []string
	)
	t.Cleanup(func() {
		t.Logf("NAT behaviour (inner port %d):\n%-20s %-22s %-22s %-5s %-10s %-8s\n%s", innerPort,
			"type", "mapped->X1", "mapped->X2", "EIM", "otherPort", "otherIP", strings.Join(table, "\n"))
	})
	for i, typ := range types {
		i, typ := i, typ
		t.Run(string(typ), func(t *testing.T) {
			t.Parallel()
			h := hosts[typ]
			row := probeNAT(t, h, prober, 5000+10*i, x1, x2, x3)
			mu.Lock()
			table = append(table, row)
			mu.Unlock()
		})
	}
}

type recv struct {
	payload string
	from    *net.UDPAddr
}

// reader collects datagrams from c until it is closed.
func reader(c *net.UDPConn) <-chan recv {
	ch := make(chan recv, 64)
	go func() {
		defer close(ch)
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			select {
			case ch <- recv{string(buf[:n]), from}:
			default:
			}
		}
	}()
	return ch
}

// await waits for payload on ch for at most d.
func await(ch <-chan recv, payload string, d time.Duration) (recv, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				return recv{}, false
			}
			if r.payload == payload {
				return r, true
			}
		case <-timer.C:
			return recv{}, false
		}
	}
}

func send(t *testing.T, c *net.UDPConn, to *net.UDPAddr, payload string) {
	t.Helper()
	for k := 0; k < 3; k++ { // the lab has no loss, but be robust to ARP warm-up
		if _, err := c.WriteToUDP([]byte(payload), to); err != nil {
			t.Fatalf("send %q to %v: %v", payload, to, err)
		}
	}
}

func probeNAT(t *testing.T, h, prober *Host, basePort int, x1, x2, x3 net.IP) string {
	typ := typeOfHost(h)
	want := expected[typ]

	hc, err := h.ListenUDP(nil, innerPort)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	hin := reader(hc)

	open := func(ip net.IP, port int) (*net.UDPConn, <-chan recv) {
		c, err := prober.ListenUDP(ip, port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, reader(c)
	}
	a, ain := open(x1, basePort)  // contacted
	b, _ := open(x1, basePort+1)  // same IP as a, never contacted
	c2, cin := open(x2, basePort) // contacted (second destination)
	d, _ := open(x3, basePort)    // never-contacted IP

	if typ == UDPBlocked {
		send(t, hc, a.LocalAddr().(*net.UDPAddr), "m1")
		if r, ok := await(ain, "m1", negWait); ok {
			t.Fatalf("udp-blocked router forwarded UDP (seen from %v)", r.from)
		}
		ln, err := prober.ListenTCP(x1, basePort)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		conn, err := h.DialTCP(ln.Addr().String(), posWait)
		if err != nil {
			t.Fatalf("udp-blocked router must still forward TCP: %v", err)
		}
		conn.Close()
		return fmt.Sprintf("%-20s %-22s %-22s %-5s %-10s %-8s", typ, "udp dropped", "(tcp ok)", "-", "-", "-")
	}

	send(t, hc, a.LocalAddr().(*net.UDPAddr), "m1")
	r1, ok := await(ain, "m1", posWait)
	if !ok {
		t.Fatalf("%s: outbound UDP to X1 never arrived", typ)
	}
	send(t, hc, c2.LocalAddr().(*net.UDPAddr), "m2")
	r2, ok := await(cin, "m2", posWait)
	if !ok {
		t.Fatalf("%s: outbound UDP to X2 never arrived", typ)
	}
	m1, m2 := r1.from, r2.from
	if !m1.IP.Equal(h.PublicIP()) || !m2.IP.Equal(h.PublicIP()) {
		t.Errorf("%s: mapped IPs %v, %v; want the router's WAN IP %v", typ, m1.IP, m2.IP, h.PublicIP())
	}
	eim := m1.Port == m2.Port
	if eim != want.eim {
		t.Errorf("%s: mapping endpoint-independent=%v (ports %d, %d), want %v", typ, eim, m1.Port, m2.Port, want.eim)
	}
	if want.preservePort != 0 && m1.Port != want.preservePort {
		t.Errorf("%s: external port %d, want %d", typ, m1.Port, want.preservePort)
	}

	// Filtering. Sanity first: the contacted endpoint's reply must get in,
	// otherwise the negative checks below prove nothing.
	send(t, a, m1, "r1")
	if _, ok := await(hin, "r1", posWait); !ok {
		t.Fatalf("%s: reply from the contacted endpoint was dropped", typ)
	}
	send(t, b, m1, "r2")
	_, gotOtherPort := await(hin, "r2", pick(want.fromOtherPort))
	send(t, d, m1, "r3")
	rr3, gotOtherIP := await(hin, "r3", pick(want.fromOtherIP))
	if gotOtherPort != want.fromOtherPort {
		t.Errorf("%s: packet from contacted IP, other port admitted=%v, want %v", typ, gotOtherPort, want.fromOtherPort)
	}
	if gotOtherIP != want.fromOtherIP {
		t.Errorf("%s: packet from never-contacted IP admitted=%v, want %v", typ, gotOtherIP, want.fromOtherIP)
	}
	if gotOtherIP && !rr3.from.IP.Equal(x3) {
		t.Errorf("%s: inbound source rewritten to %v, want %v", typ, rr3.from, x3)
	}
	if t.Failed() {
		for _, r := range h.Routers() {
			t.Logf("router %s conntrack:\n%s\nruleset:\n%s", r.Name, r.Conntrack(), r.Ruleset())
		}
	}
	return fmt.Sprintf("%-20s %-22s %-22s %-5v %-10v %-8v", typ, m1, m2, eim, gotOtherPort, gotOtherIP)
}

func pick(positive bool) time.Duration {
	if positive {
		return posWait
	}
	return negWait
}

// typeOfHost recovers the lab type a host was built with.
func typeOfHost(h *Host) NATType {
	rs := h.Routers()
	if len(rs) == 2 {
		return DoubleNAT
	}
	if len(rs) == 0 {
		return Public
	}
	return rs[0].Type
}
