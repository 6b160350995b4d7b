package dht

import (
	"context"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht/internal/routing"
	"github.com/a2alnode/a2al/protocol"
)

// Replication parameters (docs/dht.md §11, with the docs/dht.md §17.2 fixes).
const (
	nRep               = 8
	repHardCap         = routing.K
	probeInitDelay     = 30 * time.Second
	probeMaxDelay      = time.Hour
	probeBadDelay      = 30 * time.Minute // grace window before evicting a bad replica
	probeTick          = 15 * time.Second
	storeRPCTimeout    = 2 * time.Second
	probeRPCTimeout    = 2 * time.Second
	renewLookupTimeout = 15 * time.Second
	maxRepSets         = 4096
	storeParallel      = nRep // a fill round of nRep new replicas goes out at once
	maxProbesPerTick   = 64
	noAddrEvictFails   = 4 // a member without a dial address is dropped (docs/reference-defects.md W-21)
)

type repKey struct{ key, pub a2al.NodeID }

type repMember struct {
	confirmedAt, badSince, nextProbeAt time.Time
	nextProbeDelay                     time.Duration
	failCount                          int
	punched, probing                   bool
	held                               protocol.SignedRecord // last record it confirmed
}

// repSet tracks where one record (storeKey, publisher) is replicated.
// Members confirmed after epoch (the start of the last completed renewal)
// are "active"; the gap-fill logic counts active, non-bad members.
type repSet struct {
	mu      sync.Mutex
	k       repKey
	rec     protocol.SignedRecord
	members map[a2al.NodeID]*repMember
	// former: nodes that confirmed a record and then left members
	// (rebalanced out), with the record they hold. They still answer
	// lookups with it, so a newer record is sent to them once
	// (docs/dht.md §11, "Replacing a record"). At most repHardCap.
	former   map[a2al.NodeID]protocol.SignedRecord
	renewing bool
	dirty    bool // a newer record arrived during a renewal: run again
	removed  bool
	epoch    time.Time
}

type replState struct {
	mu   sync.Mutex
	sets map[repKey]*repSet
}

func (r *replState) init() { r.sets = make(map[repKey]*repSet) }

func recordExpired(rec protocol.SignedRecord, now time.Time) bool {
	return int64(rec.Timestamp)+int64(rec.TTL) < now.Unix()
}

func (n *Node) getRepSet(k repKey, create bool) *repSet {
	r := &n.repl
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sets[k]
	if s == nil && create {
		if len(r.sets) >= maxRepSets {
			now := n.now()
			for kk, ss := range r.sets {
				ss.mu.Lock()
				exp := recordExpired(ss.rec, now)
				ss.mu.Unlock()
				if exp {
					delete(r.sets, kk)
				}
			}
			if len(r.sets) >= maxRepSets {
				return nil
			}
		}
		s = &repSet{k: k, members: make(map[a2al.NodeID]*repMember), former: make(map[a2al.NodeID]protocol.SignedRecord)}
		r.sets[k] = s
	}
	return s
}

func (n *Node) allRepSets() []*repSet {
	r := &n.repl
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*repSet, 0, len(r.sets))
	for _, s := range r.sets {
		out = append(out, s)
	}
	return out
}

// scheduleReplicate records rec as the set's current record and makes sure
// a renewal runs; a renewal already running picks the new record up when
// it finishes (coalescing, docs/reference-defects.md W-19).
func (n *Node) scheduleReplicate(storeKey a2al.NodeID, rec protocol.SignedRecord) {
	s := n.getRepSet(repKey{key: storeKey, pub: a2al.NodeIDFromAddress(rec.Address)}, true)
	if s == nil {
		n.log.Warn("dht: too many replication sets; not replicating", "key", storeKey)
		return
	}
	s.mu.Lock()
	s.rec = rec
	s.removed = false
	if s.renewing {
		s.dirty = true
		s.mu.Unlock()
		return
	}
	s.renewing = true
	s.mu.Unlock()
	if !n.submit(func() { n.renew(s) }) {
		s.mu.Lock()
		s.renewing = false
		s.mu.Unlock()
	}
}

