package dht

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/a2alnode/a2al/clock"
)

// An idle started node keeps one goroutine (its receive loop; maintenance
// is a timer); workers appear for queued work and are gone once it is done.
func TestIdleNodeGoroutines(t *testing.T) {
	c := newMemCluster(t)
	c.build(4, nil)
	extra := c.newNode(50, nil)
	extra.Start()
	waitFor(t, 5*time.Second, "idle node down to its receive loop", func() bool {
		return extra.live.Load() <= 1
	})
	var wg sync.WaitGroup
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock() // a failed check must not leave Close waiting on blocked tasks
	for i := 0; i < taskWorkers+2; i++ {
		wg.Add(1)
		if !extra.submit(func() { defer wg.Done(); <-release }) {
			t.Fatal("task refused")
		}
	}
	waitFor(t, 5*time.Second, "task workers started", func() bool {
		return extra.live.Load() >= 1+taskWorkers && extra.tasks.queued() == 2
	})
	unblock()
	wg.Wait()
	waitFor(t, 5*time.Second, "task workers gone", func() bool {
		return extra.live.Load() <= 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := extra.Ping(ctx, c.nodes[0].LocalAddr()); err != nil {
		t.Fatalf("ping after the workers retired: %v", err)
	}
}

// The task queue stays bounded: beyond taskQueueCap waiting tasks, submit
// drops and counts.
func TestTaskQueueBounded(t *testing.T) {
	c := newMemCluster(t)
	n := c.newNode(1, nil) // not started: nothing runs the tasks
	for i := 0; i < taskQueueCap; i++ {
		if !n.submit(func() {}) {
			t.Fatalf("task %d refused below the bound", i)
		}
	}
	if n.submit(func() {}) || n.cnt.dropTaskQueue.Load() != 1 {
		t.Fatalf("task beyond the bound accepted (drops %d)", n.cnt.dropTaskQueue.Load())
	}
	ran := make(chan struct{}, taskQueueCap)
	n.tasks.run = func(f func()) { ran <- struct{}{} }
	n.Start()
	for i := 0; i < taskQueueCap; i++ {
		select {
		case <-ran:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of the queued tasks ran after Start", i)
		}
	}
}

// The seen-peers window is still written every seenFlushEvery, now from
// the maintenance tick rather than a goroutine of its own, and the tick
// keeps re-arming itself.
func TestSeenPeersPeriodicFlush(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seen")
	fc := clock.NewFake(time.Now())
	c := newMemCluster(t)
	a := c.newNode(1, func(cfg *Config) { cfg.SeenPeersPath = path; cfg.Clock = fc })
	a.Start()
	p := c.newNode(2, nil)
	p.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Ping(ctx, p.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < int(seenFlushEvery/probeTick)+3; i++ {
		waitFor(t, 5*time.Second, "maintenance timer armed", func() bool { return fc.Pending() > 0 })
		fc.Advance(probeTick)
	}
	waitFor(t, 5*time.Second, "seen-peers file written while running", func() bool {
		_, err := os.Stat(path)
		return err == nil
	})
}
