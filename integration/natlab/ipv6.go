package natlab

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// IPv6 in the lab (opt-in per router and host). The WAN bridge carries the
// segment 2001:db8::/64 (documentation prefix, never routed off the machine)
// besides its IPv4 one; a host's WAN address is 2001:db8::<its IPv4 last
// octet>. A router with IPv6 enabled gets 2001:db8::<its WAN last octet> on
// wan0 and routes the LAN prefix 2001:db8:<n>::/64 without translation (no
// NAT66), behind a stateful firewall like a home router's: outbound is
// free, inbound only for established or related flows. Every IPv6 namespace
// on the WAN gets a route to every such LAN prefix.

// v6Lab is the IPv6 bookkeeping of a Lab (guarded by Lab.mu).
type v6Lab struct {
	wan     []NetNS   // namespaces with an address on the WAN segment
	routers []*Router // routers with an IPv6 LAN
}

// ipv6WAN is the WAN IPv6 address matching an IPv4 WAN address.
func ipv6WAN(v4 net.IP) net.IP {
	return net.ParseIP(fmt.Sprintf("2001:db8::%d", v4.To4()[3]))
}

// routerIndex is n in the router's LAN prefix; only routers on the WAN bridge
// (no upstream router) get IPv6.
func (r *Router) routerIndex() int { return int(r.WANIP.To4()[3]) - 10 }

// LANPrefix6 is the router's IPv6 LAN prefix ("2001:db8:<n>::").
func (r *Router) LANPrefix6() string { return fmt.Sprintf("2001:db8:%d::", r.routerIndex()) }

// WANIP6 is the router's IPv6 address on the WAN segment.
func (r *Router) WANIP6() net.IP { return ipv6WAN(r.WANIP) }

// IPv6 is the host's IPv6 address (valid after EnableIPv6): on the WAN
// 2001:db8::<IPv4 last octet>, behind a router <its LAN prefix><last octet>.
func (h *Host) IPv6() net.IP {
	if h.Router == nil {
		return ipv6WAN(h.IP)
	}
	return net.ParseIP(fmt.Sprintf("%s%d", h.Router.LANPrefix6(), h.IP.To4()[3]))
}

// firewall6 is a home router's IPv6 policy: forward outbound, inbound only
// what belongs to a flow the LAN started (and the ICMPv6 errors about it).
const firewall6 = `table ip6 natlab6 {
  chain filt_fwd6 {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "wan0" accept
  }
}
`

// EnableIPv6 gives the router its WAN and LAN IPv6 addresses, turns on IPv6
// forwarding with the stateful firewall, and links its LAN prefix into the
// IPv6 WAN routes.
func (r *Router) EnableIPv6() {
	l := r.Lab
	l.t.Helper()
	if r.Upstream != nil {
		l.t.Fatalf("natlab: IPv6 only on routers attached to the WAN")
	}
	if err := ipBatch(r.NS,
		fmt.Sprintf("addr add %s/64 dev wan0 nodad", r.WANIP6()),
		fmt.Sprintf("addr add %s1/64 dev lan0 nodad", r.LANPrefix6())); err != nil {
		l.t.Fatal(err)
	}
	if err := r.NS.Sysctl("net.ipv6.conf.all.forwarding", "1"); err != nil {
		l.t.Fatal(err)
	}
	if _, err := r.NS.RunStdin(firewall6, "nft", "-f", "-"); err != nil {
		l.t.Fatalf("natlab: IPv6 firewall in %s: %v", r.NS.Name, err)
	}
	l.mu.Lock()
	wan := append([]NetNS(nil), l.v6.wan...)
	others := append([]*Router(nil), l.v6.routers...)
	l.v6.routers = append(l.v6.routers, r)
	l.v6.wan = append(l.v6.wan, r.NS)
	l.mu.Unlock()
	for _, ns := range wan {
		if err := ipBatch(ns, fmt.Sprintf("route add %s/64 via %s", r.LANPrefix6(), r.WANIP6())); err != nil {
			l.t.Fatal(err)
		}
	}
	for _, o := range others {
		if err := ipBatch(r.NS, fmt.Sprintf("route add %s/64 via %s", o.LANPrefix6(), o.WANIP6())); err != nil {
			l.t.Fatal(err)
		}
	}
}

