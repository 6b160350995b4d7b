package natlab

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// waitPublished waits until n has published its endpoint record (for nodes
// without a hub or STUN server, whose NAT type stays unknown).
func waitPublished(t *testing.T, n *Node, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m, err := n.Metrics()
		if err == nil && m["a2al_endpoint_publish_total"] >= 1 {
			return
		}
		if n.Proc.Exited() || time.Now().After(deadline) {
			t.Fatalf("natlab: node %s did not publish within %v (%v)", n.Host.Name, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestIPv6 runs the dual-stack rows (docs/host.md §6, docs/host.md §7): a WAN with an IPv6
// segment, home routers doing IPv4 NAT plus IPv6 routing behind a stateful
// firewall (no NAT66), and
//   - two dual-stack nodes behind *symmetric* IPv4 NATs (a pair IPv4 cannot
//     punch) connect by punching their IPv6 firewalls;
//   - an IPv6-only node joins the dual-stack DHT through an IPv6 seed,
//     publishes, and is resolved by a dual-stack node and an IPv4-only one;
//   - a dual-stack node dials a dual-stack public node over IPv6, and over
//     IPv4 once its IPv6 path is black-holed.
func TestIPv6(t *testing.T) {
	t.Parallel()
	l := New(t)
	hub := l.StartHub(t)
	bh := l.AddWANHost("boot", mustIP(WANNet+".5"))
	bh.EnableIPv6()
	boot := l.StartNode(t, bh, NodeOptions{Hub: hub})
	seed4 := fmt.Sprintf("%s.5:%d", WANNet, NodePort)
	seed6 := fmt.Sprintf("[%s]:%d", bh.IPv6(), NodePort)
	dual := NodeOptions{Hub: hub, Bootstrap: []string{seed6, seed4}}

	behind := func(name string, typ NATType) *Host {
		r := l.AddRouter(name+"r", typ, RouterOptions{})
		r.EnableIPv6()
		h := r.AddHost(name)
		h.EnableIPv6()
		return h
	}
	ha, hb := behind("a", Symmetric), behind("b", Symmetric)
	a, b := l.StartNode(t, ha, dual), l.StartNode(t, hb, dual)
	he := l.AddWANHost("e")
	he.EnableIPv6()
	e := l.StartNode(t, he, dual)
	hc := behind("c", PortRestricted)
	hc.DropIPv4()
	c := l.StartNode(t, hc, NodeOptions{Bootstrap: []string{seed6}})
	d := l.StartNode(t, l.AddNATHost("d", PortRestricted), NodeOptions{Hub: hub, Bootstrap: []string{seed4}})
	for _, n := range []*Node{boot, a, b, e, d} {
		if _, err := n.WaitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	waitPublished(t, c, 60*time.Second)

	var rows []string
	fail := false
	check := func(step string, ok bool, took time.Duration, detail string) {
		rows = append(rows, row(step, ok, took, detail))
		fail = fail || !ok
	}

	// 0. The IPv6 firewalls are stateful: unsolicited inbound is dropped,
	// the reply direction of a flow the LAN host started passes.
	blocked, passes, err := firewallHolds(hb, he)
	check("ipv6 firewall: unsolicited dropped", err == nil && blocked, 0, fmt.Sprint(err))
	check("ipv6 firewall: reply to own flow passes", err == nil && passes, 0, fmt.Sprint(err))

	// 1. Punch through two stateful IPv6 firewalls (IPv4: symmetric x symmetric).
	r, err := a.Dial(b.Address, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ice := ""
	if r.Punch != nil {
		ice = fmt.Sprintf(" punch=%s ok=%v in %dms", r.Punch.Candidates, r.Punch.OK, r.Punch.TookMS)
	}
	check("ipv6 firewalls: a->b punched over v6", r.OK && r.Path == "punched" && isIPv6Endpoint(r.Remote),
		time.Duration(r.TookMS)*time.Millisecond, fmt.Sprintf("path=%s remote=%s%s %s", r.Path, r.Remote, ice, r.Error))

	// 2. An IPv6-only node in the dual-stack DHT.
	st, err := c.Status()
	check("ipv6-only c joined (routing peers)", err == nil && st.RoutingPeers > 0, 0, fmt.Sprintf("%d peers %v", st.RoutingPeers, err))
	for _, res := range []*Node{d, a} {
		var rec Record
		deadline := time.Now().Add(30 * time.Second)
		for {
			rec, err = res.Resolve(c.Address)
			if err == nil && rec.OK || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Second)
		}
		all6 := len(rec.Endpoints) > 0 && !slices.ContainsFunc(rec.Endpoints, func(s string) bool { return !isIPv6Endpoint(s) })
		check(fmt.Sprintf("%s resolves ipv6-only c", res.Host.Name), err == nil && rec.OK && all6, 0,
			fmt.Sprintf("endpoints=%v %s %v", rec.Endpoints, rec.Error, err))
	}

	// 3. Happy Eyeballs: IPv6 preferred, IPv4 when IPv6 is black-holed.
	r, err = a.Dial(e.Address, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	check("dual-stack a->e prefers v6", r.OK && r.Path == "direct" && isIPv6Endpoint(r.Remote),
		time.Duration(r.TookMS)*time.Millisecond, fmt.Sprintf("path=%s remote=%s %s", r.Path, r.Remote, r.Error))
	undo, err := ha.BreakIPv6UDP()
	if err != nil {
		t.Fatal(err)
	}
	r, err = a.Dial(e.Address, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	check("v6 broken: a->e falls back to v4", r.OK && r.Path == "direct" && !isIPv6Endpoint(r.Remote) && r.Remote != "",
		time.Duration(r.TookMS)*time.Millisecond, fmt.Sprintf("path=%s remote=%s %s", r.Path, r.Remote, r.Error))
	if err := undo(); err != nil {
		t.Error(err)
	}
	logRows(t, "ipv6", rows)
	if fail {
		t.Fatal("an IPv6 row failed (see table)")
	}
}
