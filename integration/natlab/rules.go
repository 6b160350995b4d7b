package natlab

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// NATType names a router behaviour in the lab. The first five values equal
// the natprobe classification strings so expected results read naturally.
type NATType string

// Router behaviours (RFC 4787 terms: EIM = endpoint-independent mapping,
// EDM = endpoint-dependent mapping; EIF/ADF/APDF = endpoint-independent,
// address-dependent, address-and-port-dependent filtering).
const (
	// Public is no NAT at all: the host sits on the WAN segment.
	Public NATType = "open"
	// FullCone is EIM + EIF: any outside host can reach a mapping.
	FullCone NATType = "full-cone"
	// AddressRestricted is EIM + ADF: any port of an IP the host sent to.
	AddressRestricted NATType = "address-restricted"
	// PortRestricted is EIM + APDF: plain conntrack SNAT with port preservation.
	PortRestricted NATType = "port-restricted"
	// Symmetric is EDM + APDF: a fresh random port per destination.
	Symmetric NATType = "symmetric"
	// PortShifted is EIM + APDF without port preservation: node ports are
	// remapped to port+ShiftOffset (catches publishing the local port).
	PortShifted NATType = "port-shifted"
	// UDPBlocked forwards TCP only.
	UDPBlocked NATType = "udp-blocked"
	// DoubleNAT is a home router (port-restricted, 192.168.N/24) behind a
	// carrier-grade NAT (port-restricted, 100.64.N/24).
	DoubleNAT NATType = "double-nat"
)

// AllNATTypes lists every router behaviour the lab can build.
var AllNATTypes = []NATType{FullCone, AddressRestricted, PortRestricted, Symmetric, PortShifted, UDPBlocked, DoubleNAT}

// ShiftOffset is how far PortShifted moves the shifted ports.
const ShiftOffset = 36000

// ShiftedPorts are the inner UDP ports a PortShifted router remaps (a
// deterministic one-to-one remap keeps the mapping endpoint-independent;
// the kernel's range SNAT would pick a random port per flow, i.e. EDM).
// Other ports are translated with port preservation.
var ShiftedPorts = func() []int {
	var ps []int
	for p := 4000; p < 4010; p++ {
		ps = append(ps, p)
	}
	for p := 4121; p < 4141; p++ {
		ps = append(ps, p)
	}
	return ps
}()

// ClassifiesAs is the natprobe classification a correct prober should report
// for a host behind this router type.
func (t NATType) ClassifiesAs() string {
	switch t {
	case PortShifted, DoubleNAT:
		return string(PortRestricted)
	default:
		return string(t)
	}
}

// ruleset renders the nftables ruleset of a NAT router. wanIP is the
// router's outside address; mappingTimeout bounds the dynamic mapping state
// of the cone types (refreshed by every outbound packet).
func ruleset(typ NATType, wanIP net.IP, mappingTimeout time.Duration) (string, error) {
	secs := int(mappingTimeout / time.Second)
	if secs < 1 {
		secs = 120
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("table ip natlab {")

	// Cone mapping state: outside (port) or (remote ip, port) -> inside ip.port.
	// Recorded after SNAT (priority srcnat+10) so the key is the real mapped
	// port and the value is the conntrack original source.
	switch typ {
	case FullCone:
		p("  map cone { type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout %ds; size 4096; }", secs)
	case AddressRestricted:
		p("  map cone { type ipv4_addr . inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout %ds; size 4096; }", secs)
	}

	p("  chain nat_post {")
	p("    type nat hook postrouting priority srcnat; policy accept;")
	switch typ {
	case FullCone, AddressRestricted, PortRestricted, UDPBlocked:
		p("    oifname \"wan0\" snat to %s", wanIP)
	case Symmetric:
		p("    oifname \"wan0\" snat to %s random,fully-random", wanIP)
	case PortShifted:
		for _, port := range ShiftedPorts {
			p("    oifname \"wan0\" udp sport %d snat to %s:%d", port, wanIP, port+ShiftOffset)
		}
		p("    oifname \"wan0\" snat to %s", wanIP)
	default:
		return "", fmt.Errorf("natlab: no ruleset for NAT type %q", typ)
	}
	p("  }")

	switch typ {
	case FullCone, AddressRestricted:
		key := "udp sport"
		lookup := "udp dport"
		if typ == AddressRestricted {
			key = "ip daddr . udp sport"
			lookup = "ip saddr . udp dport"
		}
		p("  chain cone_rec {")
		p("    type filter hook postrouting priority srcnat + 10; policy accept;")
		p("    oifname \"wan0\" meta l4proto udp update @cone { %s : ct original ip saddr . ct original proto-src }", key)
		p("  }")
		p("  chain nat_pre {")
		p("    type nat hook prerouting priority dstnat; policy accept;")
		p("    iifname \"wan0\" meta l4proto udp dnat ip addr . port to %s map @cone", lookup)
		p("  }")
	}

	// Filtering: only replies (conntrack) and cone DNATs come in. Dropping
	// unsolicited packets before conntrack confirms them also keeps stray
	// entries from stealing a port a later outbound flow wants to preserve.
	p("  chain filt_fwd {")
	p("    type filter hook forward priority filter; policy accept;")
	if typ == UDPBlocked {
		p("    meta l4proto udp drop")
	}
	p("    iifname \"wan0\" ct state established,related accept")
	p("    iifname \"wan0\" ct status dnat accept")
	p("    iifname \"wan0\" drop")
	p("  }")
	p("  chain filt_in {")
	p("    type filter hook input priority filter; policy accept;")
	p("    iifname \"wan0\" ct state established,related accept")
	p("    iifname \"wan0\" drop")
	p("  }")
	p("}")
	return b.String(), nil
}
