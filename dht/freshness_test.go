package dht

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/clock"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

func udpRawPeer(t *testing.T, ip string, seed uint64) *rawPeer {
	t.Helper()
	tr, err := transport.ListenUDP("udp4", ip+":0")
	if err != nil {
		t.Skipf("cannot bind %s: %v", ip, err)
	}
	return newRawPeer(t, tr, seed)
}

// answerPings makes p answer every PING with a PONG.
func answerPings(t *testing.T, p *rawPeer) {
	p.serve(t, func(m *protocol.Message) any {
		if _, ok := m.Body.(protocol.BodyPing); ok {
			return protocol.BodyPong{Address: p.k.addr, ObservedAddr: ObservedAddr(nil)}
		}
		return nil
	})
}

func tableAddr(n *Node, id a2al.NodeID) string {
	n.tabMu.RLock()
	defer n.tabMu.RUnlock()
	c, ok := n.tab.Get(id)
	if !ok {
		return ""
	}
	return (&net.UDPAddr{IP: c.Info.IP, Port: int(c.Info.Port)}).String()
}

// TestReplayDoesNotMoveVerifiedAddress is attack 3 of docs/dht-security.md:
// a captured signed PING from B, replayed to the victim from another
// address, used to rebind the victim's verified entry for B there (and the
// capture kept working minutes later). Now the replay within the window is
// dropped and counted; after the window it is answered but only challenges
// the new address, which cannot answer as B, so nothing moves.
func TestReplayDoesNotMoveVerifiedAddress(t *testing.T) {
	fc := clock.NewFake(time.Now())
	v := udpNode(t, "127.0.10.1", 1, func(c *Config) { c.Clock = fc })
	b := udpRawPeer(t, "127.0.11.1", 2)
	answerPings(t, b)
	evil := udpRawPeer(t, "127.0.12.1", 3)
	bID := b.k.addr.NodeID()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := v.PingIdentity(ctx, b.tr.LocalAddr()); err != nil {
		t.Fatalf("victim pings B: %v", err)
	}
	captured := b.raw(t, newTxID(), protocol.BodyPing{Address: b.k.addr})
	if err := b.tr.Send(v.LocalAddr(), captured); err != nil {
		t.Fatal(err)
	}
	want := b.tr.LocalAddr().String()
	waitFor(t, 5*time.Second, "B's own ping handled", func() bool { return v.cnt.rx.Load() >= 2 })

	replay := func() {
		t.Helper()
		for i := 0; i < 3; i++ {
			if err := evil.tr.Send(v.LocalAddr(), captured); err != nil {
				t.Fatal(err)
			}
		}
	}
	replay()
	waitFor(t, 5*time.Second, "replays dropped", func() bool { return v.cnt.dropReplay.Load() >= 3 })
	if a, _ := v.book.get(bID); a == nil || a.String() != want {
		t.Fatalf("replay moved B's dial address to %v", a)
	}
	if got := tableAddr(v, bID); got != want {
		t.Fatalf("replay moved B's routing entry to %s", got)
	}

	// Past the window the capture is a fresh request again: it is
	// answered, the victim challenges the evil address, nobody answers as
	// B there, and B's address stays.
	fc.Advance(2 * DefaultReplayWindow)
	replay()
	waitFor(t, 5*time.Second, "challenge sent", func() bool { return v.cnt.challenges.Load() >= 1 })
	waitFor(t, 10*time.Second, "challenge over", func() bool {
		v.chal.mu.Lock()
		defer v.chal.mu.Unlock()
		return len(v.chal.inflight) == 0
	})
	if a, _ := v.book.get(bID); a == nil || a.String() != want {
		t.Fatalf("late replay moved B's dial address to %v", a)
	}
	if got := tableAddr(v, bID); got != want {
		t.Fatalf("late replay moved B's routing entry to %s", got)
	}
	if v.cnt.addrMoves.Load() != 0 {
		t.Fatal("an address move was counted")
	}
}

