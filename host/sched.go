package host

import (
	"context"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/protocol"
)

// Punch priorities: the dht's, under short names for this package.
const (
	PrioLowest = dht.PunchPriorityLowest
	PrioLow    = dht.PunchPriorityLow
	PrioHigh   = dht.PunchPriorityHigh
	numPrio    = PrioHigh + 1
)

// PunchJob is one queued punch request.
type PunchJob struct {
	ID       a2al.NodeID
	Record   *protocol.EndpointRecord
	Priority int
	Queued   time.Time
}

// Outcome of a punch attempt as the scheduler sees it.
type Outcome int

// Outcomes: Success resets back-off; Failure grows it; Superseded (glare: the
// other side's attempt took over) and Unavailable (a local cause such as no
// signaling hub, not the peer's fault) leave it alone, so the next request
// runs as soon as the cause is gone.
const (
	OutcomeSuccess Outcome = iota
	OutcomeFailure
	OutcomeSuperseded
	OutcomeUnavailable
)

// RejectReason says why a request was not queued.
type RejectReason string

// Reject reasons reported through the reject callback.
const (
	RejectBackoff   RejectReason = "backoff"
	RejectQueueFull RejectReason = "queue full"
	RejectDropped   RejectReason = "dropped (lowest queue overflow)"
	RejectClosed    RejectReason = "scheduler closed"
)

// Scheduler runs punch attempts: priority queue High > Low > Lowest, a global
// concurrency cap, at most MaxLowest speculative attempts at once, per-peer
// de-duplication (a duplicate only raises the queued priority) and exponential
// back-off after failure. run executes one attempt; reject reports requests
// that will never run so the DHT can clear its in-flight flag. Both callbacks
// are invoked from scheduler goroutines, never from Enqueue.
//
// Locks (docs/architecture.md "Lock order"): mu guards the group below it
// and is a leaf: run and reject are called outside it (Cancel only cancels a
// running attempt's context under it, which takes no lock of ours).
type Scheduler struct {
	cfg    SchedConfig
	run    func(ctx context.Context, job PunchJob) Outcome
	reject func(job PunchJob, why RejectReason)
	wake   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex // guards everything below
	queues   [numPrio][]*PunchJob
	queued   map[a2al.NodeID]*PunchJob
	running  map[a2al.NodeID]context.CancelFunc
	runPrio  [numPrio]int
	fails    map[a2al.NodeID]backoffState
	rejects  []rejected
	closed   bool
	attempts [numPrio]uint64
}

type backoffState struct {
	fails int
	until time.Time
}

type rejected struct {
	job PunchJob
	why RejectReason
}

// NewScheduler starts the dispatcher goroutine; Close stops it and cancels
// running attempts.
func NewScheduler(cfg SchedConfig, run func(context.Context, PunchJob) Outcome, reject func(PunchJob, RejectReason)) (*Scheduler, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Scheduler{
		cfg: cfg, run: run, reject: reject,
		queued: make(map[a2al.NodeID]*PunchJob), running: make(map[a2al.NodeID]context.CancelFunc),
		fails: make(map[a2al.NodeID]backoffState), wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel,
	}
	s.wg.Add(1)
	go s.dispatch()
	return s, nil
}

func clampPrio(p int) int {
	if p < PrioLowest {
		return PrioLowest
	}
	if p > PrioHigh {
		return PrioHigh
	}
	return p
}

func (s *Scheduler) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Enqueue asks for a punch; it never blocks. It returns false if the request
// was merged into an existing one (queued or running) — the existing attempt
// will report for it. A peer in back-off is refused (RejectBackoff).
func (s *Scheduler) Enqueue(id a2al.NodeID, er *protocol.EndpointRecord, prio int) bool {
	return s.enqueue(id, er, prio, false)
}

// EnqueueUser is Enqueue for an explicit user request (Host.Dial, PunchPeer):
// back-off exists to stop the DHT from hammering an unreachable peer, not to
// refuse a user who asks to connect now, so it is bypassed. The attempt's
// outcome still updates the peer's back-off for DHT-driven requests.
func (s *Scheduler) EnqueueUser(id a2al.NodeID, er *protocol.EndpointRecord, prio int) bool {
	return s.enqueue(id, er, prio, true)
}

