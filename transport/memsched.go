package transport

import (
	"container/heap"
	"sync"
	"time"
)

// memScheduler delivers delayed packets in time order from one goroutine.
type memScheduler struct {
	mu      sync.Mutex
	q       delayHeap
	seq     uint64
	started bool
	stopped bool
	wake    chan struct{}
	quit    chan struct{}
	done    chan struct{}
}

type delayedPacket struct {
	at  time.Time
	seq uint64 // keeps FIFO order among packets due at the same instant
	p   memPacket
}

type delayHeap []delayedPacket

func (h delayHeap) Len() int { return len(h) }
func (h delayHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h delayHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *delayHeap) Push(x any)   { *h = append(*h, x.(delayedPacket)) }
func (h *delayHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = delayedPacket{}
	*h = old[:len(old)-1]
	return x
}

// push queues p for delivery at at; false if the queue is full or stopped.
func (s *memScheduler) push(n *MemNetwork, p memPacket, at time.Time) bool {
	s.mu.Lock()
	if s.stopped || len(s.q) >= maxDelayedPackets {
		s.mu.Unlock()
		return false
	}
	if !s.started {
		s.started = true
		s.wake = make(chan struct{}, 1)
		s.quit = make(chan struct{})
		s.done = make(chan struct{})
		go s.run(n)
	}
	s.seq++
	heap.Push(&s.q, delayedPacket{at: at, seq: s.seq, p: p})
	first := s.q[0].seq == s.seq
	s.mu.Unlock()
	if first {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return true
}

func (s *memScheduler) run(n *MemNetwork) {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []memPacket
	for {
		s.mu.Lock()
		now := time.Now()
		due = due[:0]
		for len(s.q) > 0 && !s.q[0].at.After(now) {
			due = append(due, heap.Pop(&s.q).(delayedPacket).p)
		}
		wait := time.Duration(-1)
		if len(s.q) > 0 {
			wait = s.q[0].at.Sub(now)
		}
		s.mu.Unlock()
		for i := range due {
			_ = n.deliver(due[i])
			due[i] = memPacket{}
		}
		if wait < 0 {
			wait = time.Hour
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-s.wake:
		case <-s.quit:
			return
		}
	}
}

// stop ends the delivery goroutine and discards undelivered packets.
func (s *memScheduler) stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	started := s.started
	s.q = nil
	s.mu.Unlock()
	if started {
		close(s.quit)
		<-s.done
	}
}
