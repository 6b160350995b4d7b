package signal

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/pion/stun"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/a2alnode/a2al"
)

// turnGate sits between the TURN server's sockets and pion's TURN logic. It
// sees every packet a client sends and every packet sent to a client, which
// is where per-node quotas and bandwidth are enforced without changing pion:
//
//   - an authenticated Allocate request reserves one of the node's
//     allocation slots (or is answered 486 here, never reaching pion);
//   - the success response confirms it, an error response or a refresh to
//     lifetime 0 frees it, and a slot whose lifetime ran out is swept;
//   - relayed data (ChannelData, Send and Data indications) is charged to
//     token buckets of the allocation, its node and the whole server, and
//     dropped when one is empty (a policer: QUIC's congestion control adapts);
//   - an allocation older than the lifetime cap relays nothing more and its
//     refreshes are dropped, so it ends at its current expiry.
//
// An allocation is identified by its client transport address (one
// allocation per 5-tuple, RFC 8656); the key includes the transport.
type turnGate struct {
	lim   TURNLimits
	auth  *TURNAuth
	realm string
	now   func() time.Time
	m     *turnMetrics

	mu        sync.Mutex
	allocs    map[string]*gateAlloc
	nodes     map[a2al.NodeID]*gateNode
	total     byteBucket
	lastSweep time.Time
}

type gateAlloc struct {
	node    a2al.NodeID
	created time.Time
	expires time.Time // pending: reservation deadline; else allocation expiry
	pending bool      // Allocate seen, success response not yet
	bw      byteBucket
}

type gateNode struct {
	allocs int
	bw     byteBucket
}

// pendingAllocWait bounds a reservation whose Allocate never got an answer.
const pendingAllocWait = 10 * time.Second

func newTURNGate(lim TURNLimits, auth *TURNAuth, realm string, now func() time.Time, m *turnMetrics) *turnGate {
	t := now()
	return &turnGate{lim: lim, auth: auth, realm: realm, now: now, m: m,
		allocs: map[string]*gateAlloc{}, nodes: map[a2al.NodeID]*gateNode{},
		total: newByteBucket(lim.TotalBandwidth, t), lastSweep: t}
}

// packet kinds the gate cares about.
const (
	pktOther = iota
	pktData
	pktAllocate
	pktRefresh
	pktAllocOK
	pktAllocErr
	pktRefreshOK
)

// classify looks at the first bytes only; m is decoded for STUN messages.
func classify(b []byte) (int, *stun.Message) {
	if len(b) >= 4 && b[0]&0xC0 == 0x40 { // ChannelData: channel 0x4000-0x7FFF
		return pktData, nil
	}
	if !stun.IsMessage(b) {
		return pktOther, nil
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return pktOther, nil
	}
	switch {
	case m.Type.Class == stun.ClassIndication && (m.Type.Method == stun.MethodSend || m.Type.Method == stun.MethodData):
		return pktData, m
	case m.Type == stun.NewType(stun.MethodAllocate, stun.ClassRequest):
		return pktAllocate, m
	case m.Type == stun.NewType(stun.MethodRefresh, stun.ClassRequest):
		return pktRefresh, m
	case m.Type == stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse):
		return pktAllocOK, m
	case m.Type == stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse):
		return pktAllocErr, m
	case m.Type == stun.NewType(stun.MethodRefresh, stun.ClassSuccessResponse):
		return pktRefreshOK, m
	}
	return pktOther, m
}

// inbound is called for each packet from a client. It returns whether pion
// should see it and, possibly, a reply to send the client instead.
func (g *turnGate) inbound(key string, b []byte) (pass bool, reply []byte) {
	kind, m := classify(b)
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	a := g.allocs[key]
	switch kind {
	case pktData:
		if a == nil || a.pending {
			// Every allocation pion makes was reserved here first, so data
			// without one is refused (fail closed: never relay unpoliced).
			g.m.dropped.WithLabelValues("no-allocation").Add(float64(len(b)))
			return false, nil
		}
		return g.charge(a, len(b), now, "in"), nil
	case pktRefresh:
		if a != nil && !a.pending && now.Sub(a.created) >= g.lim.AllocLifetime {
			g.m.dropped.WithLabelValues("lifetime").Add(float64(len(b)))
			return false, nil
		}
		return true, nil
	case pktAllocate:
		return g.reserve(key, a, m, now)
	}
	return true, nil
}

// reserve takes an allocation slot for an authenticated Allocate request.
// Unauthenticated, malformed or expired requests go on to pion, which
// answers them with 401 (its nonce/realm challenge) through the auth handler.
func (g *turnGate) reserve(key string, a *gateAlloc, m *stun.Message, now time.Time) (bool, []byte) {
	if a != nil {
		return true, nil // retransmission, or pion answers 437 allocation mismatch
	}
	var user stun.Username
	if user.GetFrom(m) != nil || !m.Contains(stun.AttrMessageIntegrity) {
		return true, nil
	}
	pass, id, err := g.auth.Check(user.String())
	if err != nil {
		return true, nil
	}
	integ := stun.NewLongTermIntegrity(user.String(), g.realm, pass)
	if integ.Check(m) != nil {
		return true, nil
	}
	g.sweep(now)
	n := g.nodes[id]
	if len(g.allocs) >= g.lim.MaxAllocs || (n != nil && n.allocs >= g.lim.MaxAllocsPerNode) {
		g.m.allocs.WithLabelValues("quota").Inc()
		reply, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID),
			stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
			stun.ErrorCodeAttribute{Code: stun.CodeAllocQuotaReached, Reason: []byte("Allocation Quota Reached")},
			integ, stun.Fingerprint)
		if err != nil {
			return false, nil
		}
		return false, reply.Raw
	}
	if n == nil {
		n = &gateNode{bw: newByteBucket(g.lim.NodeBandwidth, now)}
		g.nodes[id] = n
	}
	n.allocs++
	g.allocs[key] = &gateAlloc{node: id, created: now, expires: now.Add(pendingAllocWait), pending: true,
		bw: newByteBucket(g.lim.AllocBandwidth, now)}
	return true, nil
}

