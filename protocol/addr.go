package protocol

import (
	"encoding/binary"
	"fmt"
	"net"

	"github.com/a2alnode/a2al"
)

// EncodeUDPAddr returns the observed_addr/claimed_addr form of docs/wire.md §7.2:
// 6 bytes for IPv4 (also for IPv4-mapped IPv6), 18 bytes for IPv6. It returns
// nil for an IP that is neither (the send-side shape check then rejects it).
func EncodeUDPAddr(ip net.IP, port uint16) []byte {
	var out []byte
	if v4 := ip.To4(); v4 != nil {
		out = append(make([]byte, 0, 6), v4...)
	} else if len(ip) == net.IPv6len {
		out = append(make([]byte, 0, 18), ip...)
	} else {
		return nil
	}
	return binary.BigEndian.AppendUint16(out, port)
}

// DecodeUDPAddr parses a 6- or 18-byte socket address. An 18-byte value
// holding an IPv4-mapped address yields the plain IPv4 address.
func DecodeUDPAddr(b []byte) (*net.UDPAddr, error) {
	switch len(b) {
	case 6, 18:
	default:
		return nil, fmt.Errorf("%w: %d bytes, want 6 or 18", ErrAddr, len(b))
	}
	n := len(b) - 2
	ip := net.IP(append([]byte{}, b[:n]...))
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return &net.UDPAddr{IP: ip, Port: int(binary.BigEndian.Uint16(b[n:]))}, nil
}

// sharedAddrSpace is 100.64.0.0/10 (RFC 6598, carrier-grade NAT).
var sharedAddrSpace = &net.IPNet{IP: net.IPv4(100, 64, 0, 0).To4(), Mask: net.CIDRMask(10, 32)}

// IsPublicIP applies docs/wire.md §7.3: public unless unspecified, loopback,
// multicast, link-local unicast, private (RFC 1918, fc00::/7) or 100.64/10.
// A nil or malformed IP is not public.
func IsPublicIP(ip net.IP) bool {
	if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
		return false
	}
	if ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() ||
		ip.IsLinkLocalUnicast() || ip.IsPrivate() {
		return false
	}
	if v4 := ip.To4(); v4 != nil && sharedAddrSpace.Contains(v4) {
		return false
	}
	return true
}

// Valid checks a contact beyond the reference's length checks (docs/wire.md §7.1):
// the IP must be 4 or 16 bytes and node_id must equal SHA-256(address)
// (our security fix; the reference does not check it). Port 0 is allowed
// (the contact is then known but not dialable).
func (n NodeInfo) Valid() error {
	if len(n.IP) != net.IPv4len && len(n.IP) != net.IPv6len {
		return fmt.Errorf("%w: contact ip is %d bytes, want 4 or 16", ErrShape, len(n.IP))
	}
	if a2al.NodeIDFromAddress(n.Address) != n.NodeID {
		return fmt.Errorf("%w: contact %x", ErrNodeIDMismatch, n.Address[:])
	}
	return nil
}

// UDPAddr returns the contact's dial address.
func (n NodeInfo) UDPAddr() *net.UDPAddr {
	return &net.UDPAddr{IP: n.IP, Port: int(n.Port)}
}
