// Package clock is the one injectable time source of the node's packages
// (dht, natprobe, signal): timers and "now" go through a Clock so that
// tests of time-dependent behaviour (replication, expiry, back-off, rate
// limits, timeouts) run fast and deterministically on a Fake.
package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock is a time source.
type Clock interface {
	Now() time.Time
	// AfterFunc runs f on its own goroutine once d has elapsed.
	AfterFunc(d time.Duration, f func()) Timer
	// NewTimer returns a timer whose channel receives once d has elapsed.
	NewTimer(d time.Duration) Timer
}

// Timer is the subset of *time.Timer the packages need.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// Real is the wall clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// AfterFunc wraps time.AfterFunc.
func (Real) AfterFunc(d time.Duration, f func()) Timer { return realTimer{t: time.AfterFunc(d, f)} }

// NewTimer wraps time.NewTimer.
func (Real) NewTimer(d time.Duration) Timer { return realTimer{t: time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

// Fake is a manually advanced clock. Timers fire only inside Advance.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	seq    uint64
	timers map[*fakeTimer]struct{}
}

// NewFake returns a fake clock set to start.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, timers: make(map[*fakeTimer]struct{})}
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// AfterFunc schedules fn at now+d (run on a new goroutine when due).
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	t := &fakeTimer{clk: f, fn: fn}
	t.Reset(d)
	return t
}

// NewTimer returns a timer with a 1-slot channel.
func (f *Fake) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{clk: f, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

// Pending returns the number of armed timers (useful to wait until a
// goroutine has armed its next timer before advancing).
func (f *Fake) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// Advance moves time forward by d, firing due timers in deadline order.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	end := f.now.Add(d)
	for {
		var due []*fakeTimer
		for t := range f.timers {
			if !t.when.After(end) {
				due = append(due, t)
			}
		}
		if len(due) == 0 {
			break
		}
		sort.Slice(due, func(i, j int) bool {
			if due[i].when.Equal(due[j].when) {
				return due[i].seq < due[j].seq
			}
			return due[i].when.Before(due[j].when)
		})
		t := due[0]
		delete(f.timers, t)
		if t.when.After(f.now) {
			f.now = t.when
		}
		now := f.now
		f.mu.Unlock()
		if t.fn != nil {
			go t.fn()
		} else {
			select {
			case t.ch <- now:
			default:
			}
		}
		f.mu.Lock()
	}
	f.now = end
	f.mu.Unlock()
}

type fakeTimer struct {
	clk  *Fake
	fn   func()
	ch   chan time.Time
	when time.Time
	seq  uint64
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	_, ok := t.clk.timers[t]
	delete(t.clk.timers, t)
	return ok
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	_, ok := t.clk.timers[t]
	t.clk.seq++
	t.seq = t.clk.seq
	t.when = t.clk.now.Add(d)
	t.clk.timers[t] = struct{}{}
	return ok
}
