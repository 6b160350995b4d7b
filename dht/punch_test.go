package dht

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/clock"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

// recPunch records punch requests; it has no connections.
type recPunch struct {
	mu      sync.Mutex
	punches []punchReq
}

type punchReq struct {
	id   a2al.NodeID
	prio int
	sig  string
}

func (r *recPunch) SendTo(context.Context, a2al.NodeID, []byte) (bool, error) { return false, nil }
func (r *recPunch) HasConn(a2al.NodeID) bool                                  { return false }
func (r *recPunch) Punch(id a2al.NodeID, er *protocol.EndpointRecord, prio int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.punches = append(r.punches, punchReq{id, prio, er.Signal})
}
func (r *recPunch) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.punches)
}

func TestTriggerPunchAndComplete(t *testing.T) {
	c := newMemCluster(t)
	fc := clock.NewFake(time.Now())
	rp := &recPunch{}
	v := c.newNode(1, func(cfg *Config) { cfg.PunchTransport = rp; cfg.Clock = fc })
	peer := c.newNode(2, nil)
	v.Start()
	peer.Start()
	pk := c.keys[1]
	id := peer.NodeID()
	// No endpoint record with a signalling URL: nothing to punch with.
	if v.triggerPunch(id, PunchPriorityHigh) {
		t.Fatal("punched without a record")
	}
	if err := v.LocalStorePut(a2al.NodeID{}, endpointRecord(t, pk, 1, fc.Now(), 3600, "ws://hub")); err != nil {
		t.Fatal(err)
	}
	if !v.triggerPunch(id, PunchPriorityHigh) || !v.IsPunching(id) {
		t.Fatal("High punch did not fire")
	}
	if v.triggerPunch(id, PunchPriorityHigh) {
		t.Fatal("duplicate punch not suppressed")
	}
	if v.triggerPunch(v.NodeID(), PunchPriorityHigh) {
		t.Fatal("self punch")
	}
	if rp.punches[0].prio != PunchPriorityHigh || rp.punches[0].sig != "ws://hub" {
		t.Fatalf("punch request %+v", rp.punches[0])
	}
	// A lost completion does not exclude the peer forever (docs/reference-defects.md W-10).
	fc.Advance(punchingTimeout + time.Second)
	if v.IsPunching(id) {
		t.Fatal("isPunching never expires")
	}
	// Speculative punch is gated by short back-off.
	v.recordFailure(id)
	if v.triggerPunch(id, PunchPriorityLowest) {
		t.Fatal("Lowest punch ignored the anti-jitter gate")
	}
	if !v.triggerPunch(id, PunchPriorityLow) {
		t.Fatal("Low (replica) punch blocked by the gate")
	}
	// Completion: success, not direct -> punched zone; the net address does
	// not override a verified dial address.
	v.BindPeerAddr(id, peer.LocalAddr())
	fakeUDP := &net.UDPAddr{IP: net.IPv4(127, 0, 9, 9), Port: 10001}
	v.OnPunchComplete(id, peer.Address(), fakeUDP, true, false, PunchFailNone)
	if v.IsPunching(id) {
		t.Fatal("isPunching not cleared")
	}
	v.tabMu.RLock()
	punched := v.tab.IsPunched(id)
	v.tabMu.RUnlock()
	if !punched {
		t.Fatal("peer not in the punched zone")
	}
	if a, _ := v.book.get(id); a.String() != peer.LocalAddr().String() {
		t.Fatalf("punch address overrode pinned address: %v", a)
	}
	// NoAgent failure: Bad until next success.
	other := newTestKeys(300).addr.NodeID()
	v.OnPunchComplete(other, a2al.Address{}, nil, false, false, PunchFailNoAgent)
	if v.PeerHealthOf(other) != PeerHealthBad {
		t.Fatal("NoAgent did not mark the peer Bad")
	}
	// Self reflection ignored.
	v.OnPunchComplete(v.NodeID(), v.Address(), fakeUDP, true, true, PunchFailNone)
	v.tabMu.RLock()
	defer v.tabMu.RUnlock()
	if v.tab.Contains(v.NodeID()) {
		t.Fatal("self entered the table")
	}
}

func TestFakePunchNetworkTraffic(t *testing.T) {
	mn := transport.NewMemNetwork()
	defer mn.Close()
	fpn := NewFakePunchNetwork()
	defer fpn.Close()
	var nodes []*Node
	var pts []*FakePunchTransport
	for i := 0; i < 2; i++ {
		tr, _ := mn.NewTransport("p" + string(rune('a'+i)))
		k := newTestKeys(uint64(200 + i))
		pt := fpn.NewTransport(k.addr.NodeID(), tr.LocalAddr())
		n, err := NewNode(Config{Transport: tr, Keystore: k, Logger: quietLogger(), PunchTransport: pt})
		if err != nil {
			t.Fatal(err)
		}
		pt.Bind(n)
		n.Start()
		defer n.Close()
		nodes = append(nodes, n)
		pts = append(pts, pt)
	}
	a, b := nodes[0], nodes[1]
	a.BindPeerAddr(b.NodeID(), b.LocalAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The request travels over the punch transport (InjectReceived on b);
	// the answer comes back the same way.
	if _, err := a.FindNode(ctx, b.LocalAddr(), a.NodeID()); err != nil {
		t.Fatalf("FindNode over punch: %v", err)
	}
	waitFor(t, 2*time.Second, "b knows a via the punched channel", func() bool {
		b.tabMu.RLock()
		defer b.tabMu.RUnlock()
		return b.tab.Contains(a.NodeID())
	})
	pts[0].Punch(b.NodeID(), nil, PunchPriorityHigh)
	waitFor(t, 2*time.Second, "punch completion", func() bool {
		a.tabMu.RLock()
		defer a.tabMu.RUnlock()
		return a.tab.Contains(b.NodeID())
	})
}
