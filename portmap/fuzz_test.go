package portmap

import (
	"net"
	"testing"
)

func FuzzDecodePMP(f *testing.F) {
	var nonce [12]byte
	f.Add(pmpMapRequest(4121, 4121, 60))
	f.Add([]byte{0, 0x80, 0, 0, 0, 0, 0, 9, 203, 0, 113, 7})
	f.Add([]byte{0, 0x81, 0, 0, 0, 0, 0, 9, 0x10, 0x19, 0x10, 0x19, 0, 0, 0, 60})
	mapResp := pcpMapRequest(net.IPv4(10, 0, 0, 2), nonce, 4121, 4121, nil, 60)
	mapResp[1] |= 0x80
	f.Add(mapResp)
	f.Add(make([]byte, 24))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodePMP(b)
		if err != nil {
			return
		}
		if r.version != pmpVersion && r.version != pcpVersion {
			t.Fatalf("accepted version %d", r.version)
		}
		if r.extIP != nil && len(r.extIP) != 4 && len(r.extIP) != 16 {
			t.Fatalf("ext ip of %d bytes", len(r.extIP))
		}
		_ = resultError(r)
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
