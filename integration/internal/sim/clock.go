package sim

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/a2alnode/a2al/dht"
)

// ScaledClock is a dht.Clock whose time runs Scale times faster than the
// wall clock: timers fire after d/Scale of real time and Now advances by
// Scale seconds per real second. Protocol timeouts that the node measures
// with real timers (RPC deadlines) are unaffected, so a simulation can
// cover hours of maintenance (probes, grace windows, republish) in minutes
// while packets still take their real time.
//
// Now is lock-free: every node of a simulation reads this one clock on each
// packet, and a mutex here became a convoy (thousands of goroutines queued
// on it, lookups stalled for seconds) once the CPU was busy.
type ScaledClock struct {
	mu sync.Mutex // serialises SetScale
	st atomic.Pointer[clockState]
}

// clockState is immutable; SetScale swaps in a new one.
type clockState struct {
	scale     float64
	startReal time.Time
	startSim  time.Time
}

func (s *clockState) now() time.Time {
	return s.startSim.Add(time.Duration(float64(time.Since(s.startReal)) * s.scale))
}

var _ dht.Clock = (*ScaledClock)(nil)

// NewScaledClock starts a clock at start running scale times as fast as real
// time (scale ≤ 0 means 1).
func NewScaledClock(start time.Time, scale float64) *ScaledClock {
	if scale <= 0 {
		scale = 1
	}
	c := &ScaledClock{}
	c.st.Store(&clockState{scale: scale, startReal: time.Now(), startSim: start})
	return c
}

// Now returns the simulated time.
func (c *ScaledClock) Now() time.Time { return c.st.Load().now() }

// SetScale changes the speed from now on (scale ≤ 0 means 1); simulated
// time stays continuous. Timers already armed keep their real deadline.
func (c *ScaledClock) SetScale(scale float64) {
	if scale <= 0 {
		scale = 1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.st.Load()
	c.st.Store(&clockState{scale: scale, startReal: time.Now(), startSim: old.now()})
}

// Real converts a simulated duration into real time.
func (c *ScaledClock) Real(d time.Duration) time.Duration {
	return time.Duration(float64(d) / c.st.Load().scale)
}

// Sleep waits for the simulated duration d.
func (c *ScaledClock) Sleep(d time.Duration) { time.Sleep(c.Real(d)) }

// AfterFunc runs f once the simulated duration d has elapsed.
func (c *ScaledClock) AfterFunc(d time.Duration, f func()) dht.Timer {
	return &scaledTimer{clk: c, t: time.AfterFunc(c.Real(d), f)}
}

// NewTimer returns a timer firing after the simulated duration d.
func (c *ScaledClock) NewTimer(d time.Duration) dht.Timer {
	st := &scaledTimer{clk: c, ch: make(chan time.Time, 1)}
	st.t = time.AfterFunc(c.Real(d), st.fire)
	return st
}

type scaledTimer struct {
	clk *ScaledClock
	mu  sync.Mutex
	t   *time.Timer
	ch  chan time.Time // nil for AfterFunc timers
}

func (s *scaledTimer) fire() {
	select {
	case s.ch <- s.clk.Now():
	default:
	}
}

func (s *scaledTimer) C() <-chan time.Time { return s.ch }

func (s *scaledTimer) Stop() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t.Stop()
}

func (s *scaledTimer) Reset(d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	active := s.t.Stop()
	if s.ch != nil {
		select { // drop a stale tick, like time.Timer.Reset in Go ≥ 1.23
		case <-s.ch:
		default:
		}
	}
	s.t.Reset(s.clk.Real(d))
	return active
}
