package host

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun"
)

// fakeConn records writes and serves queued reads.
type fakeConn struct {
	net.PacketConn // nil: only the methods below are used
	mu             sync.Mutex
	written        int
	reads          chan fakePkt
}

type fakePkt struct {
	b    []byte
	from net.Addr
}

func (f *fakeConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	f.mu.Lock()
	f.written++
	f.mu.Unlock()
	return len(p), nil
}

func (f *fakeConn) ReadFrom(p []byte) (int, net.Addr, error) {
	r := <-f.reads
	return copy(p, r.b), r.from, nil
}

func (f *fakeConn) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written
}

func check(t *testing.T, user string, setters ...stun.Setter) *stun.Message {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID, stun.BindingRequest, stun.NewUsername(user)}, setters...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func netipOf(a *net.UDPAddr) netip.AddrPort {
	ap, _ := addrPort(a)
	return ap
}

func (g *checkGuard) isProven(ufrag string, a *net.UDPAddr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.sessions[ufrag].proven[netipOf(a)]
	return ok
}

// TestCheckGuardBudgetsAndProof: an unproven address gets checks only as
// candidates name it (3 each, at most UnprovenPerDest); an authenticated check from it earns exactly one more
// (a forged one nothing); a success response to one of our checks from that
// address proves it (no budget after that), one from elsewhere does not;
// gathering requests pass, checks of no session do not.
func TestCheckGuardBudgetsAndProof(t *testing.T) {
	fc := &fakeConn{reads: make(chan fakePkt, 4)}
	lim := DefaultPunchLimits()
	lim.UnprovenRate = 1e6 // the global bucket has its own test
	now := time.Unix(1000, 0)
	g := newCheckGuard(fc, lim, func() time.Time { now = now.Add(time.Second); return now })
	const pwd = "localpasswordlocalpassword"
	if err := g.open("local", pwd); err != nil {
		t.Fatal(err)
	}
	x := &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 5000}
	for range 6 {
		_, _ = g.WriteTo(check(t, "peer:local").Raw, x)
	}
	if got := fc.count(); got != 0 {
		t.Fatalf("to an address no candidate named: %d checks went out, want 0", got)
	}
	g.addCandidate("local", netipOf(x), false)
	for range 6 {
		_, _ = g.WriteTo(check(t, "peer:local").Raw, x)
	}
	if got := fc.count(); got != unprovenPerCandidate {
		t.Fatalf("one candidate: %d checks went out, want %d", got, unprovenPerCandidate)
	}
	g.addCandidate("local", netipOf(x), false)
	g.addCandidate("local", netipOf(x), false)
	g.addCandidate("local", netipOf(x), false)
	fc.mu.Lock()
	fc.written = 0
	fc.mu.Unlock()
	g.sessions["local"].allow[netipOf(x)] = 0 // start the per-address cap test afresh
	g.addCandidate("local", netipOf(x), false)
	g.addCandidate("local", netipOf(x), false)
	g.addCandidate("local", netipOf(x), false)
	var sentOK *stun.Message
	for i := range lim.UnprovenPerDest + 5 {
		m := check(t, "peer:local")
		if i == 0 {
			sentOK = m
		}
		_, _ = g.WriteTo(m.Raw, x)
	}
	if got := fc.count(); got != lim.UnprovenPerDest {
		t.Fatalf("%d checks to an unproven address went out, want %d", got, lim.UnprovenPerDest)
	}
	in := check(t, "local:peer", stun.NewShortTermIntegrity(pwd), stun.Fingerprint)
	g.observe(in.Raw, x)
	forged := check(t, "local:peer", stun.NewShortTermIntegrity("wrong-password-wrong-pw"), stun.Fingerprint)
	g.observe(forged.Raw, x)
	for range 3 {
		_, _ = g.WriteTo(check(t, "peer:local").Raw, x)
	}
	if got := fc.count(); got != lim.UnprovenPerDest+1 {
		t.Fatalf("after one authenticated check: %d sent, want %d", got, lim.UnprovenPerDest+1)
	}
	resp, err := stun.Build(stun.NewTransactionIDSetter(sentOK.TransactionID), stun.BindingSuccess)
	if err != nil {
		t.Fatal(err)
	}
	g.observe(resp.Raw, &net.UDPAddr{IP: net.IPv4(198, 51, 100, 2), Port: 5000})
	if g.isProven("local", x) {
		t.Fatal("a response from another address proved x")
	}
	fc.reads <- fakePkt{resp.Raw, x}
	if _, _, err := g.ReadFrom(make([]byte, 1500)); err != nil {
		t.Fatal(err)
	}
	if !g.isProven("local", x) {
		t.Fatal("the response to our own check did not prove x")
	}
	before := fc.count()
	for range 50 {
		_, _ = g.WriteTo(check(t, "peer:local").Raw, x)
	}
	if got := fc.count() - before; got != 50 {
		t.Fatalf("proven address: %d of 50 checks sent", got)
	}
	gather, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
	before = fc.count()
	_, _ = g.WriteTo(gather.Raw, x)
	_, _ = g.WriteTo(check(t, "peer:nosuchsession").Raw, x)
	if got := fc.count() - before; got != 1 {
		t.Fatalf("gathering + unknown session: %d sent, want 1 (gathering only)", got)
	}
	g.close("local")
	if len(g.pending) != 0 || len(g.sessions) != 0 {
		t.Fatalf("close left %d pending, %d sessions", len(g.pending), len(g.sessions))
	}
}

