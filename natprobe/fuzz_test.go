package natprobe

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/a2alnode/a2al/clock"
	"github.com/pion/stun"
)

// fuzzServer is a server with a full socket grid of stub conns; handle never
// touches the sockets, only their advertised addresses.
func fuzzServer() *Server {
	s := &Server{}
	s.conns = [numSockets]net.PacketConn{stubConn{}, stubConn{}, stubConn{}, stubConn{}}
	s.addrs = [numSockets]netip.AddrPort{
		netip.MustParseAddrPort("1.2.3.4:3478"), netip.MustParseAddrPort("1.2.3.4:3479"),
		netip.MustParseAddrPort("1.2.3.5:3478"), netip.MustParseAddrPort("1.2.3.5:3479"),
	}
	s.log = discardLogger()
	return s
}

type stubConn struct{ net.PacketConn }

func seedRequests(f *testing.F) {
	var id [12]byte
	for _, change := range []uint32{0, flagChangePort, flagChangeIP, flagChangeIP | flagChangePort, 0xffffffff} {
		req, err := buildRequest(id, change)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(req)
	}
	plain, _ := stun.Build(stun.BindingRequest, stun.TransactionID)
	f.Add(plain.Raw)
	fp, _ := stun.Build(stun.BindingRequest, stun.TransactionID, stun.Fingerprint)
	f.Add(fp.Raw)
	bad := append([]byte(nil), fp.Raw...)
	binary.BigEndian.PutUint16(bad[2:4], 0xfffc)
	f.Add(bad)
	f.Add([]byte{})
	f.Add([]byte("\x00\x01\x00\x04\x21\x12\xa4\x42012345678901\x00\x03\x00\x00"))
}

func FuzzServerHandle(f *testing.F) {
	seedRequests(f)
	s := fuzzServer()
	from := &net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 4242}
	from6 := &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 4242}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		for _, src := range []*net.UDPAddr{from, from6} {
			for in := 0; in < numSockets; in++ {
				reply, out, ok := s.handle(pkt, src, in)
				if !ok {
					continue
				}
				if len(reply) > len(pkt) {
					t.Fatalf("amplification: %d-byte reply to %d-byte request", len(reply), len(pkt))
				}
				if out < 0 || out >= numSockets {
					t.Fatalf("bad out socket %d", out)
				}
				if _, _, err := parseResponse(reply); err != nil {
					t.Fatalf("server produced an unparsable reply: %v", err)
				}
			}
		}
	})
}

func FuzzClientResponse(f *testing.F) {
	var id [12]byte
	s := fuzzServer()
	req, _ := buildRequest(id, 0)
	if reply, _, ok := s.handle(req, &net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1}, 0); ok {
		f.Add(reply)
	}
	min, _ := stun.Build(stun.BindingSuccess, stun.TransactionID, &stun.XORMappedAddress{IP: net.ParseIP("2001:db8::2"), Port: 9})
	f.Add(min.Raw)
	mapped, _ := stun.Build(stun.BindingSuccess, stun.TransactionID, &stun.MappedAddress{IP: net.IPv4(1, 1, 1, 1), Port: 9}, stun.Fingerprint)
	f.Add(mapped.Raw)
	// Zero-length XOR-MAPPED-ADDRESS: pion v0.6 would panic parsing it.
	f.Add([]byte("\x01\x01\x00\x04\x21\x12\xa4\x42012345678901\x00\x20\x00\x00"))
	errResp, _ := stun.Build(stun.NewType(stun.MethodBinding, stun.ClassErrorResponse), stun.TransactionID, stun.CodeBadRequest)
	f.Add(errResp.Raw)
	f.Add([]byte{})
	p := newProber(stubConn{}, 0, clock.Real{})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		_, r, err := parseResponse(pkt)
		if err == nil && !r.Mapped.IsValid() {
			t.Fatal("accepted a response without a valid mapped address")
		}
		// The hook path must cope as well (no pending transactions: not consumed).
		if p.handle(pkt, &net.UDPAddr{IP: net.IPv4(1, 2, 3, 4), Port: 5}) {
			t.Fatal("consumed a packet with no pending transaction")
		}
	})
}
