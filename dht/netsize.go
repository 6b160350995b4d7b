package dht

import (
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht/internal/routing"
)

// Network-size samples from lookups. The table alone sees one region of the
// ID space (the K nodes nearest to us), so its estimate carries the full
// ~1/sqrt(K) sampling error; every lookup for another target that reached
// its K closest nodes is an independent sample of the same density, and the
// mean of a few of them is much tighter.
const (
	sizeSamples   = 8
	sizeSampleTTL = time.Hour // the network may have grown or shrunk since
)

type sizeSample struct {
	v  float64
	at time.Time
}

type sizeEstimator struct {
	mu   sync.Mutex
	ring [sizeSamples]sizeSample
	next int
}

// add records the density seen around target, ids sorted by distance.
func (e *sizeEstimator) add(target a2al.NodeID, ids []a2al.NodeID, now time.Time) {
	if len(ids) < routing.K {
		return // a short list means a tiny network or an incomplete lookup
	}
	v := routing.SizeFromNearest(target, ids)
	if v <= 0 {
		return
	}
	e.mu.Lock()
	e.ring[e.next] = sizeSample{v: v + 1, at: now} // +1: we are not in our own results
	e.next = (e.next + 1) % sizeSamples
	e.mu.Unlock()
}

// combine averages table (0 = none) with the fresh lookup samples.
func (e *sizeEstimator) combine(table int, now time.Time) int {
	sum, cnt := 0.0, 0
	if table > 0 {
		sum, cnt = float64(table), 1
	}
	e.mu.Lock()
	for _, s := range e.ring {
		if s.v > 0 && now.Sub(s.at) < sizeSampleTTL {
			sum += s.v
			cnt++
		}
	}
	e.mu.Unlock()
	if cnt == 0 {
		return 0
	}
	return int(min(sum/float64(cnt)+0.5, 1<<31))
}

// noteLookupDensity feeds a finished node lookup into the size estimate.
// Self-lookups are left out: they sample the same region as the table.
func (q *queryRun) noteLookupDensity() {
	if q.value || q.target == q.n.id || !q.closestAnswered() {
		return
	}
	ids := make([]a2al.NodeID, 0, routing.K)
	for _, c := range q.cands {
		if len(ids) == routing.K {
			break
		}
		if c.st == qDone || (q.beta > 0 && c.st != qFailed) {
			ids = append(ids, c.ni.NodeID)
		}
	}
	q.n.size.add(q.target, ids, q.n.now())
}