// TestCheckGuardGlobalRate: across sessions, at most burst + rate checks to
// unproven addresses leave within one second.
func TestCheckGuardGlobalRate(t *testing.T) {
	fc := &fakeConn{}
	lim := DefaultPunchLimits()
	now := time.Unix(1000, 0)
	g := newCheckGuard(fc, lim, func() time.Time { return now })
	flood := func(ip byte) {
		for i := range 20 {
			for p := range 10 {
				_, _ = g.WriteTo(check(t, "peer:s"+string(rune('a'+i))).Raw, &net.UDPAddr{IP: net.IPv4(198, 51, 100, ip), Port: 1000 + p})
			}
		}
	}
	for i := range 20 {
		if err := g.open("s"+string(rune('a'+i)), "passwordpasswordpassword"); err != nil {
			t.Fatal(err)
		}
		for ip := byte(1); ip <= 2; ip++ {
			for p := range 10 {
				g.addCandidate("s"+string(rune('a'+i)), netipOf(&net.UDPAddr{IP: net.IPv4(198, 51, 100, ip), Port: 1000 + p}), false)
			}
		}
	}
	flood(1)
	if got := fc.count(); got != unprovenBurst {
		t.Fatalf("%d checks in one instant, want the burst %d", got, unprovenBurst)
	}
	now = now.Add(time.Second)
	flood(2)
	if got := fc.count(); got > 50 {
		t.Fatalf("%d checks within one second, want <= 50", got)
	}
}

// FuzzCheckGuard: whatever arrives or is written, the guard neither panics
// nor grows past its bounds.
func FuzzCheckGuard(f *testing.F) {
	req, _ := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewUsername("local:peer"),
		stun.NewShortTermIntegrity("passwordpasswordpassword"), stun.Fingerprint)
	resp, _ := stun.Build(stun.TransactionID, stun.BindingSuccess)
	f.Add(req.Raw)
	f.Add(resp.Raw)
	f.Add([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42})
	f.Fuzz(func(t *testing.T, b []byte) {
		fc := &fakeConn{}
		g := newCheckGuard(fc, DefaultPunchLimits(), time.Now)
		if err := g.open("local", "passwordpasswordpassword"); err != nil {
			t.Fatal(err)
		}
		a := &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 1}
		g.observe(b, a)
		_, _ = g.WriteTo(b, a)
		g.close("local")
		if len(g.pending) != 0 {
			t.Fatal("pending left after close")
		}
	})
}
