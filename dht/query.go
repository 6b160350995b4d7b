package dht

import (
	"bytes"
	"context"
	"errors"
	"net"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht/internal/routing"
	"github.com/a2alnode/a2al/protocol"
)

// Query engine parameters. The engine keeps alpha RPCs in flight and
// launches the next one the moment an answer arrives; it never waits on a
// fixed stagger. An RPC slower than its adaptive timeout is handed off: its
// slot is freed but the RPC keeps running until queryHardTimeout.
const (
	queryAlpha          = 5
	queryAlphaFast      = 3                     // tiny RTTs: the lookup is CPU-bound and fewer wasted RPCs win
	queryFastRTT        = 10 * time.Millisecond // global smoothed RTT below which queryAlphaFast is used
	querySoftTimeoutCap = 500 * time.Millisecond
	queryMaxOutstanding = 3 * queryAlpha
	queryMaxCands       = 256
	queryBadSlots       = 1 // peers with health Bad never hold more than this
	queryMaxRPCs        = 128
	// queryBeta: a node lookup (FindNode, bootstrap, bucket refill) ends
	// once this many of the closest candidates have answered; the rest of
	// the K it returns come from those answers (contacts the responders
	// verified themselves). Replica selection and value lookups without a
	// record keep the strict rule (all K closest answered), which also
	// proves each returned contact alive.
	queryBeta = 3
	// queryValueBeta: a value lookup with a hit ends once it holds a valid
	// record and this many of the closest live candidates have answered,
	// so a stale copy on a far node cannot win over the newer one the
	// closest nodes hold (docs/dht.md §9.1). Until it holds a record it
	// keeps the strict rule: "no record" needs all K.
	queryValueBeta = queryBeta
)

// Query runs iterative FIND_NODE / FIND_VALUE lookups.
type Query struct {
	Alpha   int           // informational; the engine adapts its own alpha
	Stagger time.Duration // informational; the engine does not stagger
	n       *Node
}

// NewQuery returns a query helper bound to n (nil for a nil node).
func NewQuery(n *Node) *Query {
	if n == nil {
		return nil
	}
	return &Query{Alpha: DefaultAlpha, Stagger: DefaultStagger, n: n}
}

type qState uint8

const (
	qNew qState = iota
	qInflight
	qSlow
	qDone
	qFailed
)

type qcand struct {
	ni         protocol.NodeInfo
	addr       net.Addr
	st         qState
	bad        bool
	c          *call
	soft, hard time.Time
}

type queryRun struct {
	n           *Node
	alpha       int
	target      a2al.NodeID
	value       bool
	recType     uint8
	hit         int
	cands       []*qcand // sorted by distance to target
	byID        map[a2al.NodeID]*qcand
	inflight    int
	outstanding int
	badInflight int
	ch          chan rpcResult
	records     map[string]protocol.SignedRecord
	rpcs        int
	beta        int // 0: strict termination (K closest answered)
	hitBeta     int // value lookups with a hit: closest answers needed once a record is held
	answered    int
	txBytes     int
	rxBytes     int
}

// LookupStats is the lookup's own traffic, excluding everything else the
// node sends or answers meanwhile; the simulator and benchmarks report it.
type LookupStats struct {
	RPCs          int // requests sent (each counts once; the engine never retries within a lookup)
	Answered      int // verified answers used
	BytesSent     int // datagram bytes of the requests
	BytesReceived int // datagram bytes of the answers used
}

func (q *queryRun) stats() LookupStats {
	return LookupStats{RPCs: q.rpcs, Answered: q.answered, BytesSent: q.txBytes, BytesReceived: q.rxBytes}
}

func (n *Node) newQueryRun(target a2al.NodeID, value bool, recType uint8, hit int) *queryRun {
	alpha := queryAlpha
	if s := n.health.globalSRTT(); s > 0 && s < queryFastRTT {
		alpha = queryAlphaFast
	}
	return &queryRun{
		n: n, alpha: alpha, target: target, value: value, recType: recType, hit: hit, hitBeta: queryValueBeta,
		byID:    make(map[a2al.NodeID]*qcand),
		ch:      make(chan rpcResult, queryMaxOutstanding+1),
		records: make(map[string]protocol.SignedRecord),
	}
}

