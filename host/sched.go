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
	// Upgrade: replace the peer's relayed connection by a punched one (no
	// relay candidates; docs/relay.md). Any other request for the peer
	// merged into the queued job makes it an ordinary one.
	Upgrade bool
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
// The per-peer state (the queued job, the running attempt, the back-off) is
// the peer's peerPath; the scheduler keeps only the queues and the counts.
//
// Locks (docs/architecture.md "Lock order"): the peer table's mu guards the
// group below it and every peerPath; run and reject are called outside it
// (Cancel only cancels a running attempt's context under it, which takes no
// lock of ours).
type Scheduler struct {
	cfg    SchedConfig
	run    func(ctx context.Context, job PunchJob) Outcome
	reject func(job PunchJob, why RejectReason)
	wake   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	peers  *peerTable

	// Guarded by peers.mu.
	queues   [numPrio][]*PunchJob
	running  int
	runPrio  [numPrio]int
	rejects  []rejected
	closed   bool
	attempts [numPrio]uint64
}

type rejected struct {
	job PunchJob
	why RejectReason
}

// NewScheduler starts the dispatcher goroutine over a peer table of its own;
// Close stops it and cancels running attempts.
func NewScheduler(cfg SchedConfig, run func(context.Context, PunchJob) Outcome, reject func(PunchJob, RejectReason)) (*Scheduler, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	return newScheduler(cfg, newPeerTable(cfg.MaxBackoff, cfg.Clock.Now), run, reject), nil
}

// newScheduler is NewScheduler over the host's peer table (cfg filled).
func newScheduler(cfg SchedConfig, peers *peerTable, run func(context.Context, PunchJob) Outcome, reject func(PunchJob, RejectReason)) *Scheduler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Scheduler{cfg: cfg, run: run, reject: reject, peers: peers, wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
	s.wg.Add(1)
	go s.dispatch()
	return s
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
	return s.enqueue(id, er, prio, false, nil)
}

// EnqueueUser is Enqueue for an explicit user request (Host.Dial, PunchPeer):
// back-off exists to stop the DHT from hammering an unreachable peer, not to
// refuse a user who asks to connect now, so it is bypassed. The attempt's
// outcome still updates the peer's back-off for DHT-driven requests.
func (s *Scheduler) EnqueueUser(id a2al.NodeID, er *protocol.EndpointRecord, prio int) bool {
	return s.enqueue(id, er, prio, true, nil)
}

// enqueueUpgrade asks for an upgrade of id's relayed connection (see
// PunchJob.Upgrade); back-off does not apply: the peer is connected.
func (s *Scheduler) enqueueUpgrade(id a2al.NodeID, er *protocol.EndpointRecord) {
	s.enqueueJob(&PunchJob{ID: id, Record: er, Priority: PrioLow, Upgrade: true}, true, nil)
}

// enqueueWaiting is EnqueueUser that also registers w for the peer's next
// outcome, in one step: nothing can report to w before the request is in.
func (s *Scheduler) enqueueWaiting(id a2al.NodeID, er *protocol.EndpointRecord, prio int, w chan error) {
	s.enqueue(id, er, prio, true, w)
}

// Reset forgets id's back-off: something showed the peer (or our path to it)
// is working again, or a connection to it just died and the next attempt
// must not be refused for failures that predate it.
func (s *Scheduler) Reset(id a2al.NodeID) {
	t := s.peers
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.m[id]; p != nil {
		p.backoff = backoffState{}
		t.tidyLocked(p)
	}
}

// ResetAll forgets every peer's back-off (our network changed, so failures
// seen from the old network say nothing about the peers).
func (s *Scheduler) ResetAll() {
	t := s.peers
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.m {
		p.backoff = backoffState{}
		t.tidyLocked(p)
	}
}

// InBackoff reports whether DHT-driven requests for id are currently refused.
func (s *Scheduler) InBackoff(id a2al.NodeID) bool {
	t := s.peers
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.m[id]
	return p != nil && p.backoff.active(s.cfg.Clock.Now())
}

func (s *Scheduler) enqueue(id a2al.NodeID, er *protocol.EndpointRecord, prio int, user bool, w chan error) bool {
	return s.enqueueJob(&PunchJob{ID: id, Record: er, Priority: prio}, user, w)
}

func (s *Scheduler) enqueueJob(job *PunchJob, user bool, w chan error) bool {
	job.Priority, job.Queued = clampPrio(job.Priority), s.cfg.Clock.Now()
	id, er, prio := job.ID, job.Record, job.Priority
	t := s.peers
	t.mu.Lock()
	defer t.mu.Unlock()
	defer s.kick()
	if s.closed {
		// dispatch has ended: nothing will report a refusal, so a waiter
		// hears at once rather than at its deadline.
		if w != nil {
			wake([]chan error{w}, errNoOutcome)
		}
		return true
	}
	p := t.getLocked(id)
	if w != nil {
		// A refused request's waiter is woken by the reject report.
		p.waiters = append(p.waiters, w)
	}
	refuse := func(why RejectReason) bool {
		s.rejects = append(s.rejects, rejected{*job, why})
		if w == nil {
			t.tidyLocked(p)
		}
		return true
	}
	if p.running != nil {
		return false
	}
	if q := p.queued; q != nil {
		q.Upgrade = q.Upgrade && job.Upgrade
		if prio > q.Priority { // move up
			s.unqueueLocked(p)
			q.Priority = prio
			if er != nil {
				q.Record = er
			}
			s.queues[prio] = append(s.queues[prio], q)
			p.queued = q
		}
		return false
	}
	if !user && p.backoff.active(s.cfg.Clock.Now()) {
		return refuse(RejectBackoff)
	}
	if len(s.queues[prio]) >= s.cfg.QueueLen {
		if prio != PrioLowest {
			return refuse(RejectQueueFull)
		}
		old := s.queues[prio][0]
		s.queues[prio] = s.queues[prio][1:]
		if op := t.m[old.ID]; op != nil && op.queued == old {
			op.queued = nil
			t.tidyLocked(op)
		}
		s.rejects = append(s.rejects, rejected{*old, RejectDropped})
	}
	s.queues[prio] = append(s.queues[prio], job)
	p.queued = job
	return true
}

