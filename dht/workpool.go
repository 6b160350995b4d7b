package dht

import "sync"

// workPool runs queued jobs on at most max goroutines that exist only while
// there is work: push starts a worker when fewer than max run, and a worker
// exits as soon as the queues are empty. An idle node therefore holds no
// worker goroutines and almost no queue memory (docs/dht-benchmarks.md,
// "Growth and memory"). Jobs wait in one or more lanes, each bounded (push
// reports false beyond its limit and the caller counts the drop); workers
// serve the lowest-numbered non-empty lane first. Workers are spawned
// through the node, so Close waits for them; jobs still queued when the
// node closes are discarded.
type workPool[T any] struct {
	mu      sync.Mutex
	lanes   []jobLane[T]
	running int
	max     int
	run     func(T)
	// space, when set, is signalled each time a job leaves a lane (the
	// UDP producer waits on it rather than drop).
	space chan struct{}
}

type jobLane[T any] struct {
	q     []T // waiting jobs, oldest first, from head on
	head  int
	limit int
}

// keepQueueCap is the backing capacity an emptied lane keeps; a larger one
// (left by a burst) is released so idle memory stays small.
const keepQueueCap = 4

// init sets the worker bound, the job function and one lane per limit.
func (p *workPool[T]) init(max int, run func(T), limits ...int) {
	p.max, p.run = max, run
	p.lanes = make([]jobLane[T], len(limits))
	for i, l := range limits {
		p.lanes[i].limit = l
	}
}

// push queues v on lane and starts a worker if the node runs and fewer than
// max are running. It reports false (v dropped) when the lane is full.
func (p *workPool[T]) push(n *Node, lane int, v T) bool {
	p.mu.Lock()
	l := &p.lanes[lane]
	if len(l.q)-l.head >= l.limit {
		p.mu.Unlock()
		return false
	}
	if l.head > 0 && len(l.q) == cap(l.q) {
		// Slide the waiting jobs down instead of growing the array.
		k := copy(l.q, l.q[l.head:])
		clear(l.q[k:])
		l.q, l.head = l.q[:k], 0
	}
	l.q = append(l.q, v)
	p.mu.Unlock()
	p.kick(n, 1)
	return true
}

// kick starts up to k workers while jobs wait and fewer than max run (a
// running worker may be busy with a long job, so a new job gets its own
// worker). It does nothing before Start (jobs wait in their lanes) or once
// the node is closing.
func (p *workPool[T]) kick(n *Node, k int) {
	if !n.started.Load() {
		return
	}
	for ; k > 0; k-- {
		p.mu.Lock()
		if p.running >= p.max || p.queuedLocked() == 0 {
			p.mu.Unlock()
			return
		}
		p.running++
		p.mu.Unlock()
		if !n.spawn(func() { p.work(n) }) {
			p.mu.Lock()
			p.running--
			p.mu.Unlock()
			return
		}
	}
}

func (p *workPool[T]) work(n *Node) {
	for {
		v, ok := p.take(n)
		if !ok {
			return
		}
		if p.space != nil {
			select {
			case p.space <- struct{}{}:
			default:
			}
		}
		p.run(v)
	}
}

// take removes the next job, or retires the calling worker (ok false) when
// there is none or the node is closing.
func (p *workPool[T]) take(n *Node) (v T, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n.ctx.Err() == nil {
		for i := range p.lanes {
			l := &p.lanes[i]
			if l.head == len(l.q) {
				continue
			}
			var zero T
			v, l.q[l.head] = l.q[l.head], zero
			l.head++
			if l.head == len(l.q) {
				l.reset()
			}
			return v, true
		}
	}
	for i := range p.lanes {
		p.lanes[i].reset()
	}
	p.running--
	return v, false
}

// reset empties the lane, releasing a large backing array.
func (l *jobLane[T]) reset() {
	if cap(l.q) > keepQueueCap {
		l.q = nil
	} else {
		clear(l.q)
		l.q = l.q[:0]
	}
	l.head = 0
}

func (p *workPool[T]) queuedLocked() int {
	q := 0
	for i := range p.lanes {
		q += len(p.lanes[i].q) - p.lanes[i].head
	}
	return q
}

// queued is the number of jobs waiting (not yet taken by a worker).
func (p *workPool[T]) queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queuedLocked()
}