// add admits a candidate once per lookup.
func (q *queryRun) add(ni protocol.NodeInfo, addr net.Addr) {
	n := q.n
	if addr == nil || ni.NodeID == n.id {
		return
	}
	if _, dup := q.byID[ni.NodeID]; dup {
		return
	}
	if n.IsPunching(ni.NodeID) || n.isHairpin(addr) {
		return
	}
	if len(q.cands) >= queryMaxCands && !a2al.Closer(ni.NodeID, q.cands[len(q.cands)-1].ni.NodeID, q.target) {
		return
	}
	c := &qcand{ni: ni, addr: addr, bad: n.PeerHealthOf(ni.NodeID) == PeerHealthBad}
	q.byID[ni.NodeID] = c
	i := len(q.cands)
	q.cands = append(q.cands, c)
	for i > 0 && a2al.Closer(c.ni.NodeID, q.cands[i-1].ni.NodeID, q.target) {
		q.cands[i] = q.cands[i-1]
		i--
	}
	q.cands[i] = c
	if len(q.cands) > queryMaxCands {
		last := q.cands[len(q.cands)-1]
		if last.st == qNew {
			q.cands = q.cands[:len(q.cands)-1]
		}
	}
}

// window returns the K closest candidates that are neither failed nor
// handed off as slow. With decided set it also leaves out Bad peers not yet
// tried: they get one slot at a time and are tried when it is free, but
// never hold the lookup open (with many dead peers in the neighbourhood
// that would serialise one hard timeout per dead peer).
func (q *queryRun) window(decided bool, fn func(*qcand) bool) {
	k := 0
	for _, c := range q.cands {
		if c.st == qFailed || c.st == qSlow || decided && c.bad && c.st == qNew {
			continue
		}
		if !fn(c) {
			return
		}
		if k++; k >= routing.K {
			return
		}
	}
}

func (q *queryRun) launch(ctx context.Context) {
	q.window(false, func(c *qcand) bool {
		if q.inflight >= q.alpha || q.outstanding >= queryMaxOutstanding || q.rpcs >= queryMaxRPCs {
			return false
		}
		if c.st != qNew || (c.bad && q.badInflight >= queryBadSlots) {
			return true
		}
		var body any = protocol.BodyFindNode{Target: q.target}
		if q.value {
			body = protocol.BodyFindValue{Target: q.target, RecType: q.recType}
		}
		call, size, err := q.n.startCall(ctx, c.addr, c.ni.NodeID, true, body, q.ch, c)
		if err != nil {
			c.st = qFailed
			q.n.recordFailure(c.ni.NodeID)
			return true
		}
		q.rpcs++
		q.txBytes += size
		now := time.Now()
		c.c = call
		c.st = qInflight
		// The soft timeout only hands the slot to the next candidate; the
		// RPC itself may still answer until the hard timeout.
		c.soft = now.Add(min(q.n.rpcTimeout(c.ni.NodeID, true), querySoftTimeoutCap))
		c.hard = now.Add(queryHardTimeout)
		q.inflight++
		q.outstanding++
		if c.bad {
			q.badInflight++
		}
		return true
	})
}

func (q *queryRun) finished() bool {
	// Nothing launchable and nothing outstanding: exhausted.
	return q.decided() || q.outstanding == 0
}

// decided reports whether the answers so far settle the lookup: a value
// lookup holding its hit once the hitBeta closest live candidates answered
// (the newest of their records wins, docs/dht.md §9.1), otherwise once the
// closest candidates that decide it (all K, or beta of them) answered.
func (q *queryRun) decided() bool {
	if q.value && q.hit > 0 && len(q.records) >= q.hit && q.firstAnswered(q.hitBeta) {
		return true
	}
	return q.closestAnswered()
}

// closestAnswered reports whether the closest candidates that decide the
// lookup (all K, or beta of them) have answered.
func (q *queryRun) closestAnswered() bool { return q.firstAnswered(q.beta) }

