package natlab

import (
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// WANNet is the "internet" of the lab: TEST-NET-3, so plausible-WAN checks
// treat it like public space while it never leaves the machine.
const WANNet = "203.0.113"

// Well-known WAN addresses.
var (
	HubIP    = net.ParseIP(WANNet + ".2").To4() // signal-hub primary (STUN + WebSocket)
	HubAltIP = net.ParseIP(WANNet + ".3").To4() // signal-hub second IP for STUN CHANGE-REQUEST
)

var labCounter atomic.Int32

// Lab is one isolated topology: a WAN bridge plus routers and hosts, all in
// namespaces named with a unique prefix and removed by Close (registered with
// t.Cleanup, on SIGINT/SIGTERM, and by the stale sweep of later runs).
type Lab struct {
	t      testing.TB
	Prefix string
	WAN    NetNS // holds bridge br0

	mu         sync.Mutex
	namespaces []string
	procs      []*Proc
	delays     []*delayLine
	ports      int // wan bridge port counter
	wanHosts   int // next auto WAN host octet offset
	routers    int
	logDir     string
	closed     bool
	v6         v6Lab // IPv6 segments (ipv6.go)
}

// New builds an empty lab (just the WAN bridge). It skips the test, or fails
// it under CI=true, when the machine cannot run the lab.
func New(t testing.TB) *Lab {
	t.Helper()
	Require(t)
	sweepOnce.Do(func() {
		if removed := sweepStale(); len(removed) > 0 {
			t.Logf("natlab: removed %d stale namespaces of dead runs", len(removed))
		}
	})
	installSignalHandler()
	l := &Lab{t: t, Prefix: fmt.Sprintf("a2l%dx%d-", os.Getpid(), labCounter.Add(1))}
	dir, err := os.MkdirTemp("", "natlab-logs-")
	if err != nil {
		t.Fatalf("natlab: log dir: %v", err)
	}
	l.logDir = dir
	registerLab(l)
	t.Cleanup(l.Close)
	wan, err := l.newNS("wan")
	if err != nil {
		t.Fatal(err)
	}
	l.WAN = wan
	if err := ipBatch(wan, "link add br0 type bridge", "link set br0 up"); err != nil {
		t.Fatal(err)
	}
	// Bridged frames must not traverse the WAN namespace's IP hooks.
	_ = wan.Sysctl("net.bridge.bridge-nf-call-iptables", "0")
	return l
}

func (l *Lab) newNS(short string) (NetNS, error) {
	name := l.Prefix + short
	ns, err := createNetNS(name)
	if err != nil {
		return NetNS{}, err
	}
	l.mu.Lock()
	l.namespaces = append(l.namespaces, name)
	l.mu.Unlock()
	return ns, nil
}

// Close stops all processes (dumping their log tails if the test failed) and
// deletes every namespace of the lab. Safe to call more than once.
func (l *Lab) Close() {
	if l.t.Failed() {
		l.mu.Lock()
		procs := append([]*Proc(nil), l.procs...)
		l.mu.Unlock()
		for _, p := range procs {
			l.t.Logf("---- log tail of %s (%s)\n%s", p.Name, p.LogPath, p.Tail(40))
		}
	}
	l.teardown()
}

func (l *Lab) teardown() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	procs := l.procs
	names := l.namespaces
	delays := l.delays
	l.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
	for _, d := range delays {
		d.close()
	}
	// Delete in reverse creation order (hosts before routers before WAN).
	for i := len(names) - 1; i >= 0; i-- {
		if err := deleteNetNS(names[i]); err != nil {
			fmt.Fprintf(os.Stderr, "natlab: %v\n", err)
		}
	}
	if !l.t.Failed() {
		_ = os.RemoveAll(l.logDir)
	}
	unregisterLab(l)
}

// connect creates a veth pair aName@aNS <-> bName@bNS.
func connect(a NetNS, aName string, b NetNS, bName string) error {
	return ipCmd("link", "add", "name", aName, "netns", a.Name, "type", "veth", "peer", "name", bName, "netns", b.Name)
}

