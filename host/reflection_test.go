package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v2"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/natprobe/natsim"
	"github.com/a2alnode/a2al/signal"
)

// reflTarget is a third party on the vnet WAN that counts what it receives.
type reflTarget struct {
	ip           net.IP
	ports        []int
	pkts, bytes  atomic.Uint64
	portsReached sync.Map
	conns        []net.PacketConn
	wg           sync.WaitGroup
}

func newReflTarget(t *testing.T, s *sim, nports int) *reflTarget {
	t.Helper()
	nh, err := s.w.AddOpenHost()
	if err != nil {
		t.Fatal(err)
	}
	r := &reflTarget{ip: nh.IP}
	for i := range nports {
		port := 6000 + i
		pc, err := nh.Net.ListenPacket("udp4", nh.Bind(port))
		if err != nil {
			t.Fatal(err)
		}
		r.ports = append(r.ports, port)
		r.conns = append(r.conns, pc)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			buf := make([]byte, 2048)
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				r.pkts.Add(1)
				r.bytes.Add(uint64(n))
				r.portsReached.Store(port, true)
			}
		}()
	}
	t.Cleanup(r.close)
	return r
}

func (r *reflTarget) close() {
	for _, c := range r.conns {
		_ = c.Close()
	}
	r.wg.Wait()
}

func (r *reflTarget) reached() int {
	n := 0
	r.portsReached.Range(func(any, any) bool { n++; return true })
	return n
}

