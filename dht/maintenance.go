package dht

import (
	"context"
	crand "crypto/rand"
	"math/rand/v2"
	"time"

	"github.com/a2alnode/a2al/dht/internal/routing"
	"github.com/a2alnode/a2al/protocol"
)

// Routing maintenance parameters (docs/dht.md §4.10).
const (
	verifiedFreshWindow = 30 * time.Minute
	maintPendingPerTick = 5
	maintStalePerTick   = 10
	maintRefillPerTick  = 2
	maintPingTimeout    = 3 * time.Second
	refillLookupTimeout = 15 * time.Second
	selfRefreshEvery    = 10 * time.Minute
)

// deepBucket is the first bucket index that cannot be expected to hold K/2
// nodes in a network of est nodes (bucket i covers 1/2^(i+1) of the space).
// Those buckets hold the nodes nearest to us, which a self-lookup finds all
// at once; refilling each of them with a lookup of its own would cost a
// lookup per bucket and, with fewer than K/2 nodes there, never satisfy the
// refill rule anyway.
func deepBucket(est int) int {
	if est <= 0 {
		return routing.NumBuckets // unknown: refill every bucket
	}
	i := 0
	for i < routing.NumBuckets && est>>(i+1) >= routing.K/2 {
		i++
	}
	return i
}

// Maintenance runs every probeTick on the node clock: replica probes, push
// subscriptions, routing maintenance, rate-limiter ageing and the periodic
// seen-peers write. The node keeps no goroutine for it: the tick is a clock
// timer (for the wall clock, the Go runtime's process-wide timer heap) whose
// callback spawns maintenanceTick, and the tick arms the next one when it is
// done, so ticks never overlap and an idle node costs a timer, not a stack
// (docs/dht-benchmarks.md, "Growth and memory"). All network work goes to
// the bounded worker pool so one slow peer never delays the tick
// (docs/reference-defects.md W-16).

// startMaintenance arms the first tick, jittered: nodes started together (a
// restart of many daemons, a simulation) must not run their refills and
// probes in lock-step.
func (n *Node) startMaintenance() {
	n.armTick(probeTick/2 + rand.N(probeTick/2))
}

// armTick schedules the next tick unless the node is closing (Close stops
// the armed timer under tickMu after cancelling the context, so no tick is
// armed after it).
func (n *Node) armTick(d time.Duration) {
	n.tickMu.Lock()
	defer n.tickMu.Unlock()
	if n.ctx.Err() != nil {
		return
	}
	n.tick = n.clk.AfterFunc(d, func() { n.spawn(n.maintenanceTick) })
}

// stopMaintenance stops the armed tick (Close; a tick already running is
// waited for with the node's other goroutines).
func (n *Node) stopMaintenance() {
	n.tickMu.Lock()
	defer n.tickMu.Unlock()
	if n.tick != nil {
		n.tick.Stop()
	}
}

func (n *Node) maintenanceTick() {
	if n.ctx.Err() != nil {
		return
	}
	n.replTick()
	n.pushTick()
	n.routingMaintenance()
	n.limiter.rotate()
	n.maybeFlushSeen(n.now())
	n.armTick(probeTick*4/5 + rand.N(probeTick/5)) // never longer than probeTick
}

func (n *Node) routingMaintenance() {
	now := n.now()
	cut := now.Add(-verifiedFreshWindow)
	deep := deepBucket(n.EstimatedNetworkSize())
	n.tabMu.Lock()
	m := n.tab.CollectMaintenance(now, cut, cut, n.maintStart)
	n.maintStart = (n.maintStart + 17) % routing.NumBuckets
	var refills []int
	selfRefresh := false
	if !n.passive.Load() {
		for i := len(m.BucketsToRefill) - 1; i >= 0 && len(refills) < maintRefillPerTick; i-- {
			bi := m.BucketsToRefill[i]
			n.tab.MarkRefilled(bi, now)
			if bi >= deep {
				selfRefresh = true
				continue
			}
			refills = append(refills, bi)
		}
	}
	n.tabMu.Unlock()
	if last := n.lastSelfRefresh.Load(); selfRefresh && (last == 0 || now.Sub(time.Unix(0, last)) >= selfRefreshEvery) {
		n.lastSelfRefresh.Store(now.UnixNano())
		n.submit(func() {
			ctx, cancel := context.WithTimeout(n.ctx, refillLookupTimeout)
			n.selfLookup(ctx)
			cancel()
		})
	}
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
