package natlab

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/a2alnode/a2al/natprobe"
)

// world is a hub, a public bootstrap node and helpers to add NATed nodes.
type world struct {
	lab  *Lab
	hub  *Hub
	boot *Node
}

func newWorld(t *testing.T) *world {
	l := New(t)
	w := &world{lab: l, hub: l.StartHub(t)}
	bh := l.AddWANHost("boot", mustIP(WANNet+".5"))
	w.boot = l.StartNode(t, bh, NodeOptions{Hub: w.hub})
	return w
}

func (w *world) node(t *testing.T, name string, typ NATType) *Node {
	h := w.lab.AddNATHost(name, typ)
	return w.lab.StartNode(t, h, NodeOptions{Hub: w.hub, Bootstrap: []string{fmt.Sprintf("%s.5:%d", WANNet, NodePort)}})
}

// punchable is the expected outcome without a relay, judged on the types
// the routers classify as. The other pairs connect through the hub's
// relay; a UDP-blocked node's whole socket runs over a TURN-over-TCP
// allocation at the hub, so all its paths are relayed.
func punchable(a, b NATType) bool {
	return natprobe.Punchable(natprobe.NATType(a.ClassifiesAs()), natprobe.NATType(b.ClassifiesAs()))
}

// pairResult is one row of a punch table.
type pairResult struct {
	a, b       NATType
	natA, natB string
	want, ok   bool
	took       time.Duration // punch time (dial time for direct connections)
	path       string        // direct | punched | relayed
	cands      string        // ICE candidate types local->remote of the punch
	modeB      string        // FIND_NODE a->b after the connection: transport, or "-"
	reason     string        // the dial's failure code
	why        string
	retries    int // resolution retries before the dial
}

func (r pairResult) row() string {
	res := "ok"
	if !r.ok {
		res = "FAIL"
	}
	exp := "punch"
	if !r.want {
		exp = "relay"
	}
	why := r.why
	if r.retries > 0 {
		why = fmt.Sprintf("(%d resolve retries) %s", r.retries, why)
	}
	if len(why) > 70 {
		why = why[:70] + "..."
	}
	path := r.path
	if path == "" {
		path = "-"
	}
	if r.cands != "" {
		path += " " + r.cands
	}
	return fmt.Sprintf("%-38s %-8s %-5s %9s  %-22s %-6s %-39s %s", fmt.Sprintf("%s x %s", r.a, r.b), exp, res,
		r.took.Round(time.Millisecond), path, r.modeB, r.natA+" / "+r.natB, why)
}

const tableHeader = "pair                                   expect   got   punch/dial  path (candidates)      dht    classified                              failure"

// dialPair makes a dial b through a's control API and fills a result row
// from the dial outcome and the punch it ran. After a punched connection it
// also sends one FIND_NODE a->b, which must travel over the Mode B pool.
func dialPair(t *testing.T, a, b *Node, ta, tb NATType) pairResult {
	r := pairResult{a: ta, b: tb, want: punchable(ta, tb), modeB: "-"}
	if st, err := a.Status(); err == nil {
		r.natA = st.NAT.Type
	}
	if st, err := b.Status(); err == nil {
		r.natB = st.NAT.Type
	}
	// A lookup can miss a freshly published record in a NAT-heavy network
	// (the holders may themselves need a punch); retry resolution failures
	// for a while and report how many there were.
	var res DialResult
	var err error
	for tries, until := 0, time.Now().Add(30*time.Second); ; tries++ {
		res, err = a.Dial(b.Address, 40*time.Second)
		if err != nil || res.OK || res.Reason != "no-endpoint-record" || !r.want || time.Now().After(until) {
			r.retries = tries
			break
		}
		time.Sleep(2 * time.Second)
	}
	if err != nil {
		r.why = err.Error()
		return r
	}
	r.ok, r.path = res.OK, res.Path
	r.took = time.Duration(res.TookMS) * time.Millisecond
	if res.Punch != nil {
		r.cands = res.Punch.Candidates
		if res.Punch.OK {
			r.took = time.Duration(res.Punch.TookMS) * time.Millisecond
		}
	}
	if !res.OK {
		r.reason = res.Reason
		r.why = res.Reason + ": " + res.Error
		return r
	}
	if res.Path == "relayed" {
		// A UDP-blocked caller reaches an open peer by a direct dial
		// through its relay socket, which pools no Mode B connection:
		// make sure one exists (a no-op when the dial punched).
		if pr, err := a.Punch(b.Address, 30*time.Second); err != nil || !pr.OK {
			r.modeB = "err"
			r.why = fmt.Sprintf("mode B punch: %v %s %s", err, pr.Reason, pr.Error)
			return r
		}
	}
	if res.Path == "punched" || res.Path == "relayed" {
		fn, err := a.FindNode(b.Address)
		switch {
		case err != nil:
			r.modeB = "err"
			r.why = "find_node: " + err.Error()
		case !fn.OK:
			r.modeB = fn.Transport + "!"
			r.why = "find_node: " + fn.Error
		default:
			r.modeB = fn.Transport
		}
	}
	return r
}