// outbound is called for each packet pion sends to a client; false drops it.
func (g *turnGate) outbound(key string, b []byte) bool {
	kind, m := classify(b)
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	a := g.allocs[key]
	if a == nil || (a.pending && kind == pktData) {
		if kind == pktData {
			g.m.dropped.WithLabelValues("no-allocation").Add(float64(len(b)))
			return false
		}
		return true
	}
	switch kind {
	case pktData:
		return g.charge(a, len(b), now, "out")
	case pktAllocOK:
		if a.pending {
			a.pending = false
			g.m.allocs.WithLabelValues("ok").Inc()
		}
		a.expires = now.Add(lifetimeOf(m))
	case pktAllocErr:
		if a.pending {
			g.m.allocs.WithLabelValues("refused").Inc()
			g.removeLocked(key, a)
		}
	case pktRefreshOK:
		if d := lifetimeOf(m); d > 0 {
			a.expires = now.Add(d)
		} else {
			g.removeLocked(key, a)
		}
	}
	return true
}

// lifetimeOf reads the LIFETIME attribute (RFC 8656 default 10 min if absent).
func lifetimeOf(m *stun.Message) time.Duration {
	v, err := m.Get(stun.AttrLifetime)
	if err != nil || len(v) != 4 {
		return 10 * time.Minute
	}
	return time.Duration(binary.BigEndian.Uint32(v)) * time.Second
}

// charge spends n bytes from the allocation's, its node's and the total
// byteBucket; dir is "in" (client to peer) or "out" (peer to client).
func (g *turnGate) charge(a *gateAlloc, n int, now time.Time, dir string) bool {
	reason := ""
	node := g.nodes[a.node]
	switch {
	case now.Sub(a.created) >= g.lim.AllocLifetime:
		reason = "lifetime"
	case !a.bw.ok(n, now):
		reason = "allocation"
	case node != nil && !node.bw.ok(n, now):
		reason = "node"
	case !g.total.ok(n, now):
		reason = "total"
	}
	if reason != "" {
		g.m.dropped.WithLabelValues(reason).Add(float64(n))
		return false
	}
	a.bw.take(n)
	if node != nil {
		node.bw.take(n)
	}
	g.total.take(n)
	g.m.relayed.WithLabelValues(dir).Add(float64(n))
	return true
}

// release forgets key's allocation (its TCP connection closed).
func (g *turnGate) release(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if a := g.allocs[key]; a != nil {
		g.removeLocked(key, a)
	}
}

// liveFor reports whether key holds a confirmed allocation of node id (an
// expired credential may still refresh it).
func (g *turnGate) liveFor(key string, id a2al.NodeID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	a := g.allocs[key]
	return a != nil && !a.pending && a.node == id && g.now().Before(a.expires)
}

func (g *turnGate) removeLocked(key string, a *gateAlloc) {
	delete(g.allocs, key)
	if n := g.nodes[a.node]; n != nil {
		if n.allocs--; n.allocs <= 0 {
			delete(g.nodes, a.node)
		}
	}
}

// sweep drops allocations pion has let expire (no packet tells us) and
// stale reservations, at most once a second.
func (g *turnGate) sweep(now time.Time) {
	if now.Sub(g.lastSweep) < time.Second {
		return
	}
	g.lastSweep = now
	for k, a := range g.allocs {
		if now.After(a.expires) {
			g.removeLocked(k, a)
		}
	}
}

// counts returns live (or reserved) allocations and nodes holding them.
func (g *turnGate) counts() (allocs, nodes int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sweep(g.now())
	return len(g.allocs), len(g.nodes)
}

// byteBucket is a token byteBucket in bytes; rate 0 means unlimited. The burst is one
// second of traffic, at least 64 KiB so a QUIC flight is never cut short.
type byteBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func newByteBucket(rate int64, now time.Time) byteBucket {
	b := byteBucket{rate: float64(rate), last: now}
	b.burst = max(b.rate, 64<<10)
	b.tokens = b.burst
	return b
}

func (b *byteBucket) ok(n int, now time.Time) bool {
	if b.rate <= 0 {
		return true
	}
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	return b.tokens >= float64(n)
}

func (b *byteBucket) take(n int) {
	if b.rate > 0 {
		b.tokens -= float64(n)
	}
}

// turnMetrics are the TURN server's Prometheus series.
type turnMetrics struct {
	allocs    *prometheus.CounterVec // allocation attempts by result
	relayed   *prometheus.CounterVec // relayed bytes by direction
	dropped   *prometheus.CounterVec // bytes dropped by the limit that hit
	authFails *prometheus.CounterVec // refused credentials by reason
}
