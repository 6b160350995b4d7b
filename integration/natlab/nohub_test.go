package natlab

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// spreadNet holds the public nodes of no-hub scenarios: each gets its own
// /24 (RFC 2544 benchmark space, never routed outside the lab) so their
// observed_addr reports count as distinct networks.
const spreadNet = "198.18.0.0/15"

// addSpreadPublic puts public hosts on the WAN bridge at 198.18.N.10 (one
// /24 each) and gives them and routers on-link routes to each other.
func addSpreadPublic(t *testing.T, l *Lab, n int, routers []*Router) []*Host {
	t.Helper()
	var hs []*Host
	for i := 0; i < n; i++ {
		h := l.AddWANHost(fmt.Sprintf("p%d", i), mustIP(fmt.Sprintf("198.18.%d.10", i+1)))
		if err := ipBatch(h.NS, "route add "+spreadNet+" dev eth0", "route add "+WANNet+".0/24 dev eth0"); err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	for _, r := range routers {
		if err := ipBatch(r.NS, "route add "+spreadNet+" dev wan0"); err != nil {
			t.Fatal(err)
		}
	}
	return hs
}

// TestNoHubPublicAddress: nodes behind full-cone, address-restricted,
// port-restricted and symmetric NATs bootstrap from a public node, with no
// hub and no STUN server, and each publishes its router's public address
// and the right NAT type within 30 s: the address from the observed_addr
// votes of three public nodes in distinct /24s, the filtering from the DHT
// NAT probe (docs/public-address.md). Two more nodes use a hub whose STUN
// server has one IP: their filtering test falls back to the DHT NAT probe.
func TestNoHubPublicAddress(t *testing.T) {
	l := New(t)
	hub := l.StartHubOneIP(t)
	cases := []struct {
		name string
		typ  NATType
		hub  *Hub
	}{
		{"no-hub/full-cone", FullCone, nil},
		{"no-hub/address-restricted", AddressRestricted, nil},
		{"no-hub/port-restricted", PortRestricted, nil},
		{"no-hub/symmetric", Symmetric, nil},
		{"one-ip-hub/full-cone", FullCone, hub},
		{"one-ip-hub/address-restricted", AddressRestricted, hub},
	}
	hosts := map[string]*Host{}
	var routers []*Router
	for i, c := range cases {
		h := l.AddNATHost(fmt.Sprintf("n%d", i), c.typ)
		hosts[c.name] = h
		routers = append(routers, h.Router)
	}
	pubs := addSpreadPublic(t, l, 3, routers)
	seed := fmt.Sprintf("%s:%d", pubs[0].IP, NodePort)
	p0 := l.StartNode(t, pubs[0], NodeOptions{})
	for _, h := range pubs[1:] {
		l.StartNode(t, h, NodeOptions{Bootstrap: []string{seed}})
	}
	var (
		mu   sync.Mutex
		rows []string
	)
	t.Cleanup(func() {
		t.Logf("published NAT type and public address without a (two-IP) hub:\n%-30s %-20s %-26s %6s  %s\n%s",
			"case", "nat (status)", "first endpoint", "time", "record", strings.Join(rows, "\n"))
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			typ, h := c.typ, hosts[c.name]
			start := time.Now()
			n := l.StartNode(t, h, NodeOptions{Bootstrap: []string{seed}, Hub: c.hub})
			want := string(typ)
			wantIP := h.PublicIP().String()
			var (
				st  NodeStatus
				rec Record
				why string
			)
			ok := false
			for deadline := start.Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
				var err error
				if st, err = n.Status(); err != nil {
					why = err.Error()
					continue
				}
				if !st.NAT.Known || st.NAT.Type != want {
					why = fmt.Sprintf("status NAT %q known=%v", st.NAT.Type, st.NAT.Known)
					continue
				}
				if rec, err = p0.Resolve(n.Address); err != nil || !rec.OK {
					why = fmt.Sprintf("resolve: %+v %v", rec, err)
					continue
				}
				if rec.NAT != want {
					why = fmt.Sprintf("record NAT %q", rec.NAT)
					continue
				}
				if typ == Symmetric {
					// No port is stable: the public IP is known (status),
					// the record carries the type only.
					host, _, _ := net.SplitHostPort(st.NAT.Mapped)
					ok = host == wantIP
					why = "status mapped " + st.NAT.Mapped
				} else {
					wantEP := fmt.Sprintf("quic://%s:%d", wantIP, NodePort)
					ok = len(rec.Endpoints) > 0 && rec.Endpoints[0] == wantEP
					why = fmt.Sprintf("record endpoints %v, want %s first", rec.Endpoints, wantEP)
				}
				if ok && c.hub != nil {
					// The hub's STUN run itself must reach the type, its
					// filtering test through the DHT NAT probe.
					ok = strings.Contains(logText(t, n), `msg="natprobe classified" result="`+want+",")
					why = "no STUN classification as " + want + " in the log"
				}
				if ok {
					break
				}
			}
			first := ""
			if len(rec.Endpoints) > 0 {
				first = rec.Endpoints[0]
			}
			mu.Lock()
			rows = append(rows, progress(fmt.Sprintf("%-30s %-20s %-26s %6s  nat=%s %v",
				c.name, st.NAT.Type, first, time.Since(start).Round(100*time.Millisecond), rec.NAT, rec.Endpoints)))
			mu.Unlock()
			for _, line := range strings.Split(logText(t, n), "\n") {
				if strings.Contains(line, "NAT classified") || strings.Contains(line, "natprobe classified") {
					t.Log(line)
				}
			}
			if !ok {
				t.Errorf("behind %s: not published within 30 s: %s", typ, why)
			}
		})
	}
}