// Reset forgets id's back-off: something showed the peer (or our path to it)
// is working again, or a connection to it just died and the next attempt
// must not be refused for failures that predate it.
func (s *Scheduler) Reset(id a2al.NodeID) {
	s.mu.Lock()
	delete(s.fails, id)
	s.mu.Unlock()
}

// ResetAll forgets every peer's back-off (our network changed, so failures
// seen from the old network say nothing about the peers).
func (s *Scheduler) ResetAll() {
	s.mu.Lock()
	clear(s.fails)
	s.mu.Unlock()
}

// InBackoff reports whether DHT-driven requests for id are currently refused.
func (s *Scheduler) InBackoff(id a2al.NodeID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.fails[id]
	return ok && s.cfg.Clock.Now().Before(b.until)
}

func (s *Scheduler) enqueue(id a2al.NodeID, er *protocol.EndpointRecord, prio int, user bool) bool {
	prio = clampPrio(prio)
	job := &PunchJob{ID: id, Record: er, Priority: prio, Queued: s.cfg.Clock.Now()}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.kick()
	if s.closed {
		s.rejects = append(s.rejects, rejected{*job, RejectClosed})
		return true
	}
	if _, ok := s.running[id]; ok {
		return false
	}
	if q, ok := s.queued[id]; ok {
		if prio > q.Priority { // move up
			s.removeQueuedLocked(q)
			q.Priority = prio
			if er != nil {
				q.Record = er
			}
			s.queues[prio] = append(s.queues[prio], q)
			s.queued[id] = q
		}
		return false
	}
	if b, ok := s.fails[id]; ok && !user && s.cfg.Clock.Now().Before(b.until) {
		s.rejects = append(s.rejects, rejected{*job, RejectBackoff})
		return true
	}
	if len(s.queues[prio]) >= s.cfg.QueueLen {
		if prio != PrioLowest {
			s.rejects = append(s.rejects, rejected{*job, RejectQueueFull})
			return true
		}
		old := s.queues[prio][0]
		s.queues[prio] = s.queues[prio][1:]
		delete(s.queued, old.ID)
		s.rejects = append(s.rejects, rejected{*old, RejectDropped})
	}
	s.queues[prio] = append(s.queues[prio], job)
	s.queued[id] = job
	return true
}

func (s *Scheduler) removeQueuedLocked(j *PunchJob) {
	q := s.queues[j.Priority]
	for i, x := range q {
		if x == j {
			s.queues[j.Priority] = append(q[:i], q[i+1:]...)
			break
		}
	}
	delete(s.queued, j.ID)
}

// Running reports whether an attempt for id is in flight.
func (s *Scheduler) Running(id a2al.NodeID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.running[id]
	return ok
}

// Pending reports whether id is queued or running.
func (s *Scheduler) Pending(id a2al.NodeID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, q := s.queued[id]
	_, r := s.running[id]
	return q || r
}

// Cancel aborts a queued or running attempt for id (glare: the other side's call
// takes over). A cancelled queued job is silently forgotten.
func (s *Scheduler) Cancel(id a2al.NodeID) {
	s.mu.Lock()
	if q, ok := s.queued[id]; ok {
		s.removeQueuedLocked(q)
	}
	if c, ok := s.running[id]; ok {
		c()
	}
	s.mu.Unlock()
}

// SchedStats is a snapshot for debug output and metrics.
type SchedStats struct {
	Queued   [numPrio]int    `json:"queued"`
	Running  [numPrio]int    `json:"running"`
	Attempts [numPrio]uint64 `json:"attempts"`
	Backoff  int             `json:"backoff_peers"`
}

// Stats returns queue and running counts per priority.
func (s *Scheduler) Stats() SchedStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st SchedStats
	for p := range numPrio {
		st.Queued[p] = len(s.queues[p])
		st.Running[p] = s.runPrio[p]
		st.Attempts[p] = s.attempts[p]
	}
	st.Backoff = len(s.fails)
	return st
}