// TestAddressMovesAfterChallenge: a peer that really changed address (NAT
// rebinding) is followed once it answers our challenge there.
func TestAddressMovesAfterChallenge(t *testing.T) {
	v := udpNode(t, "127.0.10.1", 1, nil)
	b := udpRawPeer(t, "127.0.11.1", 2)
	answerPings(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := v.PingIdentity(ctx, b.tr.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	tr, err := transport.ListenUDP("udp4", "127.0.13.1:0")
	if err != nil {
		t.Skip(err)
	}
	b2 := newRawPeer(t, tr, 2) // same identity, new address
	answerPings(t, b2)
	b2.send(t, v.LocalAddr(), newTxID(), protocol.BodyFindNode{Target: a2al.NodeID{1}})
	want := tr.LocalAddr().String()
	waitFor(t, 10*time.Second, "address moved", func() bool {
		a, _ := v.book.get(b.k.addr.NodeID())
		return a != nil && a.String() == want && tableAddr(v, b.k.addr.NodeID()) == want
	})
	if v.cnt.addrMoves.Load() != 1 {
		t.Fatalf("addr_moves = %d", v.cnt.addrMoves.Load())
	}
}

// TestPeersCacheOnlyAnsweredAddresses: peers.cache (BootstrapCandidateAddrs)
// used to list any request source; now only addresses that answered us.
func TestPeersCacheOnlyAnsweredAddresses(t *testing.T) {
	v := udpNode(t, "127.0.10.1", 1, nil)
	mute := udpRawPeer(t, "127.0.14.1", 5) // sends requests, never answers
	mute.send(t, v.LocalAddr(), newTxID(), protocol.BodyPing{Address: mute.k.addr})
	waitFor(t, 5*time.Second, "request handled", func() bool {
		v.tabMu.RLock()
		defer v.tabMu.RUnlock()
		return v.tab.Contains(mute.k.addr.NodeID())
	})
	for _, a := range v.BootstrapCandidateAddrs(32) {
		if a.String() == mute.tr.LocalAddr().String() {
			t.Fatalf("peers cache lists %v, which never answered", a)
		}
	}
	b := udpRawPeer(t, "127.0.11.1", 2)
	answerPings(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := v.PingIdentity(ctx, b.tr.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	got := v.BootstrapCandidateAddrs(32)
	if len(got) != 1 || got[0].String() != b.tr.LocalAddr().String() {
		t.Fatalf("peers cache %v, want only %v", got, b.tr.LocalAddr())
	}
}

// TestUnprovenSourcesGetSmallAnswerBudget: FIND answers (≈7× their request)
// to a source that never answered us are limited to the unproven budget;
// once the source answered our PING there it gets the normal one.
func TestUnprovenSourcesGetSmallAnswerBudget(t *testing.T) {
	fc := clock.NewFake(time.Now()) // frozen: no refill
	v := udpNode(t, "127.0.10.1", 1, func(c *Config) { c.Clock = fc })
	p := udpRawPeer(t, "127.0.15.1", 6)
	answerPings(t, p)
	// count waits until the last sent requests are answered or dropped and
	// returns how many were answered (the node's own send counter).
	count := func(sent int) int {
		tx0, drop0 := v.cnt.tx.Load(), v.cnt.dropRate.Load()
		for i := 0; i < sent; i++ {
			p.send(t, v.LocalAddr(), newTxID(), protocol.BodyFindNode{Target: a2al.NodeID{byte(i)}})
		}
		waitFor(t, 5*time.Second, "requests handled", func() bool {
			return v.cnt.tx.Load()-tx0+v.cnt.dropRate.Load()-drop0 >= uint64(sent)
		})
		return int(v.cnt.tx.Load() - tx0)
	}
	burst := int(2 * DefaultUnprovenAnswerRate)
	if got := count(100); got != burst {
		t.Fatalf("%d answers to an unproven source, want its burst %d", got, burst)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := v.PingIdentity(ctx, p.tr.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if got := count(50); got != 50 {
		t.Fatalf("%d of 50 answers to a proven source", got)
	}
}

// TestReplayCacheBounded: entries live for at least the window unless a
// generation fills, memory never exceeds two generations.
func TestReplayCacheBounded(t *testing.T) {
	var c replayCache
	c.init(time.Minute, 100)
	t0 := time.Unix(1000, 0)
	id := a2al.NodeID{1}
	tx := func(i int) (x [protocol.TxIDLen]byte) { x[0], x[1] = byte(i), byte(i>>8); return }
	if c.seen(id, tx(0), t0) || !c.seen(id, tx(0), t0.Add(59*time.Second)) {
		t.Fatal("replay within the window not detected")
	}
	if !c.seen(id, tx(0), t0.Add(90*time.Second)) {
		t.Fatal("entry dropped before one full window passed")
	}
	if c.seen(id, tx(0), t0.Add(5*time.Minute)) {
		t.Fatal("entry kept after two windows")
	}
	if c.seen(a2al.NodeID{2}, tx(0), t0.Add(5*time.Minute)) {
		t.Fatal("same tx_id from another sender taken as a replay")
	}
	for i := 0; i < 1000; i++ {
		c.seen(id, tx(i+1), t0.Add(6*time.Minute))
	}
	if n, early := c.stats(); n > 200 || early == 0 {
		t.Fatalf("%d entries, %d early rotations (cap 2×100)", n, early)
	}
}

// TestChallengeBudget: one challenge per peer at a time, a bound on those
// in flight, and a global rate.
func TestChallengeBudget(t *testing.T) {
	var c challenges
	c.init(3, rateSpec{rate: 1, burst: 5})
	now := time.Unix(1000, 0)
	if !c.begin(a2al.NodeID{1}, now) || c.begin(a2al.NodeID{1}, now) {
		t.Fatal("second challenge for one peer allowed")
	}
	c.begin(a2al.NodeID{2}, now)
	c.begin(a2al.NodeID{3}, now)
	if c.begin(a2al.NodeID{4}, now) {
		t.Fatal("more than 3 in flight")
	}
	for i := 1; i <= 3; i++ {
		c.end(a2al.NodeID{byte(i)})
	}
	ok := 0
	for i := 10; i < 20; i++ {
		if c.begin(a2al.NodeID{byte(i)}, now) {
			ok++
			c.end(a2al.NodeID{byte(i)})
		}
	}
	if ok != 2 { // burst 5, three spent above
		t.Fatalf("%d challenges past the budget", ok)
	}
}
