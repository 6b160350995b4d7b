package transport

import (
	"bytes"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun"
)

func stunBinding(t testing.TB) []byte {
	t.Helper()
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func TestClassify(t *testing.T) {
	stunPkt := stunBinding(t)
	noCookie := append([]byte(nil), stunPkt...)
	noCookie[4] = 0
	cases := []struct {
		name string
		pkt  []byte
		want PacketClass
	}{
		{"empty", nil, ClassUnknown},
		{"cbor map a0", []byte{0xa0}, ClassDHT},
		{"cbor map a4", []byte{0xa4, 1, 2}, ClassDHT},
		{"cbor map bf", []byte{0xbf, 0xff}, ClassDHT},
		{"stun binding", stunPkt, ClassSTUN},
		{"stun without cookie", noCookie, ClassUnknown},
		{"stun too short", stunPkt[:19], ClassUnknown},
		{"echo probe", []byte{0x00, 0xec, 1, 2}, ClassUnknown},
		{"quic short header", []byte{0x40, 1, 2}, ClassQUIC},
		{"quic long header", []byte{0xc3, 0, 0, 0, 1}, ClassQUIC},
		{"cbor array", []byte{0x84}, ClassUnknown},
		{"0x9f", []byte{0x9f}, ClassUnknown},
		{"0x80", []byte{0x80}, ClassUnknown},
	}
	for _, c := range cases {
		if got := Classify(c.pkt); got != c.want {
			t.Errorf("%s: Classify = %v, want %v", c.name, got, c.want)
		}
	}
}

func FuzzClassify(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0xa4, 1})
	f.Add(stunBinding(f))
	f.Add([]byte{0x40})
	f.Add([]byte{0x00, 0xec})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		c := Classify(pkt)
		if len(pkt) == 0 {
			if c != ClassUnknown {
				t.Fatalf("empty packet classified %v", c)
			}
			return
		}
		b := pkt[0]
		switch c {
		case ClassDHT:
			if b < 0xa0 || b > 0xbf {
				t.Fatalf("DHT with first byte %#x", b)
			}
		case ClassSTUN:
			if b&0xc0 != 0 || len(pkt) < 20 || !bytes.Equal(pkt[4:8], []byte{0x21, 0x12, 0xa4, 0x42}) {
				t.Fatalf("STUN misclassified: % x", pkt)
			}
		case ClassQUIC:
			if b&0x40 == 0 || (b >= 0xa0 && b <= 0xbf) {
				t.Fatalf("QUIC with first byte %#x", b)
			}
		}
	})
}

type demuxPair struct {
	d    *Demux
	peer *net.UDPConn // plain socket talking to the demux
}

func newDemuxPair(t *testing.T, network, ip string, opts DemuxOptions) demuxPair {
	t.Helper()
	c, err := net.ListenUDP(network, &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		if network == "udp6" {
			t.Skipf("IPv6 loopback unavailable: %v", err)
		}
		t.Fatal(err)
	}
	p, err := net.ListenUDP(network, &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return demuxPair{d: NewDemux(c, opts), peer: p}
}

func (p demuxPair) send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := p.peer.WriteTo(b, p.d.LocalAddr()); err != nil {
		t.Fatal(err)
	}
}

// waitStats polls until cond holds, failing after a deadline.
func waitStats(t *testing.T, d *Demux, cond func(DemuxStats) bool) DemuxStats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := d.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats condition not reached: %+v", s)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func readWithin(t *testing.T, pc net.PacketConn, d time.Duration) ([]byte, net.Addr) {
	t.Helper()
	if err := pc.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("ReadFrom: %v", err)
	}
	return buf[:n], from
}

