package natprobe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Resolver resolves STUN server host names; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// outcome of a filtering test.
type outcome int

const (
	untested outcome = iota
	arrived
	blocked
)

func (o outcome) String() string {
	return [...]string{"untested", "arrived", "blocked"}[o]
}

// Classify determines the NAT type in front of cfg.Conn. A run in which no
// server answers at all yields TypeUDPBlocked with a nil error; errors are
// for bad configuration, cancellation and local send failures.
func Classify(ctx context.Context, cfg ClassifyConfig) (Result, error) {
	if err := cfg.fill(); err != nil {
		return Result{Type: TypeUnknown}, err
	}
	start := cfg.Clock.Now()
	c := &classifier{cfg: cfg, p: newProber(cfg.Conn, cfg.Timeout, cfg.Clock)}
	servers, err := c.resolve(ctx)
	if err != nil {
		return Result{Type: TypeUnknown}, err
	}
	if cfg.InstallHook != nil {
		remove, err := cfg.InstallHook(c.p.handle)
		if err != nil {
			return Result{Type: TypeUnknown}, fmt.Errorf("natprobe: installing the STUN hook: %w", err)
		}
		if remove != nil {
			defer remove()
		}
	} else {
		var stop atomic.Bool
		done := make(chan struct{})
		_ = cfg.Conn.SetReadDeadline(time.Time{})
		go c.p.readLoop(&stop, done)
		defer func() {
			stop.Store(true)
			_ = cfg.Conn.SetReadDeadline(time.Now())
			<-done // ReadFrom returns at once after the past deadline
			_ = cfg.Conn.SetReadDeadline(time.Time{})
		}()
	}
	res, err := c.run(ctx, servers)
	res.Duration = cfg.Clock.Now().Sub(start)
	res.Trace = c.trace
	cfg.Logger.Debug("natprobe classified", "result", res.String(), "err", err)
	return res, err
}

type classifier struct {
	cfg   ClassifyConfig
	p     *prober
	mu    sync.Mutex
	trace []string
}

func (c *classifier) tracef(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.trace) < 32 {
		c.trace = append(c.trace, fmt.Sprintf(format, args...))
	}
}

// resolve turns cfg.Servers into addresses, skipping unresolvable ones.
func (c *classifier) resolve(ctx context.Context) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	var errs []error
	for _, s := range c.cfg.Servers {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
			continue
		}
		host, portStr, err := net.SplitHostPort(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("server %q: %w", s, err))
			continue
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			errs = append(errs, fmt.Errorf("server %q: bad port: %w", s, err))
			continue
		}
		ips, err := c.cfg.Resolver.LookupNetIP(ctx, "ip", host)
		if err != nil || len(ips) == 0 {
			errs = append(errs, fmt.Errorf("resolve STUN server %q: %w", s, err))
			continue
		}
		// Prefer IPv4: most NATs in scope are IPv4 NATs.
		slices.SortStableFunc(ips, func(a, b netip.Addr) int {
			switch {
			case a.Unmap().Is4() == b.Unmap().Is4():
				return 0
			case a.Unmap().Is4():
				return -1
			default:
				return 1
			}
		})
		out = append(out, netip.AddrPortFrom(ips[0].Unmap(), uint16(port)))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("natprobe: no usable STUN server: %w", errors.Join(errs...))
	}
	return out, nil
}

// run performs the tests in RFC 5780 order adapted to a shared socket:
// binding, filtering (before anything contacts the server's second IP),
// then mapping.
func (c *classifier) run(ctx context.Context, servers []netip.AddrPort) (Result, error) {
	res := Result{Type: TypeUnknown, Mapping: BehaviorUnknown, Filtering: BehaviorUnknown}
	if la, ok := addrPortOf(c.cfg.Conn.LocalAddr()); ok {
		res.LocalAddr = udpAddr(la)
	}

	// Test I: plain binding to the first server that answers.
	var primary netip.AddrPort
	var first reply
	var sendErrs []error
	for _, srv := range servers {
		r, err := c.p.do(ctx, srv, 0)
		if err == nil {
			primary, first = srv, r
			break
		}
		if ctx.Err() != nil {
			return res, fmt.Errorf("natprobe: %w", err)
		}
		c.tracef("binding %s: %v", srv, err)
		if !errors.Is(err, errTimeout) {
			sendErrs = append(sendErrs, err)
		}
	}
	if !primary.IsValid() {
		if len(sendErrs) > 0 {
			return res, fmt.Errorf("natprobe: no STUN server reachable: %w", errors.Join(sendErrs...))
		}
		res.Type = TypeUDPBlocked
		c.tracef("no server answered: UDP blocked")
		return res, nil
	}
	m1, other := first.resp.Mapped, first.resp.Other
	res.Server = udpAddr(primary)
	res.MappedAddr = udpAddr(m1)
	res.PublicIP = res.MappedAddr.IP
	res.MappedPort = int(m1.Port())
	open := c.isLocal(m1)
	c.tracef("binding %s: mapped %s, other-address %s, local %v, open=%v", primary, m1, other, res.LocalAddr, open)

	res.Filtering = c.filtering(ctx, primary, other, m1)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("natprobe: %w", err)
	}

	if open {
		res.Mapping = BehaviorEndpointIndependent
	} else {
		res.Mapping = c.mapping(ctx, primary, other, m1, servers)
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("natprobe: %w", err)
		}
	}

	switch {
	case res.Mapping == BehaviorAddressDependent || res.Mapping == BehaviorAddressPortDep:
		res.Type = TypeSymmetric
	case res.Mapping == BehaviorUnknown:
		res.Type = TypeUnknown
	case res.Filtering == BehaviorAddressDependent:
		res.Type = TypeAddressRestricted
	case res.Filtering == BehaviorAddressPortDep:
		res.Type = TypePortRestricted
	case open:
		// No translation; unfiltered, or filtering could not be tested.
		res.Type = TypeOpen
	case res.Filtering == BehaviorEndpointIndependent:
		res.Type = TypeFullCone
	default:
		res.Type = TypeUnknown
	}
	return res, nil
}

