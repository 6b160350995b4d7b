package natlab

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// mappingView is the port_mapping part of GET /debug/host.
type mappingView struct {
	PortMapping []struct {
		Protocol   string `json:"protocol"`
		External   string `json:"external"`
		LeaseLeftS int64  `json:"lease_left_s"`
		Verified   bool   `json:"verified"`
	} `json:"port_mapping"`
}

// waitMapped waits until n has a port mapping proven by a peer.
func waitMapped(t *testing.T, n *Node, timeout time.Duration) (proto, external string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var v mappingView
	for {
		v = mappingView{}
		if err := n.JSON("/debug/host", &v); err == nil && len(v.PortMapping) > 0 && v.PortMapping[0].Verified {
			return v.PortMapping[0].Protocol, v.PortMapping[0].External
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s: no proven port mapping after %v: %+v", n.Host.Name, timeout, v)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitRecord waits until by resolves n's record with first endpoint want.
func waitRecord(t *testing.T, by, n *Node, want string, timeout time.Duration) Record {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r, err := by.Resolve(n.Address)
		if err == nil && r.OK && len(r.Endpoints) > 0 && r.Endpoints[0] == want {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: record of %s never led with %s: %+v %v", by.Host.Name, n.Host.Name, want, r, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func logText(t *testing.T, n *Node) string {
	t.Helper()
	b, err := os.ReadFile(n.Proc.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mappedWorld is a public bootstrap node, node a behind a symmetric NAT
// whose router runs miniupnpd with opts, and node b behind a symmetric NAT
// without port mapping. There is no hub.
type mappedWorld struct {
	lab      *Lab
	p, a, b  *Node
	ra       *Router
	aStarted time.Time
}

func newMappedWorld(t *testing.T, opts UPnPOptions) *mappedWorld {
	l := New(t)
	ph := l.AddWANHost("p")
	ra := l.AddUPnPRouter(t, "ar", Symmetric, opts)
	ha := ra.AddHost("a")
	hb := l.AddNATHost("b", Symmetric)
	if err := l.ReachUPnPNet([]*Host{ph}, []*Router{hb.Router}); err != nil {
		t.Fatal(err)
	}
	w := &mappedWorld{lab: l, ra: ra}
	w.p = l.StartNode(t, ph, NodeOptions{})
	boot := []string{fmt.Sprintf("%s:%d", ph.IP, NodePort)}
	w.aStarted = time.Now()
	w.a = l.StartNode(t, ha, NodeOptions{Bootstrap: boot})
	w.b = l.StartNode(t, hb, NodeOptions{Bootstrap: boot})
	return w
}

// TestPortMappingReachesSymmetric: a node behind a symmetric NAT is reached
// directly by a node behind another symmetric NAT (a pair no punch can
// join), through the mapping its router's miniupnpd granted: Mode A connect
// and FIND_NODE, no hub. One row per protocol miniupnpd offers alone, and
// one with all of them (the node then picks PCP). After the node stops, the
// mapping is gone from the router.
func TestPortMappingReachesSymmetric(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts UPnPOptions
		want string
	}{
		{"all", UPnPOptions{UPnP: true, NATPMP: true, PCP: true}, "pcp"},
		{"natpmp-only", UPnPOptions{NATPMP: true}, "natpmp"},
		{"pcp-only", UPnPOptions{PCP: true}, "pcp"},
		{"upnp-only", UPnPOptions{UPnP: true}, "upnp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newMappedWorld(t, tc.opts)
			proto, ext := waitMapped(t, w.a, 60*time.Second)
			mapped := time.Since(w.aStarted) // includes the process start and bootstrap
			if proto != tc.want || !strings.HasPrefix(ext, w.ra.WANIP.String()+":") {
				t.Fatalf("mapping %s %s, want %s on %s", proto, ext, tc.want, w.ra.WANIP)
			}
			rec := waitRecord(t, w.b, w.a, "quic://"+ext, 60*time.Second)
			d, err := w.b.Dial(w.a.Address, 20*time.Second)
			if err != nil || !d.OK || d.Path != "direct" || d.Remote != ext {
				t.Fatalf("b dials a: %+v %v (want direct to %s)", d, err, ext)
			}
			f, err := w.b.FindNode(w.a.Address)
			if err != nil || !f.OK || f.Remote != ext {
				t.Fatalf("b FIND_NODE a: %+v %v (want via %s)", f, err, ext)
			}
			before, err := w.ra.UPnPRedirects()
			if err != nil || len(before) != 1 {
				t.Fatalf("router rules while running: %v %v", before, err)
			}
			w.a.Stop()
			after, err := w.ra.UPnPRedirects()
			if err != nil || len(after) != 0 {
				t.Fatalf("router still maps after the node stopped: %v %v", after, err)
			}
			if !strings.Contains(logText(t, w.a), "port mapping: removed from the router") {
				t.Fatal("node did not log the removal")
			}
			logRows(t, "port mapping "+tc.name, []string{
				row("mapped and proven (since start)", true, mapped, proto+" "+ext),
				row("record leads with mapping", true, 0, fmt.Sprintf("nat=%s %v", rec.NAT, rec.Endpoints)),
				row("b -> a Mode A connect", d.OK, time.Duration(d.TookMS)*time.Millisecond, d.Path+" "+d.Remote),
				row("b -> a FIND_NODE", f.OK, 0, f.Transport+" "+f.Remote),
				row("mapping gone after stop", len(after) == 0, 0, before[0]),
			})
		})
	}
}

// TestPortMappingLeaseRenewed: miniupnpd grants PCP leases of 20 s; 50 s
// later the mapping still stands on the router because the node renewed it.
func TestPortMappingLeaseRenewed(t *testing.T) {
	t.Parallel()
	w := newMappedWorld(t, UPnPOptions{PCP: true, MaxLifetime: 20})
	_, ext := waitMapped(t, w.a, 60*time.Second)
	time.Sleep(50 * time.Second)
	rules, err := w.ra.UPnPRedirects()
	if err != nil || len(rules) != 1 {
		t.Fatalf("router rules after 2.5 leases: %v %v", rules, err)
	}
	var v mappingView
	if err := w.a.JSON("/debug/host", &v); err != nil || len(v.PortMapping) == 0 || v.PortMapping[0].External != ext ||
		v.PortMapping[0].LeaseLeftS <= 0 || v.PortMapping[0].LeaseLeftS > 20 {
		t.Fatalf("node mapping after 50 s: %+v %v", v, err)
	}
	if n := strings.Count(logText(t, w.a), "port mapping: renewed"); n < 3 {
		t.Fatalf("renewals logged: %d, want >= 3 in 50 s of 20 s leases", n)
	}
}

// TestPortMappingFallback: behind a router without any port mapping the node
// says so in one log line and carries on (no mapping, nothing published for
// it). It is also the control of TestPortMappingReachesSymmetric: without the
// mapping, b behind a symmetric NAT cannot reach a.
func TestPortMappingFallback(t *testing.T) {
	t.Parallel()
	l := New(t)
	ph := l.AddWANHost("p")
	ha := l.AddNATHost("a", Symmetric)
	hb := l.AddNATHost("b", Symmetric)
	l.StartNode(t, ph, NodeOptions{})
	boot := []string{fmt.Sprintf("%s:%d", ph.IP, NodePort)}
	a := l.StartNode(t, ha, NodeOptions{Bootstrap: boot})
	b := l.StartNode(t, hb, NodeOptions{Bootstrap: boot})
	const line = "port mapping: the router offers none"
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logText(t, a), line) {
		if time.Now().After(deadline) {
			t.Fatalf("no fallback line in 30 s:\n%s", a.Proc.Tail(30))
		}
		time.Sleep(250 * time.Millisecond)
	}
	var v mappingView
	if err := a.JSON("/debug/host", &v); err != nil || len(v.PortMapping) != 0 {
		t.Fatalf("mapping without a mapping router: %+v %v", v, err)
	}
	text := logText(t, a)
	if n := strings.Count(text, "port mapping:"); n != 1 {
		t.Fatalf("want exactly one port mapping line, got %d:\n%s", n, text)
	}
	// b finds a's record (so the dial below fails for the NATs, not the DHT).
	deadline = time.Now().Add(30 * time.Second)
	for {
		r, err := b.Resolve(a.Address)
		if err == nil && r.OK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b never resolved a: %+v %v", r, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if d, err := b.Dial(a.Address, 10*time.Second); err == nil && d.OK {
		t.Fatalf("b reached a behind a symmetric NAT without a mapping or hub: %+v", d)
	}
}

// TestPortMappingConflictAndProof: two nodes behind one miniupnpd router both
// listen on port 4121; the second gets another outside port and both are
// reached directly. Then a router that grants mappings but drops what
// arrives on them: the node never publishes such a mapping.
func TestPortMappingConflictAndProof(t *testing.T) {
	t.Parallel()
	for _, proto := range []string{"pcp", "upnp"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			opts := UPnPOptions{PCP: proto == "pcp", UPnP: proto == "upnp"}
			w := newMappedWorld(t, opts)
			a2h := w.ra.AddHost("a2")
			a2 := w.lab.StartNode(t, a2h, NodeOptions{Bootstrap: []string{fmt.Sprintf("%s:%d", w.p.Host.IP, NodePort)}})
			_, ext1 := waitMapped(t, w.a, 60*time.Second)
			p2, ext2 := waitMapped(t, a2, 60*time.Second)
			if ext1 == ext2 || p2 != proto {
				t.Fatalf("two LAN hosts share %s / %s (%s)", ext1, ext2, p2)
			}
			for _, n := range []*Node{w.a, a2} {
				_, ext := waitMapped(t, n, time.Second)
				waitRecord(t, w.b, n, "quic://"+ext, 60*time.Second)
				if d, err := w.b.Dial(n.Address, 20*time.Second); err != nil || !d.OK || d.Path != "direct" || d.Remote != ext {
					t.Fatalf("b dials %s: %+v %v (want direct to %s)", n.Host.Name, d, err, ext)
				}
			}
			t.Logf("%s: a mapped %s, a2 mapped %s; b reached both directly", proto, ext1, ext2)
		})
	}
	t.Run("unproven", func(t *testing.T) {
		t.Parallel()
		l := New(t)
		ph := l.AddWANHost("p")
		ra := l.AddUPnPRouter(t, "ar", Symmetric, UPnPOptions{PCP: true})
		// The router grants mappings but its forwarding drops what comes in.
		if _, err := ra.NS.RunStdin("table ip natlab_deaf {\n chain deaf {\n  type filter hook forward priority -20; policy accept;\n"+
			"  iifname \"wan0\" ct status dnat drop\n }\n}\n", "nft", "-f", "-"); err != nil {
			t.Fatal(err)
		}
		if err := l.ReachUPnPNet([]*Host{ph}, nil); err != nil {
			t.Fatal(err)
		}
		p := l.StartNode(t, ph, NodeOptions{})
		a := l.StartNode(t, ra.AddHost("a"), NodeOptions{Bootstrap: []string{fmt.Sprintf("%s:%d", ph.IP, NodePort)}})
		const line = "port mapping: no peer could reach the mapped address yet"
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(logText(t, a), line) {
			if time.Now().After(deadline) {
				t.Fatalf("no failed proof in 60 s:\n%s", a.Proc.Tail(30))
			}
			time.Sleep(250 * time.Millisecond)
		}
		var v mappingView
		if err := a.JSON("/debug/host", &v); err != nil || len(v.PortMapping) != 1 || v.PortMapping[0].Verified {
			t.Fatalf("mapping state %+v %v: want one unproven mapping", v, err)
		}
		ext := v.PortMapping[0].External
		r, err := p.Resolve(a.Address)
		if err != nil || !r.OK {
			t.Fatalf("resolve a: %+v %v", r, err)
		}
		for _, ep := range r.Endpoints {
			if strings.Contains(ep, ext) {
				t.Fatalf("unproven mapping %s published: %v", ext, r.Endpoints)
			}
		}
	})
}
