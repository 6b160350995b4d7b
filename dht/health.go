package dht

import (
	"net"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht/internal/routing"
)

// PeerHealthState classifies a peer's reachability from observed RPCs.
type PeerHealthState uint8

// Health states.
const (
	PeerHealthUnknown PeerHealthState = iota // no RPC history yet
	PeerHealthGood                           // last RPC succeeded
	PeerHealthBad                            // consecutive failures >= 2
)

// Health parameters (docs/dht.md §12, docs/dht.md §17.3).
const (
	badHealthThreshold = 2
	backoffBase        = 30 * time.Second
	maxBackoffShift    = 10
	maxHealthEntries   = 8192
	inboundFresh       = 5 * time.Minute // recent inbound => never Bad
	outageQuiet        = 45 * time.Second
	correlatedWindow   = 15 * time.Second
	correlatedPeers    = 4
	punchingTimeout    = 2 * time.Minute // isPunching expiry (docs/reference-defects.md W-10)
)

// peerHealth is kept for every peer we exchanged datagrams with, so it is
// packed (64 bytes): its instants are nanosecond stamps (8 bytes, not 24).
type peerHealth struct {
	lastSuccess, lastFailure, lastInbound stamp
	nextRetryAt, punchingSince            stamp
	failCount                             int32
	total                                 uint32
	rtt, srtt                             time.Duration
}

// stamp is a node-clock instant as UnixNano; 0 means never (the routing
// table's Stamp: one definition).
type stamp = routing.Stamp

func stampOf(t time.Time) stamp { return routing.StampOf(t) }

type failNote struct {
	id a2al.NodeID
	at time.Time
}

// healthTable is the bounded per-peer health map plus local-outage
// detection: when we are the one who lost the network, failures are not
// charged to peers (docs/dht.md §17.3).
type healthTable struct {
	mu           sync.RWMutex
	m            map[a2al.NodeID]*peerHealth
	gsrtt        time.Duration
	anySuccess   bool
	lastSuccess  time.Time
	recent       []failNote // last failures, for correlated-outage detection
	outage       bool
	outageSince  time.Time
	outageEvents uint64
}

func (h *healthTable) init() { h.m = make(map[a2al.NodeID]*peerHealth) }

func (h *healthTable) entryLocked(id a2al.NodeID, now time.Time) *peerHealth {
	e := h.m[id]
	if e != nil {
		return e
	}
	if len(h.m) >= maxHealthEntries {
		h.evictLocked(now)
	}
	e = &peerHealth{}
	h.m[id] = e
	return e
}

// evictLocked drops the least recently active of a few sampled entries.
func (h *healthTable) evictLocked(now time.Time) {
	var victim a2al.NodeID
	var oldest stamp
	i := 0
	for id, e := range h.m {
		last := max(e.lastSuccess, e.lastFailure, e.lastInbound)
		if i == 0 || last < oldest {
			victim, oldest = id, last
		}
		if i++; i >= 16 {
			break
		}
	}
	delete(h.m, victim)
}

func (h *healthTable) srttOf(id a2al.NodeID) time.Duration {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if e := h.m[id]; e != nil {
		return e.srtt
	}
	return 0
}

// lastHeard is the latest first-hand sign of life from id: an answer to
// our RPC or a verified datagram it sent us (zero if none).
func (h *healthTable) lastHeard(id a2al.NodeID) time.Time {
	h.mu.RLock()
	defer h.mu.RUnlock()
	e := h.m[id]
	if e == nil {
		return time.Time{}
	}
	return max(e.lastInbound, e.lastSuccess).Time()
}

func (h *healthTable) globalSRTT() time.Duration {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.gsrtt
}

func ewma(old, sample time.Duration) time.Duration {
	if old == 0 {
		return sample
	}
	return (7*old + sample) / 8
}

func (n *Node) recordSuccess(id a2al.NodeID, rtt time.Duration) {
	now := n.now()
	h := &n.health
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.entryLocked(id, now)
	e.lastSuccess = stampOf(now)
	e.failCount = 0
	e.total++
	e.nextRetryAt = 0
	if rtt > 0 {
		e.rtt = rtt
		e.srtt = ewma(e.srtt, rtt)
		h.gsrtt = ewma(h.gsrtt, rtt)
	}
	h.anySuccess = true
	h.lastSuccess = now
	if h.outage {
		// Recovery: failures charged during the outage were ours, not theirs.
		h.outage = false
		for _, p := range h.m {
			if !p.lastFailure.Time().Before(h.outageSince) {
				p.nextRetryAt = 0
			}
		}
	}
}

// recordFailure charges a failed outbound RPC to id unless we appear to be
// offline ourselves (quiet for 45 s after successes, or >= 4 distinct peers
// failing within 15 s with no success in between).
func (n *Node) recordFailure(id a2al.NodeID) {
	now := n.now()
	h := &n.health
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.entryLocked(id, now)
	e.lastFailure = stampOf(now)
	e.total++
	if h.detectOutageLocked(id, now) {
		return
	}
	e.failCount++
	e.nextRetryAt = stampOf(now.Add(backoffBase << min(e.failCount-1, maxBackoffShift)))
}

