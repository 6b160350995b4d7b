package transport

import (
	"sync"
	"time"
)

// readDeadline is a settable deadline that blocked readers can select on.
// It uses time.AfterFunc, so no goroutine exists while a deadline is pending.
type readDeadline struct {
	mu      sync.Mutex
	gen     uint64
	timer   *time.Timer
	expired chan struct{} // closed once the current deadline has passed
}

func newReadDeadline() *readDeadline {
	return &readDeadline{expired: make(chan struct{})}
}

// set arms the deadline at t; the zero time disarms it.
func (d *readDeadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	select {
	case <-d.expired:
		d.expired = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(d.expired)
		return
	}
	gen, ch := d.gen, d.expired
	d.timer = time.AfterFunc(dur, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen {
			close(ch)
			d.timer = nil
		}
	})
}

// done returns a channel closed when the current deadline passes. A reader
// must fetch it again after each wake-up, since set may replace it.
func (d *readDeadline) done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expired
}

// stop releases a pending timer.
func (d *readDeadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
