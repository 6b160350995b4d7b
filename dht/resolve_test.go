package dht

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// staleWorld is a network where an offline publisher's endpoint record
// exists in two versions: the new one (seq 2) on some nodes, the old one
// (seq 1) on others. byRank lists the nodes by distance to the key.
type staleWorld struct {
	c        *memCluster
	key      a2al.NodeID
	old, new protocol.SignedRecord
	byRank   []*Node
}

func newStaleWorld(t testing.TB, size int) *staleWorld {
	t.Helper()
	c := newMemCluster(t)
	c.build(size, nil)
	pub := newTestKeys(777001) // not a node: the publisher is offline
	now := time.Now()
	w := &staleWorld{c: c, key: a2al.NodeIDFromAddress(pub.addr),
		old: endpointRecord(t, pub, 1, now, 3600, "old"), new: endpointRecord(t, pub, 2, now, 3600, "new")}
	w.byRank = append([]*Node(nil), c.nodes...)
	ids := make([]a2al.NodeID, len(w.byRank))
	for i, n := range w.byRank {
		ids[i] = n.NodeID()
	}
	sortIDs(ids, w.key)
	pos := map[a2al.NodeID]int{}
	for i, id := range ids {
		pos[id] = i
	}
	for _, n := range c.nodes {
		w.byRank[pos[n.NodeID()]] = n
	}
	return w
}

// place stores rec on the nodes of ranks [from, to).
func (w *staleWorld) place(t testing.TB, rec protocol.SignedRecord, from, to int) {
	t.Helper()
	for _, n := range w.byRank[from:to] {
		n.store.Invalidate(w.key, 0)
		if err := n.store.Put(w.key, rec, time.Now()); err != nil {
			t.Fatalf("place: %v", err)
		}
	}
}

// walk runs one value lookup for the key from n with the given hitBeta (0:
// all K closest live candidates must answer) and returns the newest
// endpoint record it holds at the end and its RPC count. Nothing is cached.
func (w *staleWorld) walk(n *Node, hitBeta int) (*protocol.SignedRecord, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := n.newQueryRun(w.key, true, protocol.RecTypeEndpoint, 1)
	q.hitBeta = hitBeta
	q.run(ctx)
	var best *protocol.SignedRecord
	for _, r := range q.recordList() {
		if best == nil || protocol.RecordIsNewer(r, *best) {
			best = &r
		}
	}
	return best, q.rpcs
}

// A stale copy held by many far nodes must not win over the newer record
// the closest nodes hold. (With the former first-hit rule most resolves
// returned the stale copy.)
func TestResolveNewerFromCloserWins(t *testing.T) {
	w := newStaleWorld(t, 64)
	w.place(t, w.new, 0, nRep)
	w.place(t, w.old, nRep, 40)
	for _, n := range w.byRank[40:] {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		er, err := NewQuery(n).Resolve(ctx, w.key)
		cancel()
		if err != nil {
			t.Fatalf("resolve from %x: %v", n.NodeID().String()[:8], err)
		}
		if er.Seq != w.new.Seq {
			t.Fatalf("resolve from %x returned seq %d, want the closer holders' seq %d", n.NodeID().String()[:8], er.Seq, w.new.Seq)
		}
	}
}

// A resolve ends once it holds a record and the closest live candidates
// answered: fewer RPCs than walking until all K closest answered, with
// the same (newest) record.
func TestResolveStopsBeforeFullWalk(t *testing.T) {
	w := newStaleWorld(t, 64)
	w.place(t, w.new, 0, nRep)
	early, full := 0, 0
	for _, n := range w.byRank[nRep:] {
		got, rpcs := w.walk(n, queryValueBeta)
		if got == nil || got.Seq != w.new.Seq {
			t.Fatalf("early stop from %x: %v", n.NodeID().String()[:8], got)
		}
		early += rpcs
		got, rpcs = w.walk(n, 0)
		if got == nil || got.Seq != w.new.Seq {
			t.Fatalf("full walk from %x: %v", n.NodeID().String()[:8], got)
		}
		full += rpcs
	}
	t.Logf("RPCs: early stop %d, full walk %d (%d resolvers)", early, full, len(w.byRank)-nRep)
	if early >= full {
		t.Fatalf("early stop sent %d RPCs, full walk %d: no saving", early, full)
	}
}

// BenchmarkResolveFreshness measures what waiting for more of the closest
// answers buys in freshness: the new record sits on nRep nodes starting at
// rank `stale`, the ranks before them and the 24 after them hold the old
// one, and every other node resolves. It prints, per stopping rule, how
// often the old record won and the mean RPCs (docs/dht.md §9.1); one run
// whatever b.N. DHT_FRESHNESS=<nodes> sets the size (default 300).
func BenchmarkResolveFreshness(b *testing.B) {
	size := 300
	if v := os.Getenv("DHT_FRESHNESS"); v != "" {
		fmt.Sscan(v, &size)
	}
	if size < 64 {
		b.Fatalf("DHT_FRESHNESS=%d: need at least 64 nodes", size)
	}
	w := newStaleWorld(b, size)
	rules := []struct {
		name string
		beta int
	}{{"β=1", 1}, {"β=2", 2}, {"β=3", 3}, {"all K", 0}}
	b.Logf("| closest nodes holding the old record | rule | old record returned | mean RPCs |")
	b.Logf("|---|---|---|---|")
	for stale := 0; stale <= 3; stale++ {
		w.place(b, w.old, 0, stale)
		w.place(b, w.new, stale, stale+nRep)
		w.place(b, w.old, stale+nRep, stale+nRep+24)
		resolvers := w.byRank[stale+nRep+24:]
		for _, r := range rules {
			old, rpcs := 0, 0
			for _, n := range resolvers {
				got, k := w.walk(n, r.beta)
				if got == nil || got.Seq != w.new.Seq {
					old++
				}
				rpcs += k
			}
			b.Logf("| %d | %s | %d/%d | %.1f |", stale, r.name, old, len(resolvers), float64(rpcs)/float64(len(resolvers)))
		}
	}
}
