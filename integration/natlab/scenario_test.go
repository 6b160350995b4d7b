package natlab

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// readyPair builds two port-restricted nodes (optionally with router UDP
// conntrack timeouts set before they start) and waits until both are ready.
func readyPair(t *testing.T, w *world, udpTimeout int) (*Node, *Node) {
	ha := w.lab.AddNATHost("a", PortRestricted)
	hb := w.lab.AddNATHost("b", PortRestricted)
	if udpTimeout > 0 {
		for _, h := range []*Host{ha, hb} {
			if err := h.Router.SetUDPTimeouts(udpTimeout, udpTimeout); err != nil {
				t.Fatal(err)
			}
		}
	}
	opts := NodeOptions{Hub: w.hub, Bootstrap: []string{fmt.Sprintf("%s.5:%d", WANNet, NodePort)}}
	a := w.lab.StartNode(t, ha, opts)
	b := w.lab.StartNode(t, hb, opts)
	for _, n := range []*Node{w.boot, a, b} {
		if _, err := n.WaitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

func logRows(t *testing.T, title string, rows []string) {
	t.Logf("%s:\n%-36s %-6s %10s  %s\n%s", title, "step", "result", "time", "detail", strings.Join(rows, "\n"))
}

func row(step string, ok bool, took time.Duration, detail string) string {
	res := "ok"
	if !ok {
		res = "FAIL"
	}
	return progress(fmt.Sprintf("%-36s %-6s %10s  %s", step, res, took.Round(time.Millisecond), detail))
}

var progressMu sync.Mutex

// progress prints one result line to stderr as soon as it is known (make
// test shows these while the lab runs; t.Log output waits for the test's
// end) and returns it for the summary table.
func progress(line string) string {
	progressMu.Lock()
	defer progressMu.Unlock()
	fmt.Fprintf(os.Stderr, "natlab: %s\n", line)
	return line
}

// TestKeepalive: with the routers' conntrack UDP timeouts at 30 s, a
// punched connection left idle for two minutes stays up (keepalives must
// run below the NAT timer).
func TestKeepalive(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := readyPair(t, w, 30)
	r, err := a.Hold(b.Address)
	if err != nil || !r.OK {
		t.Fatalf("hold a->b: %v %s", err, r.Error)
	}
	rows := []string{row("punch a->b (held)", true, time.Duration(r.TookMS)*time.Millisecond, r.Remote)}
	const idle = 130 * time.Second
	time.Sleep(idle)
	h, err := a.HeldConn(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	rows = append(rows, row(fmt.Sprintf("idle %v, udp timeout 30s", idle), h.Alive, idle, h.Error))
	logRows(t, "keepalive", rows)
	if !h.Alive {
		t.Fatalf("held connection died while idle behind 30 s conntrack timers: %s\nrouter a:\n%s", h.Error, a.Host.Router.Conntrack())
	}
}

// TestScenarios runs recovery after a conntrack flush, restart with the same
// key, and hub outage on one world, in sequence.
func TestScenarios(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := readyPair(t, w, 0)
	var rows []string
	defer func() { logRows(t, "scenarios (port-restricted pair)", rows) }()

	r, err := a.Hold(b.Address)
	if err != nil || !r.OK {
		t.Fatalf("hold a->b: %v %s", err, r.Error)
	}
	rows = append(rows, row("punch a->b", true, time.Duration(r.TookMS)*time.Millisecond, r.Path+" "+r.Remote))

	// After the punch, DHT RPCs between the pair go over the Mode B pool.
	rows = append(rows, checkModeB(t, a, b), checkModeB(t, b, a))

	// Recovery: flush both routers' conntrack mid-session.
	for _, n := range []*Node{a, b} {
		if err := n.Host.Router.FlushConntrack(); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	var d DialResult
	deadline := time.Now().Add(90 * time.Second)
	for {
		d, err = a.Dial(b.Address, 40*time.Second)
		if err == nil && d.OK || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	held, _ := a.HeldConn(b.Address)
	rows = append(rows, row("reconnect after ct flush", d.OK, time.Since(start),
		fmt.Sprintf("path %s, new punch %v, held conn survived=%v; %s", d.Path, d.Punch != nil, held.Alive, d.Error)))
	if !d.OK {
		t.Errorf("a could not reach b again after the conntrack flush: %v %s", err, d.Error)
	}

	// Path outage: drop UDP between the routers until the punched
	// connections time out, then restore the path and flush conntrack: the
	// next dial must punch again.
	undo, err := b.Host.Router.BlockUDP(a.Host.PublicIP())
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	var st NodeStatus
	for until := time.Now().Add(60 * time.Second); ; {
		st, err = a.Status()
		held, _ = a.HeldConn(b.Address)
		if err == nil && !st.Pooled(b.Address) && !held.Alive || time.Now().After(until) {
			break
		}
		time.Sleep(time.Second)
	}
	gone := time.Since(start)
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	rows = append(rows, row("path outage: pooled conn dropped", !st.Pooled(b.Address) && !held.Alive, gone, "held conn: "+held.Error))
	if st.Pooled(b.Address) {
		t.Errorf("a still pools b %v after the path was cut", gone)
	}
	for _, n := range []*Node{a, b} {
		if err := n.Host.Router.FlushConntrack(); err != nil {
			t.Fatal(err)
		}
	}
	start = time.Now()
	tries, repunched, firstFail := 0, false, ""
	for deadline := time.Now().Add(90 * time.Second); ; {
		tries++
		d, err = a.Dial(b.Address, 40*time.Second)
		repunched = repunched || d.Punch != nil && d.Punch.OK
		if err == nil && d.OK || time.Now().After(deadline) {
			break
		}
		if firstFail == "" {
			firstFail = fmt.Sprintf("%v %s: %s", err, d.Reason, d.Error)
		}
		time.Sleep(time.Second)
	}
	rows = append(rows, row("re-punch after outage + ct flush", d.OK && d.Path == "punched", time.Since(start),
		fmt.Sprintf("%d dials, path %s, new punch %v; first failure: %s", tries, d.Path, repunched, firstFail)))
	if !d.OK || d.Path != "punched" {
		t.Errorf("no punched connection after the outage: %v %+v", err, d)
	}

	// Restart: same key and data dir; b must come back under its address,
	// re-publish and be resolvable with the new record.
	oldAddr := b.Address
	before, err := b.Status()
	if err != nil {
		t.Fatal(err)
	}
	b.Stop()
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if b.Address != oldAddr {
		t.Errorf("restarted node has address %s, want %s", b.Address, oldAddr)
	}
	if _, err := b.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	var rec Record
	for until := time.Now().Add(60 * time.Second); ; {
		rec, err = w.boot.Resolve(b.Address)
		if err == nil && rec.OK && rec.Seq > before.Published.Seq || time.Now().After(until) {
			break
		}
		time.Sleep(time.Second)
	}
	rows = append(rows, row("resolve b after restart", rec.OK && rec.Seq > before.Published.Seq, time.Since(start),
		fmt.Sprintf("seq %d -> %d %v %s", before.Published.Seq, rec.Seq, rec.Endpoints, rec.Error)))
	if !rec.OK || rec.Seq <= before.Published.Seq {
		t.Errorf("restarted node's new record not resolvable: %v %+v (old seq %d)", err, rec, before.Published.Seq)
	}
	start = time.Now()
	deadline = time.Now().Add(90 * time.Second)
	var firstErr string
	tries = 0
	for {
		tries++
		d, err = a.Dial(b.Address, 40*time.Second)
		if err == nil && d.OK || time.Now().After(deadline) {
			break
		}
		if firstErr == "" {
			firstErr = fmt.Sprintf("%v %s: %s", err, d.Reason, d.Error)
		}
		time.Sleep(time.Second)
	}
	rows = append(rows, row("dial after b restart", d.OK, time.Since(start), fmt.Sprintf("%d dials, path %s; first failure: %s", tries, d.Path, firstErr)))
	if !d.OK {
		t.Errorf("restarted node not reachable: %v %s", err, d.Error)
	}

	// Hub down: a fresh peer c (never contacted) cannot be punched...
	hc := w.lab.AddNATHost("c", PortRestricted)
	c := w.lab.StartNode(t, hc, NodeOptions{Hub: w.hub, Bootstrap: []string{fmt.Sprintf("%s.5:%d", WANNet, NodePort)}})
	if _, err := c.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	w.hub.Stop()
	d, err = a.Dial(c.Address, 15*time.Second)
	rows = append(rows, row("dial new peer, hub down (must fail)", !d.OK, time.Duration(d.TookMS)*time.Millisecond, d.Reason+": "+d.Error))
	if err != nil || d.OK || d.Reason != "no-hub" || d.Error == "" {
		t.Errorf("with the hub down a punch to a port-restricted peer must fail with reason no-hub and a message; got ok=%v err=%v reason=%q %q", d.OK, err, d.Reason, d.Error)
	}
	// ... and succeeds once the hub is back and both re-registered.
	if err := w.hub.Start(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for _, n := range []*Node{a, c} {
		if _, err := n.WaitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	deadline = time.Now().Add(90 * time.Second)
	for {
		d, err = a.Dial(c.Address, 40*time.Second)
		if err == nil && d.OK || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	rows = append(rows, row("dial new peer, hub back", d.OK, time.Since(start), d.Error))
	if !d.OK {
		t.Errorf("punch still failing after the hub returned: %v %s", err, d.Error)
	}
}

// TestPunchLatency measures median punch time per NAT pair with 0 ms and
// 40 ms peer-to-peer RTT (10 ms one-way on each router's WAN link, via the
// userspace delay line, so it runs without sch_netem). It prints a table and
// asserts only that the punches succeed.
func TestPunchLatency(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	pairs := [][2]NATType{{PortRestricted, PortRestricted}, {FullCone, PortRestricted}, {AddressRestricted, Symmetric}}
	rtts := []time.Duration{0, 40 * time.Millisecond}
	const samples = 3
	type job struct {
		pair    [2]NATType
		rtt     time.Duration
		callers []*Node
		callee  *Node
	}
	var jobs []*job
	mk := func(name string, typ NATType, rtt time.Duration) *Node {
		r := w.lab.AddRouter(name+"r", typ, RouterOptions{DelayLine: true})
		if err := r.SetDelay(rtt/4, 0); err != nil {
			t.Fatal(err)
		}
		h := r.AddHost(name)
		return w.lab.StartNode(t, h, NodeOptions{Hub: w.hub, Bootstrap: []string{fmt.Sprintf("%s.5:%d", WANNet, NodePort)}})
	}
	for pi, p := range pairs {
		for ri, rtt := range rtts {
			j := &job{pair: p, rtt: rtt}
			for s := 0; s < samples; s++ {
				j.callers = append(j.callers, mk(fmt.Sprintf("l%d%d%d", pi, ri, s), p[0], rtt))
			}
			j.callee = mk(fmt.Sprintf("l%d%dx", pi, ri), p[1], rtt)
			jobs = append(jobs, j)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var rows []string
	for _, j := range jobs {
		j := j
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, n := range append(j.callers, j.callee, w.boot) {
				if _, err := n.WaitReady(90 * time.Second); err != nil {
					t.Error(err)
					return
				}
			}
			var times []time.Duration
			var paths []string
			retries := 0
			for _, c := range j.callers {
				r := dialPair(t, c, j.callee, j.pair[0], j.pair[1])
				if !r.ok {
					t.Errorf("%s x %s at %v RTT: %s", j.pair[0], j.pair[1], j.rtt, r.why)
					continue
				}
				retries += r.retries
				times = append(times, r.took)
				paths = append(paths, r.path)
			}
			if len(times) == 0 {
				return
			}
			sort.Slice(times, func(a, b int) bool { return times[a] < times[b] })
			mu.Lock()
			rows = append(rows, fmt.Sprintf("%-38s %6v %10s %10s %10s  %s (resolve retries %d)", fmt.Sprintf("%s x %s", j.pair[0], j.pair[1]), j.rtt,
				times[len(times)/2].Round(time.Millisecond), times[0].Round(time.Millisecond),
				times[len(times)-1].Round(time.Millisecond), strings.Join(paths, ","), retries))
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Strings(rows)
	t.Logf("punch time (%d samples per row):\n%-38s %6s %10s %10s %10s  %s\n%s", samples, "pair", "rtt", "median", "min", "max", "paths", strings.Join(rows, "\n"))
}

// checkModeB sends FIND_NODE RPCs from a to b and checks from both nodes'
// Mode B pool counters that the requests and their answers travelled over
// the punched connection, not plain UDP.
func checkModeB(t *testing.T, a, b *Node) string {
	t.Helper()
	const n = 10
	start := time.Now()
	var sa0, sb0 NodeStatus
	for until := time.Now().Add(10 * time.Second); ; {
		var err1, err2 error
		sa0, err1 = a.Status()
		sb0, err2 = b.Status()
		if err1 == nil && err2 == nil && sa0.Pooled(b.Address) && sb0.Pooled(a.Address) || time.Now().After(until) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !sa0.Pooled(b.Address) || !sb0.Pooled(a.Address) {
		t.Errorf("after the punch %s and %s do not pool each other (Mode B): %+v / %+v", a.Host.Name, b.Host.Name, sa0.Pool.Peers, sb0.Pool.Peers)
	}
	for i := 0; i < n; i++ {
		fn, err := a.FindNode(b.Address)
		if err != nil || !fn.OK || fn.Transport != "modeB" {
			t.Errorf("FIND_NODE %s->%s #%d: %v %+v, want ok over modeB", a.Host.Name, b.Host.Name, i, err, fn)
			break
		}
	}
	sa1, err1 := a.Status()
	sb1, err2 := b.Status()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	d := func(x, y uint64) uint64 { return y - x }
	detail := fmt.Sprintf("%s sent %d recv %d / %s recv %d sent %d over Mode B",
		a.Host.Name, d(sa0.ModeBSent(), sa1.ModeBSent()), d(sa0.ModeBRecv(), sa1.ModeBRecv()),
		b.Host.Name, d(sb0.ModeBRecv(), sb1.ModeBRecv()), d(sb0.ModeBSent(), sb1.ModeBSent()))
	ok := d(sa0.ModeBSent(), sa1.ModeBSent()) >= n && d(sb0.ModeBRecv(), sb1.ModeBRecv()) >= n &&
		d(sb0.ModeBSent(), sb1.ModeBSent()) >= n && d(sa0.ModeBRecv(), sa1.ModeBRecv()) >= n
	if !ok {
		t.Errorf("%d FIND_NODE %s->%s: Mode B counters did not move as expected: %s", n, a.Host.Name, b.Host.Name, detail)
	}
	return row(fmt.Sprintf("%d FIND_NODE %s->%s", n, a.Host.Name, b.Host.Name), ok, time.Since(start), detail)
}
