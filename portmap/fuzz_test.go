package portmap

import (
	"net"
	"testing"
)

func FuzzDecodePCP(f *testing.F) {
	var nonce [12]byte
	f.Add([]byte{0, 0x81, 0, resultUnsuppVersion, 0, 0, 0, 9})
	mapResp := pcpMapRequest(net.IPv4(10, 0, 0, 2), nonce, 4121, 4121, nil, 60)
	mapResp[1] |= 0x80
	f.Add(mapResp)
	announce := pcpAnnounceRequest(net.IPv4(10, 0, 0, 2))
	announce[1] |= 0x80
	f.Add(announce)
	f.Add(make([]byte, 24))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodePCP(b)
		if err != nil {
			return
		}
		if b[0] != pcpVersion {
			t.Fatalf("accepted version %d", b[0])
		}
		if r.extIP != nil && len(r.extIP) != 4 && len(r.extIP) != 16 {
			t.Fatalf("ext ip of %d bytes", len(r.extIP))
		}
		_ = pcpResultError(r)
	})
}

func FuzzSSDPLocation(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://127.0.0.1:5000/x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		from := net.IPv4(127, 0, 0, 1)
		loc, err := ssdpLocation(b, from)
		if err != nil {
			return
		}
		if !net.ParseIP(loc.Hostname()).Equal(from) {
			t.Fatalf("accepted location %v", loc)
		}
	})
}
