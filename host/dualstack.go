package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/stun"
	ptransport "github.com/pion/transport/v2"

	"github.com/a2alnode/a2al/clock"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

// Dual stack (docs/host.md §6 and §7): the host has one socket, dual stack
// unless the listen address names one family; these helpers decide which
// addresses it publishes and dials, and in which order.

// maxV6Endpoints caps the IPv6 interface addresses we publish: a host can
// carry several (stable, temporary privacy addresses, ULA), and every one
// costs record bytes and a dial attempt at the other end.
const maxV6Endpoints = 3

// maxEndpointParse bounds the endpoints of a peer's record we resolve per
// dial (names cost a lookup each).
const maxEndpointParse = 8

// localIPs lists the interface addresses worth publishing for a socket of
// families f: IPv6 global and ULA addresses first (at most maxV6Endpoints),
// then IPv4; link-local never (it needs a zone a peer cannot use); loopback
// only when nothing else exists (single-machine setups).
func localIPs(f transport.Families) []net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		if f.V4 {
			return []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		return []net.IP{net.IPv6loopback}
	}
	var v6, v4, lo []net.IP
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || !f.Has(ipn.IP) || ipn.IP.IsLinkLocalUnicast() || ipn.IP.IsMulticast() {
			continue
		}
		switch {
		case ipn.IP.IsLoopback():
			lo = append(lo, ipn.IP)
		case ipn.IP.To4() != nil:
			v4 = append(v4, ipn.IP)
		case len(v6) < maxV6Endpoints:
			v6 = append(v6, ipn.IP)
		}
	}
	out := append(v6, v4...)
	if len(out) == 0 {
		return lo
	}
	return out
}

// endpointAddrs turns "quic://host:port" (or legacy udp://) from a peer's
// record into UDP addresses (protocol.ParseEndpointURL owns the URL's
// syntax): a literal of either family (IPv4-mapped read as
// IPv4), or a name resolved under ctx (a record full of unresolvable names
// must not outlast the dial) to at most one address per family, IPv6 first.
// n is the vnet in tests (names resolve to IPv4 there).
func endpointAddrs(ctx context.Context, n interface {
	ResolveUDPAddr(string, string) (*net.UDPAddr, error)
}, ep string) ([]*net.UDPAddr, error) {
	host, port, err := protocol.ParseEndpointURL(ep)
	if err != nil {
		return nil, err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return nil, fmt.Errorf("endpoint %q: zoned address", ep)
		}
		return []*net.UDPAddr{net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip.Unmap(), port))}, nil
	}
	if n != nil {
		a, err := n.ResolveUDPAddr("udp4", net.JoinHostPort(host, strconv.Itoa(int(port))))
		if err != nil {
			return nil, fmt.Errorf("endpoint %q: %w", ep, err)
		}
		return []*net.UDPAddr{a}, nil
	}
	// The resolver may answer from /etc/hosts without looking at ctx; a
	// dial that has ended must not resolve anything.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", ep, err)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: resolve host: %w", ep, err)
	}
	var out []*net.UDPAddr
	for _, want6 := range []bool{true, false} {
		for _, ip := range ips {
			if ip = ip.Unmap(); ip.Is6() == want6 && ip.Zone() == "" {
				out = append(out, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port)))
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("endpoint %q: host has no address", ep)
	}
	return out, nil
}

// ResolveEndpoint turns an endpoint URL from a peer's record ("quic://" or
// legacy "udp://" host:port) into the UDP address this host would dial,
// resolving names under ctx; an address of a family our socket does not have
// is an error.
func (h *Host) ResolveEndpoint(ctx context.Context, ep string) (*net.UDPAddr, error) {
	as, err := endpointAddrs(ctx, h.cfg.Net, ep)
	if err != nil {
		return nil, err
	}
	for _, a := range as {
		if h.fam.Has(a.IP) {
			return a, nil
		}
	}
	return nil, fmt.Errorf("endpoint %q: not reachable from our %s socket", ep, h.fam)
}

// dialTargets resolves a record's endpoints into at most limit distinct
// addresses our socket can reach, in Happy Eyeballs order: families
// interleaved, IPv6 first, the record's order kept within each family.
func dialTargets(ctx context.Context, n interface {
	ResolveUDPAddr(string, string) (*net.UDPAddr, error)
}, eps []string, fam transport.Families, limit int) []*net.UDPAddr {
	var v6, v4 []*net.UDPAddr
	seen := make(map[netip.AddrPort]bool)
	for i, ep := range eps {
		if i == maxEndpointParse {
			break
		}
		as, err := endpointAddrs(ctx, n, ep)
		if err != nil {
			continue
		}
		for _, a := range as {
			ap := a.AddrPort()
			if seen[ap] || !fam.Has(a.IP) || a.IP.IsUnspecified() || a.IP.IsMulticast() {
				continue
			}
			seen[ap] = true
			if a.IP.To4() != nil {
				v4 = append(v4, a)
			} else {
				v6 = append(v6, a)
			}
		}
	}
	out := make([]*net.UDPAddr, 0, len(v6)+len(v4))
	for i := 0; i < max(len(v6), len(v4)); i++ {
		if i < len(v6) {
			out = append(out, v6[i])
		}
		if i < len(v4) {
			out = append(out, v4[i])
		}
	}
	return out[:min(len(out), limit)]
}

