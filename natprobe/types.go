package natprobe

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/a2alnode/a2al/protocol"
)

// NATType is the classification result, named after the classic cone model.
type NATType string

// NAT types. TypeOpen means no address translation and no inbound filtering.
const (
	TypeOpen              NATType = "open"
	TypeFullCone          NATType = "full-cone"
	TypeAddressRestricted NATType = "address-restricted"
	TypePortRestricted    NATType = "port-restricted"
	TypeSymmetric         NATType = "symmetric"
	TypeUDPBlocked        NATType = "udp-blocked"
	TypeUnknown           NATType = "unknown"
)

// AllTypes lists every classification outcome except TypeUnknown, in order of
// increasing hostility; handy for test matrices.
var AllTypes = []NATType{TypeOpen, TypeFullCone, TypeAddressRestricted, TypePortRestricted, TypeSymmetric, TypeUDPBlocked}

// wireTypes pairs each NAT value an endpoint record can carry
// (protocol.NAT*) with the type it names; the one table both directions use.
var wireTypes = [...]struct {
	wire uint8
	typ  NATType
}{
	{protocol.NATFullCone, TypeFullCone},
	{protocol.NATRestricted, TypeAddressRestricted},
	{protocol.NATPortRestricted, TypePortRestricted},
	{protocol.NATSymmetric, TypeSymmetric},
}

// WireNATType maps the type to the endpoint record's NAT field (protocol.NAT*).
// Open and full-cone both mean "reachable by anyone", hence the same value.
func (t NATType) WireNATType() uint8 {
	if t == TypeOpen {
		t = TypeFullCone
	}
	for _, w := range wireTypes {
		if w.typ == t {
			return w.wire
		}
	}
	return protocol.NATUnknown
}

// TypeFromWire is the type an endpoint record's NAT field names
// (TypeUnknown for unknown or out-of-range values); open hosts publish as
// full cone, so they come back as TypeFullCone.
func TypeFromWire(w uint8) NATType {
	for _, x := range wireTypes {
		if x.wire == w {
			return x.typ
		}
	}
	return TypeUnknown
}

// Punchable reports whether hosts behind NAT types a and b can punch a
// direct path without a relay: a symmetric NAT only pairs with one that
// accepts any port of an address it sent to (open, full cone, address
// restricted), and a host whose UDP is blocked pairs with nobody.
func Punchable(a, b NATType) bool {
	if a == TypeUDPBlocked || b == TypeUDPBlocked {
		return false
	}
	if a == TypeSymmetric || b == TypeSymmetric {
		easy := func(t NATType) bool { return t == TypeOpen || t == TypeFullCone || t == TypeAddressRestricted }
		return easy(a) || easy(b)
	}
	return true
}

// String returns the type name.
func (t NATType) String() string { return string(t) }

// Behavior is an RFC 4787 mapping or filtering behaviour.
type Behavior string

// Behaviours. BehaviorUnknown means the test could not be run (for example
// the server has no second IP and no EchoProbe was supplied).
const (
	BehaviorUnknown             Behavior = "unknown"
	BehaviorEndpointIndependent Behavior = "endpoint-independent"
	BehaviorAddressDependent    Behavior = "address-dependent"
	BehaviorAddressPortDep      Behavior = "address-and-port-dependent"
)

// Result is the outcome of Classify.
type Result struct {
	Type       NATType
	PublicIP   net.IP       // IP part of MappedAddr; nil when UDP is blocked
	MappedPort int          // port part of MappedAddr
	MappedAddr *net.UDPAddr // our address as seen by the primary STUN server
	LocalAddr  *net.UDPAddr // the socket's own address
	Mapping    Behavior
	Filtering  Behavior
	Server     *net.UDPAddr  // the STUN server that answered first
	Duration   time.Duration // wall-clock time of the classification
	// Trace lists the tests that ran and what they observed, for humans.
	Trace []string
}

// String renders the result for logs and the CLI, e.g.
// "port-restricted, public 1.2.3.100:49152 (mapping endpoint-independent, filtering address-and-port-dependent)".
func (r Result) String() string {
	var b strings.Builder
	b.WriteString(string(r.Type))
	if r.MappedAddr != nil {
		b.WriteString(", public ")
		b.WriteString(net.JoinHostPort(r.MappedAddr.IP.String(), strconv.Itoa(r.MappedAddr.Port)))
	}
	if r.Type != TypeUDPBlocked {
		fmt.Fprintf(&b, " (mapping %s, filtering %s)", r.Mapping, r.Filtering)
	}
	return b.String()
}
