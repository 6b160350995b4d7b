package transport

import (
	"bytes"
	"errors"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

func listenOrSkip(t *testing.T, network, laddr string) *UDPTransport {
	t.Helper()
	tr, err := ListenUDP(network, laddr)
	if err != nil {
		if network == "udp6" {
			t.Skipf("IPv6 loopback unavailable: %v", err)
		}
		t.Fatal(err)
	}
	return tr
}

func TestUDPRoundTrip(t *testing.T) {
	for _, tc := range []struct{ network, laddr string }{
		{"udp4", "127.0.0.1:0"},
		{"udp6", "[::1]:0"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			base := runtime.NumGoroutine()
			a := listenOrSkip(t, tc.network, tc.laddr)
			b := listenOrSkip(t, tc.network, tc.laddr)
			msg := bytes.Repeat([]byte{0xa4}, MaxPacketSize)
			if err := a.Send(b.LocalAddr(), msg); err != nil {
				t.Fatal(err)
			}
			r := receiveWithin(t, b, 5*time.Second)
			if r.err != nil || !bytes.Equal(r.data, msg) {
				t.Fatalf("got %d bytes, err %v", len(r.data), r.err)
			}
			if r.from != a.LocalAddr().String() {
				t.Fatalf("from %s, want %s", r.from, a.LocalAddr())
			}
			if cap(r.data) != len(r.data) {
				t.Fatalf("Receive returned a slice of a larger buffer (cap %d)", cap(r.data))
			}
			if err := a.Send(b.LocalAddr(), make([]byte, MaxPacketSize+1)); !errors.Is(err, ErrPacketTooLarge) {
				t.Fatalf("oversize send: %v", err)
			}
			_ = a.Close()
			_ = b.Close()
			checkGoroutines(t, base)
		})
	}
}

func TestUDPReceiveCopiesAreIndependent(t *testing.T) {
	a := listenOrSkip(t, "udp4", "127.0.0.1:0")
	defer a.Close()
	b := listenOrSkip(t, "udp4", "127.0.0.1:0")
	defer b.Close()
	_ = a.Send(b.LocalAddr(), []byte("first"))
	r1 := receiveWithin(t, b, 5*time.Second)
	_ = a.Send(b.LocalAddr(), []byte("SECOND"))
	r2 := receiveWithin(t, b, 5*time.Second)
	if string(r1.data) != "first" || string(r2.data) != "SECOND" {
		t.Fatalf("got %q, %q", r1.data, r2.data)
	}
}

func TestUDPOversizedDatagramDropped(t *testing.T) {
	b := listenOrSkip(t, "udp4", "127.0.0.1:0")
	defer b.Close()
	raw, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.WriteTo(make([]byte, MaxPacketSize+100), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.WriteTo([]byte("ok"), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	r := receiveWithin(t, b, 5*time.Second)
	if string(r.data) != "ok" || b.Oversized() != 1 {
		t.Fatalf("got %q, oversized=%d", r.data, b.Oversized())
	}
}

func TestUDPCloseSemantics(t *testing.T) {
	base := runtime.NumGoroutine()
	a := listenOrSkip(t, "udp4", "127.0.0.1:0")
	errc := make(chan error, 1)
	go func() { _, _, err := a.Receive(); errc <- err }()
	time.Sleep(5 * time.Millisecond)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Receive after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Receive not unblocked")
	}
	if err := a.Send(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}, []byte{1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if _, _, err := a.Receive(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Receive after Close: %v", err)
	}
	checkGoroutines(t, base)
}

func TestUDPConcurrentSendClose(t *testing.T) {
	a := listenOrSkip(t, "udp4", "127.0.0.1:0")
	b := listenOrSkip(t, "udp4", "127.0.0.1:0")
	defer b.Close()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				if err := a.Send(b.LocalAddr(), []byte{0xa1, 1}); err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("send: %v", err)
					}
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if _, _, err := b.Receive(); err != nil {
				return
			}
		}
	}()
	time.Sleep(2 * time.Millisecond)
	_ = a.Close()
	_ = b.Close()
	wg.Wait()
}

func TestUDPSendRejectsNonUDPAddr(t *testing.T) {
	a := listenOrSkip(t, "udp4", "127.0.0.1:0")
	defer a.Close()
	if err := a.Send(Addr{Name: "x"}, []byte{1}); err == nil {
		t.Fatal("sending to a mem address over UDP succeeded")
	}
}

func TestUDPDualStackNormalisesMappedIPv4(t *testing.T) {
	ds, err := ListenUDP("udp", "[::]:0")
	if err != nil {
		t.Skipf("no dual-stack socket: %v", err)
	}
	defer ds.Close()
	port := ds.LocalAddr().(*net.UDPAddr).Port
	a := listenOrSkip(t, "udp4", "127.0.0.1:0")
	defer a.Close()
	if err := a.Send(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}, []byte{0xa0}); err != nil {
		t.Fatal(err)
	}
	r := receiveWithin(t, ds, 5*time.Second)
	if r.err != nil || r.from != a.LocalAddr().String() {
		t.Fatalf("from %q (want %s), err %v", r.from, a.LocalAddr(), r.err)
	}
}