// TestPunchMatrix: for each pair of NAT types, two nodes behind their NATs
// bootstrap, classify, publish and then the first dials the second (resolve,
// direct dial, punch through the hub). Pairs ICE can punch must connect;
// the others must fail with a reason.
func TestPunchMatrix(t *testing.T) {
	w := newWorld(t)
	types := []NATType{Public, FullCone, AddressRestricted, PortRestricted, Symmetric, PortShifted, DoubleNAT}
	type pair struct{ a, b NATType }
	var pairs []pair
	for i := range types {
		for j := i; j < len(types); j++ {
			pairs = append(pairs, pair{types[i], types[j]})
		}
	}
	for _, t := range []NATType{Public, PortRestricted, Symmetric, UDPBlocked} {
		pairs = append(pairs, pair{UDPBlocked, t})
	}
	pairs = append(pairs, pair{Public, UDPBlocked}, pair{PortRestricted, UDPBlocked}, pair{Symmetric, UDPBlocked})

	// Two nodes per type: callers ("<t>1") and callees ("<t>2").
	short := map[NATType]string{Public: "op", FullCone: "fc", AddressRestricted: "ar", PortRestricted: "pr",
		Symmetric: "sy", PortShifted: "ps", DoubleNAT: "dn", UDPBlocked: "ub"}
	callers, callees := map[NATType]*Node{}, map[NATType]*Node{}
	for _, p := range pairs {
		if callers[p.a] == nil {
			callers[p.a] = w.node(t, short[p.a]+"1", p.a)
		}
		if callees[p.b] == nil {
			callees[p.b] = w.node(t, short[p.b]+"2", p.b)
		}
	}
	var all []*Node
	for _, m := range []map[NATType]*Node{callers, callees} {
		for _, n := range m {
			all = append(all, n)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(all)+1)
	for _, n := range append(all, w.boot) {
		n := n
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := n.WaitReady(90 * time.Second); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	// Classification of every node, from its own view.
	for typ, n := range callers {
		if st, err := n.Status(); err == nil && st.NAT.Type != typ.ClassifiesAs() {
			t.Errorf("node behind %s classified itself as %q, want %q", typ, st.NAT.Type, typ.ClassifiesAs())
		}
	}
	checkRelayedRecords(t, w, callers[UDPBlocked], callees[UDPBlocked])

	results := make([]pairResult, len(pairs))
	sem := make(chan struct{}, 6)
	for i, p := range pairs {
		i, p := i, p
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = dialPair(t, callers[p.a], callees[p.b], p.a, p.b)
			progress("punch " + results[i].row())
		}()
	}
	wg.Wait()
	var rows []string
	for _, r := range results {
		rows = append(rows, r.row())
		switch {
		case r.want && !r.ok:
			t.Errorf("%s x %s: expected a punched connection, got failure: %s", r.a, r.b, r.why)
		case r.want && r.path == "relayed":
			t.Errorf("%s x %s: punchable pair left relayed", r.a, r.b)
		case !r.want && !r.ok:
			t.Errorf("%s x %s: expected a relayed connection, got failure: %s", r.a, r.b, r.why)
		case !r.want && r.path != "relayed":
			t.Errorf("%s x %s: connected (%s) although no relay-free path should exist", r.a, r.b, r.path)
		case !r.ok && r.reason != "punch-failed":
			t.Errorf("%s x %s: failure reason %q, want punch-failed (%s)", r.a, r.b, r.reason, r.why)
		case r.ok && (r.path == "punched" || r.path == "relayed") && r.modeB != "modeB":
			t.Errorf("%s x %s: after the punch a FIND_NODE went over %q, want the Mode B connection (%s)", r.a, r.b, r.modeB, r.why)
		}
	}
	sort.Strings(rows)
	t.Logf("punch matrix (caller x callee):\n%s\n%s", tableHeader, strings.Join(rows, "\n"))
}

// checkRelayedRecords: UDP-blocked nodes joined the DHT through their relay
// socket and published records saying so: the relayed address (on the
// hub's relay IP) as the only endpoint, NAT type restricted, the hub's TCP
// relay as the first hint. The public bootstrap node resolves them.
func checkRelayedRecords(t *testing.T, w *world, nodes ...*Node) {
	t.Helper()
	for _, n := range nodes {
		if n == nil {
			continue
		}
		st, err := n.Status()
		if err != nil || st.NAT.Relay == "" || st.RoutingPeers == 0 {
			t.Errorf("UDP-blocked node %s: relay socket %q, %d routing peers (%v)", n.Host.Name, st.NAT.Relay, st.RoutingPeers, err)
			continue
		}
		hub := HubIP.String()
		wantHint := fmt.Sprintf("turn://%s:%d?transport=tcp", hub, HubTURNPort)
		good := func(rec Record) bool {
			return rec.OK && len(rec.Endpoints) == 1 && strings.HasPrefix(rec.Endpoints[0], "quic://"+hub+":") &&
				rec.NAT == "address-restricted" && len(rec.Turns) > 0 && rec.Turns[0] == wantHint
		}
		var rec Record
		for until := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
			rec, err = w.boot.Resolve(n.Address)
			if (err == nil && good(rec)) || time.Now().After(until) {
				break
			}
		}
		if err != nil || !good(rec) {
			t.Errorf("record of UDP-blocked node %s: %+v (%v); want one endpoint on %s, nat address-restricted, first hint %s",
				n.Host.Name, rec, err, hub, wantHint)
			continue
		}
		t.Logf("UDP-blocked node %s: relay socket %s, record endpoints %v, nat %s, hints %v", n.Host.Name,
			st.NAT.Relay, rec.Endpoints, rec.NAT, rec.Turns)
	}
}
