package portmap

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// NAT-PMP's wire numbers, for the fake gateway only (the client side is a
// library).
const (
	natpmpVersion    = 0
	natpmpOpExternal = 0
	natpmpOpMapUDP   = 1
)

var loopbacks atomic.Uint32

// testGatewayIP is a loopback address no other test of this package uses:
// PCP and NAT-PMP clients always talk to port 5351, so each fake gateway
// needs an address of its own (127.0.53.x-127.0.56.x; host's tests use
// another range).
func testGatewayIP() net.IP {
	n := loopbacks.Add(1) % (4 * 254)
	return net.IPv4(127, 0, byte(53+n/254), byte(1+n%254)).To4()
}

// fakePMP is an in-process NAT-PMP/PCP gateway on its own loopback address,
// port 5351: it keeps a table
// of mappings per internal port, refuses ports "held by another LAN host",
// and can forget everything like a rebooting router.
type fakePMP struct {
	t      *testing.T
	conn   *net.UDPConn
	ip     net.IP // the gateway address to configure
	extIP  net.IP
	natpmp bool
	pcp    bool

	mu       sync.Mutex
	start    time.Time         // epoch zero
	maps     map[uint16]uint16 // internal port -> external port
	held     map[uint16]bool   // external ports owned by other hosts
	maxLease uint32
	requests map[string]int // "map", "delete", "external", "announce"
	lastLife uint32         // lifetime granted last
}

func newFakePMP(t *testing.T, natpmp, pcp bool) *fakePMP {
	t.Helper()
	ip := testGatewayIP()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: pmpPort})
	if err != nil {
		t.Fatalf("fake gateway on %v:%d: %v", ip, pmpPort, err)
	}
	f := &fakePMP{t: t, conn: c, ip: ip, extIP: net.IPv4(203, 0, 113, 7).To4(), natpmp: natpmp, pcp: pcp,
		start: time.Now().Add(-1000 * time.Second), maps: map[uint16]uint16{}, held: map[uint16]bool{},
		maxLease: 7200, requests: map[string]int{}}
	done := make(chan struct{})
	go func() { defer close(done); f.serve() }()
	t.Cleanup(func() { _ = c.Close(); <-done })
	return f
}

func (f *fakePMP) count(kind string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[kind]
}

func (f *fakePMP) mapped(intPort uint16) (uint16, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.maps[intPort]
	return e, ok
}

// reboot forgets all mappings and restarts the epoch.
func (f *fakePMP) reboot() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maps = map[uint16]uint16{}
	f.start = time.Now()
}

// steal gives ext to another LAN host (our mapping of it is dropped).
func (f *fakePMP) steal(ext uint16) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for in, e := range f.maps {
		if e == ext {
			delete(f.maps, in)
		}
	}
	f.held[ext] = true
}

// assign picks want, or the next free port, for intPort. Caller holds mu.
func (f *fakePMP) assign(intPort, want uint16) uint16 {
	if want == 0 {
		want = intPort
	}
	if e, ok := f.maps[intPort]; ok && e == want {
		return e
	}
	for p := want; ; p++ {
		if p < 1024 {
			p = 1024
		}
		if f.held[p] {
			continue
		}
		busy := false
		for in, e := range f.maps {
			if e == p && in != intPort {
				busy = true
			}
		}
		if !busy {
			f.maps[intPort] = p
			return p
		}
	}
}

func (f *fakePMP) serve() {
	buf := make([]byte, 1200)
	for {
		n, from, err := f.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if out := f.handle(buf[:n]); out != nil {
			_, _ = f.conn.WriteToUDP(out, from)
		}
	}
}

func (f *fakePMP) handle(b []byte) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(b) < 2 {
		return nil
	}
	epoch := uint32(time.Since(f.start) / time.Second)
	switch {
	case b[0] == natpmpVersion && !f.natpmp, b[0] == pcpVersion && !f.pcp:
		// Answer in the version we do speak, with "unsupported version".
		if f.pcp {
			r := make([]byte, 24)
			r[0], r[1], r[3] = pcpVersion, 0x80|b[1], resultUnsuppVersion
			binary.BigEndian.PutUint32(r[8:12], epoch)
			return r
		}
		r := make([]byte, 8)
		r[0], r[1], r[3] = natpmpVersion, 0x80|b[1], resultUnsuppVersion
		binary.BigEndian.PutUint32(r[4:8], epoch)
		return r
	case b[0] == natpmpVersion && b[1] == natpmpOpExternal:
		f.requests["external"]++
		r := make([]byte, 12)
		r[1] = 0x80
		binary.BigEndian.PutUint32(r[4:8], epoch)
		copy(r[8:12], f.extIP)
		return r
	case b[0] == natpmpVersion && b[1] == natpmpOpMapUDP && len(b) == 12:
		in, want, life := binary.BigEndian.Uint16(b[4:6]), binary.BigEndian.Uint16(b[6:8]), binary.BigEndian.Uint32(b[8:12])
		r := make([]byte, 16)
		r[1] = 0x80 | natpmpOpMapUDP
		binary.BigEndian.PutUint32(r[4:8], epoch)
		binary.BigEndian.PutUint16(r[8:10], in)
		if life == 0 {
			f.requests["delete"]++
			delete(f.maps, in)
			return r
		}
		f.requests["map"]++
		life = min(life, f.maxLease)
		f.lastLife = life
		binary.BigEndian.PutUint16(r[10:12], f.assign(in, want))
		binary.BigEndian.PutUint32(r[12:16], life)
		return r
	case b[0] == pcpVersion && b[1] == pcpOpAnnounce && len(b) >= 24:
		f.requests["announce"]++
		r := make([]byte, 24)
		r[0], r[1] = pcpVersion, 0x80
		binary.BigEndian.PutUint32(r[8:12], epoch)
		return r
	case b[0] == pcpVersion && b[1] == pcpOpMap && len(b) == 60:
		life := binary.BigEndian.Uint32(b[4:8])
		in, want := binary.BigEndian.Uint16(b[40:42]), binary.BigEndian.Uint16(b[42:44])
		r := make([]byte, 60)
		r[0], r[1] = pcpVersion, 0x80|pcpOpMap
		binary.BigEndian.PutUint32(r[8:12], epoch)
		copy(r[24:40], b[24:40]) // nonce, protocol, reserved
		binary.BigEndian.PutUint16(r[40:42], in)
		copy(r[44:60], f.extIP.To16())
		if life == 0 {
			f.requests["delete"]++
			delete(f.maps, in)
			binary.BigEndian.PutUint16(r[42:44], want)
			return r
		}
		f.requests["map"]++
		life = min(life, f.maxLease)
		f.lastLife = life
		binary.BigEndian.PutUint32(r[4:8], life)
		binary.BigEndian.PutUint16(r[42:44], f.assign(in, want))
		return r
	}
	return nil
}