// attachWAN links ns to the WAN bridge through interface ifName in ns.
func (l *Lab) attachWAN(ns NetNS, ifName string) error {
	l.mu.Lock()
	l.ports++
	port := fmt.Sprintf("p%d", l.ports)
	l.mu.Unlock()
	if err := connect(ns, ifName, l.WAN, port); err != nil {
		return err
	}
	if err := ipBatch(l.WAN, "link set "+port+" master br0", "link set "+port+" up"); err != nil {
		return err
	}
	return ipBatch(ns, "link set "+ifName+" up")
}

// Host is a namespace with one interface (eth0) that runs programs.
type Host struct {
	Lab    *Lab
	Name   string
	NS     NetNS
	IP     net.IP  // address on its segment
	Router *Router // nil for hosts on the WAN
}

// AddWANHost puts a host directly on the WAN. With no ips it gets the next
// free address from .100 on; extra ips are added to the same interface.
func (l *Lab) AddWANHost(name string, ips ...net.IP) *Host {
	l.t.Helper()
	if len(ips) == 0 {
		l.mu.Lock()
		ip := net.ParseIP(fmt.Sprintf("%s.%d", WANNet, 100+l.wanHosts)).To4()
		l.wanHosts++
		l.mu.Unlock()
		ips = []net.IP{ip}
	}
	ns, err := l.newNS(name)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := l.attachWAN(ns, "eth0"); err != nil {
		l.t.Fatal(err)
	}
	var cmds []string
	for _, ip := range ips {
		cmds = append(cmds, fmt.Sprintf("addr add %s/24 dev eth0", ip))
	}
	if err := ipBatch(ns, cmds...); err != nil {
		l.t.Fatal(err)
	}
	return &Host{Lab: l, Name: name, NS: ns, IP: ips[0]}
}

// Router is a NAT namespace: wan0 towards its upstream segment, bridge lan0
// towards its hosts.
type Router struct {
	Lab      *Lab
	Name     string
	NS       NetNS
	Type     NATType
	WANIP    net.IP
	LANIP    net.IP
	Upstream *Router // nil when wan0 is on the WAN bridge
	lanNet   string  // first three octets
	hosts    int
	delay    *delayLine
}

// RouterOptions tunes a router.
type RouterOptions struct {
	// Upstream puts this router behind another router (double NAT).
	Upstream *Router
	// Carrier gives the router a 100.64.N.0/24 LAN (CGNAT shared space).
	Carrier bool
	// MappingTimeout bounds cone mapping state (default 120 s).
	MappingTimeout time.Duration
	// DelayLine puts a userspace delay/loss stage between the router and
	// the WAN (see SetDelay); it works on kernels without sch_netem.
	DelayLine bool
	// Program, if set, installs the NAT rules instead of the lab's nft
	// ruleset (the compose lab's netlink programmer is tested this way).
	Program func(r *Router) error
}

// AddRouter builds a NAT router of the given type.
func (l *Lab) AddRouter(name string, typ NATType, opts RouterOptions) *Router {
	l.t.Helper()
	l.mu.Lock()
	l.routers++
	n := l.routers
	l.mu.Unlock()
	r := &Router{Lab: l, Name: name, Type: typ, Upstream: opts.Upstream}
	switch {
	case opts.Carrier:
		r.lanNet = fmt.Sprintf("100.64.%d", n)
	case opts.Upstream != nil:
		r.lanNet = fmt.Sprintf("192.168.%d", n)
	default:
		r.lanNet = fmt.Sprintf("10.%d.0", n)
	}
	r.LANIP = net.ParseIP(r.lanNet + ".1").To4()
	ns, err := l.newNS(name)
	if err != nil {
		l.t.Fatal(err)
	}
	r.NS = ns
	var cmds []string
	if opts.Upstream == nil {
		if n+10 > 99 {
			l.t.Fatalf("natlab: too many routers")
		}
		r.WANIP = net.ParseIP(fmt.Sprintf("%s.%d", WANNet, 10+n)).To4()
		if opts.DelayLine {
			if err := l.insertDelayLine(r); err != nil {
				l.t.Fatal(err)
			}
		} else if err := l.attachWAN(ns, "wan0"); err != nil {
			l.t.Fatal(err)
		}
		cmds = append(cmds, fmt.Sprintf("addr add %s/24 dev wan0", r.WANIP))
	} else {
		up := opts.Upstream
		r.WANIP = up.allocLAN()
		if err := up.plug(ns, "wan0"); err != nil {
			l.t.Fatal(err)
		}
		cmds = append(cmds,
			fmt.Sprintf("addr add %s/24 dev wan0", r.WANIP),
			fmt.Sprintf("route add default via %s", up.LANIP))
	}
	cmds = append(cmds,
		"link add lan0 type bridge",
		fmt.Sprintf("addr add %s/24 dev lan0", r.LANIP),
		"link set lan0 up")
	if err := ipBatch(ns, cmds...); err != nil {
		l.t.Fatal(err)
	}
	if err := ns.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		l.t.Fatal(err)
	}
	_ = ns.Sysctl("net.bridge.bridge-nf-call-iptables", "0")
	if opts.Program != nil {
		if err := opts.Program(r); err != nil {
			l.t.Fatalf("natlab: program %s router %s: %v", typ, ns.Name, err)
		}
		return r
	}
	rules, err := ruleset(typ, r.WANIP, opts.MappingTimeout)
	if err != nil {
		l.t.Fatal(err)
	}
	if _, err := ns.RunStdin(rules, "nft", "-f", "-"); err != nil {
		l.t.Fatalf("natlab: load %s ruleset in %s: %v", typ, ns.Name, err)
	}
	return r
}