func TestDemuxRoutesByClass(t *testing.T) {
	for _, tc := range []struct{ network, ip string }{{"udp4", "127.0.0.1"}, {"udp6", "::1"}} {
		t.Run(tc.network, func(t *testing.T) {
			base := runtime.NumGoroutine()
			p := newDemuxPair(t, tc.network, tc.ip, DemuxOptions{})
			dht, quic, stunPkt := []byte{0xa4, 1, 2, 3}, []byte{0x41, 9, 9}, stunBinding(t)
			p.send(t, []byte{0x00, 0xec, 0, 0}) // unknown: dropped and counted
			p.send(t, dht)
			p.send(t, quic)
			p.send(t, stunPkt)

			r := receiveWithin(t, p.d.DHT(), 5*time.Second)
			if !bytes.Equal(r.data, dht) || r.from != p.peer.LocalAddr().String() {
				t.Fatalf("DHT view got % x from %s", r.data, r.from)
			}
			if got, _ := readWithin(t, p.d.QUIC(), 5*time.Second); !bytes.Equal(got, quic) {
				t.Fatalf("QUIC view got % x", got)
			}
			if got, _ := readWithin(t, p.d.STUN(), 5*time.Second); !bytes.Equal(got, stunPkt) {
				t.Fatalf("STUN view got % x", got)
			}
			s := waitStats(t, p.d, func(s DemuxStats) bool { return s.Unknown == 1 })
			if s.DHT.Received != 1 || s.QUIC.Received != 1 || s.STUN.Received != 1 {
				t.Fatalf("stats %+v", s)
			}

			// Writes from every view leave through the shared socket.
			if err := p.d.DHT().Send(p.peer.LocalAddr(), []byte{0xa1, 0}); err != nil {
				t.Fatal(err)
			}
			if _, err := p.d.QUIC().WriteTo([]byte{0x40, 7}, p.peer.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2; i++ {
				got, from := readWithin(t, p.peer, 5*time.Second)
				if from.String() != p.d.LocalAddr().String() || len(got) != 2 {
					t.Fatalf("peer got % x from %v", got, from)
				}
			}
			if err := p.d.DHT().Send(p.peer.LocalAddr(), make([]byte, MaxPacketSize+1)); !errors.Is(err, ErrPacketTooLarge) {
				t.Fatalf("oversize DHT send: %v", err)
			}
			if err := p.d.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			checkGoroutines(t, base)
		})
	}
}

func TestDemuxFullQueueDropsAndCounts(t *testing.T) {
	p := newDemuxPair(t, "udp4", "127.0.0.1", DemuxOptions{DHTQueue: 2, QUICQueue: 1})
	defer p.d.Close()
	for i := 0; i < 5; i++ {
		p.send(t, []byte{0xa4, byte(i)})
	}
	p.send(t, []byte{0x40, 1})
	p.send(t, []byte{0x40, 2})
	s := waitStats(t, p.d, func(s DemuxStats) bool { return s.DHT.Received == 5 && s.QUIC.Received == 2 })
	if s.DHT.Dropped != 3 || s.QUIC.Dropped != 1 {
		t.Fatalf("stats %+v", s)
	}
	// The queued ones are the first ones, in order.
	for i := 0; i < 2; i++ {
		r := receiveWithin(t, p.d.DHT(), 5*time.Second)
		if r.data[1] != byte(i) {
			t.Fatalf("got % x, want index %d", r.data, i)
		}
	}
}

func TestDemuxOversizedDHTDropped(t *testing.T) {
	p := newDemuxPair(t, "udp4", "127.0.0.1", DemuxOptions{})
	defer p.d.Close()
	big := make([]byte, MaxPacketSize+1)
	big[0] = 0xa4
	p.send(t, big)
	s := waitStats(t, p.d, func(s DemuxStats) bool { return s.DHT.Received == 1 })
	if s.DHT.Dropped != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestDemuxSTUNHook(t *testing.T) {
	p := newDemuxPair(t, "udp4", "127.0.0.1", DemuxOptions{})
	defer p.d.Close()
	var mu sync.Mutex
	var seen [][]byte
	remove, err := p.d.AddSTUNHook(func(pkt []byte, from net.Addr) bool {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, pkt)
		return len(seen) == 1 // consume only the first
	})
	if err != nil {
		t.Fatal(err)
	}
	first, second := stunBinding(t), stunBinding(t)
	p.send(t, first)
	waitStats(t, p.d, func(s DemuxStats) bool { return s.STUNHooked == 1 })
	p.send(t, second)
	if got, _ := readWithin(t, p.d.STUN(), 5*time.Second); !bytes.Equal(got, second) {
		t.Fatal("unconsumed STUN packet not delivered to the STUN view")
	}
	mu.Lock()
	if len(seen) != 2 || !bytes.Equal(seen[0], first) {
		t.Fatalf("hook saw %d packets", len(seen))
	}
	mu.Unlock()
	remove()
	third := stunBinding(t)
	p.send(t, third)
	if got, _ := readWithin(t, p.d.STUN(), 5*time.Second); !bytes.Equal(got, third) {
		t.Fatal("packet after hook removal not delivered")
	}
}

func TestDemuxReadDeadline(t *testing.T) {
	base := runtime.NumGoroutine()
	p := newDemuxPair(t, "udp4", "127.0.0.1", DemuxOptions{})
	q := p.d.QUIC()
	_ = q.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	_, _, err := q.ReadFrom(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("want timeout, got %v", err)
	}
	// quic-go relies on a direct type assertion to net.Error with Temporary().
	if ne2, ok := err.(net.Error); !ok || !ne2.Timeout() {
		t.Fatalf("error %T is not directly a net.Error", err)
	}
	// A past deadline set while a reader is blocked wakes it.
	_ = q.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, _, err := q.ReadFrom(make([]byte, 10)); errc <- err }()
	time.Sleep(5 * time.Millisecond)
	_ = q.SetReadDeadline(time.Now())
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked reader not woken by deadline")
	}
	// Clearing the deadline makes reads work again.
	_ = q.SetReadDeadline(time.Time{})
	p.send(t, []byte{0x40, 1})
	if got, _ := readWithin(t, q, 5*time.Second); !bytes.Equal(got, []byte{0x40, 1}) {
		t.Fatalf("got % x", got)
	}
	_ = p.d.Close()
	checkGoroutines(t, base)
}

