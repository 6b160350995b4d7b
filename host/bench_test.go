package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func loopbackHost(tb testing.TB) *Host {
	tb.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	h, err := New(Config{Key: key, ListenAddr: "127.0.0.1:0", Logger: testLogger(), DisableMaintenance: true, DisableNAT: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return h
}

// poolDirect connects a to b over Mode B without ICE (loopback needs none),
// going through b's real accept path (identity expectation included).
func poolDirect(tb testing.TB, a, b *Host) {
	tb.Helper()
	ch := make(chan *quic.Conn, 1)
	call := &inCall{peer: a.Address(), conn: ch}
	b.peers.mu.Lock()
	b.peers.getLocked(a.NodeID()).call = call
	b.peers.mu.Unlock()
	defer b.endCall(a.NodeID(), call)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qc, err := a.qtr.Dial(ctx, b.LocalAddr(), a.id.ClientTLS(b.Address(), ALPNModeB), quicConfig(DefaultHandshakeLimit))
	if err != nil {
		tb.Fatal(err)
	}
	select {
	case sc := <-ch:
		b.pool.Add(a.Address(), sc, a.NodeID(), nil)
	case <-ctx.Done():
		tb.Fatal("b did not accept")
	}
	a.pool.Add(b.Address(), qc, a.NodeID(), nil)
}

// benchFindNode measures FIND_NODE round trips between two fresh loopback
// hosts, pooled over Mode B or not. Keep b.N under the responder's per-IP
// amplification budget (burst 200, 100/s) or the limiter is what you measure:
// go test -bench DHTRoundTrip -benchtime 100x.
func benchFindNode(b *testing.B, modeB bool) {
	x, y := loopbackHost(b), loopbackHost(b)
	ctx := context.Background()
	if err := x.Bootstrap(ctx, y.LocalAddr().String()); err != nil {
		b.Fatal(err)
	}
	if modeB {
		poolDirect(b, x, y)
	}
	before := x.pool.Stats().SentDatagrams.Load()
	target := x.NodeID()
	b.ResetTimer()
	for b.Loop() {
		if _, err := x.node.FindNode(ctx, y.LocalAddr(), target); err != nil {
			b.Fatal(err)
		}
	}
	if used := x.pool.Stats().SentDatagrams.Load() > before; used != modeB {
		b.Fatalf("mode B used=%v, want %v", used, modeB)
	}
}

// BenchmarkDHTRoundTripUDP: FIND_NODE over plain UDP on loopback.
func BenchmarkDHTRoundTripUDP(b *testing.B) { benchFindNode(b, false) }

// BenchmarkDHTRoundTripModeB: the same RPC over a pooled QUIC connection.
func BenchmarkDHTRoundTripModeB(b *testing.B) { benchFindNode(b, true) }

// TestModeBLoopbackRPC is the correctness half of the benchmark: with the
// peer pooled, DHT RPCs travel over QUIC datagrams and still succeed.
func TestModeBLoopbackRPC(t *testing.T) {
	x, y := loopbackHost(t), loopbackHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := x.Bootstrap(ctx, y.LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	poolDirect(t, x, y)
	before := x.pool.Stats().SentDatagrams.Load()
	if _, err := x.node.FindNode(ctx, y.LocalAddr(), x.NodeID()); err != nil {
		t.Fatal(err)
	}
	if x.pool.Stats().SentDatagrams.Load() == before || y.pool.Stats().RecvDatagrams.Load() == 0 {
		t.Fatal("FIND_NODE did not travel over Mode B")
	}
}

// BenchmarkDHTPingUDP is the plain-UDP PING baseline (PING never uses the pool).
func BenchmarkDHTPingUDP(b *testing.B) {
	x, y := loopbackHost(b), loopbackHost(b)
	ctx := context.Background()
	for b.Loop() {
		if err := x.node.Ping(ctx, y.LocalAddr()); err != nil {
			b.Fatal(err)
		}
	}
}
