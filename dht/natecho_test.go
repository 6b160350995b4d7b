package dht

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/a2alnode/a2al/protocol"
)

// TestNATEchoToAnotherNode: one node sends the NAT_PROBE_REQ, another node
// at the same IP (the claimed address) awaits the echo, as the host's
// stranger socket does (docs/public-address.md).
func TestNATEchoToAnotherNode(t *testing.T) {
	a := udpNode(t, "127.50.1.1", 1, nil)
	s := udpNode(t, "127.50.1.1", 3, nil)
	b := udpNode(t, "127.51.1.1", 2, nil)
	b.nat.allowPrivate.Store(true)
	ls := s.LocalAddr().(*net.UDPAddr)
	tok, wait, err := s.ExpectNATEcho()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SendNATProbeToken(b.LocalAddr(), protocol.EncodeUDPAddr(ls.IP, uint16(ls.Port)), tok); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ok, err := wait(ctx); !ok || err != nil {
		t.Fatalf("echo to the other node: %v %v", ok, err)
	}
	s.nat.mu.Lock()
	left := len(s.nat.waiters)
	s.nat.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d waiters left after wait", left)
	}
	if err := a.SendNATProbeToken(b.LocalAddr(), []byte{1}, tok); err == nil {
		t.Fatal("bad claimed address accepted")
	}
}
