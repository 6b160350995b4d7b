package dht

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht/internal/routing"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

func seedsInBucket(self a2al.NodeID, bi, count int, from uint64) []uint64 {
	var out []uint64
	for s := from; len(out) < count; s++ {
		if a2al.CommonPrefixLen(self, newTestKeys(s).addr.NodeID()) == bi {
			out = append(out, s)
		}
	}
	return out
}

// A live LRU keeps its slot (the newcomer waits in the replacement cache);
// a dead LRU is replaced. Both decided off the receive path.
func TestEvictionPrefersLiveOldEntries(t *testing.T) {
	for _, live := range []bool{true, false} {
		t.Run(fmt.Sprintf("live=%v", live), func(t *testing.T) {
			c := newMemCluster(t)
			v := c.newNode(1, nil)
			v.Start()
			for i, s := range seedsInBucket(v.NodeID(), 0, routing.K, 1000) {
				k := newTestKeys(s)
				addr := transport.Addr{Name: fmt.Sprintf("gone%d", i)} // nobody listens
				if live {
					n := c.newNode(s, nil)
					n.Start()
					addr = n.LocalAddr().(transport.Addr)
				}
				v.AddContact(addr, protocol.NodeInfo{Address: k.addr, NodeID: k.addr.NodeID()})
				time.Sleep(time.Millisecond) // distinct LRU order
			}
			v.tabMu.RLock()
			lru := v.tab.All()[0].Info.NodeID
			v.tabMu.RUnlock()
			newcomer := c.newNode(seedsInBucket(v.NodeID(), 0, 1, 50000)[0], nil)
			newcomer.Start()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := newcomer.Ping(ctx, v.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			contains := func(id a2al.NodeID) bool {
				v.tabMu.RLock()
				defer v.tabMu.RUnlock()
				return v.tab.Contains(id)
			}
			if live {
				waitFor(t, 5*time.Second, "newcomer parked in replacement cache", func() bool {
					v.tabMu.RLock()
					defer v.tabMu.RUnlock()
					return v.tab.BucketDiscoveryCount(0) == routing.K+1
				})
				if !contains(lru) || contains(newcomer.NodeID()) {
					t.Fatal("live LRU evicted")
				}
			} else {
				waitFor(t, 5*time.Second, "dead LRU replaced", func() bool {
					return contains(newcomer.NodeID()) && !contains(lru)
				})
			}
		})
	}
}
