package host

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/a2alnode/a2al/natprobe"
)

// TestModeADialThroughPunch: B is behind a port-restricted NAT, so a direct
// dial cannot work; Dial resolves B's record through the DHT, punches via the
// hub and opens an authenticated application connection over the hole.
func TestModeADialThroughPunch(t *testing.T) {
	s := newSim(t, 0)
	a, _ := s.addNode(natprobe.TypeAddressRestricted)
	b, _ := s.addNode(natprobe.TypePortRestricted)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	accepted := make(chan *Conn, 1)
	go func() {
		c, err := b.Accept(ctx)
		if err != nil {
			return
		}
		accepted <- c
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		io.Copy(s, s)
		s.Close()
	}()
	c, err := a.Dial(ctx, b.Address())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if c.Peer != b.Address() || c.Path != "punched" {
		t.Fatalf("conn peer %s path %q", c.Peer.String(), c.Path)
	}
	st, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("over the hole"))
	st.Close()
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "over the hole" {
		t.Fatalf("echo %q err %v", got, err)
	}
	select {
	case bc := <-accepted:
		if bc.Peer != a.Address() {
			t.Fatalf("acceptor saw %s, want %s", bc.Peer.String(), (a.Address()).String())
		}
	case <-ctx.Done():
		t.Fatal("b never accepted")
	}
}

// TestModeADialDirect: an open host is dialed directly without any punch.
func TestModeADialDirect(t *testing.T) {
	s := newSim(t, 0)
	a, _ := s.addNode(natprobe.TypePortRestricted)
	b, _ := s.addNode(natprobe.TypeOpen)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		if c, err := b.Accept(ctx); err == nil {
			<-c.Context().Done()
		}
	}()
	c, err := a.Dial(ctx, b.Address())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if c.Path != "direct" {
		t.Fatalf("path %q, want direct", c.Path)
	}
	if len(a.Punches()) != 0 {
		t.Fatalf("a punched although the peer is open: %+v", a.Punches())
	}
}