// firstAnswered reports whether the beta closest live candidates (all K
// for beta 0) have answered.
func (q *queryRun) firstAnswered(beta int) bool {
	all := true
	seen := 0
	q.window(true, func(c *qcand) bool {
		if c.st != qDone {
			all = false
			return false
		}
		seen++
		return beta == 0 || seen < beta
	})
	return all && seen > 0
}

func (q *queryRun) nextDeadline() time.Time {
	var next time.Time
	for _, c := range q.cands {
		var d time.Time
		switch c.st {
		case qInflight:
			d = c.soft
		case qSlow:
			d = c.hard
		default:
			continue
		}
		if next.IsZero() || d.Before(next) {
			next = d
		}
	}
	return next
}

func (q *queryRun) release(c *qcand) {
	if c.st == qInflight {
		q.inflight--
		if c.bad {
			q.badInflight--
		}
	}
	if c.st == qInflight || c.st == qSlow {
		q.outstanding--
	}
}

func (q *queryRun) onTimeouts(now time.Time) {
	for _, c := range q.cands {
		switch {
		case c.st == qInflight && !now.Before(c.hard), c.st == qSlow && !now.Before(c.hard):
			q.release(c)
			c.st = qFailed
			q.n.rpc.unregister(c.c)
			q.n.recordFailure(c.ni.NodeID)
			q.n.book.dropIfRank(c.ni.NodeID, rankHearsay)
			if c.bad {
				q.n.triggerPunch(c.ni.NodeID, PunchPriorityLowest)
			}
		case c.st == qInflight && !now.Before(c.soft):
			q.inflight--
			if c.bad {
				q.badInflight-- // a slow Bad peer frees its slot too
			}
			c.st = qSlow
		}
	}
}

func (q *queryRun) onResult(r rpcResult) {
	c, _ := r.c.tag.(*qcand)
	if c == nil || q.byID[c.ni.NodeID] != c {
		return
	}
	q.release(c)
	c.st = qDone
	q.answered++
	q.rxBytes += r.size
	n := q.n
	n.cnt.rpcOK.Add(1)
	id := n.onRPCSuccess(r)
	if !r.path.punched() {
		n.book.bind(id, c.addr, rankAnswered)
		n.tabAddDirect(contactFor(r.msg.SenderAddr, id, c.addr), c.addr, false)
	}
	var nodes []protocol.NodeInfo
	switch b := r.msg.Body.(type) {
	case protocol.BodyFindNodeResp:
		nodes = b.Nodes
		n.observed(id, c.addr, b.ObservedAddr)
	case protocol.BodyFindValueResp:
		nodes = b.Nodes
		n.observed(id, c.addr, b.ObservedAddr)
		recs := b.Records
		if len(recs) == 0 && b.Record != nil {
			recs = []protocol.SignedRecord{*b.Record}
		}
		for _, rec := range recs {
			q.mergeRecord(rec)
		}
	}
	for _, ni := range nodes {
		if dial := n.absorbHearsay(ni); dial != nil {
			q.add(ni, dial)
		}
	}
}

// mergeRecord keeps a network record if it verifies, matches the filter,
// is bound to the queried key and passes RecordAuth.
func (q *queryRun) mergeRecord(rec protocol.SignedRecord) {
	if q.recType != 0 && rec.RecType != q.recType {
		return
	}
	k := dedupeKey(rec)
	old, held := q.records[k]
	if held && sameRecord(rec, old) {
		return // the holders near the key all answer with the same record: verified once
	}
	if !q.n.acceptRecord(q.target, rec) {
		return
	}
	if held && !protocol.RecordIsNewer(rec, old) {
		return
	}
	if len(q.records) >= maxQueryRecords {
		return
	}
	q.records[k] = rec
}

const maxQueryRecords = 1024

// sameRecord reports whether a and b are the same signed record, byte for
// byte in every signed field and the signature.
func sameRecord(a, b protocol.SignedRecord) bool {
	return a.Address == b.Address && a.RecType == b.RecType && a.Seq == b.Seq && a.Timestamp == b.Timestamp && a.TTL == b.TTL &&
		bytes.Equal(a.Signature, b.Signature) && bytes.Equal(a.Pubkey, b.Pubkey) &&
		bytes.Equal(a.Payload, b.Payload) && bytes.Equal(a.Delegation, b.Delegation)
}

