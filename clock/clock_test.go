package clock

import (
	"testing"
	"time"
)

func TestFakeOrderAndChannels(t *testing.T) {
	start := time.Unix(1000, 0)
	f := NewFake(start)
	got := make(chan int, 3)
	f.AfterFunc(2*time.Second, func() { got <- 2 })
	f.AfterFunc(time.Second, func() { got <- 1 })
	tm := f.NewTimer(3 * time.Second)
	stopped := f.AfterFunc(time.Second, func() { got <- 99 })
	if !stopped.Stop() {
		t.Fatal("Stop of armed timer returned false")
	}
	f.Advance(1500 * time.Millisecond)
	if v := <-got; v != 1 {
		t.Fatalf("first fired %d", v)
	}
	select {
	case <-tm.C():
		t.Fatal("timer fired early")
	default:
	}
	f.Advance(2 * time.Second)
	if v := <-got; v != 2 {
		t.Fatalf("second fired %d", v)
	}
	select {
	case at := <-tm.C():
		if !at.Equal(start.Add(3 * time.Second)) {
			t.Fatalf("timer time %v", at)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("timer did not fire")
	}
	if !f.Now().Equal(start.Add(3500 * time.Millisecond)) {
		t.Fatalf("now %v", f.Now())
	}
	if f.Pending() != 0 {
		t.Fatalf("pending %d", f.Pending())
	}
	select {
	case v := <-got:
		t.Fatalf("stopped timer fired: %d", v)
	default:
	}
}

func TestRealClock(t *testing.T) {
	var c Clock = Real{}
	tm := c.NewTimer(time.Millisecond)
	select {
	case <-tm.C():
	case <-time.After(5 * time.Second):
		t.Fatal("real timer did not fire")
	}
	done := make(chan struct{})
	c.AfterFunc(time.Millisecond, func() { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("AfterFunc did not run")
	}
}