// renew re-STOREs the record on the healthy members and on former holders
// of an older one, then looks up the key's neighbourhood and fills gaps
// with the closest new peers.
func (n *Node) renew(s *repSet) {
	for {
		start := n.now()
		s.mu.Lock()
		rec, removed := s.rec, s.removed
		s.dirty = false
		s.mu.Unlock()
		if removed || n.ctx.Err() != nil || recordExpired(rec, start) {
			if recordExpired(rec, start) {
				n.dropRepSet(s)
			}
			break
		}
		s.mu.Lock()
		var renewIDs []a2al.NodeID
		var badIDs []a2al.NodeID
		for id, m := range s.members {
			if m.badSince.IsZero() {
				renewIDs = append(renewIDs, id)
			} else {
				badIDs = append(badIDs, id)
				// Keep the grace window: only re-probe once it elapsed.
				if start.Sub(m.badSince) >= probeBadDelay {
					m.nextProbeAt = start
				}
			}
		}
		s.mu.Unlock()
		for _, id := range badIDs {
			n.triggerPunch(id, PunchPriorityHigh)
		}
		peers := make([]protocol.NodeInfo, 0, len(renewIDs))
		for _, id := range renewIDs {
			peers = append(peers, protocol.NodeInfo{NodeID: id})
		}
		// Known holders first: a corrected record must not wait for the
		// lookup, which can take seconds (docs/dht.md §11).
		n.storeBatch(s, rec, peers, true)
		n.storeBatch(s, rec, s.formerBehind(rec, start), false)
		n.fill(s, rec, n.neighbourhood(s.k.key))
		s.mu.Lock()
		s.epoch = start
		again := s.dirty && !s.removed
		if !again {
			s.renewing = false
		}
		s.mu.Unlock()
		if !again {
			return
		}
	}
	s.mu.Lock()
	s.renewing = false
	s.mu.Unlock()
}

// neighbourhood returns the candidates for replicas of key: an iterative
// lookup until the K closest live candidates answered (bounded by
// renewLookupTimeout), or the local table when passive. Ending it once the
// 3 closest answered, like FindNode, halved publish→replicated but, with
// every publisher renewing at once after 30% churn, failed a third to two
// thirds of the resolves sampled next (docs/dht-benchmarks.md, "Resolve
// and publish"), so it stays strict.
func (n *Node) neighbourhood(key a2al.NodeID) []protocol.NodeInfo {
	if !n.passive.Load() {
		ctx, cancel := context.WithTimeout(n.ctx, renewLookupTimeout)
		defer cancel()
		r := n.newQueryRun(key, false, 0, 0)
		r.run(ctx)
		if got := r.closest(); len(got) > 0 {
			return got
		}
	}
	return n.tabNearestHealthy(key, routing.K)
}

// tabNearestHealthy: the nearest table entries, Good then Unknown then Bad.
func (n *Node) tabNearestHealthy(target a2al.NodeID, k int) []protocol.NodeInfo {
	g := n.nearestGrouped(target, nil, k, func(_ bool, st PeerHealthState) int {
		switch st {
		case PeerHealthGood:
			return 0
		case PeerHealthUnknown:
			return 1
		default:
			return 2
		}
	})
	out := append(append(g[0], g[1]...), g[2]...)
	if len(out) > k {
		out = out[:k]
	}
	return out
}

// nearestGrouped takes the 4K table entries nearest target that pass keep
// (nil keeps all) and sorts them, in distance order, into up to three
// groups of at most k by rank(verified, health); a rank outside 0..2 drops
// the entry.
func (n *Node) nearestGrouped(target a2al.NodeID, keep func(*routing.Contact) bool, k int, rank func(verified bool, st PeerHealthState) int) [3][]protocol.NodeInfo {
	n.tabMu.RLock()
	cs := n.tab.Nearest(target, 4*routing.K, keep)
	n.tabMu.RUnlock()
	ids := make([]a2al.NodeID, len(cs))
	for i := range cs {
		ids[i] = cs[i].Info.NodeID
	}
	states := n.health.states(ids, n.now())
	var groups [3][]protocol.NodeInfo
	for i := range cs {
		g := rank(cs[i].Verified(), states[i])
		if g >= 0 && g < len(groups) && len(groups[g]) < k {
			groups[g] = append(groups[g], cs[i].Info)
		}
	}
	return groups
}