// filtering runs the CHANGE-REQUEST tests concurrently (neither opens the
// NAT for the other's reply source) and, if needed, the echo probe.
func (c *classifier) filtering(ctx context.Context, primary, other, m1 netip.AddrPort) Behavior {
	hasAltIP := other.IsValid() && other.Addr() != primary.Addr()
	hasAltPort := other.IsValid() && other.Port() != primary.Port()
	var both, port outcome
	var wg sync.WaitGroup
	test := func(flags uint32, dst *outcome, ok func(from netip.AddrPort) bool, name string) {
		defer wg.Done()
		r, err := c.p.do(ctx, primary, flags)
		switch {
		case err == nil && ok(r.from):
			*dst = arrived
		case err == nil:
			c.tracef("%s: reply came from %s, server ignored CHANGE-REQUEST", name, r.from)
		case errors.Is(err, errTimeout):
			*dst = blocked
		default:
			c.tracef("%s: %v", name, err)
		}
	}
	if hasAltIP {
		wg.Add(1)
		go test(flagChangeIP|flagChangePort, &both, func(f netip.AddrPort) bool { return f.Addr() != primary.Addr() }, "change-ip+port")
	}
	if hasAltPort {
		wg.Add(1)
		go test(flagChangePort, &port, func(f netip.AddrPort) bool {
			return f.Addr() == primary.Addr() && f.Port() != primary.Port()
		}, "change-port")
	}
	wg.Wait()
	c.tracef("filtering: change-ip+port %s, change-port %s", both, port)

	switch {
	case both == arrived:
		return BehaviorEndpointIndependent
	case both == blocked && port == arrived:
		return BehaviorAddressDependent
	case port == blocked:
		// Endpoint-independent filtering would have let the other port in.
		return BehaviorAddressPortDep
	}
	// Could not test from another IP: ask a peer at another IP, if we can.
	if c.cfg.EchoProbe == nil {
		c.tracef("filtering: no second server IP and no echo probe")
		return BehaviorUnknown
	}
	ectx, cancel := context.WithTimeout(ctx, c.cfg.EchoTimeout)
	defer cancel()
	got, err := c.cfg.EchoProbe(ectx, udpAddr(m1))
	c.tracef("filtering: echo probe to %s: arrived=%v err=%v", m1, got, err)
	switch {
	case err != nil:
		return BehaviorUnknown
	case got:
		return BehaviorEndpointIndependent
	case port == arrived:
		return BehaviorAddressDependent
	default:
		// Only "not endpoint-independent" is known; assume the stricter.
		return BehaviorAddressPortDep
	}
}

// mapping compares the mapped address seen from another server address.
func (c *classifier) mapping(ctx context.Context, primary, other, m1 netip.AddrPort, servers []netip.AddrPort) Behavior {
	var targets []netip.AddrPort
	hasAltIP := other.IsValid() && other.Addr() != primary.Addr()
	if hasAltIP {
		// Second IP, primary port first: keeps (altIP, altPort), the source
		// of the change-ip+port reply, unopened on port-restricted NATs.
		targets = append(targets, netip.AddrPortFrom(other.Addr(), primary.Port()), other)
	}
	for _, s := range servers {
		if s.Addr() != primary.Addr() {
			targets = append(targets, s)
		}
	}
	if other.IsValid() && !hasAltIP {
		targets = append(targets, other) // same IP, other port: weaker test
	}
	for i, t := range targets {
		if i >= 3 {
			break
		}
		r, err := c.p.do(ctx, t, 0)
		if err != nil {
			c.tracef("mapping: binding %s: %v", t, err)
			if ctx.Err() != nil {
				return BehaviorUnknown
			}
			continue
		}
		m2 := r.resp.Mapped
		c.tracef("mapping: binding %s: mapped %s", t, m2)
		if m2 == m1 {
			if t.Addr() == primary.Addr() {
				c.tracef("mapping: only tested against another port of the same IP")
			}
			return BehaviorEndpointIndependent
		}
		if !hasAltIP || t == other {
			return BehaviorAddressPortDep
		}
		// Tell address-dependent from address-and-port-dependent.
		r3, err := c.p.do(ctx, other, 0)
		if err != nil {
			c.tracef("mapping: binding %s: %v", other, err)
			return BehaviorAddressPortDep
		}
		c.tracef("mapping: binding %s: mapped %s", other, r3.resp.Mapped)
		if r3.resp.Mapped == m2 {
			return BehaviorAddressDependent
		}
		return BehaviorAddressPortDep
	}
	return BehaviorUnknown
}

// isLocal reports whether mapped is one of our own socket addresses.
func (c *classifier) isLocal(mapped netip.AddrPort) bool {
	local, ok := addrPortOf(c.cfg.Conn.LocalAddr())
	if !ok || local.Port() != mapped.Port() {
		return false
	}
	if !local.Addr().IsUnspecified() {
		return local.Addr() == mapped.Addr()
	}
	ips := c.cfg.LocalIPs
	if ips == nil {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return false
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				ips = append(ips, n.IP)
			}
		}
	}
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip); ok && a.Unmap() == mapped.Addr() {
			return true
		}
	}
	return false
}
