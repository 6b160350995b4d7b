package transport

import (
	"fmt"
	"net"
	"net/netip"
)

// Families says which IP families a socket can send to and receive from.
type Families struct {
	V4, V6 bool
}

// Has reports whether an address of ip's family can be reached from the
// socket (IPv4-mapped IPv6 counts as IPv4).
func (f Families) Has(ip net.IP) bool {
	if ip == nil {
		return false
	}
	if ip.To4() != nil {
		return f.V4
	}
	return f.V6
}

// String is "dual-stack", "ipv4", "ipv6" or "none".
func (f Families) String() string {
	switch {
	case f.V4 && f.V6:
		return "dual-stack"
	case f.V4:
		return "ipv4"
	case f.V6:
		return "ipv6"
	}
	return "none"
}

// ListenNetwork picks the socket network for a listen host (docs/host.md §7):
// an IPv4 literal (also 0.0.0.0) binds IPv4 only, a specific IPv6 literal binds
// IPv6 only, and an empty host or "::" binds one dual-stack socket. A name
// ("localhost") is left to the resolver with "udp".
func ListenNetwork(host string) string {
	a, err := netip.ParseAddr(host)
	switch {
	case host == "" || (err == nil && a == netip.IPv6Unspecified()):
		return "udp"
	case err != nil:
		return "udp"
	case a.Unmap().Is4():
		return "udp4"
	default:
		return "udp6"
	}
}

// Listen opens the node's UDP socket on laddr ("host:port", ":port", "[::]:port",
// "[::1]:port", "0.0.0.0:port") with the family rule of ListenNetwork. A
// dual-stack request on a system without IPv6 falls back to IPv4 only.
func Listen(laddr string) (*net.UDPConn, Families, error) {
	host, _, err := net.SplitHostPort(laddr)
	if err != nil {
		return nil, Families{}, fmt.Errorf("transport: listen address %q: %w", laddr, err)
	}
	network := ListenNetwork(host)
	addr, err := net.ResolveUDPAddr(network, laddr)
	if err != nil {
		return nil, Families{}, fmt.Errorf("transport: resolve %s address %q: %w", network, laddr, err)
	}
	if network == "udp" && (addr.IP == nil || addr.IP.IsUnspecified()) {
		// Bind the IPv6 wildcard explicitly so Go opens an AF_INET6 socket
		// with IPV6_V6ONLY off (IPv4 arrives as IPv4-mapped, unmapped by
		// the demux).
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified, Port: addr.Port, Zone: addr.Zone})
		if err == nil {
			return c, SocketFamilies(c.LocalAddr()), nil
		}
		c4, err4 := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: addr.Port})
		if err4 != nil {
			return nil, Families{}, fmt.Errorf("transport: listen dual-stack %q: %w (IPv4 only: %w)", laddr, err, err4)
		}
		return c4, Families{V4: true}, nil
	}
	c, err := net.ListenUDP(network, addr)
	if err != nil {
		return nil, Families{}, fmt.Errorf("transport: listen %s %q: %w", network, laddr, err)
	}
	return c, SocketFamilies(c.LocalAddr()), nil
}

// SocketFamilies infers the families of a socket from its bound address: an
// IPv4 address (0.0.0.0 included) is IPv4 only, "::" is dual stack (Listen
// never binds an IPv6-only wildcard), any other IPv6 address is IPv6 only.
// Non-UDP addresses (in-memory transports, vnet) count as IPv4.
func SocketFamilies(la net.Addr) Families {
	ua, ok := la.(*net.UDPAddr)
	if !ok || ua == nil || ua.IP == nil {
		return Families{V4: true}
	}
	switch {
	case ua.IP.To4() != nil:
		return Families{V4: true}
	case ua.IP.IsUnspecified():
		return Families{V4: true, V6: true}
	default:
		return Families{V6: true}
	}
}
