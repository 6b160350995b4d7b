package dht

import (
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht/internal/routing"
)

// TestSizeEstimatorCombine: lookup samples are averaged with the table
// estimate, short lists are ignored, and samples expire.
func TestSizeEstimatorCombine(t *testing.T) {
	var e sizeEstimator
	now := time.Unix(5000, 0)
	if v := e.combine(0, now); v != 0 {
		t.Fatalf("no data: %d", v)
	}
	if v := e.combine(300, now); v != 300 {
		t.Fatalf("table only: %d", v)
	}
	// K ids evenly spaced over 1/16 of the space around a zero target: the
	// density is (K-1)/(1/16) = 240 nodes (+1 for us).
	var target a2al.NodeID
	ids := make([]a2al.NodeID, routing.K)
	for i := range ids {
		ids[i][0] = byte((i + 1) * 16 / routing.K) // top byte up to 16/256
	}
	e.add(target, ids[:routing.K-1], now) // short list: ignored
	if v := e.combine(300, now); v != 300 {
		t.Fatalf("short list was used: %d", v)
	}
	e.add(target, ids, now)
	if v := e.combine(300, now); v < 265 || v > 275 {
		t.Fatalf("table 300 + sample ≈241: %d, want ≈270", v)
	}
	if v := e.combine(300, now.Add(sizeSampleTTL)); v != 300 {
		t.Fatalf("expired sample still used: %d", v)
	}
	for i := 0; i < 3*sizeSamples; i++ { // the ring stays bounded
		e.add(target, ids, now)
	}
	if v := e.combine(0, now); v < 235 || v > 245 {
		t.Fatalf("samples only: %d, want ≈241", v)
	}
}

// TestDeepBucket: buckets expected to hold fewer than K/2 nodes are left to
// the self-lookup; an unknown size refills everything.
func TestDeepBucket(t *testing.T) {
	for _, c := range []struct{ est, want int }{
		{0, routing.NumBuckets}, {10, 0}, {16, 1}, {300, 5}, {1000, 6}, {1 << 20, 17},
	} {
		if got := deepBucket(c.est); got != c.want {
			t.Errorf("deepBucket(%d) = %d, want %d", c.est, got, c.want)
		}
	}
}
