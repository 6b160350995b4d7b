package host

import (
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/a2alnode/a2al/natprobe"
)

// TestPunchTimes measures punch durations on vnet at 0 and 20 ms per-hop
// latency for punchable pairs and logs median/p90. It asserts success only
// (no timing assertions). Opt-in: A2AL_PUNCH_STATS=1 go test -run PunchTimes -v.
func TestPunchTimes(t *testing.T) {
	if os.Getenv("A2AL_PUNCH_STATS") == "" {
		t.Skip("set A2AL_PUNCH_STATS=1 to measure punch times")
	}
	pairs := [][2]natprobe.NATType{
		{natprobe.TypePortRestricted, natprobe.TypePortRestricted},
		{natprobe.TypeFullCone, natprobe.TypeSymmetric},
		{natprobe.TypeAddressRestricted, natprobe.TypePortRestricted},
		{natprobe.TypeAddressRestricted, natprobe.TypeSymmetric},
		{natprobe.TypeFullCone, natprobe.TypePortRestricted},
	}
	for _, lat := range []time.Duration{0, 20 * time.Millisecond} {
		s := newSim(t, lat)
		var mu sync.Mutex
		var durs []time.Duration
		var wg sync.WaitGroup
		for round := 0; round < 2; round++ {
			for _, p := range pairs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					a, _ := s.addNode(p[0])
					b, erB := s.addNode(p[1])
					a.sched.Enqueue(b.NodeID(), erB, PrioHigh)
					waitFor(t, "punch", func() bool { return len(a.Punches()) > 0 })
					r := a.Punches()[0]
					if !r.OK {
						t.Errorf("%s<->%s failed: %s", p[0], p[1], r.Reason)
						return
					}
					mu.Lock()
					durs = append(durs, r.Duration)
					mu.Unlock()
				}()
			}
		}
		wg.Wait()
		slices.Sort(durs)
		if len(durs) == 0 {
			continue
		}
		med, p90 := durs[len(durs)/2], durs[(len(durs)*9)/10-1]
		t.Logf("latency %v/hop: %d punches, median %v, p90 %v, min %v, max %v", lat, len(durs),
			med.Round(time.Millisecond), p90.Round(time.Millisecond), durs[0].Round(time.Millisecond), durs[len(durs)-1].Round(time.Millisecond))
	}
}