func TestDemuxCloseEndsViews(t *testing.T) {
	base := runtime.NumGoroutine()
	p := newDemuxPair(t, "udp4", "127.0.0.1", DemuxOptions{})
	errs := make(chan error, 3)
	go func() { _, _, err := p.d.DHT().Receive(); errs <- err }()
	go func() { _, _, err := p.d.QUIC().ReadFrom(make([]byte, 10)); errs <- err }()
	go func() { _, _, err := p.d.STUN().ReadFrom(make([]byte, 10)); errs <- err }()
	time.Sleep(5 * time.Millisecond)
	if err := p.d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for i := 0; i < 3; i++ {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrClosed) && !errors.Is(err, net.ErrClosed) {
				t.Fatalf("reader %d: %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("reader not unblocked by Close")
		}
	}
	if err := p.d.DHT().Send(p.peer.LocalAddr(), []byte{0xa0}); !errors.Is(err, ErrClosed) {
		t.Fatalf("DHT send after close: %v", err)
	}
	if _, _, err := p.d.QUIC().ReadFrom(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("QUIC read after close: %v", err)
	}
	checkGoroutines(t, base)
}

func TestDemuxSTUNViewDetach(t *testing.T) {
	p := newDemuxPair(t, "udp4", "127.0.0.1", DemuxOptions{})
	defer p.d.Close()
	v := p.d.STUN()
	if p.d.STUN() != v {
		t.Fatal("STUN() returned a new view while the old one is open")
	}
	_ = v.Close()
	if _, _, err := v.ReadFrom(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on detached view: %v", err)
	}
	v2 := p.d.STUN()
	if v2 == v {
		t.Fatal("STUN() returned the detached view")
	}
	pkt := stunBinding(t)
	p.send(t, pkt)
	if got, _ := readWithin(t, v2, 5*time.Second); !bytes.Equal(got, pkt) {
		t.Fatal("fresh STUN view did not receive")
	}
}

func TestDemuxConcurrentSendClose(t *testing.T) {
	p := newDemuxPair(t, "udp4", "127.0.0.1", DemuxOptions{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				err := p.d.DHT().Send(p.peer.LocalAddr(), []byte{0xa0, byte(j)})
				if err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("send: %v", err)
					}
					return
				}
				_, _ = p.d.QUIC().WriteTo([]byte{0x40}, p.peer.LocalAddr())
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for j := 0; j < 100; j++ {
			_, _ = p.peer.WriteTo([]byte{0xa4, byte(j)}, p.d.LocalAddr())
			_, _ = p.peer.WriteTo([]byte{0x41, byte(j)}, p.d.LocalAddr())
		}
	}()
	time.Sleep(2 * time.Millisecond)
	_ = p.d.Close()
	wg.Wait()
}

