package transport

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestMemSendReceive(t *testing.T) {
	n := NewMemNetwork()
	defer n.Close()
	a, err := n.NewTransport("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.NewTransport("b")
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("hello")
	if err := a.Send(Addr{Name: "b"}, msg); err != nil {
		t.Fatal(err)
	}
	msg[0] = 'X' // Send must have copied
	data, from, err := b.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "hello" || from.String() != "a" || from.Network() != "mem" {
		t.Fatalf("got %q from %v", data, from)
	}
	if b.LocalAddr().String() != "b" {
		t.Fatalf("LocalAddr = %v", b.LocalAddr())
	}
	if s := n.Stats(); s.Sent != 1 || s.Delivered != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestMemErrors(t *testing.T) {
	n := NewMemNetwork()
	defer n.Close()
	a, _ := n.NewTransport("a")
	if _, err := n.NewTransport("a"); !errors.Is(err, ErrDuplicatePeer) {
		t.Fatalf("duplicate: %v", err)
	}
	if err := a.Send(Addr{Name: "nobody"}, []byte{1}); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("unknown: %v", err)
	}
	if err := a.Send(&fakeAddr{}, []byte{1}); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("non-mem addr: %v", err)
	}
	if err := a.Send(Addr{Name: "a"}, make([]byte, MaxPacketSize+1)); !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if err := a.Send(Addr{Name: "a"}, make([]byte, MaxPacketSize)); err != nil {
		t.Fatalf("max size: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal("second close:", err)
	}
	if _, _, err := a.Receive(); !errors.Is(err, ErrClosed) {
		t.Fatalf("receive after close: %v", err)
	}
	if err := a.Send(Addr{Name: "a"}, []byte{1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	// The name is free again.
	a2, err := n.NewTransport("a")
	if err != nil {
		t.Fatal(err)
	}
	_ = a2.Close()
}

type fakeAddr struct{}

func (*fakeAddr) Network() string { return "udp" }
func (*fakeAddr) String() string  { return "a" }

func TestMemInboxFullDropsAndCounts(t *testing.T) {
	n := NewMemNetwork()
	defer n.Close()
	a, _ := n.NewTransport("a")
	b, _ := n.NewTransport("b")
	for i := 0; i < MemInboxSize; i++ {
		if err := a.Send(b.LocalAddr(), []byte{byte(i)}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := a.Send(b.LocalAddr(), []byte{0xff}); !errors.Is(err, ErrMemBufferFull) {
		t.Fatalf("want ErrMemBufferFull, got %v", err)
	}
	if s := n.Stats(); s.DroppedFull != 1 || s.Delivered != MemInboxSize {
		t.Fatalf("stats %+v", s)
	}
	for i := 0; i < MemInboxSize; i++ {
		d, _, err := b.Receive()
		if err != nil || len(d) != 1 || d[0] != byte(i) {
			t.Fatalf("packet %d: %v %v", i, d, err)
		}
	}
}

func TestMemCloseUnblocksReceive(t *testing.T) {
	base := runtime.NumGoroutine()
	n := NewMemNetwork()
	a, _ := n.NewTransport("a")
	errc := make(chan error, 1)
	go func() { _, _, err := a.Receive(); errc <- err }()
	_ = a.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Receive not unblocked by Close")
	}
	_ = n.Close()
	checkGoroutines(t, base)
}

// TestMemConcurrentSendClose exercises the race the reference had: Close
// while other goroutines send to the endpoint (must not panic; run with -race).
func TestMemConcurrentSendClose(t *testing.T) {
	n := NewMemNetwork()
	defer n.Close()
	for round := 0; round < 20; round++ {
		name := fmt.Sprintf("dst%d", round)
		dst, _ := n.NewTransport(name)
		var wg sync.WaitGroup
		for s := 0; s < 4; s++ {
			src, err := n.NewTransport(fmt.Sprintf("src%d-%d", round, s))
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer src.Close()
				for i := 0; i < 200; i++ {
					err := src.Send(Addr{Name: name}, []byte{1, 2, 3})
					if err != nil && !errors.Is(err, ErrUnknownPeer) && !errors.Is(err, ErrMemBufferFull) {
						t.Errorf("send: %v", err)
						return
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, _, err := dst.Receive(); err != nil {
					return
				}
			}
		}()
		time.Sleep(time.Millisecond)
		_ = dst.Close()
		wg.Wait()
	}
}

func TestMemLatencyDeliversInOrderAndStops(t *testing.T) {
	base := runtime.NumGoroutine()
	n := NewMemNetwork()
	n.SetLatency(20 * time.Millisecond)
	a, _ := n.NewTransport("a")
	b, _ := n.NewTransport("b")
	start := time.Now()
	for i := 0; i < 10; i++ {
		if err := a.Send(b.LocalAddr(), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 10; i++ {
		r := receiveWithin(t, b, 5*time.Second)
		if r.err != nil || r.data[0] != byte(i) {
			t.Fatalf("packet %d: %+v", i, r)
		}
	}
	// Lower bound only: delivery must not happen before the latency elapsed.
	if el := time.Since(start); el < 20*time.Millisecond {
		t.Fatalf("delivered after %v, before the configured latency", el)
	}
	_ = n.Close()
	if _, err := n.NewTransport("c"); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewTransport after Close: %v", err)
	}
	if _, _, err := b.Receive(); !errors.Is(err, ErrClosed) {
		t.Fatalf("endpoint not closed by network Close: %v", err)
	}
	checkGoroutines(t, base)
}

func TestMemLatencyPendingDiscardedOnClose(t *testing.T) {
	base := runtime.NumGoroutine()
	n := NewMemNetwork()
	n.SetLatency(time.Hour)
	a, _ := n.NewTransport("a")
	if err := a.Send(a.LocalAddr(), []byte{1}); err != nil {
		t.Fatal(err)
	}
	_ = n.Close()
	checkGoroutines(t, base)
}

func TestMemLoss(t *testing.T) {
	n := NewMemNetwork()
	defer n.Close()
	n.SetSeed(1)
	a, _ := n.NewTransport("a")
	b, _ := n.NewTransport("b")
	n.SetLoss(1)
	for i := 0; i < 10; i++ {
		if err := a.Send(b.LocalAddr(), []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	if s := n.Stats(); s.Lost != 10 || s.Delivered != 0 {
		t.Fatalf("loss=1: %+v", s)
	}
	n.SetLoss(0.5)
	for i := 0; i < 200; i++ {
		_ = a.Send(b.LocalAddr(), []byte{1})
		b.dequeue()
	}
	s := n.Stats()
	if lost := s.Lost - 10; lost == 0 || lost == 200 {
		t.Fatalf("loss=0.5 lost %d of 200", lost)
	}
}

func BenchmarkMemSendReceive(b *testing.B) {
	n := NewMemNetwork()
	defer n.Close()
	x, _ := n.NewTransport("x")
	y, _ := n.NewTransport("y")
	pkt := make([]byte, 200)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := x.Send(y.LocalAddr(), pkt); err != nil {
			b.Fatal(err)
		}
		if _, _, err := y.Receive(); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMemUDPEndpoints(t *testing.T) {
	n := NewMemNetwork()
	defer n.Close()
	aAddr := &net.UDPAddr{IP: net.IPv4(127, 1, 0, 1), Port: 4000}
	bAddr := &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 4000}
	a, err := n.NewUDPTransport(aAddr)
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.NewUDPTransport(bAddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.NewUDPTransport(&net.UDPAddr{IP: net.ParseIP("::ffff:127.1.0.1"), Port: 4000}); !errors.Is(err, ErrDuplicatePeer) {
		t.Fatalf("IPv4-mapped duplicate: %v", err)
	}
	if err := a.Send(&net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 4000}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	data, from, err := b.Receive()
	if err != nil || string(data) != "x" {
		t.Fatalf("got %q %v", data, err)
	}
	ua, ok := from.(*net.UDPAddr)
	if !ok || !ua.IP.Equal(aAddr.IP) || ua.Port != 4000 {
		t.Fatalf("source %#v", from)
	}
	// Replying to the source address works; so does the mem name.
	if err := b.Send(from, []byte("y")); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(Addr{Name: "127.1.0.1:4000"}, []byte("z")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"y", "z"} {
		if d, _, err := a.Receive(); err != nil || string(d) != want {
			t.Fatalf("got %q %v, want %q", d, err, want)
		}
	}
	if err := a.Send(&net.UDPAddr{IP: net.IPv4(127, 9, 9, 9), Port: 1}, []byte{1}); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("unknown UDP peer: %v", err)
	}
	_ = b.Close()
	if err := a.Send(bAddr, []byte{1}); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("closed UDP peer: %v", err)
	}
	if _, err := n.NewUDPTransport(bAddr); err != nil {
		t.Fatalf("re-register after close: %v", err)
	}
}
