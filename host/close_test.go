package host

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"testing"
)

var errSocketClose = errors.New("socket close failed")

// failingCloseConn is a real socket whose Close also reports an error.
type failingCloseConn struct{ net.PacketConn }

func (c failingCloseConn) Close() error {
	_ = c.PacketConn.Close()
	return errSocketClose
}

// Close reports what it met: nil for a clean shutdown, the socket's close
// error (wrapped, and again on a second call) when there was one.
func TestCloseReturnsErrors(t *testing.T) {
	open := func(pc net.PacketConn) *Host {
		t.Helper()
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		h, err := New(Config{Key: key, PacketConn: pc, Logger: testLogger(), DisableMaintenance: true, DisableNAT: true})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	listen := func() net.PacketConn {
		t.Helper()
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return pc
	}
	if err := open(listen()).Close(); err != nil {
		t.Fatalf("clean close: %v", err)
	}
	h := open(failingCloseConn{listen()})
	err := h.Close()
	if !errors.Is(err, errSocketClose) {
		t.Fatalf("close with a failing socket: err = %v, want it to wrap %v", err, errSocketClose)
	}
	if err2 := h.Close(); err2 != err {
		t.Fatalf("second close: %v, want the first call's %v", err2, err)
	}
}