// EnableIPv6 gives the host its IPv6 address: on the WAN, with routes to
// every IPv6 router's LAN; behind a router (which must have IPv6), with a
// default route via the router.
func (h *Host) EnableIPv6() {
	l := h.Lab
	l.t.Helper()
	if h.Router == nil {
		if err := ipBatch(h.NS, fmt.Sprintf("addr add %s/64 dev eth0 nodad", h.IPv6())); err != nil {
			l.t.Fatal(err)
		}
		l.mu.Lock()
		routers := append([]*Router(nil), l.v6.routers...)
		l.v6.wan = append(l.v6.wan, h.NS)
		l.mu.Unlock()
		for _, r := range routers {
			if err := ipBatch(h.NS, fmt.Sprintf("route add %s/64 via %s", r.LANPrefix6(), r.WANIP6())); err != nil {
				l.t.Fatal(err)
			}
		}
		return
	}
	if err := ipBatch(h.NS,
		fmt.Sprintf("addr add %s/64 dev eth0 nodad", h.IPv6()),
		fmt.Sprintf("route add ::/0 via %s1", h.Router.LANPrefix6())); err != nil {
		l.t.Fatal(err)
	}
}

// DropIPv4 removes the host's IPv4 address (and so its IPv4 routes): the
// host is IPv6-only from then on.
func (h *Host) DropIPv4() {
	h.Lab.t.Helper()
	if err := ipBatch(h.NS, fmt.Sprintf("addr del %s/24 dev eth0", h.IP)); err != nil {
		h.Lab.t.Fatal(err)
	}
}

// BreakIPv6UDP black-holes IPv6 UDP for the host: what it sends leaves, but
// nothing comes back (a broken IPv6 path: no error, only silence). undo
// restores it.
func (h *Host) BreakIPv6UDP() (undo func() error, err error) {
	const rules = `table ip6 natlab6brk {
  chain in {
    type filter hook input priority filter; policy accept;
    meta l4proto udp drop
  }
}
`
	if _, err := h.NS.RunStdin(rules, "nft", "-f", "-"); err != nil {
		return nil, fmt.Errorf("natlab: break IPv6 in %s: %w", h.Name, err)
	}
	return func() error {
		_, err := h.NS.Run("nft", "delete", "table", "ip6", "natlab6brk")
		return err
	}, nil
}

// ListenUDP6 opens an IPv6 UDP socket on the host's IPv6 address.
func (h *Host) ListenUDP6(port int) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := h.NS.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp6", &net.UDPAddr{IP: h.IPv6(), Port: port})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: listen udp6 port %d in %s: %w", port, h.NS.Name, err)
	}
	return c, nil
}

// firewallHolds checks the IPv6 firewall in front of inside: a datagram from
// outside does not arrive unsolicited, and does once inside sent to outside
// from the same socket (the reply direction of its flow).
func firewallHolds(inside, outside *Host) (unsolicitedBlocked, replyPasses bool, err error) {
	const port = 7600
	in, err := inside.ListenUDP6(port)
	if err != nil {
		return false, false, err
	}
	defer in.Close()
	out, err := outside.ListenUDP6(port)
	if err != nil {
		return false, false, err
	}
	defer out.Close()
	to := &net.UDPAddr{IP: inside.IPv6(), Port: port}
	got := func() bool {
		_ = in.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 64)
		_, _, err := in.ReadFromUDP(buf)
		return err == nil
	}
	if _, err := out.WriteToUDP([]byte("unsolicited"), to); err != nil {
		return false, false, err
	}
	unsolicitedBlocked = !got()
	if _, err := in.WriteToUDP([]byte("open"), &net.UDPAddr{IP: outside.IPv6(), Port: port}); err != nil {
		return false, false, err
	}
	if _, err := out.WriteToUDP([]byte("reply"), to); err != nil {
		return false, false, err
	}
	return unsolicitedBlocked, got(), nil
}

// isIPv6Endpoint reports whether "ip:port" or "[ip]:port" (or a quic:// URL of
// one) names an IPv6 address.
func isIPv6Endpoint(s string) bool {
	s = strings.TrimPrefix(s, "quic://")
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.To4() == nil
}
