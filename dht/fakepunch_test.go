package dht

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/crypto"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

type fakePunchFixture struct {
	mem   *transport.MemNetwork
	fpn   *FakePunchNetwork
	nodes []*Node
	pts   []*FakePunchTransport
	trs   []*transport.MemTransport
}

// newFakePunchFixture builds n started nodes on one MemNetwork, each with a
// transport registered (but not bound) on one FakePunchNetwork.
func newFakePunchFixture(t *testing.T, n int) *fakePunchFixture {
	t.Helper()
	f := &fakePunchFixture{mem: transport.NewMemNetwork(), fpn: NewFakePunchNetwork()}
	for i := 0; i < n; i++ {
		seed := make([]byte, 32)
		seed[0], seed[1] = 0xfa, byte(i)
		ks, err := crypto.NewMemKeyStoreFromSeed(seed)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := f.mem.NewTransport(string(rune('a' + i)))
		if err != nil {
			t.Fatal(err)
		}
		addr := ks.List()[0]
		pt := f.fpn.NewTransport(a2al.NodeIDFromAddress(addr), tr.LocalAddr())
		node, err := NewNode(Config{
			Transport:      tr,
			Keystore:       ks,
			RecordAuth:     SecureRecordAuth,
			Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
			PunchTransport: pt,
		})
		if err != nil {
			t.Fatal(err)
		}
		node.Start()
		f.nodes, f.pts, f.trs = append(f.nodes, node), append(f.pts, pt), append(f.trs, tr)
	}
	return f
}

func (f *fakePunchFixture) close(t *testing.T) {
	t.Helper()
	for _, n := range f.nodes {
		n.Close()
	}
	if err := f.fpn.Close(); err != nil {
		t.Errorf("FakePunchNetwork.Close: %v", err)
	}
	f.mem.Close()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func goroutinesBack(t *testing.T, base int) {
	t.Helper()
	eventually(t, "goroutines to return to baseline", func() bool { return runtime.NumGoroutine() <= base })
}

func TestFakePunchRegistryAndHasConn(t *testing.T) {
	base := runtime.NumGoroutine()
	f := newFakePunchFixture(t, 2)
	a, b := f.nodes[0], f.nodes[1]
	if f.pts[0].HasConn(b.NodeID()) {
		t.Fatal("HasConn true for an unbound peer")
	}
	if ok, err := f.pts[0].SendTo(context.Background(), b.NodeID(), []byte{0xa0}); ok || err != nil {
		t.Fatalf("SendTo unbound peer = %v, %v", ok, err)
	}
	f.pts[1].Bind(b)
	f.pts[1].Bind(b) // idempotent
	if !f.pts[0].HasConn(b.NodeID()) {
		t.Fatal("HasConn false for a bound peer")
	}
	if f.pts[0].HasConn(a2al.NodeID{1}) {
		t.Fatal("HasConn true for an unknown peer")
	}
	// Re-registration drops the binding until the new transport is bound;
	// the stale transport cannot restore it.
	fresh := f.fpn.NewTransport(b.NodeID(), f.trs[1].LocalAddr())
	f.pts[1].Bind(b)
	if f.pts[0].HasConn(b.NodeID()) {
		t.Fatal("re-registered peer still connected before Bind")
	}
	fresh.Bind(b)
	if !f.pts[0].HasConn(b.NodeID()) {
		t.Fatal("re-registered peer not connected after Bind")
	}
	_ = a
	f.close(t)
	goroutinesBack(t, base)
}

func TestFakePunchSendToInjects(t *testing.T) {
	base := runtime.NumGoroutine()
	f := newFakePunchFixture(t, 2)
	a, b := f.nodes[0], f.nodes[1]
	f.pts[0].Bind(a)
	f.pts[1].Bind(b)

	// A signed PING from a's identity, delivered over the fake punched path.
	var h protocol.Header
	h.Version, h.MsgType = protocol.ProtocolVersion, protocol.MsgPing
	if _, err := rand.Read(h.TxID[:]); err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, 32)
	seed[0] = 0xfa
	ks, _ := crypto.NewMemKeyStoreFromSeed(seed)
	pub, _ := ks.PublicKey(a.Address())
	msg, err := protocol.EncodeMessage(h, protocol.BodyPing{Address: a.Address()}, pub, func(m []byte) ([]byte, error) { return ks.Sign(a.Address(), m) })
	if err != nil {
		t.Fatal(err)
	}
	before := b.DebugStatsData().RxPackets
	ok, err := f.pts[0].SendTo(context.Background(), b.NodeID(), msg)
	if !ok || err != nil {
		t.Fatalf("SendTo = %v, %v", ok, err)
	}
	eventually(t, "b to verify the injected datagram", func() bool { return b.DebugStatsData().RxPackets > before })
	f.close(t)
	goroutinesBack(t, base)
}

func TestFakePunchPunchReportsBothSides(t *testing.T) {
	base := runtime.NumGoroutine()
	f := newFakePunchFixture(t, 3)
	a, b, c := f.nodes[0], f.nodes[1], f.nodes[2]
	f.pts[0].Bind(a)
	f.pts[1].Bind(b)
	// c is registered but never bound: a punch towards it fails.

	f.pts[0].Punch(b.NodeID(), nil, PunchPriorityHigh)
	eventually(t, "a to learn b from the punch", func() bool { return a.PeerHealthOf(b.NodeID()) == PeerHealthGood })
	eventually(t, "b to learn a from the punch", func() bool { return b.PeerHealthOf(a.NodeID()) == PeerHealthGood })

	f.pts[0].Punch(c.NodeID(), nil, PunchPriorityLow)
	f.pts[2].Punch(a.NodeID(), nil, PunchPriorityLow) // unbound sender: nothing happens
	if err := f.fpn.Close(); err != nil {
		t.Fatal(err)
	}
	if got := a.PeerHealthOf(c.NodeID()); got == PeerHealthGood {
		t.Fatal("failed punch reported as success")
	}
	if got := a.PeerHealthOf(c.NodeID()); got != PeerHealthUnknown {
		t.Fatalf("PunchFailOther changed c's health to %v", got)
	}
	f.fpn.mu.Lock()
	pending := len(f.fpn.pending)
	f.fpn.mu.Unlock()
	if pending != 0 {
		t.Fatalf("%d punches still pending after Close", pending)
	}
	// After Close, Punch is a no-op.
	f.pts[0].Punch(b.NodeID(), nil, PunchPriorityHigh)
	f.close(t)
	goroutinesBack(t, base)
}

func TestFakePunchAddresses(t *testing.T) {
	fpn := NewFakePunchNetwork()
	var last *FakePunchTransport
	for i := 1; i <= 300; i++ {
		last = fpn.NewTransport(a2al.NodeID{byte(i), byte(i >> 8)}, transport.Addr{Name: "x"})
	}
	want := &net.UDPAddr{IP: net.IPv4(127, 0, 1, 44).To4(), Port: 10300}
	if got := last.self.fakeAddr; !got.IP.Equal(want.IP) || got.Port != want.Port {
		t.Fatalf("300th fake address %v, want %v", got, want)
	}
	if err := fpn.Close(); err != nil {
		t.Fatal(err)
	}
}