func randomAddress(t *testing.T) a2al.Address {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	id, err := NewIdentity(key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id.Address
}

// frameLen is what one signal costs the attacker on the hub connection
// (the JSON frame, without WebSocket framing).
func frameLen(m signal.Signal) int {
	return len(signal.EncodeFrame(signal.Frame{T: signal.TSig, SID: "0123456789abcdef0123456789abcdef",
		Kind: m.Kind, Ufrag: m.Ufrag, Pwd: m.Pwd, Cand: m.Candidate}))
}

// TestICEReflectionBounded is attack 1 of docs/security.md: a caller trickles
// 32 candidates pointing at a third party. The callee's checks towards those
// never-answering addresses stay within the per-session budget, at most
// twice the bytes the attacker spent on its signals.
func TestICEReflectionBounded(t *testing.T) {
	s := newSim(t, 0)
	victimNH, err := s.w.AddOpenHost()
	if err != nil {
		t.Fatal(err)
	}
	victim := s.startHost(victimNH, false)
	target := newReflTarget(t, s, 32)
	sigV, sigA := memSigPair()
	done := make(chan struct{})
	go func() { defer close(done); victim.handleCall(randomAddress(t), sigV) }()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spent := 0
	send := func(m signal.Signal) {
		spent += frameLen(m)
		if err := sigA.Send(ctx, m); err != nil {
			t.Fatalf("attacker send: %v", err)
		}
	}
	send(signal.Signal{Kind: signal.KindCred, Ufrag: "attackerufrag123", Pwd: "attackerpasswordattackerpw"})
	for i, port := range target.ports {
		send(signal.Signal{Kind: signal.KindCand,
			Candidate: fmt.Sprintf("candidate:%d 1 udp 2130706431 %s %d typ host", i, target.ip, port)})
	}
	go func() { // drain what the victim signals back
		for {
			if _, err := sigA.Recv(ctx); err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("callee did not give up")
	}
	time.Sleep(200 * time.Millisecond) // let the last vnet packets land
	pkts, bytes := target.pkts.Load(), target.bytes.Load()
	t.Logf("attacker signalled %d B; third party received %d packets, %d B (%.1fx)", spent, pkts, bytes, float64(bytes)/float64(spent))
	if lim := uint64(DefaultPunchLimits().UnprovenPerSession); pkts > lim {
		t.Fatalf("third party received %d checks, want <= %d (per-session budget)", pkts, lim)
	}
	if bytes > uint64(2*spent) {
		t.Fatalf("amplification %.1fx, want <= 2x", float64(bytes)/float64(spent))
	}
}

// deadSig is a caller that hangs up at once: the callee's run ends quickly.
// sends counts what the callee tried to signal (a credential per run).
type deadSig struct{ sends atomic.Int32 }

func (d *deadSig) Send(context.Context, signal.Signal) error { d.sends.Add(1); return nil }
func (d *deadSig) Recv(context.Context) (signal.Signal, error) {
	return signal.Signal{}, errors.New("caller hung up")
}

// TestIncomingCallsRateLimited: one caller calling again and again gets a
// burst of calls run, then none (each run would send checks to whatever
// candidates it names).
func TestIncomingCallsRateLimited(t *testing.T) {
	w, err := natsim.NewWorld(natsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	s := &sim{t: t, w: w}
	nh, err := w.AddOpenHost()
	if err != nil {
		t.Fatal(err)
	}
	victim := s.startHost(nh, false)
	caller := randomAddress(t)
	sig := &deadSig{}
	const calls = 8
	ran := 0
	for range calls {
		before := sig.sends.Load()
		victim.handleCall(caller, sig)
		if sig.sends.Load() > before {
			ran++
		}
	}
	// The default allows a burst of 2 per caller and 4 per minute: a third
	// run is possible only if the test took over 15 s.
	if ran > 3 {
		t.Fatalf("%d of %d calls from one caller ran ICE, want <= 3", ran, calls)
	}
	if ran == 0 {
		t.Fatal("no call ran at all")
	}
}

// TestCandidateAllowed: private, shared and loopback candidates are checked
// only inside one of our own subnets; names are never looked up.
func TestCandidateAllowed(t *testing.T) {
	local := []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("127.0.0.0/8")}
	for _, c := range []struct {
		addr     string
		loopback bool
		want     bool
	}{
		{"1.2.3.4", false, true},
		{"192.168.1.7", false, true},
		{"192.168.2.7", false, false},
		{"10.0.0.1", false, false},
		{"100.64.0.9", false, false},
		{"169.254.1.1", false, false},
		{"127.0.0.1", false, false},
		{"127.0.0.1", true, true},
		{"0.0.0.0", false, false},
		{"example.com", false, false},
	} {
		cand, err := ice.UnmarshalCandidate(fmt.Sprintf("candidate:1 1 udp 2130706431 %s 5000 typ host", c.addr))
		if err != nil {
			if c.want {
				t.Fatalf("%s: %v", c.addr, err)
			}
			continue
		}
		if got := candidateAllowed(cand, local, c.loopback); got != c.want {
			t.Errorf("candidateAllowed(%s, loopback=%v) = %v, want %v", c.addr, c.loopback, got, c.want)
		}
	}
}

// TestSilentCallerEvicted: with every call slot taken by a caller that never
// answers a check, a new caller still gets answered (the silent call is
// ended after evictGrace).
func TestSilentCallerEvicted(t *testing.T) {
	s := newSim(t, 0)
	nh, err := s.w.AddOpenHost()
	if err != nil {
		t.Fatal(err)
	}
	victim := s.startHostCfg(nh, false, func(c *Config) { c.Limits.CallsConcurrent = 1 })
	target := newReflTarget(t, s, 1)
	sigV, sigA := memSigPair()
	done := make(chan struct{})
	silentCaller := randomAddress(t)
	go func() { defer close(done); victim.handleCall(silentCaller, sigV) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = sigA.Send(ctx, signal.Signal{Kind: signal.KindCred, Ufrag: "silentufrag12345", Pwd: "silentpasswordsilentpasswd"})
	_ = sigA.Send(ctx, signal.Signal{Kind: signal.KindCand,
		Candidate: fmt.Sprintf("candidate:1 1 udp 2130706431 %s %d typ host", target.ip, target.ports[0])})
	waitFor(t, "silent call running", func() bool { return victim.peers.answering(a2al.NodeIDFromAddress(silentCaller)) })
	time.Sleep(evictGrace + 500*time.Millisecond)
	legit := &deadSig{}
	victim.handleCall(randomAddress(t), legit)
	if legit.sends.Load() == 0 {
		t.Fatal("a new caller was refused while the only slot was held by a silent caller")
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("silent call not ended")
	}
}
