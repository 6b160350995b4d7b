package routing

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
)

func idN(seed, i int) a2al.NodeID {
	var s [16]byte
	binary.BigEndian.PutUint64(s[:8], uint64(seed))
	binary.BigEndian.PutUint64(s[8:], uint64(i))
	return a2al.NodeID(sha256.Sum256(s[:]))
}

// TestSizeFromNearestIsUnbiased: over many random networks the K-nearest
// density estimate averages to the true size, and its spread matches
// 1/sqrt(K-2) (so a single sample is not better than that).
func TestSizeFromNearestIsUnbiased(t *testing.T) {
	for _, n := range []int{50, 300, 1500} {
		const trials = 200
		sum, sq := 0.0, 0.0
		for tr := 0; tr < trials; tr++ {
			ids := make([]a2al.NodeID, n)
			for i := range ids {
				ids[i] = idN(tr*100000+n, i)
			}
			point := idN(-1, tr)
			sort.Slice(ids, func(i, j int) bool { return a2al.Closer(ids[i], ids[j], point) })
			v := SizeFromNearest(point, ids[:K]) / float64(n)
			sum += v
			sq += v * v
		}
		mean := sum / trials
		sd := math.Sqrt(sq/trials - mean*mean)
		if mean < 0.9 || mean > 1.1 {
			t.Errorf("n=%d: mean estimate/n = %.3f, want ≈ 1", n, mean)
		}
		if want := 1 / math.Sqrt(K-2); sd < want/2 || sd > want*1.5 {
			t.Errorf("n=%d: relative spread %.3f, expected ≈ %.3f", n, sd, want)
		}
	}
	if v := SizeFromNearest(a2al.NodeID{}, []a2al.NodeID{{1}, {2}}); v != 0 {
		t.Errorf("two ids: %v, want 0", v)
	}
}

// TestEstimateSizeNearestUsesVerifiedOnly: hearsay entries do not count,
// and an almost empty table yields 0 (callers fall back).
func TestEstimateSizeNearestUsesVerifiedOnly(t *testing.T) {
	self := addrN(0).NodeID()
	tab := New(self, Limits{})
	now := time.Unix(1000, 0)
	if v := tab.EstimateSizeNearest(); v != 0 {
		t.Fatalf("empty table: %d", v)
	}
	for i := 1; i <= 40; i++ {
		tab.Add(contact(i, net.IPv4(10, byte(i), 0, 1)), false, now) // hearsay only
	}
	if tab.Len() == 0 {
		t.Fatal("hearsay not admitted; test cannot tell verified from unverified")
	}
	if v := tab.EstimateSizeNearest(); v != 0 {
		t.Fatalf("hearsay-only table estimated %d, want 0", v)
	}
	for i := 1; i <= 40; i++ {
		c := contact(i, net.IPv4(10, byte(i), 0, 1))
		c.VerifiedAt = StampOf(now)
		tab.Add(c, true, now)
	}
	if v := tab.EstimateSizeNearest(); v <= 0 {
		t.Fatalf("verified table estimated %d, want > 0", v)
	}
}

// TestNearestMatchesFullSort: the bucket walk returns exactly what sorting
// the whole table would, for random targets, targets next to self, self
// itself, and with a filter.
func TestNearestMatchesFullSort(t *testing.T) {
	self := addrN(0).NodeID()
	tab := New(self, Limits{})
	now := time.Unix(1000, 0)
	for i := 1; i <= 3000 && tab.Len() < 120; i++ {
		c := contact(i, net.IPv4(10, byte(i>>8), byte(i), 1))
		c.VerifiedAt = StampOf(now)
		tab.Add(c, true, now)
	}
	near := self
	near[31] ^= 1
	targets := []a2al.NodeID{self, near}
	for i := 0; i < 50; i++ {
		targets = append(targets, idN(99, i))
	}
	keepOdd := func(c *Contact) bool { return c.Info.NodeID[0]&1 == 1 }
	for _, target := range targets {
		for _, keep := range []func(*Contact) bool{nil, keepOdd} {
			var want []Contact
			for _, c := range tab.All() {
				if keep == nil || keep(&c) {
					want = append(want, c)
				}
			}
			SortByDistance(want, target)
			for _, n := range []int{1, K, 4 * K, 1000} {
				got := tab.Nearest(target, n, keep)
				w := want[:min(n, len(want))]
				if len(got) != len(w) {
					t.Fatalf("n=%d: got %d, want %d", n, len(got), len(w))
				}
				for i := range got {
					if got[i].Info.NodeID != w[i].Info.NodeID {
						t.Fatalf("n=%d: position %d differs", n, i)
					}
				}
			}
		}
	}
}

// TestMarkAllRefilledDefersRefills: right after a bootstrap refresh no
// bucket is due; one cooldown later the under-populated ones are.
func TestMarkAllRefilledDefersRefills(t *testing.T) {
	self := addrN(0).NodeID()
	tab := New(self, Limits{})
	now := time.Unix(1000, 0)
	for i := 1; i <= 30; i++ {
		tab.Add(contact(i, net.IPv4(10, byte(i), 0, 1)), false, now) // hearsay: never fresh
	}
	old := now.Add(-time.Hour)
	if m := tab.CollectMaintenance(now, old, old, 0); len(m.BucketsToRefill) == 0 {
		t.Fatal("setup: no bucket due for refill")
	}
	tab.MarkAllRefilled(now)
	if m := tab.CollectMaintenance(now.Add(time.Second), old, old, 0); len(m.BucketsToRefill) != 0 {
		t.Fatalf("%d buckets due right after MarkAllRefilled", len(m.BucketsToRefill))
	}
	later := now.Add(refillCooldown(0))
	if m := tab.CollectMaintenance(later, old, old, 0); len(m.BucketsToRefill) == 0 {
		t.Fatal("no bucket due one cooldown later")
	}
}