// fill stores rec on new peers from cands, all STOREs of a round in
// parallel, until the set has nRep active members; with a full set only
// peers closer than the farthest member are tried. A round short of that
// (candidates that did not answer or refused) is followed by one with the
// next candidates, each tried once.
func (n *Node) fill(s *repSet, rec protocol.SignedRecord, cands []protocol.NodeInfo) {
	sorted := append([]protocol.NodeInfo(nil), cands...)
	sortInfos(sorted, s.k.key)
	tried := make(map[a2al.NodeID]bool, len(sorted))
	for {
		pick := s.fillPick(sorted, tried, n.id)
		if len(pick) == 0 {
			return
		}
		var ok []protocol.NodeInfo
		for _, c := range pick {
			tried[c.NodeID] = true
			if n.PeerAllowContact(c.NodeID) {
				ok = append(ok, c)
			}
		}
		n.storeBatch(s, rec, ok, true)
		if n.ctx.Err() != nil {
			return
		}
	}
}

// fillPick chooses the next untried candidates (sorted closest first) for
// the set: as many as it lacks active members, plus any closer than its
// farthest member, within repHardCap.
func (s *repSet) fillPick(sorted []protocol.NodeInfo, tried map[a2al.NodeID]bool, self a2al.NodeID) []protocol.NodeInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed {
		return nil
	}
	active := 0
	var far a2al.NodeID
	hasFar := false
	for id, m := range s.members {
		if m.badSince.IsZero() {
			active++
		}
		if !hasFar || a2al.Closer(far, id, s.k.key) {
			far, hasFar = id, true
		}
	}
	room := repHardCap - len(s.members)
	need := nRep - active
	var pick []protocol.NodeInfo
	for _, c := range sorted {
		if len(pick) >= room {
			break
		}
		if _, ok := s.members[c.NodeID]; ok || c.NodeID == self || tried[c.NodeID] {
			continue
		}
		if need <= 0 && !(hasFar && a2al.Closer(c.NodeID, far, s.k.key)) {
			continue
		}
		pick = append(pick, c)
		need--
	}
	return pick
}

// storeBatch STOREs rec on peers in parallel (bounded) and applies the
// answers to the set: to its members, or (member false) to its former
// holders, which an answer retires.
func (n *Node) storeBatch(s *repSet, rec protocol.SignedRecord, peers []protocol.NodeInfo, member bool) {
	if len(peers) == 0 {
		return
	}
	key := s.k.key
	if key == a2al.NodeIDFromAddress(rec.Address) {
		key = a2al.NodeID{} // omit the key field for sovereign records (compat)
	}
	sem := make(chan struct{}, storeParallel)
	var wg sync.WaitGroup
	for _, p := range peers {
		addr := n.dialAddrOf(p)
		if addr == nil || p.NodeID == n.id || n.isHairpin(addr) {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-n.ctx.Done():
			wg.Wait()
			return
		}
		wg.Add(1)
		id := p.NodeID
		if !n.spawn(func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(n.ctx, storeRPCTimeout)
			r, err := n.roundTripTo(ctx, addr, id, true, true, protocol.BodyStore{Record: rec, Key: keyPtr(key)})
			cancel()
			if err != nil {
				return
			}
			n.onRPCSuccess(r)
			resp, _ := r.msg.Body.(protocol.BodyStoreResp)
			if member {
				n.applyStore(s, id, rec, resp)
			} else {
				s.mu.Lock()
				delete(s.former, id)
				s.mu.Unlock()
			}
		}) {
			wg.Done()
			<-sem
		}
	}
	wg.Wait()
}

func keyPtr(k a2al.NodeID) *a2al.NodeID {
	if k.IsZero() {
		return nil
	}
	return &k
}

func (n *Node) dialAddrOf(p protocol.NodeInfo) net.Addr {
	if a, _ := n.book.get(p.NodeID); a != nil {
		return a
	}
	if p.Port != 0 && (len(p.IP) == 4 || len(p.IP) == 16) {
		return &net.UDPAddr{IP: p.IP, Port: int(p.Port)}
	}
	return nil
}