func (n *Node) acceptRecord(key a2al.NodeID, rec protocol.SignedRecord) bool {
	now := n.now()
	if protocol.VerifySignedRecord(rec, now) != nil {
		return false
	}
	switch protocol.RecordCategory(rec.RecType) {
	case protocol.CategoryTopic, protocol.CategoryMailbox:
	default:
		if a2al.NodeIDFromAddress(rec.Address) != key {
			return false
		}
	}
	return n.auth == nil || n.auth(key, rec, now) == nil
}

func dedupeKey(r protocol.SignedRecord) string {
	switch protocol.RecordCategory(r.RecType) {
	case protocol.CategoryTopic:
		return "t:" + string(r.Pubkey)
	case protocol.CategoryMailbox:
		return "m:" + string(r.Pubkey) + "\x00" + string(r.Payload)
	default:
		return "s:" + string(r.Address[:]) + "\x00" + string([]byte{r.RecType})
	}
}

// run executes the lookup until the K closest live candidates answered, a
// value hit, the context ends or the node closes.
func (q *queryRun) run(ctx context.Context) {
	n := q.n
	if !n.started.Load() {
		n.Start()
	}
	n.tabMu.RLock()
	seeds := n.tab.Nearest(q.target, 2*routing.K, nil)
	n.tabMu.RUnlock()
	for _, s := range seeds {
		addr, _ := n.book.get(s.Info.NodeID)
		if addr == nil && s.Info.Port != 0 {
			addr = &net.UDPAddr{IP: s.Info.IP, Port: int(s.Info.Port)}
		}
		q.add(s.Info, addr)
	}
	var timer *time.Timer
	defer func() {
		q.noteLookupDensity()
		if timer != nil {
			timer.Stop()
		}
		for _, c := range q.cands {
			if c.st == qInflight || c.st == qSlow {
				n.rpc.unregister(c.c)
			}
		}
	}()
	for {
		// A lookup can be settled before launching anything more.
		if q.decided() {
			return
		}
		q.launch(ctx)
		if q.finished() {
			return
		}
		next := q.nextDeadline()
		wait := time.Until(next)
		if wait < 0 {
			wait = 0
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case r := <-q.ch:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			q.onResult(r)
		case now := <-timer.C:
			q.onTimeouts(now)
		case <-ctx.Done():
			return
		case <-n.ctx.Done():
			return
		}
	}
}

// closest returns the answered candidates by distance, padded with
// not-yet-failed ones, at most K. After a beta-terminated lookup it is the K
// closest candidates that did not fail (the closest of them answered).
func (q *queryRun) closest() []protocol.NodeInfo {
	out := make([]protocol.NodeInfo, 0, routing.K)
	if q.beta > 0 {
		for _, c := range q.cands {
			if c.st != qFailed && len(out) < routing.K {
				out = append(out, c.ni)
			}
		}
		return out
	}
	for _, c := range q.cands {
		if c.st == qDone && len(out) < routing.K {
			out = append(out, c.ni)
		}
	}
	if len(out) < routing.K {
		for _, c := range q.cands {
			if c.st != qDone && c.st != qFailed && len(out) < routing.K {
				out = append(out, c.ni)
			}
		}
		sortInfos(out, q.target)
	}
	return out
}

func (q *queryRun) recordList() []protocol.SignedRecord {
	out := make([]protocol.SignedRecord, 0, len(q.records))
	for _, r := range q.records {
		out = append(out, r)
	}
	return out
}

// FindNode runs an iterative FIND_NODE and returns the K closest nodes
// found (those that answered first).
func (q *Query) FindNode(ctx context.Context, target a2al.NodeID) ([]protocol.NodeInfo, error) {
	if q == nil || q.n == nil {
		return nil, errNilNode
	}
	r := q.n.newQueryRun(target, false, 0, 0)
	r.beta = queryBeta
	r.run(ctx)
	return r.closest(), nil
}