func (r *Router) allocLAN() net.IP {
	r.Lab.mu.Lock()
	defer r.Lab.mu.Unlock()
	r.hosts++
	return net.ParseIP(fmt.Sprintf("%s.%d", r.lanNet, 1+r.hosts)).To4()
}

// plug links ns (interface ifName) into the router's LAN bridge.
func (r *Router) plug(ns NetNS, ifName string) error {
	r.Lab.mu.Lock()
	r.Lab.ports++
	port := fmt.Sprintf("h%d", r.Lab.ports)
	r.Lab.mu.Unlock()
	if err := connect(ns, ifName, r.NS, port); err != nil {
		return err
	}
	if err := ipBatch(r.NS, "link set "+port+" master lan0", "link set "+port+" up"); err != nil {
		return err
	}
	return ipBatch(ns, "link set "+ifName+" up")
}

// AddHost puts a new host on the router's LAN with a default route via it.
func (r *Router) AddHost(name string) *Host {
	l := r.Lab
	l.t.Helper()
	ns, err := l.newNS(name)
	if err != nil {
		l.t.Fatal(err)
	}
	ip := r.allocLAN()
	if err := r.plug(ns, "eth0"); err != nil {
		l.t.Fatal(err)
	}
	if err := ipBatch(ns,
		fmt.Sprintf("addr add %s/24 dev eth0", ip),
		fmt.Sprintf("route add default via %s", r.LANIP)); err != nil {
		l.t.Fatal(err)
	}
	return &Host{Lab: l, Name: name, NS: ns, IP: ip, Router: r}
}

// AddNATHost builds the router(s) for typ and one host behind them. For
// Public the host sits on the WAN; for DoubleNAT a carrier router
// ("<name>c") fronts a home router ("<name>r").
func (l *Lab) AddNATHost(name string, typ NATType) *Host {
	l.t.Helper()
	switch typ {
	case Public:
		return l.AddWANHost(name)
	case DoubleNAT:
		cgn := l.AddRouter(name+"c", PortRestricted, RouterOptions{Carrier: true})
		home := l.AddRouter(name+"r", PortRestricted, RouterOptions{Upstream: cgn})
		return home.AddHost(name)
	default:
		return l.AddRouter(name+"r", typ, RouterOptions{}).AddHost(name)
	}
}

// PublicIP is the address the WAN sees for this host.
func (h *Host) PublicIP() net.IP {
	if h.Router == nil {
		return h.IP
	}
	return h.Router.Outermost().WANIP
}

// Routers lists the routers between the host and the WAN, innermost first.
func (h *Host) Routers() []*Router {
	var rs []*Router
	for r := h.Router; r != nil; r = r.Upstream {
		rs = append(rs, r)
	}
	return rs
}

// Outermost is the router attached to the WAN.
func (r *Router) Outermost() *Router {
	for r.Upstream != nil {
		r = r.Upstream
	}
	return r
}

// FlushConntrack drops all connection tracking state (and with it every
// port-restricted and symmetric mapping) in the router.
func (r *Router) FlushConntrack() error {
	out, err := r.NS.Run("conntrack", "-F")
	if err != nil && !strings.Contains(out, "flow entries have been deleted") {
		return err
	}
	_, _ = r.NS.Run("nft", "flush", "map", "ip", "natlab", "cone")
	return nil
}

