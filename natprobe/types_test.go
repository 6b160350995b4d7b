package natprobe

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/a2alnode/a2al/protocol"
)

func TestWireNATType(t *testing.T) {
	want := map[NATType]uint8{
		TypeOpen: protocol.NATFullCone, TypeFullCone: protocol.NATFullCone,
		TypeAddressRestricted: protocol.NATRestricted, TypePortRestricted: protocol.NATPortRestricted,
		TypeSymmetric: protocol.NATSymmetric, TypeUDPBlocked: protocol.NATUnknown, TypeUnknown: protocol.NATUnknown,
		NATType("bogus"): protocol.NATUnknown,
	}
	for typ, w := range want {
		if got := typ.WireNATType(); got != w {
			t.Errorf("%s.WireNATType() = %d, want %d", typ, got, w)
		}
	}
}

func TestResultString(t *testing.T) {
	r := Result{Type: TypePortRestricted, MappedAddr: &net.UDPAddr{IP: net.IPv4(1, 2, 3, 4), Port: 5}, Mapping: BehaviorEndpointIndependent, Filtering: BehaviorAddressPortDep}
	s := r.String()
	for _, part := range []string{"port-restricted", "1.2.3.4:5", "mapping endpoint-independent", "filtering address-and-port-dependent"} {
		if !strings.Contains(s, part) {
			t.Errorf("%q lacks %q", s, part)
		}
	}
	if s := (Result{Type: TypeUDPBlocked}).String(); s != "udp-blocked" {
		t.Errorf("blocked renders as %q", s)
	}
}

// Our requests leave room for the largest reply (no-amplification rule).
func TestRequestSizeCoversReply(t *testing.T) {
	if RequestSize < maxFullReply {
		t.Fatalf("RequestSize %d < largest reply %d", RequestSize, maxFullReply)
	}
	for _, change := range []uint32{0, flagChangePort, flagChangeIP | flagChangePort} {
		req, err := buildRequest([12]byte{1}, change)
		if err != nil {
			t.Fatal(err)
		}
		if len(req) != RequestSize {
			t.Fatalf("request with change %#x is %d bytes, want %d", change, len(req), RequestSize)
		}
		s := fuzzServer()
		from := &net.UDPAddr{IP: net.ParseIP("2001:db8::7"), Port: 9}
		reply, _, ok := s.handle(req, from, 0)
		if !ok || len(reply) > len(req) {
			t.Fatalf("IPv6 client got ok=%v reply %d bytes", ok, len(reply))
		}
		_, r, err := parseResponse(reply)
		if err != nil || r.Mapped.String() != "[2001:db8::7]:9" || !r.Other.IsValid() || !r.Origin.IsValid() {
			t.Fatalf("full reply expected, got %+v err %v", r, err)
		}
	}
}

func TestTypeFromWire(t *testing.T) {
	for _, typ := range append(AllTypes, TypeUnknown) {
		want := typ
		switch typ {
		case TypeOpen:
			want = TypeFullCone // open hosts publish as full cone
		case TypeUDPBlocked:
			want = TypeUnknown // not representable on the wire
		}
		if got := TypeFromWire(typ.WireNATType()); got != want {
			t.Errorf("TypeFromWire(%s.WireNATType()) = %s, want %s", typ, got, want)
		}
	}
	if got := TypeFromWire(protocol.MaxNATType + 1); got != TypeUnknown {
		t.Errorf("out of range value names %s", got)
	}
}

func TestPunchable(t *testing.T) {
	easy := []NATType{TypeOpen, TypeFullCone, TypeAddressRestricted}
	for _, a := range AllTypes {
		for _, b := range AllTypes {
			want := true
			switch {
			case a == TypeUDPBlocked || b == TypeUDPBlocked:
				want = false
			case a == TypeSymmetric:
				want = slices.Contains(easy, b)
			case b == TypeSymmetric:
				want = slices.Contains(easy, a)
			}
			if got := Punchable(a, b); got != want {
				t.Errorf("Punchable(%s, %s) = %v, want %v", a, b, got, want)
			}
		}
	}
}
