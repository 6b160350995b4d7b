package sim

import (
	"sync"
	"testing"
	"time"
)

// TestScaledClock: time runs scale times as fast, SetScale keeps it
// continuous, and Now is safe for concurrent use (run with -race).
func TestScaledClock(t *testing.T) {
	start := time.Unix(1_000_000, 0)
	c := NewScaledClock(start, 100)
	time.Sleep(20 * time.Millisecond)
	if d := c.Now().Sub(start); d < time.Second {
		t.Fatalf("after 20 ms real at 100x: %v simulated, want ≥ 2 s", d)
	}
	if r := c.Real(10 * time.Second); r != 100*time.Millisecond {
		t.Fatalf("Real(10s) at 100x = %v", r)
	}
	before := c.Now()
	c.SetScale(1)
	if after := c.Now(); after.Before(before) {
		t.Fatalf("SetScale went back in time: %v -> %v", before, after)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := c.Now()
			for j := 0; j < 1000; j++ {
				now := c.Now()
				if now.Before(last) {
					t.Error("clock went backwards")
					return
				}
				last = now
			}
		}()
	}
	c.SetScale(5)
	wg.Wait()
	tm := c.NewTimer(50 * time.Millisecond) // 10 ms real at 5x
	select {
	case <-tm.C():
	case <-time.After(5 * time.Second):
		t.Fatal("scaled timer never fired")
	}
}