// FindNodeWithStats is FindNode that also reports the lookup's own RPCs
// and bytes (simulator, benchmarks).
func (q *Query) FindNodeWithStats(ctx context.Context, target a2al.NodeID) ([]protocol.NodeInfo, LookupStats, error) {
	if q == nil || q.n == nil {
		return nil, LookupStats{}, errNilNode
	}
	r := q.n.newQueryRun(target, false, 0, 0)
	r.beta = queryBeta
	r.run(ctx)
	return r.closest(), r.stats(), nil
}

func (q *Query) findNodeStats(ctx context.Context, target a2al.NodeID) ([]protocol.NodeInfo, LookupStats) {
	got, st, _ := q.FindNodeWithStats(ctx, target)
	return got, st
}

// localValid returns local records at target that verify and pass the
// authority policy.
func (n *Node) localValid(target a2al.NodeID, recType uint8) []protocol.SignedRecord {
	var out []protocol.SignedRecord
	for _, r := range n.store.GetAll(target, recType, n.now()) {
		if n.acceptRecord(target, r) {
			out = append(out, r)
		}
	}
	return out
}

// FindRecords returns valid local records at target if any, else runs an
// iterative FIND_VALUE that stops once it holds a valid record and the
// closest live candidates answered (docs/dht.md §9.1); the newest record
// of each slot is kept. Records found on the network are cached locally.
func (q *Query) FindRecords(ctx context.Context, target a2al.NodeID, recType uint8) ([]protocol.SignedRecord, error) {
	recs, _, err := q.FindRecordsWithStats(ctx, target, recType)
	return recs, err
}

// FindRecordsWithStats is FindRecords that also reports the lookup's own
// traffic (zero when the local store answered).
func (q *Query) FindRecordsWithStats(ctx context.Context, target a2al.NodeID, recType uint8) ([]protocol.SignedRecord, LookupStats, error) {
	if q == nil || q.n == nil {
		return nil, LookupStats{}, errNilNode
	}
	if local := q.n.localValid(target, recType); len(local) > 0 {
		return local, LookupStats{}, nil
	}
	r := q.n.newQueryRun(target, true, recType, 1)
	r.run(ctx)
	recs := r.recordList()
	if len(recs) == 0 {
		if err := ctx.Err(); err != nil {
			return nil, r.stats(), err
		}
		return nil, r.stats(), ErrNoMatchingRecords
	}
	now := q.n.now()
	for _, rec := range recs {
		_ = q.n.store.Put(target, rec, now)
	}
	return recs, r.stats(), nil
}

// AggregateRecords queries the network (no local fast path) until the K
// closest nodes answered and merges their records with the local ones.
func (q *Query) AggregateRecords(ctx context.Context, target a2al.NodeID, recType uint8) ([]protocol.SignedRecord, error) {
	if q == nil || q.n == nil {
		return nil, errNilNode
	}
	r := q.n.newQueryRun(target, true, recType, 0)
	for _, rec := range q.n.localValid(target, recType) {
		r.mergeRecord(rec)
	}
	r.run(ctx)
	recs := r.recordList()
	if len(recs) == 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, ErrNoMatchingRecords
	}
	return recs, nil
}

// Resolve finds the endpoint record of target.
func (q *Query) Resolve(ctx context.Context, target a2al.NodeID) (*protocol.EndpointRecord, error) {
	recs, err := q.FindRecords(ctx, target, protocol.RecTypeEndpoint)
	if errors.Is(err, ErrNoMatchingRecords) {
		return nil, ErrNoEndpoint
	}
	if err != nil {
		return nil, err
	}
	var best *protocol.SignedRecord
	for i := range recs {
		if recs[i].RecType != protocol.RecTypeEndpoint {
			continue
		}
		if best == nil || protocol.RecordIsNewer(recs[i], *best) {
			best = &recs[i]
		}
	}
	if best == nil {
		return nil, ErrNoEndpoint
	}
	er, err := protocol.ParseEndpointRecord(*best)
	if err != nil {
		return nil, ErrNoEndpoint
	}
	return er, nil
}

func routingContact(ni protocol.NodeInfo, dial net.Addr) routing.Contact {
	return routing.Contact{Info: ni, Subnet: subnetOf(ni, dial)}
}
