package host

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/signal"
)

// memSig is one end of an in-memory signaling session.
type memSig struct {
	in  chan signal.Signal
	out chan signal.Signal
}

func memSigPair() (*memSig, *memSig) {
	a, b := make(chan signal.Signal, 64), make(chan signal.Signal, 64)
	return &memSig{in: a, out: b}, &memSig{in: b, out: a}
}

func (m *memSig) Send(ctx context.Context, s signal.Signal) error {
	select {
	case m.out <- s:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *memSig) Recv(ctx context.Context) (signal.Signal, error) {
	select {
	case s := <-m.in:
		return s, nil
	case <-ctx.Done():
		return signal.Signal{}, ctx.Err()
	}
}

// TestLyingHubCannotPoolImpersonator: the hub tells the victim's peer B that
// the caller is X, but the caller is really M. B expects X's TLS identity, so
// M's QUIC connection is refused and nothing is pooled.
func TestLyingHubCannotPoolImpersonator(t *testing.T) {
	s := newSim(t, 0)
	b, _ := s.addNode(natprobe.TypeFullCone)
	m, _ := s.addNode(natprobe.TypeFullCone)
	x, _ := s.addNode(natprobe.TypeFullCone) // the identity the hub claims
	sigB, sigM := memSigPair()
	done := make(chan struct{})
	go func() { defer close(done); b.handleCall(x.Address(), sigB) }()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	is, err := startICE(ctx, m.env, sigM, true, m.iceHint(), nil)
	if err != nil {
		t.Fatalf("attacker ICE: %v", err)
	}
	defer is.Close()
	qc, _, _, err := m.dialICE(ctx, is, b.Address(), ALPNModeB)
	if err == nil {
		// The handshake may complete before B's accept loop refuses it.
		select {
		case <-qc.Context().Done():
		case <-time.After(10 * time.Second):
			t.Fatal("impersonator's connection was not closed")
		}
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("callee did not give up")
	}
	if b.pool.Len() != 0 {
		t.Fatalf("B pooled %d connections from an impersonator", b.pool.Len())
	}
	if got := b.unexpectedB.Load(); got < 1 {
		t.Fatalf("unexpected mode B counter = %v", got)
	}
	p := b.Punches()
	if len(p) != 1 || p[0].OK || p[0].Reason != "tls-identity" {
		t.Fatalf("callee punch log %+v", p)
	}
}

// TestGlareYieldsOneConnection: both sides punch each other at once.
func TestGlareYieldsOneConnection(t *testing.T) {
	s := newSim(t, 0)
	a, erA := s.addNode(natprobe.TypePortRestricted)
	b, erB := s.addNode(natprobe.TypePortRestricted)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.sched.Enqueue(b.NodeID(), erB, PrioHigh) }()
	go func() { defer wg.Done(); b.sched.Enqueue(a.NodeID(), erA, PrioHigh) }()
	wg.Wait()
	waitFor(t, "both pooled", func() bool {
		return a.pool.HasConn(b.NodeID()) && b.pool.HasConn(a.NodeID()) &&
			!a.sched.Pending(b.NodeID()) && !b.sched.Pending(a.NodeID())
	})
	time.Sleep(500 * time.Millisecond) // let any second connection settle
	if a.pool.Len() != 1 || b.pool.Len() != 1 {
		t.Fatalf("pool sizes %d/%d", a.pool.Len(), b.pool.Len())
	}
	sa, sb := a.pool.Snapshot()[0], b.pool.Snapshot()[0]
	if sa.WeDialed == sb.WeDialed {
		t.Fatalf("the two sides kept different connections (a dialed=%v, b dialed=%v)", sa.WeDialed, sb.WeDialed)
	}
	// The kept connection works.
	remote, _ := a.pool.RemoteAddr(b.NodeID())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.node.Ping(ctx, remote); err != nil {
		t.Fatalf("ping over kept connection: %v", err)
	}
	t.Logf("a punches: %+v", a.Punches())
	t.Logf("b punches: %+v", b.Punches())
}

// TestHostCloseNoLeak: a host with a pooled, punched connection closes
// everything; the peer notices the dead connection and removes it.
func TestHostCloseNoLeak(t *testing.T) {
	s := newSim(t, 0)
	a, _ := s.addNode(natprobe.TypeFullCone)
	b, erB := s.addNode(natprobe.TypeAddressRestricted)
	a.sched.Enqueue(b.NodeID(), erB, PrioHigh)
	waitFor(t, "pooled", func() bool { return b.pool.HasConn(a.NodeID()) && a.pool.HasConn(b.NodeID()) })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "peer drops dead connection", func() bool { return !b.pool.HasConn(a.NodeID()) })
	if ok, _ := b.pool.SendTo(context.Background(), a.NodeID(), []byte{0xa0}); ok {
		t.Fatal("SendTo still succeeds to a closed peer")
	}
}

// TestHostGoroutinesReturnToBaseline runs a punch between two hosts, closes
// the whole world and checks nothing keeps running.
func TestHostGoroutinesReturnToBaseline(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("world", func(t *testing.T) {
		s := newSim(t, 0)
		a, _ := s.addNode(natprobe.TypePortRestricted)
		b, erB := s.addNode(natprobe.TypeFullCone)
		// An unpunchable pair too: its relayed path (allocation, relay
		// transport, the ICE agents both sides keep) must be torn down as well.
		c, _ := s.addNode(natprobe.TypeSymmetric)
		d, erD := s.addNode(natprobe.TypePortRestricted)
		a.sched.Enqueue(b.NodeID(), erB, PrioHigh)
		c.sched.Enqueue(d.NodeID(), erD, PrioHigh)
		waitFor(t, "pooled", func() bool { return b.pool.HasConn(a.NodeID()) && a.pool.HasConn(b.NodeID()) })
		waitFor(t, "relayed punch", func() bool { return len(c.Punches()) > 0 })
		if p := c.Punches()[0]; !p.OK || p.PathType != PathRelayed {
			t.Fatalf("symmetric -> port-restricted: %+v, want relayed", p)
		}
		waitFor(t, "callee pooled", func() bool { return d.pool.HasConn(c.NodeID()) })
	})
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > base+3 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("goroutines %d > baseline %d:\n%s", runtime.NumGoroutine(), base, buf[:n])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPunchNoAgent: the record names a hub the peer is no longer registered
// at; the hub says so and the punch fails with the no-agent reason.
func TestPunchNoAgent(t *testing.T) {
	s := newSim(t, 0)
	a, _ := s.addNode(natprobe.TypePortRestricted)
	b, erB := s.addNode(natprobe.TypePortRestricted)
	b.Close()
	waitFor(t, "hub to forget b", func() bool { return s.hub.Stats().Registered == 1 })
	a.sched.Enqueue(b.NodeID(), erB, PrioHigh)
	waitFor(t, "punch outcome", func() bool { return len(a.Punches()) > 0 })
	if p := a.Punches()[0]; p.OK || p.Reason != "no-agent" {
		t.Fatalf("punch %+v, want failure with no-agent", p)
	}
}
