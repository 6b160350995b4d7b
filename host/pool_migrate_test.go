package host

import (
	"context"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// dialModeB opens a Mode B connection from a to b without pooling it.
func dialModeB(t testing.TB, a, b *testPeer) (client, server *quic.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	acc := make(chan *quic.Conn, 1)
	go func() {
		c, err := b.ln.Accept(ctx)
		if err != nil {
			c = nil
		}
		acc <- c
	}()
	c, err := a.tr.Dial(ctx, b.udp.LocalAddr(), a.id.ClientTLS(b.id.Address, ALPNModeB), quicConfig(DefaultHandshakeLimit))
	if err != nil {
		t.Fatal(err)
	}
	sc := <-acc
	if sc == nil {
		t.Fatal("accept failed")
	}
	return c, sc
}

// When a peer's connection is replaced (a relayed one upgraded to a direct
// one: the same dialer's newcomer wins), the two sides pool the new
// connection one after the other. DHT traffic in between must not be lost:
// the side that pooled first still receives over the old connection what
// the other side sends there, and what it sends on the new one is read once
// the other side pools it. (Before the fix the old connection was closed at
// once and the peer's answer vanished.)
func TestPoolReplacementKeepsDHTTraffic(t *testing.T) {
	a, b := newTestPeer(t, 4), newTestPeer(t, 4)
	connect(t, a, b)
	c2, sc2 := dialModeB(t, a, b)
	if !a.pool.AddOn(b.id.Address, c2, a.id.NodeID, PoolPath{Type: PathDirect}) {
		t.Fatal("a kept the old connection")
	}
	ctx := context.Background()
	// b has not pooled the new connection yet: its message goes over the old one.
	if ok, err := b.pool.SendTo(ctx, a.id.NodeID, []byte{0xa1, 1}); !ok {
		t.Fatalf("b's send refused: %v", err)
	}
	if got := a.rec.wait(t); len(got) != 2 || got[1] != 1 {
		t.Fatalf("a got %x, want b's message sent over the old connection", got)
	}
	// a's message goes over the new connection, which b reads once pooled.
	if ok, err := a.pool.SendTo(ctx, b.id.NodeID, []byte{0xa1, 2}); !ok {
		t.Fatalf("a's send refused: %v", err)
	}
	if !b.pool.AddOn(a.id.Address, sc2, a.id.NodeID, PoolPath{Type: PathDirect}) {
		t.Fatal("b kept the old connection")
	}
	if got := b.rec.wait(t); len(got) != 2 || got[1] != 2 {
		t.Fatalf("b got %x, want a's message", got)
	}
	if a.pool.Len() != 1 || b.pool.Len() != 1 {
		t.Fatalf("pools hold %d and %d entries, want 1 each", a.pool.Len(), b.pool.Len())
	}
}
