package dht

import (
	"context"
	crand "crypto/rand"
	"time"

	"github.com/a2alnode/a2al/dht/internal/routing"
	"github.com/a2alnode/a2al/protocol"
)

// Routing maintenance parameters (dht.md §4.10).
const (
	verifiedFreshWindow = 30 * time.Minute
	maintPendingPerTick = 5
	maintStalePerTick   = 10
	maintRefillPerTick  = 2
	maintPingTimeout    = 3 * time.Second
	refillLookupTimeout = 15 * time.Second
)

// maintenanceLoop runs every probeTick on the node clock: replica probes,
// then routing maintenance. All network work goes to the bounded worker
// pool so one slow peer never delays the tick (W-16).
func (n *Node) maintenanceLoop() {
	t := n.clk.NewTimer(probeTick)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C():
			n.replTick()
			n.routingMaintenance()
			n.limiter.rotate()
			t.Reset(probeTick)
		}
	}
}

func (n *Node) routingMaintenance() {
	now := n.now()
	cut := now.Add(-verifiedFreshWindow)
	n.tabMu.Lock()
	m := n.tab.CollectMaintenance(now, cut, cut, n.maintStart)
	n.maintStart = (n.maintStart + 17) % routing.NumBuckets
	var refills []int
	if !n.passive.Load() {
		for i := len(m.BucketsToRefill) - 1; i >= 0 && len(refills) < maintRefillPerTick; i-- {
			bi := m.BucketsToRefill[i]
			n.tab.MarkRefilled(bi, now)
			refills = append(refills, bi)
		}
	}
	n.tabMu.Unlock()
	for i, c := range m.PendingToProbe {
		if i >= maintPendingPerTick {
			break
		}
		c := c
		n.submit(func() { n.probePending(c) })
	}
	for i, c := range m.StaleToProbe {
		if i >= maintStalePerTick {
			break
		}
		c := c
		n.submit(func() { n.probeStale(c) })
	}
	for _, bi := range refills {
		bi := bi
		n.submit(func() { n.refillBucket(bi) })
	}
}

func (n *Node) pingContact(c routing.Contact) bool {
	addr := n.dialAddrOf(c.Info)
	if addr == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(n.ctx, maintPingTimeout)
	defer cancel()
	r, err := n.roundTripTo(ctx, addr, c.Info.NodeID, true, true, protocol.BodyPing{Address: n.addr})
	if err != nil {
		if n.ctx.Err() == nil {
			n.recordProbeFailure(c.Info.NodeID)
		}
		return false
	}
	n.onRPCSuccess(r)
	return true
}

func (n *Node) probePending(c routing.Contact) {
	ok := n.pingContact(c)
	if n.ctx.Err() != nil {
		return
	}
	now := n.now()
	n.tabMu.Lock()
	defer n.tabMu.Unlock()
	if ok {
		n.tab.PromotePending(c.Info.NodeID, now, now)
		return
	}
	n.tab.DropPending(c.Info.NodeID)
}

func (n *Node) probeStale(c routing.Contact) {
	if n.pingContact(c) || n.ctx.Err() != nil || n.inOutage() {
		return
	}
	n.tabMu.Lock()
	n.tab.Remove(c.Info.NodeID)
	n.tabMu.Unlock()
}

func (n *Node) refillBucket(bi int) {
	rnd := make([]byte, 32)
	_, _ = crand.Read(rnd)
	n.tabMu.RLock()
	target := n.tab.RandomIDInBucket(bi, rnd)
	before := n.tab.BucketDiscoveryCount(bi)
	n.tabMu.RUnlock()
	ctx, cancel := context.WithTimeout(n.ctx, refillLookupTimeout)
	r := n.newQueryRun(target, false, 0, 0)
	r.beta = queryBeta
	r.run(ctx)
	cancel()
	n.tabMu.Lock()
	n.tab.RecordRefillOutcome(bi, n.tab.BucketDiscoveryCount(bi) > before)
	n.tabMu.Unlock()
}