// applyStore updates membership from a STORE answer: stored (or already
// had) confirms; RecordInvalid keeps an existing member (the record may have
// raced with a republish); a policy refusal removes it.
func (n *Node) applyStore(s *repSet, id a2al.NodeID, rec protocol.SignedRecord, resp protocol.BodyStoreResp) {
	now := n.now()
	n.tabMu.RLock()
	punched := n.tab.IsPunched(id)
	n.tabMu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed {
		return
	}
	m := s.members[id]
	if !resp.Stored {
		if resp.Reason != protocol.StoreReasonRecordInvalid && m != nil {
			delete(s.members, id)
		}
		return
	}
	if m == nil {
		m = &repMember{nextProbeDelay: probeInitDelay, nextProbeAt: now.Add(probeInitDelay)}
		s.members[id] = m
	}
	m.confirmedAt = now
	m.held = rec
	delete(s.former, id)
	m.failCount = 0
	m.badSince = time.Time{}
	m.punched = punched
	s.rebalanceLocked()
}

// rebalanceLocked keeps the nRep closest members plus the nRep closest
// non-punched members (at most 2*nRep = K).
func (s *repSet) rebalanceLocked() {
	if len(s.members) <= nRep {
		return
	}
	ids := make([]a2al.NodeID, 0, len(s.members))
	for id := range s.members {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return a2al.Closer(ids[i], ids[j], s.k.key) })
	keep := map[a2al.NodeID]bool{}
	direct := 0
	for i, id := range ids {
		if i < nRep {
			keep[id] = true
		}
		if !s.members[id].punched && direct < nRep {
			keep[id] = true
			direct++
		}
	}
	for _, id := range ids {
		if !keep[id] {
			s.addFormerLocked(id, s.members[id].held)
			delete(s.members, id)
		}
	}
}

// addFormerLocked remembers that id holds rec though it left the set;
// when full, the holder farthest from the key is forgotten.
func (s *repSet) addFormerLocked(id a2al.NodeID, rec protocol.SignedRecord) {
	if len(s.former) >= repHardCap {
		var far a2al.NodeID
		first := true
		for f := range s.former {
			if first || a2al.Closer(far, f, s.k.key) {
				far, first = f, false
			}
		}
		if !a2al.Closer(id, far, s.k.key) {
			return
		}
		delete(s.former, far)
	}
	s.former[id] = rec
}

// formerBehind returns the former holders whose record rec replaces and
// forgets those whose record expired.
func (s *repSet) formerBehind(rec protocol.SignedRecord, now time.Time) []protocol.NodeInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []protocol.NodeInfo
	for id, held := range s.former {
		switch {
		case recordExpired(held, now):
			delete(s.former, id)
		case protocol.RecordIsNewer(rec, held):
			out = append(out, protocol.NodeInfo{NodeID: id})
		}
	}
	return out
}

func (n *Node) dropRepSet(s *repSet) {
	r := &n.repl
	r.mu.Lock()
	if r.sets[s.k] == s {
		delete(r.sets, s.k)
	}
	r.mu.Unlock()
	s.mu.Lock()
	s.removed = true
	s.mu.Unlock()
}

// replTick probes due replica members (one PING per peer per tick even
// when it holds replicas of several records) and restarts gap filling for
// short sets; expired sets are dropped (docs/reference-defects.md W-19).
func (n *Node) replTick() {
	now := n.now()
	due := map[a2al.NodeID][]*repSet{}
	for _, s := range n.allRepSets() {
		s.mu.Lock()
		if recordExpired(s.rec, now) {
			s.mu.Unlock()
			n.dropRepSet(s)
			continue
		}
		active := 0
		for id, m := range s.members {
			if m.badSince.IsZero() {
				active++
			}
			if m.probing || now.Before(m.nextProbeAt) {
				continue
			}
			if _, ok := due[id]; !ok && len(due) >= maxProbesPerTick {
				continue
			}
			m.probing = true
			due[id] = append(due[id], s)
		}
		short := active < nRep && !s.renewing
		s.mu.Unlock()
		if short {
			n.submit(func() { n.refill(s) })
		}
	}
	for id, sets := range due {
		id, sets := id, sets
		if !n.submit(func() { n.probeMember(id, sets) }) {
			for _, s := range sets {
				s.mu.Lock()
				if m := s.members[id]; m != nil {
					m.probing = false
				}
				s.mu.Unlock()
			}
		}
	}
}

