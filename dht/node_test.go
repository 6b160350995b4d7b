package dht

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht/internal/routing"
)

func TestNewNodeValidation(t *testing.T) {
	if _, err := NewNode(Config{}); !errors.Is(err, errConfig) {
		t.Fatalf("empty config: %v", err)
	}
	c := newMemCluster(t)
	tr, _ := c.net.NewTransport("x")
	defer tr.Close()
	if _, err := NewNode(Config{Transport: tr, Keystore: multiKeys{newTestKeys(1)}}); !errors.Is(err, errIdentity) {
		t.Fatalf("two identities: %v", err)
	}
	n := c.newNode(7, nil)
	if n.NodeID() != a2al.NodeIDFromAddress(n.Address()) {
		t.Fatal("NodeID does not derive from Address")
	}
	if n.LocalAddr().String() != "n7" {
		t.Fatalf("LocalAddr %v", n.LocalAddr())
	}
	if NewQuery(nil) != nil {
		t.Fatal("NewQuery(nil) != nil")
	}
	var nilQ *Query
	if _, err := nilQ.FindNode(context.Background(), a2al.NodeID{}); !errors.Is(err, errNilNode) {
		t.Fatalf("nil query: %v", err)
	}
	var nilN *Node
	if err := nilN.BootstrapAddrs(context.Background(), nil); !errors.Is(err, errNilNode) {
		t.Fatalf("nil node: %v", err)
	}
}

type multiKeys struct{ *testKeys }

func (multiKeys) List() []a2al.Address { return []a2al.Address{{1}, {2}} }

func TestPingAndIdentity(t *testing.T) {
	c := newMemCluster(t)
	var observed []byte
	a := c.newNode(1, func(cfg *Config) {
		cfg.OnObservedAddr = func(_ a2al.NodeID, _ net.Addr, w []byte) { observed = w }
	})
	b := c.newNode(2, nil)
	a.Start()
	b.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, err := a.PingIdentity(ctx, b.LocalAddr())
	if err != nil {
		t.Fatalf("PingIdentity: %v", err)
	}
	if id.NodeID != b.NodeID() || id.Address != b.Address() {
		t.Fatalf("identity mismatch")
	}
	if len(id.ObservedWire) != 6 || len(observed) != 6 {
		t.Fatalf("observed addr %x / %x", id.ObservedWire, observed)
	}
	if a.PeerHealthOf(b.NodeID()) != PeerHealthGood {
		t.Fatal("peer not Good after PONG")
	}
	if a.PeerRTT(b.LocalAddr()) <= 0 {
		t.Fatal("no RTT recorded")
	}
	if err := b.Ping(ctx, a.LocalAddr()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	a.tabMu.RLock()
	ok := a.tab.Contains(b.NodeID())
	a.tabMu.RUnlock()
	if !ok {
		t.Fatal("b not in a's table")
	}
	waitFor(t, 2*time.Second, "b learns a", func() bool {
		b.tabMu.RLock()
		defer b.tabMu.RUnlock()
		return b.tab.Contains(a.NodeID())
	})
	st := a.DebugStatsData()
	if st.RxPackets == 0 || st.TxPackets == 0 || st.RPCOK == 0 || st.TotalPeers != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPingTimeoutCountsFailure(t *testing.T) {
	c := newMemCluster(t)
	a := c.newNode(1, nil)
	b := c.newNode(2, nil)
	a.Start()
	b.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Ping(ctx, b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if err := a.Ping(ctx2, b.LocalAddr()); err == nil {
		t.Fatal("ping to closed node succeeded")
	}
	if a.PeerAllowContact(b.NodeID()) {
		t.Fatal("back-off not set after failure")
	}
}

func TestIterativeFindNodeMem(t *testing.T) {
	c := newMemCluster(t)
	c.build(60, nil)
	// Every node must find the true K closest to a random target.
	target := a2al.NodeIDFromAddress(newTestKeys(9999).addr)
	want := make([]a2al.NodeID, 0, len(c.nodes))
	for _, n := range c.nodes {
		want = append(want, n.NodeID())
	}
	sortIDs(want, target)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, i := range []int{5, 17, 42} {
		got, st := NewQuery(c.nodes[i]).findNodeStats(ctx, target)
		if len(got) != routing.K {
			t.Fatalf("node %d: got %d contacts", i, len(got))
		}
		hits := 0
		for _, g := range got[:8] {
			for _, w := range want[:8] {
				if g.NodeID == w {
					hits++
				}
			}
		}
		if hits < 7 {
			t.Fatalf("node %d found only %d of the 8 closest (rpcs=%d)", i, hits, st.RPCs)
		}
		t.Logf("node %d: rpcs=%d", i, st.RPCs)
	}
}

func sortIDs(ids []a2al.NodeID, target a2al.NodeID) {
	for i := 1; i < len(ids); i++ {
		for j := i; j > 0 && a2al.Closer(ids[j], ids[j-1], target); j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
		}
	}
}

func TestCloseNoGoroutineLeak(t *testing.T) {
	base := runtimeGoroutines()
	func() {
		c := newMemCluster(t)
		c.build(10, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = NewQuery(c.nodes[3]).FindNode(ctx, c.nodes[7].NodeID())
		// Background work in flight at Close: replication, a debug server
		// whose stop is never called, an unanswered NAT probe.
		_ = c.nodes[2].PublishEndpointRecord(ctx, endpointRecord(t, c.keys[2], 1, time.Now(), 600, "ws://h"))
		if _, err := c.nodes[4].StartDebugHTTP("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		probeDone := make(chan struct{})
		go func() {
			defer close(probeDone)
			_, _ = c.nodes[5].SendNATProbeReq(context.Background(), c.nodes[6].LocalAddr(), []byte{203, 0, 113, 1, 0, 9})
		}()
		for _, n := range c.nodes {
			if err := n.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			_ = n.Close() // idempotent
		}
		_ = c.net.Close()
		<-probeDone
	}()
	checkGoroutines(t, base)
}
