package host

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/a2alnode/a2al/clock"
)

// The peer table keeps a peer only while it is busy or backed off: a
// success leaves nothing behind, failures are remembered until their
// back-off runs out (then swept), and the table never holds more idle
// entries than MaxBackoff.
func TestPeerTableBoundedAndDroppedWhenIdle(t *testing.T) {
	fc := clock.NewFake(time.Unix(1000, 0))
	g := &gatedRun{release: make(chan struct{}), out: OutcomeSuccess}
	s := mustSched(t, SchedConfig{MaxConcurrent: 1, BackoffBase: time.Minute, MaxBackoff: 4, Clock: fc}, g.run, nil)
	defer s.Close()
	s.Enqueue(nid(1), nil, PrioHigh)
	waitFor(t, "start", func() bool { return len(g.startedIDs()) == 1 })
	if st := s.Stats(); st.Peers != 1 {
		t.Fatalf("%d peers tracked while one punch runs", st.Peers)
	}
	g.release <- struct{}{}
	waitFor(t, "success forgotten", func() bool { return s.Stats().Peers == 0 })

	g.out = OutcomeFailure
	for i := byte(2); i < 12; i++ {
		s.Enqueue(nid(i), nil, PrioHigh)
		waitFor(t, "start", func() bool { return len(g.startedIDs()) == int(i) })
		g.release <- struct{}{}
		waitFor(t, "finish", func() bool { return !s.Pending(nid(i)) })
		if n := s.Stats().Peers; n > 4 {
			t.Fatalf("%d backed-off peers tracked, cap 4", n)
		}
	}
	if !s.InBackoff(nid(11)) {
		t.Fatal("the latest failure was evicted instead of an older one")
	}
	fc.Advance(2 * time.Minute)
	s.peers.sweep()
	if n := s.Stats().Peers; n != 0 {
		t.Fatalf("%d peers left after every back-off ran out", n)
	}
}

// A waiter is woken as soon as no attempt is left that could report to it
// (here: the request merged into a running attempt that ended superseded,
// which reports nothing), without polling.
func TestPeerWaiterWokenWhenNoAttemptLeft(t *testing.T) {
	g := &gatedRun{release: make(chan struct{}), out: OutcomeSuperseded}
	s := mustSched(t, SchedConfig{}, g.run, nil)
	defer s.Close()
	s.Enqueue(nid(1), nil, PrioHigh)
	waitFor(t, "start", func() bool { return len(g.startedIDs()) == 1 })
	ch := make(chan error, 1)
	s.enqueueWaiting(nid(1), nil, PrioHigh, ch)
	select {
	case err := <-ch:
		t.Fatalf("woken while the attempt runs: %v", err)
	default:
	}
	g.release <- struct{}{}
	select {
	case err := <-ch:
		if !errors.Is(err, errNoOutcome) {
			t.Fatalf("woken with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter never woken")
	}
	waitFor(t, "peer dropped", func() bool { return s.Stats().Peers == 0 })
}

// A waiter whose request was refused is woken by the refusal's report, not
// earlier with a vaguer error.
func TestPeerWaiterGetsRefusal(t *testing.T) {
	var s *Scheduler
	s = mustSched(t, SchedConfig{QueueLen: 1, MaxConcurrent: 1}, func(ctx context.Context, _ PunchJob) Outcome {
		<-ctx.Done()
		return OutcomeFailure
	}, func(j PunchJob, why RejectReason) { s.peers.report(j.ID, errors.New(string(why))) })
	defer s.Close()
	s.Enqueue(nid(1), nil, PrioHigh) // runs
	waitFor(t, "start", func() bool { return s.Running(nid(1)) })
	s.Enqueue(nid(2), nil, PrioHigh) // queued
	ch := make(chan error, 1)
	s.enqueueWaiting(nid(3), nil, PrioHigh, ch) // queue full
	select {
	case err := <-ch:
		if err == nil || err.Error() != string(RejectQueueFull) {
			t.Fatalf("woken with %v, want the refusal", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter never woken")
	}
}