func (n *Node) refill(s *repSet) {
	s.mu.Lock()
	rec, removed := s.rec, s.removed
	s.mu.Unlock()
	if removed || recordExpired(rec, n.now()) {
		return
	}
	n.fill(s, rec, n.tabNearestHealthy(s.k.key, routing.K))
}

func (n *Node) refillShortSets() {
	for _, s := range n.allRepSets() {
		s.mu.Lock()
		short := len(s.members) < nRep
		s.mu.Unlock()
		if short {
			n.refill(s)
		}
	}
}

// probeMember PINGs one replica holder and runs the member state machine
// in every set it belongs to: healthy -fail-> suspect (retry 30 s) -fail->
// bad (30 min grace, refill, Low punch) -fail after grace-> evicted.
// Failures during a local outage change nothing.
func (n *Node) probeMember(id a2al.NodeID, sets []*repSet) {
	addr, _ := n.book.get(id)
	ok := false
	if addr != nil {
		ctx, cancel := context.WithTimeout(n.ctx, probeRPCTimeout)
		r, err := n.roundTripTo(ctx, addr, id, true, true, protocol.BodyPing{Address: n.addr})
		cancel()
		if err == nil {
			n.onRPCSuccess(r)
			ok = true
		} else if n.ctx.Err() != nil {
			return
		}
	}
	outage := n.inOutage()
	if !ok && addr != nil && !outage {
		n.recordProbeFailure(id)
	}
	punch := false
	for _, s := range sets {
		evict, newlyBad := n.applyProbe(s, id, ok, addr != nil, outage)
		punch = punch || newlyBad
		if evict || newlyBad {
			s := s
			n.submit(func() { n.refill(s) })
		}
	}
	if punch {
		n.triggerPunch(id, PunchPriorityLow)
	}
}

func (n *Node) applyProbe(s *repSet, id a2al.NodeID, ok, hasAddr, outage bool) (evict, newlyBad bool) {
	now := n.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.members[id]
	if m == nil {
		return false, false
	}
	m.probing = false
	switch {
	case ok:
		m.failCount = 0
		m.badSince = time.Time{}
		if m.nextProbeDelay == 0 {
			m.nextProbeDelay = probeMaxDelay
		} else {
			m.nextProbeDelay = min(2*m.nextProbeDelay, probeMaxDelay)
		}
		m.nextProbeAt = now.Add(m.nextProbeDelay)
	case outage:
		m.nextProbeAt = now.Add(probeInitDelay)
	case !hasAddr:
		m.failCount++
		m.nextProbeAt = now.Add(probeInitDelay)
		evict = m.failCount >= noAddrEvictFails
	default:
		m.failCount++
		switch {
		case !m.badSince.IsZero():
			if now.Sub(m.badSince) >= probeBadDelay {
				evict = true
			} else {
				m.nextProbeAt = m.badSince.Add(probeBadDelay)
			}
		case m.failCount >= 2 && !(m.confirmedAt.After(s.epoch) && m.failCount == 2):
			// (A member confirmed in the current cycle gets one more retry:
			// a false "bad" right after sleep/wake is common.)
			m.badSince = now
			m.nextProbeAt = now.Add(probeBadDelay)
			newlyBad = true
		default:
			m.nextProbeAt = now.Add(probeInitDelay)
		}
	}
	if evict {
		delete(s.members, id)
	}
	return evict, newlyBad
}

// RepSetSize returns the number of replicas tracked for (storeKey,
// publisher), including members in the grace window; 0 if none.
func (n *Node) RepSetSize(storeKey, publisher a2al.NodeID) int {
	s := n.getRepSet(repKey{key: storeKey, pub: publisher}, false)
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.members)
}

// RemoveRepSetsForPublisher stops replicating every record of publisher;
// running renewals notice and stop applying results.
func (n *Node) RemoveRepSetsForPublisher(publisher a2al.NodeID) {
	r := &n.repl
	r.mu.Lock()
	var gone []*repSet
	for k, s := range r.sets {
		if k.pub == publisher {
			delete(r.sets, k)
			gone = append(gone, s)
		}
	}
	r.mu.Unlock()
	for _, s := range gone {
		s.mu.Lock()
		s.removed = true
		s.mu.Unlock()
	}
}
