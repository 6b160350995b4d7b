package dht

import (
	"context"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht/internal/routing"
)

// TestStrictLookupDoesNotWaitOnBadPeers: dead peers already known as Bad
// must not hold a strict lookup open one hard timeout after another. Ten of
// the nodes closest to the target are replaced by sinks that swallow every
// packet; with the old rule (each Bad candidate in the K window tried in
// turn, 2 s each) the lookup would run into its 8 s deadline.
func TestStrictLookupDoesNotWaitOnBadPeers(t *testing.T) {
	c := newMemCluster(t)
	c.build(48, nil)
	q := c.nodes[0]
	target := a2al.NodeIDFromAddress(newTestKeys(777).addr)
	byDist := append([]*Node(nil), c.nodes[1:]...)
	for i := 1; i < len(byDist); i++ {
		for j := i; j > 0 && a2al.Closer(byDist[j].NodeID(), byDist[j-1].NodeID(), target); j-- {
			byDist[j], byDist[j-1] = byDist[j-1], byDist[j]
		}
	}
	dead := map[a2al.NodeID]bool{}
	for _, n := range byDist[:10] {
		name := n.LocalAddr().String()
		_ = n.Close()
		if _, err := c.net.NewTransport(name); err != nil { // a sink: never read
			t.Fatalf("sink %s: %v", name, err)
		}
		dead[n.NodeID()] = true
		q.health.replace(n.NodeID(), peerHealth{failCount: badHealthThreshold})
		if q.PeerHealthOf(n.NodeID()) != PeerHealthBad {
			t.Fatal("setup: peer not Bad")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	r := q.newQueryRun(target, false, 0, 0)
	r.run(ctx)
	if err := ctx.Err(); err != nil {
		t.Fatalf("strict lookup ran into its deadline (%d RPCs, %d answered)", r.rpcs, r.answered)
	}
	got := r.closest()
	live := 0
	for _, ni := range got[:routing.K/2] {
		if !dead[ni.NodeID] {
			live++
		}
	}
	if live != routing.K/2 {
		t.Fatalf("closest half of the result holds %d dead peers", routing.K/2-live)
	}
	t.Logf("rpcs=%d answered=%d", r.rpcs, r.answered)
}