// BlockUDP drops forwarded UDP to and from ip in the router (a path outage
// towards one peer) until the returned undo is called.
func (r *Router) BlockUDP(ip net.IP) (undo func() error, err error) {
	rules := fmt.Sprintf("table ip natlab_block {\n chain outage {\n  type filter hook forward priority -10; policy accept;\n"+
		"  ip saddr %s meta l4proto udp drop\n  ip daddr %s meta l4proto udp drop\n }\n}\n", ip, ip)
	if _, err := r.NS.RunStdin(rules, "nft", "-f", "-"); err != nil {
		return nil, fmt.Errorf("natlab: block udp %s in %s: %w", ip, r.NS.Name, err)
	}
	return func() error {
		_, err := r.NS.Run("nft", "delete", "table", "ip", "natlab_block")
		return err
	}, nil
}

// Conntrack lists the router's UDP conntrack entries (for logs).
func (r *Router) Conntrack() string {
	out, _ := r.NS.Run("conntrack", "-L", "-p", "udp")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// SetUDPTimeouts sets the router's conntrack UDP timeouts (unreplied and
// stream) in seconds; they are per network namespace.
func (r *Router) SetUDPTimeouts(unreplied, stream int) error {
	if err := r.NS.Sysctl("net.netfilter.nf_conntrack_udp_timeout", fmt.Sprint(unreplied)); err != nil {
		return err
	}
	return r.NS.Sysctl("net.netfilter.nf_conntrack_udp_timeout_stream", fmt.Sprint(stream))
}

// insertDelayLine links the router's wan0 to the WAN through a delay
// namespace ("<router>d") running a delayLine between its two interfaces.
func (l *Lab) insertDelayLine(r *Router) error {
	dns, err := l.newNS(r.Name + "d")
	if err != nil {
		return err
	}
	if err := connect(r.NS, "wan0", dns, "dl0"); err != nil {
		return err
	}
	if err := l.attachWAN(dns, "dl1"); err != nil {
		return err
	}
	if err := ipBatch(dns, "link set dev dl0 up"); err != nil {
		return err
	}
	if err := ipBatch(r.NS, "link set wan0 up"); err != nil {
		return err
	}
	d, err := startDelayLine(dns, "dl0", "dl1")
	if err != nil {
		return err
	}
	l.mu.Lock()
	closed := l.closed
	if !closed {
		l.delays = append(l.delays, d)
	}
	l.mu.Unlock()
	if closed {
		d.close()
		return fmt.Errorf("natlab: lab closed")
	}
	r.delay = d
	return nil
}

// SetDelay sets the one-way delay (RTT to the WAN grows by 2*oneWay) and
// the loss probability (0..1, each direction) of a router built with
// RouterOptions.DelayLine.
func (r *Router) SetDelay(oneWay time.Duration, loss float64) error {
	if r.delay == nil {
		return fmt.Errorf("natlab: router %s has no delay line (RouterOptions.DelayLine)", r.Name)
	}
	r.delay.set(oneWay, loss)
	return nil
}

// SetNetem adds latency (one way, on both directions of the router's WAN
// link, so RTT grows by 2*delay) and loss. Callers check NetemAvailable.
func (r *Router) SetNetem(delay time.Duration, lossPercent float64) error {
	args := []string{"qdisc", "replace", "dev", "wan0", "root", "netem",
		"delay", fmt.Sprintf("%dus", delay.Microseconds()), "loss", fmt.Sprintf("%.2f%%", lossPercent)}
	if _, err := r.NS.Run("tc", args...); err != nil {
		return err
	}
	if _, err := r.NS.Run("tc", append([]string{"qdisc", "replace", "dev", "lan0", "root", "netem"}, args[6:]...)...); err != nil {
		return err
	}
	return nil
}

// Ruleset returns the router's live nftables ruleset (for logs).
func (r *Router) Ruleset() string {
	out, _ := r.NS.Run("nft", "list", "ruleset")
	return out
}

func mustIP(s string) net.IP {
	ip := net.ParseIP(s).To4()
	if ip == nil {
		panic("natlab: bad IPv4 literal " + s)
	}
	return ip
}