// errNoTargets: none of the record's endpoints is reachable from our socket.
var errNoTargets = errors.New("record has no usable endpoints")

// raceDial is Happy Eyeballs over targets (already in preference order): the
// first attempt starts at once, each next one stagger after the previous one
// started, or at once when an attempt fails. The first success wins; the
// others are cancelled, and one that still succeeds is handed to discard.
// Every attempt must return once its context is cancelled; raceDial returns
// only after all of them did, so no attempt outlives it. clk times the
// stagger.
func raceDial[T any](ctx context.Context, clk clock.Clock, targets []*net.UDPAddr, stagger time.Duration,
	dial func(context.Context, *net.UDPAddr) (T, error), discard func(T)) (T, *net.UDPAddr, error) {
	var zero T
	if len(targets) == 0 {
		return zero, nil, errNoTargets
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		v   T
		to  *net.UDPAddr
		err error
	}
	results := make(chan result, len(targets))
	started, pending := 0, 0
	timer := clk.NewTimer(stagger)
	defer timer.Stop()
	startNext := func() {
		to := targets[started]
		started++
		pending++
		go func() {
			v, err := dial(ctx, to)
			results <- result{v, to, err}
		}()
		timer.Reset(stagger)
	}
	startNext()
	var win *result
	var errs []error
	for pending > 0 {
		var next <-chan time.Time
		if win == nil && started < len(targets) && ctx.Err() == nil {
			next = timer.C()
		}
		select {
		case <-next:
			startNext()
		case r := <-results:
			pending--
			switch {
			case r.err != nil:
				errs = append(errs, fmt.Errorf("%s: %w", r.to, r.err))
				if win == nil && started < len(targets) && ctx.Err() == nil {
					startNext()
				}
			case win == nil:
				win = &r
				cancel()
			default:
				discard(r.v)
			}
		}
	}
	if win == nil {
		return zero, nil, errors.Join(errs...)
	}
	return win.v, win.to, nil
}

// natServers are the STUN servers NAT classification uses: the NAT type we
// publish describes the IPv4 path, so on a socket with IPv4 an IPv6 literal
// is left out (its mapped address would differ from the IPv4 ones and read
// as a symmetric NAT); an IPv6-only socket keeps only IPv6 literals. Names
// stay: natprobe resolves them, IPv4 first.
func natServers(servers []string, f transport.Families) []string {
	var out []string
	for _, s := range servers {
		if ap, err := netip.ParseAddrPort(s); err == nil && (ap.Addr().Unmap().Is4() != f.V4) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// stunURIs turns "host:port" STUN servers into pion URIs for ICE. pion joins
// URI.Host and the port without brackets when it resolves a server, so an
// IPv6 literal host keeps its brackets here; otherwise "::1:3478" fails to
// resolve and IPv6 server-reflexive candidates are never gathered.
func stunURIs(servers []string) []*stun.URI {
	var out []*stun.URI
	for _, s := range servers {
		u, err := stun.ParseURI("stun:" + s)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(u.Host); err == nil && a.Is4In6() {
			u.Host = a.Unmap().String()
		} else if err == nil && a.Is6() {
			u.Host = "[" + u.Host + "]"
		}
		out = append(out, u)
	}
	return out
}

// Families are the IP families the host's socket reaches.
func (h *Host) Families() transport.Families { return h.fam }

// familyName is "ipv6" or "ipv4" for logs and metrics.
func familyName(ip net.IP) string {
	if ip.To4() != nil {
		return "ipv4"
	}
	return "ipv6"
}

// iceNetworkTypes are the ICE network types of a socket bound to la: pion then
// gathers host candidates and, through the same mux, server-reflexive ones
// for each family the socket has.
func iceNetworkTypes(la net.Addr) []ice.NetworkType {
	f := transport.SocketFamilies(la)
	var out []ice.NetworkType
	if f.V4 {
		out = append(out, ice.NetworkTypeUDP4)
	}
	if f.V6 {
		out = append(out, ice.NetworkTypeUDP6)
	}
	return out
}

// resolveSeed turns a bootstrap "host:port" into the addresses our socket can
// reach: a literal of either family, or a name's first address per family.
func resolveSeed(n ptransport.Net, s string, fam transport.Families) ([]net.Addr, error) {
	var as []*net.UDPAddr
	if n != nil {
		a, err := n.ResolveUDPAddr("udp4", s)
		if err != nil {
			return nil, err
		}
		as = []*net.UDPAddr{a}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		if as, err = endpointAddrs(ctx, nil, "udp://"+s); err != nil {
			return nil, err
		}
	}
	var out []net.Addr
	for _, a := range as {
		if fam.Has(a.IP) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("seed %q has no address our %s socket reaches", s, fam)
	}
	return out, nil
}
