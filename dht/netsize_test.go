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