func (h *healthTable) detectOutageLocked(id a2al.NodeID, now time.Time) bool {
	if h.outage {
		return true
	}
	if !h.anySuccess {
		return false // cold start: seed quality must not look like an outage
	}
	if len(h.recent) >= 16 {
		h.recent = h.recent[1:]
	}
	h.recent = append(h.recent, failNote{id: id, at: now})
	quiet := now.Sub(h.lastSuccess)
	// Distinct peers failing since our last success, within the quiet
	// window and within the correlation window. Being idle is not an
	// outage: it takes failures towards several peers.
	long, short := map[a2al.NodeID]struct{}{}, map[a2al.NodeID]struct{}{}
	for _, f := range h.recent {
		if !f.at.After(h.lastSuccess) {
			continue
		}
		if now.Sub(f.at) <= outageQuiet {
			long[f.id] = struct{}{}
		}
		if now.Sub(f.at) <= correlatedWindow {
			short[f.id] = struct{}{}
		}
	}
	distinct := long
	if (quiet > outageQuiet && len(long) >= 2) || (len(short) >= correlatedPeers && quiet > correlatedWindow) {
		h.outage = true
		h.outageSince = now
		h.outageEvents++
		// Undo the penalties of the failures that revealed the outage.
		for fid := range distinct {
			if p := h.m[fid]; p != nil && fid != id {
				if p.failCount > 0 {
					p.failCount--
				}
				p.nextRetryAt = 0
			}
		}
		h.recent = h.recent[:0]
		return true
	}
	return false
}

// recordProbeFailure: a dedicated maintenance probe failed. The probe's own
// failure was already counted by the RPC; this keeps probes from pushing
// peers into long back-off.
func (n *Node) recordProbeFailure(id a2al.NodeID) {
	now := n.now()
	h := &n.health
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.m[id]
	if e == nil {
		return
	}
	if next := e.nextRetryAt.Time(); next.After(now) {
		e.nextRetryAt = stampOf(now.Add(next.Sub(now) / 2))
	} else {
		e.nextRetryAt = 0
	}
}

func (n *Node) noteInbound(id a2al.NodeID) {
	now := n.now()
	h := &n.health
	h.mu.Lock()
	h.entryLocked(id, now).lastInbound = stampOf(now)
	h.mu.Unlock()
}

func (n *Node) inOutage() bool {
	n.health.mu.RLock()
	defer n.health.mu.RUnlock()
	return n.health.outage
}

// PeerHealthOf returns the observed health of a peer. A peer that sent us
// anything in the last 5 minutes is never reported Bad.
func (n *Node) PeerHealthOf(id a2al.NodeID) PeerHealthState {
	h := &n.health
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.stateLocked(id, n.now())
}

func (h *healthTable) stateLocked(id a2al.NodeID, now time.Time) PeerHealthState {
	e := h.m[id]
	if e == nil {
		return PeerHealthUnknown
	}
	if e.failCount >= badHealthThreshold {
		if !e.lastInbound.IsZero() && now.Sub(e.lastInbound.Time()) < inboundFresh {
			return PeerHealthUnknown
		}
		return PeerHealthBad
	}
	if !e.lastSuccess.IsZero() {
		return PeerHealthGood
	}
	return PeerHealthUnknown
}

// PeerAllowContact reports whether the peer's global back-off has expired.
func (n *Node) PeerAllowContact(id a2al.NodeID) bool {
	h := &n.health
	h.mu.RLock()
	defer h.mu.RUnlock()
	e := h.m[id]
	return e == nil || e.nextRetryAt.IsZero() || !n.now().Before(e.nextRetryAt.Time())
}

// PeerRTT returns the last measured RTT of the peer at addr, 0 if unknown.
func (n *Node) PeerRTT(addr net.Addr) time.Duration {
	id, ok := n.book.idOf(addr)
	if !ok {
		return 0
	}
	h := &n.health
	h.mu.RLock()
	defer h.mu.RUnlock()
	if e := h.m[id]; e != nil {
		return e.rtt
	}
	return 0
}

// IsPunching reports whether a punch attempt for id is in flight (it
// expires after 2 minutes if the punch layer never reports back).
func (n *Node) IsPunching(id a2al.NodeID) bool {
	h := &n.health
	h.mu.RLock()
	defer h.mu.RUnlock()
	e := h.m[id]
	return e != nil && !e.punchingSince.IsZero() && n.now().Sub(e.punchingSince.Time()) < punchingTimeout
}

// states returns the health state of each id, read under one lock.
func (h *healthTable) states(ids []a2al.NodeID, now time.Time) []PeerHealthState {
	out := make([]PeerHealthState, len(ids))
	h.mu.RLock()
	defer h.mu.RUnlock()
	for i, id := range ids {
		out[i] = h.stateLocked(id, now)
	}
	return out
}

// beginPunch marks a punch towards id as in flight unless one already is
// or, for a speculative punch, the peer's back-off ends within
// punchMinBackoff (the anti-jitter gate). It reports whether to punch.
func (h *healthTable) beginPunch(id a2al.NodeID, speculative bool, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.entryLocked(id, now)
	if !e.punchingSince.IsZero() && now.Sub(e.punchingSince.Time()) < punchingTimeout {
		return false
	}
	if speculative && !e.nextRetryAt.IsZero() && e.nextRetryAt.Time().Sub(now) < punchMinBackoff {
		return false
	}
	e.punchingSince = stampOf(now)
	return true
}

// endPunch clears id's in-flight punch; noAgent (the peer answered that no
// agent lives there) marks it Bad until its next success.
func (h *healthTable) endPunch(id a2al.NodeID, noAgent bool, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.m[id]
	if e != nil {
		e.punchingSince = 0
	}
	if !noAgent {
		return
	}
	if e == nil {
		e = h.entryLocked(id, now)
	}
	e.failCount = max(e.failCount, badHealthThreshold)
	e.lastFailure = stampOf(now)
}

// stats returns the number of tracked peers and the outage state, for
// /debug/health.
func (h *healthTable) stats() (entries int, outage bool, outageEvents uint64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.m), h.outage, h.outageEvents
}