func TestPacketViewBufferPassThrough(t *testing.T) {
	p := newDemuxPair(t, "udp4", "127.0.0.1", DemuxOptions{})
	defer p.d.Close()
	type bufSetter interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}
	bs, ok := p.d.QUIC().(bufSetter)
	if !ok {
		t.Fatal("QUIC view lacks SetReadBuffer/SetWriteBuffer")
	}
	if err := bs.SetReadBuffer(1 << 20); err != nil {
		t.Fatal(err)
	}
	if err := bs.SetWriteBuffer(1 << 20); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.d.QUIC().(interface {
		SyscallConn() (syscall.RawConn, error)
	}); ok {
		t.Fatal("QUIC view must not expose SyscallConn")
	}
	if _, ok := p.d.QUIC().(*net.UDPConn); ok {
		t.Fatal("QUIC view must not be a *net.UDPConn")
	}
}

func TestDemuxEchoProbe(t *testing.T) {
	p := newDemuxPair(t, "udp4", "127.0.0.1", DemuxOptions{EchoProbes: true, EchoRate: 2})
	defer p.d.Close()
	probe := []byte{0x00, 0xec, 1, 2, 3}
	for i := 0; i < 3; i++ {
		p.send(t, probe)
	}
	for i := 0; i < 2; i++ {
		if got, _ := readWithin(t, p.peer, 5*time.Second); !bytes.Equal(got, probe) {
			t.Fatalf("echo % x", got)
		}
	}
	s := waitStats(t, p.d, func(s DemuxStats) bool { return s.Echoed+s.Unknown == 3 })
	if s.Echoed != 2 || s.Unknown != 1 {
		t.Fatalf("rate limit not applied: %+v", s)
	}
}

// Two classifications share the socket: each hook claims only its own
// packets, and removing one leaves the other installed (a single hook slot
// let the first classification to finish cut off the second).
func TestDemuxConcurrentSTUNHooks(t *testing.T) {
	p := newDemuxPair(t, "udp4", "127.0.0.1", DemuxOptions{})
	defer p.d.Close()
	a, b := stunBinding(t), stunBinding(t)
	var mu sync.Mutex
	got := map[string]int{}
	claim := func(name string, mine []byte) STUNHook {
		return func(pkt []byte, _ net.Addr) bool {
			if !bytes.Equal(pkt, mine) {
				return false
			}
			mu.Lock()
			got[name]++
			mu.Unlock()
			return true
		}
	}
	removeA, err := p.d.AddSTUNHook(claim("a", a))
	if err != nil {
		t.Fatal(err)
	}
	removeB, err := p.d.AddSTUNHook(claim("b", b))
	if err != nil {
		t.Fatal(err)
	}
	defer removeB()
	p.send(t, a)
	p.send(t, b)
	waitStats(t, p.d, func(s DemuxStats) bool { return s.STUNHooked == 2 })
	removeA()
	removeA() // idempotent
	p.send(t, b)
	waitStats(t, p.d, func(s DemuxStats) bool { return s.STUNHooked == 3 })
	p.send(t, a) // nobody claims it any more: it reaches the STUN view
	if pkt, _ := readWithin(t, p.d.STUN(), 5*time.Second); !bytes.Equal(pkt, a) {
		t.Fatal("packet of the removed hook not delivered to the STUN view")
	}
	mu.Lock()
	defer mu.Unlock()
	if got["a"] != 1 || got["b"] != 2 {
		t.Fatalf("claims %v, want a=1 b=2", got)
	}
}

func TestDemuxSTUNHookLimit(t *testing.T) {
	p := newDemuxPair(t, "udp4", "127.0.0.1", DemuxOptions{})
	defer p.d.Close()
	none := func([]byte, net.Addr) bool { return false }
	var removes []func()
	for i := 0; i < MaxSTUNHooks; i++ {
		r, err := p.d.AddSTUNHook(none)
		if err != nil {
			t.Fatalf("hook %d: %v", i, err)
		}
		removes = append(removes, r)
	}
	if _, err := p.d.AddSTUNHook(none); !errors.Is(err, ErrTooManyHooks) {
		t.Fatalf("hook past the limit: err %v, want ErrTooManyHooks", err)
	}
	removes[0]()
	if _, err := p.d.AddSTUNHook(none); err != nil {
		t.Fatalf("hook after a removal: %v", err)
	}
}