// Close cancels running attempts, reports queued ones as rejected and waits.
func (s *Scheduler) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	for p := range numPrio {
		for _, j := range s.queues[p] {
			s.rejects = append(s.rejects, rejected{*j, RejectClosed})
		}
		s.queues[p] = nil
	}
	s.queued = make(map[a2al.NodeID]*PunchJob)
	s.mu.Unlock()
	s.cancel()
	s.kick()
	s.wg.Wait()
}

func (s *Scheduler) dispatch() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		rej := s.rejects
		s.rejects = nil
		var start []startable
		if !s.closed {
			start = s.pickLocked()
		}
		closed := s.closed
		s.mu.Unlock()
		for _, r := range rej {
			if s.reject != nil {
				s.reject(r.job, r.why)
			}
		}
		for _, j := range start {
			s.startJob(j)
		}
		if closed {
			// Drain rejections that raced with Close, then leave; running
			// attempts were cancelled and are waited for by wg.
			s.mu.Lock()
			rej = s.rejects
			s.rejects = nil
			s.mu.Unlock()
			for _, r := range rej {
				if s.reject != nil {
					s.reject(r.job, r.why)
				}
			}
			return
		}
		<-s.wake
	}
}

// pickLocked selects jobs to start within the caps, highest priority first.
func (s *Scheduler) pickLocked() []startable {
	var out []startable
	for len(s.running) < s.cfg.MaxConcurrent {
		var j *PunchJob
		for p := PrioHigh; p >= PrioLowest; p-- {
			if len(s.queues[p]) == 0 {
				continue
			}
			if p == PrioLowest && s.runPrio[p] >= s.cfg.MaxLowest {
				continue
			}
			j = s.queues[p][0]
			s.queues[p] = s.queues[p][1:]
			break
		}
		if j == nil {
			break
		}
		delete(s.queued, j.ID)
		ctx, cancel := context.WithCancel(s.ctx)
		s.running[j.ID] = cancel
		s.runPrio[j.Priority]++
		s.attempts[j.Priority]++
		out = append(out, startable{j, ctx, cancel})
	}
	return out
}

type startable struct {
	job    *PunchJob
	ctx    context.Context
	cancel context.CancelFunc
}

func (s *Scheduler) startJob(st startable) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer st.cancel()
		out := s.run(st.ctx, *st.job)
		s.finish(*st.job, out)
	}()
}

func (s *Scheduler) finish(j PunchJob, out Outcome) {
	s.mu.Lock()
	delete(s.running, j.ID)
	s.runPrio[j.Priority]--
	switch out {
	case OutcomeSuccess:
		delete(s.fails, j.ID)
	case OutcomeFailure:
		if s.cfg.DisableBackoff {
			break
		}
		b := s.fails[j.ID]
		b.fails++
		d := s.cfg.BackoffBase << min(b.fails-1, 10)
		if d > s.cfg.BackoffMax || d <= 0 {
			d = s.cfg.BackoffMax
		}
		b.until = s.cfg.Clock.Now().Add(d)
		if _, ok := s.fails[j.ID]; !ok && len(s.fails) >= s.cfg.MaxBackoff {
			s.pruneBackoffLocked()
		}
		s.fails[j.ID] = b
	}
	s.mu.Unlock()
	s.kick()
}

// pruneBackoffLocked drops expired entries, or the one expiring soonest, so the
// table stays bounded.
func (s *Scheduler) pruneBackoffLocked() {
	now := s.cfg.Clock.Now()
	var soonest a2al.NodeID
	var soonestT time.Time
	first := true
	for id, b := range s.fails {
		if now.After(b.until) {
			delete(s.fails, id)
			continue
		}
		if first || b.until.Before(soonestT) {
			soonest, soonestT, first = id, b.until, false
		}
	}
	if len(s.fails) >= s.cfg.MaxBackoff && !first {
		delete(s.fails, soonest)
	}
}