// unqueueLocked takes p's queued job out of its queue.
func (s *Scheduler) unqueueLocked(p *peerPath) {
	j := p.queued
	q := s.queues[j.Priority]
	for i, x := range q {
		if x == j {
			s.queues[j.Priority] = append(q[:i], q[i+1:]...)
			break
		}
	}
	p.queued = nil
}

// Running reports whether an attempt for id is in flight.
func (s *Scheduler) Running(id a2al.NodeID) bool {
	t := s.peers
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.m[id]
	return p != nil && p.running != nil
}

// Pending reports whether id is queued or running.
func (s *Scheduler) Pending(id a2al.NodeID) bool {
	t := s.peers
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.m[id]
	return p != nil && (p.queued != nil || p.running != nil)
}

// cancelLocked aborts p's queued or running attempt (glare: the other
// side's call takes over); a cancelled queued job is forgotten (nil p:
// nothing to cancel).
func (s *Scheduler) cancelLocked(p *peerPath) {
	if p == nil {
		return
	}
	if p.queued != nil {
		s.unqueueLocked(p)
	}
	if p.running != nil {
		p.running()
	}
	s.peers.tidyLocked(p)
}

// SchedStats is a snapshot for debug output and metrics.
type SchedStats struct {
	Queued   [numPrio]int    `json:"queued"`
	Running  [numPrio]int    `json:"running"`
	Attempts [numPrio]uint64 `json:"attempts"`
	Backoff  int             `json:"backoff_peers"`
	Peers    int             `json:"peers"` // peers with punch state (docs/architecture.md "Peer paths")
}

// Stats returns queue and running counts per priority.
func (s *Scheduler) Stats() SchedStats {
	t := s.peers
	t.mu.Lock()
	defer t.mu.Unlock()
	var st SchedStats
	for p := range numPrio {
		st.Queued[p] = len(s.queues[p])
		st.Running[p] = s.runPrio[p]
		st.Attempts[p] = s.attempts[p]
	}
	for _, p := range t.m {
		if p.backoff.fails > 0 {
			st.Backoff++
		}
	}
	st.Peers = len(t.m)
	return st
}

// Close cancels running attempts, reports queued ones as rejected and waits.
func (s *Scheduler) Close() {
	t := s.peers
	t.mu.Lock()
	if s.closed {
		t.mu.Unlock()
		return
	}
	s.closed = true
	for pr := range numPrio {
		for _, j := range s.queues[pr] {
			s.rejects = append(s.rejects, rejected{*j, RejectClosed})
			if p := t.m[j.ID]; p != nil && p.queued == j {
				p.queued = nil
				t.tidyLocked(p)
			}
		}
		s.queues[pr] = nil
	}
	t.mu.Unlock()
	s.cancel()
	s.kick()
	s.wg.Wait()
}

func (s *Scheduler) dispatch() {
	defer s.wg.Done()
	t := s.peers
	for {
		t.mu.Lock()
		rej := s.rejects
		s.rejects = nil
		var start []startable
		if !s.closed {
			start = s.pickLocked()
		}
		closed := s.closed
		t.mu.Unlock()
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
			t.mu.Lock()
			rej = s.rejects
			s.rejects = nil
			t.mu.Unlock()
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
	for s.running < s.cfg.MaxConcurrent {
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
		p := s.peers.getLocked(j.ID)
		ctx, cancel := context.WithCancel(s.ctx)
		p.queued, p.running = nil, cancel
		s.running++
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

// finish ends a running attempt and applies its outcome to the back-off.
func (s *Scheduler) finish(j PunchJob, out Outcome) {
	t := s.peers
	t.mu.Lock()
	s.running--
	s.runPrio[j.Priority]--
	p := t.getLocked(j.ID)
	p.running = nil
	switch out {
	case OutcomeSuccess:
		p.backoff = backoffState{}
	case OutcomeFailure:
		if s.cfg.DisableBackoff {
			break
		}
		b := &p.backoff
		b.fails++
		d := s.cfg.BackoffBase << min(b.fails-1, 10)
		if d > s.cfg.BackoffMax || d <= 0 {
			d = s.cfg.BackoffMax
		}
		b.until = s.cfg.Clock.Now().Add(d)
	}
	t.tidyLocked(p)
	t.mu.Unlock()
	s.kick()
}
