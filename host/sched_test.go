package host

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/clock"
)

func nid(b byte) a2al.NodeID { return a2al.NodeID{b} }

// gatedRun blocks every attempt until released, recording start order.
type gatedRun struct {
	mu      sync.Mutex
	started []a2al.NodeID
	release chan struct{}
	out     Outcome
	maxRun  int
	running int
}

func (g *gatedRun) run(ctx context.Context, j PunchJob) Outcome {
	g.mu.Lock()
	g.started = append(g.started, j.ID)
	g.running++
	if g.running > g.maxRun {
		g.maxRun = g.running
	}
	g.mu.Unlock()
	select {
	case <-g.release:
	case <-ctx.Done():
	}
	g.mu.Lock()
	g.running--
	g.mu.Unlock()
	return g.out
}

func (g *gatedRun) startedIDs() []a2al.NodeID {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]a2al.NodeID(nil), g.started...)
}

func TestSchedulerPriorityAndCap(t *testing.T) {
	g := &gatedRun{release: make(chan struct{})}
	s := mustSched(t, SchedConfig{MaxConcurrent: 1}, g.run, nil)
	defer s.Close()
	s.Enqueue(nid(1), nil, PrioLowest) // starts at once (only job)
	waitFor(t, "first start", func() bool { return len(g.startedIDs()) == 1 })
	s.Enqueue(nid(2), nil, PrioLowest)
	s.Enqueue(nid(3), nil, PrioLow)
	s.Enqueue(nid(4), nil, PrioHigh)
	if s.Enqueue(nid(2), nil, PrioHigh) { // duplicate: merged and raised
		t.Fatal("duplicate enqueue reported as new")
	}
	for i := 0; i < 4; i++ {
		g.release <- struct{}{}
	}
	waitFor(t, "all started", func() bool { return len(g.startedIDs()) == 4 })
	got := g.startedIDs()
	want := []a2al.NodeID{nid(1), nid(4), nid(2), nid(3)} // High(4), then 2 raised to High after 4, then Low
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("start order %v, want %v", got, want)
		}
	}
	if g.maxRun != 1 {
		t.Fatalf("concurrency %d exceeded cap 1", g.maxRun)
	}
}

func TestSchedulerLowestCapAndBackoff(t *testing.T) {
	fc := clock.NewFake(time.Unix(1000, 0))
	g := &gatedRun{release: make(chan struct{}), out: OutcomeFailure}
	var rejMu sync.Mutex
	var rej []RejectReason
	s := mustSched(t, SchedConfig{MaxConcurrent: 4, MaxLowest: 1, BackoffBase: time.Minute, Clock: fc}, g.run,
		func(_ PunchJob, why RejectReason) { rejMu.Lock(); rej = append(rej, why); rejMu.Unlock() })
	defer s.Close()
	s.Enqueue(nid(1), nil, PrioLowest)
	s.Enqueue(nid(2), nil, PrioLowest)
	waitFor(t, "one lowest start", func() bool { return len(g.startedIDs()) == 1 })
	time.Sleep(50 * time.Millisecond)
	if n := len(g.startedIDs()); n != 1 {
		t.Fatalf("%d lowest attempts running, cap is 1", n)
	}
	g.release <- struct{}{}
	waitFor(t, "second lowest start", func() bool { return len(g.startedIDs()) == 2 })
	g.release <- struct{}{}
	waitFor(t, "finish", func() bool { return !s.Pending(nid(2)) && !s.Pending(nid(1)) })
	// nid(1) failed: back-off rejects a new request until the window passes.
	s.Enqueue(nid(1), nil, PrioHigh)
	waitFor(t, "backoff reject", func() bool { rejMu.Lock(); defer rejMu.Unlock(); return len(rej) == 1 })
	if rej[0] != RejectBackoff {
		t.Fatalf("reject reason %q", rej[0])
	}
	fc.Advance(2 * time.Minute)
	s.Enqueue(nid(1), nil, PrioHigh)
	waitFor(t, "retry after backoff", func() bool { return len(g.startedIDs()) == 3 })
	g.release <- struct{}{}
}

func TestSchedulerCloseCancelsAndReports(t *testing.T) {
	g := &gatedRun{release: make(chan struct{})}
	var rejMu sync.Mutex
	nrej := 0
	s := mustSched(t, SchedConfig{MaxConcurrent: 1}, g.run, func(PunchJob, RejectReason) { rejMu.Lock(); nrej++; rejMu.Unlock() })
	s.Enqueue(nid(1), nil, PrioHigh)
	s.Enqueue(nid(2), nil, PrioHigh)
	waitFor(t, "start", func() bool { return len(g.startedIDs()) == 1 })
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not cancel the running attempt")
	}
	rejMu.Lock()
	defer rejMu.Unlock()
	if nrej != 1 {
		t.Fatalf("queued job not reported on close: %d", nrej)
	}
}

// A user request runs despite back-off; Reset and ResetAll lift back-off for
// DHT-driven requests.
func TestSchedulerUserBypassAndReset(t *testing.T) {
	fc := clock.NewFake(time.Unix(1000, 0)) // never advanced: back-off never expires by itself
	g := &gatedRun{release: make(chan struct{}), out: OutcomeFailure}
	var rejMu sync.Mutex
	var rej []RejectReason
	s := mustSched(t, SchedConfig{BackoffBase: time.Hour, Clock: fc}, g.run,
		func(_ PunchJob, why RejectReason) { rejMu.Lock(); rej = append(rej, why); rejMu.Unlock() })
	defer s.Close()
	fail := func(id a2al.NodeID, user bool, n int) {
		t.Helper()
		if user {
			s.EnqueueUser(id, nil, PrioHigh)
		} else {
			s.Enqueue(id, nil, PrioHigh)
		}
		waitFor(t, "start", func() bool { return len(g.startedIDs()) == n })
		g.release <- struct{}{}
		waitFor(t, "finish", func() bool { return !s.Pending(id) })
	}
	rejects := func() int { rejMu.Lock(); defer rejMu.Unlock(); return len(rej) }
	fail(nid(1), false, 1)
	fail(nid(2), false, 2)
	if !s.InBackoff(nid(1)) || !s.InBackoff(nid(2)) {
		t.Fatal("failed peers not in back-off")
	}
	s.Enqueue(nid(1), nil, PrioHigh)
	waitFor(t, "backoff reject", func() bool { return rejects() == 1 })
	fail(nid(1), true, 3) // user request bypasses back-off
	s.Reset(nid(1))
	if s.InBackoff(nid(1)) || !s.InBackoff(nid(2)) {
		t.Fatal("Reset must clear exactly the one peer")
	}
	fail(nid(1), false, 4)
	s.ResetAll()
	if s.InBackoff(nid(1)) || s.InBackoff(nid(2)) {
		t.Fatal("ResetAll left back-off behind")
	}
	fail(nid(2), false, 5)
	if n := rejects(); n != 1 {
		t.Fatalf("%d rejects, want 1", n)
	}
}
