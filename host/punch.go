package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v2"
	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/clock"
	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
)

// punchTransport is the Host seen as dht.PunchTransport.
type punchTransport Host

var _ dht.PunchTransport = (*punchTransport)(nil)

// SendTo delivers a DHT message over the pooled connection; never blocks.
func (p *punchTransport) SendTo(ctx context.Context, id a2al.NodeID, msg []byte) (bool, error) {
	ok, err := p.pool.SendTo(ctx, id, msg)
	if ok && err == nil {
		p.m.modeBSent.Add(1)
	}
	return ok, err
}

// Punch enqueues an attempt; never blocks.
func (p *punchTransport) Punch(id a2al.NodeID, er *protocol.EndpointRecord, priority int) {
	p.sched.Enqueue(id, er, priority)
}

// HasConn reports whether a live pooled connection exists.
func (p *punchTransport) HasConn(id a2al.NodeID) bool { return p.pool.HasConn(id) }

// PunchRecord describes one finished punch (debug output and the demo).
type PunchRecord struct {
	Peer     string        `json:"peer"`
	Role     string        `json:"role"` // caller | callee
	Priority int           `json:"priority"`
	OK       bool          `json:"ok"`
	Reason   string        `json:"reason,omitempty"`
	Error    string        `json:"error,omitempty"` // the full error, for diagnosis
	Duration time.Duration `json:"duration_ns"`
	Path     string        `json:"path,omitempty"` // local->remote candidate types
	Remote   string        `json:"remote,omitempty"`
	Direct   bool          `json:"direct"`
	PathType PathType      `json:"path_type,omitempty"` // direct | punched | relayed (successes)
	NATPair  string        `json:"nat_pair"`            // our NAT type -> peer's published NAT type
	At       time.Time     `json:"at"`
}

// natPair labels an attempt with our classified NAT type and the peer's
// published one, for the per-pair punch metrics.
func (h *Host) natPair(peer a2al.NodeID, er *protocol.EndpointRecord) string {
	local := "unknown"
	if nr, ok := h.NATResult(); ok {
		local = string(nr.Type)
	}
	if er == nil {
		er = h.node.LocalEndpointRecord(peer, nil)
	}
	remote := "unknown"
	if er != nil {
		remote = natprobe.TypeFromWire(er.NatType).String()
	}
	return local + "->" + remote
}

const maxPunchLog = 128

func (h *Host) logPunch(r PunchRecord) {
	h.mu.Lock()
	if len(h.punchLog) >= maxPunchLog {
		h.punchLog = h.punchLog[1:]
	}
	h.punchLog = append(h.punchLog, r)
	h.mu.Unlock()
	res := "ok"
	if !r.OK {
		res = r.Reason
	}
	h.m.punches.WithLabelValues(r.Role, prioName(r.Priority), r.NATPair, res).Inc()
	if r.OK {
		h.m.punchDur.Observe(r.Duration.Seconds())
		if r.PathType != "" {
			h.noteConnection(r.Role, r.PathType, r.NATPair, r.Duration)
		}
	}
	h.log.Info("punch finished", "peer", r.Peer, "role", r.Role, "ok", r.OK, "reason", r.Reason, "err", r.Error,
		"took", r.Duration.Round(time.Millisecond), "path", r.Path, "path_type", r.PathType, "remote", r.Remote, "direct", r.Direct)
}

// Punches returns the recent punch outcomes, oldest first.
func (h *Host) Punches() []PunchRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]PunchRecord(nil), h.punchLog...)
}

func prioName(p int) string {
	switch p {
	case PrioHigh:
		return "high"
	case PrioLow:
		return "low"
	case PrioLowest:
		return "lowest"
	}
	return "none"
}

// failReason folds our error classes into the DHT's four-value enum.
func failReason(err error) (dht.PunchFailReason, string) {
	switch {
	case errors.Is(err, signal.ErrNoAgent):
		return dht.PunchFailNoAgent, "no-agent"
	case errors.Is(err, ErrICETimeout):
		return dht.PunchFailICETimeout, "ice-timeout"
	case errors.Is(err, ErrIdentity):
		return dht.PunchFailOther, "tls-identity"
	case errors.Is(err, ErrNoHub):
		return dht.PunchFailOther, "no-hub"
	case errors.Is(err, ErrSignaling):
		return dht.PunchFailOther, "signaling"
	case errors.Is(err, context.DeadlineExceeded):
		return dht.PunchFailICETimeout, "timeout"
	}
	return dht.PunchFailOther, "other"
}

// rejectPunch answers requests that never ran so the DHT clears its flag.
func (h *Host) rejectPunch(job PunchJob, why RejectReason) {
	name := "rejected-" + strings.ReplaceAll(string(why), " ", "-")
	if job.Record != nil {
		h.logPunch(PunchRecord{Peer: job.Record.Address.String(), Role: "caller", Priority: job.Priority,
			Reason: name, NATPair: h.natPair(job.ID, job.Record), At: h.cfg.Clock.Now()})
	} else {
		h.m.punches.WithLabelValues("caller", prioName(job.Priority), h.natPair(job.ID, nil), name).Inc()
	}
	h.node.OnPunchComplete(job.ID, a2al.Address{}, nil, false, false, dht.PunchFailOther)
	h.notifyPunch(job.ID, &PunchError{Reason: dht.PunchFailOther, Code: name,
		Err: fmt.Errorf("punch request not run: %s", why)})
}

// waitPunch registers for the outcome of the next punch with id (caller side,
// or the callee side that superseded it). done unregisters; the map holds
// one entry per waiting Dial/PunchPeer call.
func (h *Host) waitPunch(id a2al.NodeID) (ch chan error, done func()) {
	ch = make(chan error, 1)
	h.mu.Lock()
	h.punchWait[id] = append(h.punchWait[id], ch)
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		ws := h.punchWait[id]
		for i, c := range ws {
			if c == ch {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(h.punchWait, id)
		} else {
			h.punchWait[id] = ws
		}
	}
}

// notifyPunch hands a punch outcome (nil = connection pooled) to the waiters.
func (h *Host) notifyPunch(id a2al.NodeID, err error) {
	h.mu.Lock()
	ws := h.punchWait[id]
	delete(h.punchWait, id)
	h.mu.Unlock()
	for _, c := range ws {
		select {
		case c <- err:
		default:
		}
	}
}

var errSuperseded = errors.New("host: punch superseded by the peer's own attempt (glare)")

// runPunch is one caller-side attempt, run by the scheduler.
func (h *Host) runPunch(ctx context.Context, job PunchJob) Outcome {
	start := h.cfg.Clock.Now()
	rec := PunchRecord{Role: "caller", Priority: job.Priority, At: start}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PunchTimeout)
	defer cancel()
	r, err := h.punchOut(ctx, job, start)
	peer := r.peer
	rec.Peer, rec.Duration, rec.Path, rec.Direct = peer.String(), r.took, r.path, r.direct
	if rec.Duration == 0 {
		rec.Duration = h.cfg.Clock.Now().Sub(start)
	}
	rec.NATPair = h.natPair(job.ID, job.Record)
	if err == nil {
		rec.OK, rec.Remote = true, r.remote.String()
		rec.PathType = pathOf(r.relayed, r.direct)
		if r.path != "pooled" {
			h.pool.setPath(job.ID, nil, rec.PathType)
		}
		h.logPunch(rec)
		h.node.OnPunchComplete(job.ID, peer, r.remote, true, r.direct, dht.PunchFailNone)
		h.notifyPunch(job.ID, nil)
		return OutcomeSuccess
	}
	h.mu.Lock()
	_, incoming := h.calls[job.ID]
	h.mu.Unlock()
	if errors.Is(err, errSuperseded) || (incoming && ctx.Err() != nil) {
		rec.Reason = "superseded"
		h.logPunch(rec)
		return OutcomeSuperseded // the callee path reports for this peer
	}
	pe := newPunchError(err)
	rec.Reason, rec.Error = pe.Code, err.Error()
	h.logPunch(rec)
	h.node.OnPunchComplete(job.ID, peer, nil, false, false, pe.Reason)
	h.notifyPunch(job.ID, pe)
	if errors.Is(err, ErrNoHub) {
		return OutcomeUnavailable
	}
	return OutcomeFailure
}

func (h *Host) endpointRecord(ctx context.Context, id a2al.NodeID, er *protocol.EndpointRecord) (*protocol.EndpointRecord, error) {
	if er != nil && a2al.NodeIDFromAddress(er.Address) == id {
		return er, nil
	}
	if r := h.node.LocalEndpointRecord(id, func(r *protocol.EndpointRecord) bool {
		return a2al.NodeIDFromAddress(r.Address) == id
	}); r != nil {
		return r, nil
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := dht.NewQuery(h.node).Resolve(rctx, id)
	if err != nil {
		return nil, fmt.Errorf("resolve endpoint record: %w", err)
	}
	if a2al.NodeIDFromAddress(r.Address) != id {
		return nil, fmt.Errorf("resolve: record address does not match the NodeID")
	}
	return r, nil
}

// Waiting for a hub connection before a call: none for our own clients (they
// are connected or reconnecting with back-off, and a punch must not sit out
// the whole punch deadline on a dead hub), a short while for a temporary
// client to a hub we do not use ourselves.
const tempHubWait = 5 * time.Second

// clientFor returns a connected client for one of urls: ours (a connected one
// first), else a temporary one (closed by release). With no hub connected it
// fails at once with ErrNoHub and the hub's last connection error.
func (h *Host) clientFor(ctx context.Context, urls []string) (*signal.Client, func(), error) {
	var down *signal.Client
	for _, u := range urls {
		// Records carry hub base URLs; a client's URL is its signaling URL.
		cu, err := signal.SignalURL(u)
		if err != nil {
			continue
		}
		for _, c := range h.hubs {
			if c.URL() == cu {
				if c.Registered() {
					return c, func() {}, nil
				}
				if down == nil {
					down = c
				}
			}
		}
	}
	if down != nil {
		return nil, nil, noHub(down)
	}
	var lastErr error = errors.New("record names no usable hub")
	for _, u := range urls {
		c, err := signal.NewClient(signal.ClientConfig{HubURL: u, Key: h.cfg.Key, Logger: h.log, Clock: h.cfg.Clock})
		if err != nil {
			lastErr = err
			continue
		}
		if err := waitHub(ctx, h.cfg.Clock, c, tempHubWait); err != nil {
			_ = c.Close()
			lastErr = err
			continue
		}
		return c, func() { _ = c.Close() }, nil
	}
	if errors.Is(lastErr, ErrNoHub) {
		return nil, nil, lastErr
	}
	return nil, nil, fmt.Errorf("%w: %w", ErrSignaling, lastErr)
}

func noHub(c *signal.Client) error {
	why := "not connected yet"
	if err := c.LastError(); err != nil {
		why = err.Error()
	}
	return fmt.Errorf("%w (%s: %s)", ErrNoHub, c.URL(), why)
}

// waitHub waits up to d (on clk) for c to connect.
func waitHub(ctx context.Context, clk clock.Clock, c *signal.Client, d time.Duration) error {
	t := clk.NewTimer(d)
	defer t.Stop()
	tick := time.NewTicker(20 * time.Millisecond) // polls the client's state; wall clock
	defer tick.Stop()
	for !c.Registered() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", noHub(c), ctx.Err())
		case <-t.C():
			return noHub(c)
		case <-tick.C:
		}
	}
	return nil
}

// punchResult is what a caller-side attempt produced. took is the time
// until the connection was pooled (the evidence PING may finish later).
type punchResult struct {
	peer    a2al.Address
	remote  net.Addr
	path    string
	direct  bool
	relayed bool
	took    time.Duration
}

// punchOut calls the peer through its hub, runs ICE as the controlling side
// and dials QUIC from the shared socket to the first path ICE proves.
func (h *Host) punchOut(ctx context.Context, job PunchJob, start time.Time) (r punchResult, err error) {
	if job.ID == h.id.NodeID {
		return r, errors.New("refusing to punch ourselves")
	}
	if job.Record != nil {
		r.peer = job.Record.Address
	}
	if pa, ra, ok := h.pool.Lookup(job.ID); ok {
		return punchResult{peer: pa, remote: ra, path: "pooled"}, nil
	}
	er, err := h.endpointRecord(ctx, job.ID, job.Record)
	if err != nil {
		return r, err
	}
	r.peer = er.Address
	urls := er.SignalURLs()
	if len(urls) == 0 {
		return r, errors.New("endpoint record names no hub")
	}
	client, release, err := h.clientFor(ctx, urls)
	if err != nil {
		return r, err
	}
	defer release()
	h.mu.Lock()
	_, incoming := h.calls[job.ID]
	h.mu.Unlock()
	if incoming {
		return r, errSuperseded
	}
	ev := h.startDirectEvidence(ctx, er)
	defer ev.stop()
	relayc := make(chan *iceRelay, 1) // credentials are fetched while the hub rings the peer
	go func() { relayc <- h.iceRelayFor(ctx, er) }()
	sess, err := client.Call(ctx, job.ID)
	relay := <-relayc
	if err != nil {
		return r, fmt.Errorf("call via hub: %w", err)
	}
	defer sess.Close()
	if sess.Peer() != r.peer {
		return r, fmt.Errorf("%w: hub connected us to %s", ErrIdentity, (sess.Peer()).String())
	}
	is, err := startICE(ctx, h.env, sess, true, h.iceHint(), relay)
	if err != nil {
		return r, err
	}
	qc, p, rp, err := h.dialICE(ctx, is, r.peer, ALPNModeB)
	if rp == nil {
		defer is.Close() // ICE only punched the hole; QUIC owns the path now
	}
	r.path = p.String()
	if err != nil {
		return r, err
	}
	via := PoolPath{Type: PathPunched}
	if rp != nil {
		via = PoolPath{Type: PathRelayed, Transport: rp.tr, Release: rp.close}
	}
	if !h.pool.AddOn(r.peer, qc, h.id.NodeID, via) && !h.pool.HasConn(job.ID) {
		return r, errors.New("pool refused connection")
	}
	r.took = h.cfg.Clock.Now().Sub(start)
	r.remote, r.relayed = p.remote, rp != nil
	r.direct = !r.relayed && ev.wait()
	if r.relayed && h.pool.holds(job.ID, qc) {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.watchRelayed(r.peer, er, qc)
		}()
	}
	return r, nil
}

// iceRelayFor is the relay setup of a caller-side ICE session (nil: none).
// Every session with relays costs an allocation while it runs, so none is
// made when either side accepts unsolicited packets (open or full cone):
// such a pair always punches.
func (h *Host) iceRelayFor(ctx context.Context, er *protocol.EndpointRecord) *iceRelay {
	if nr, ok := h.NATResult(); ok && (nr.Type == natprobe.TypeOpen || nr.Type == natprobe.TypeFullCone) {
		return nil
	}
	if er != nil && er.NatType == protocol.NATFullCone {
		return nil
	}
	urls := h.relayURIs(ctx)
	if len(urls) == 0 {
		return nil
	}
	return &iceRelay{urls: urls, wait: h.relayWait(er)}
}

// dialICE dials QUIC to the first path ICE proved; if that fails, to the
// pair ICE nominates, when it is a different one. A relayed pair is dialed
// through our allocation (rp, which then owns the ICE session).
func (h *Host) dialICE(ctx context.Context, is *iceSession, peer a2al.Address, alpn string) (*quic.Conn, *icePath, *relayPath, error) {
	p, err := is.Path(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	qc, rp, err := h.dialPath(ctx, is, p, peer, alpn)
	if err == nil {
		return qc, p, rp, nil
	}
	err = fmt.Errorf("quic dial %v (%s): %w", p.remote, p, err)
	sel, serr := is.Selected(ctx)
	if serr != nil || sel == nil || (sel.remote.String() == p.remote.String() && sel.localType == p.localType) {
		return nil, p, nil, err
	}
	qc, rp, err2 := h.dialPath(ctx, is, sel, peer, alpn)
	if err2 != nil {
		return nil, sel, nil, fmt.Errorf("%w; nominated pair %v (%s): %w", err, sel.remote, sel, err2)
	}
	return qc, sel, rp, nil
}

// dialPath dials over one ICE path: from the shared socket, or through our
// relay allocation when that is the pair's local side.
func (h *Host) dialPath(ctx context.Context, is *iceSession, p *icePath, peer a2al.Address, alpn string) (*quic.Conn, *relayPath, error) {
	if p.localType != ice.CandidateTypeRelay {
		qc, err := h.qtr.Dial(ctx, p.remote, h.id.ClientTLS(peer, alpn), quicConfig(h.cfg.HandshakeLimit))
		return qc, nil, err
	}
	rp, err := h.newRelayPath(is)
	if err != nil {
		return nil, nil, err
	}
	qc, err := rp.tr.Dial(ctx, p.remote, h.id.ClientTLS(peer, alpn), relayQUICConfig(h.cfg.HandshakeLimit))
	if err != nil {
		rp.close()
		return nil, nil, err
	}
	return qc, rp, nil
}

// ownMapping is our public mapping of the shared socket, when it is the same
// towards every peer (not behind a symmetric NAT): what we publish.
func (h *Host) ownMapping() *net.UDPAddr {
	nr, ok := h.NATResult()
	if !ok || nr.Type == natprobe.TypeSymmetric {
		return nil
	}
	return h.iceHint()
}

// iceHint is the mapping STUN last reported for the shared socket, sent as a
// server-reflexive candidate before gathering finishes. Behind a symmetric NAT
// its port is wrong towards the peer, but its IP is right, and a packet to our
// IP is what opens an address-restricted peer's NAT for us.
func (h *Host) iceHint() *net.UDPAddr {
	nr, ok := h.NATResult()
	if !ok || nr.MappedAddr == nil || nr.Type == natprobe.TypeUDPBlocked {
		return nil
	}
	return nr.MappedAddr
}

// directProbe is an evidence PING in flight (see startDirectEvidence).
type directProbe struct {
	ch     chan bool
	cancel context.CancelFunc
	once   sync.Once
	val    bool
}

// wait returns the verdict (waiting for the PING, at most its own timeout).
func (d *directProbe) wait() bool {
	d.once.Do(func() {
		if d.ch != nil {
			d.val = <-d.ch
		}
	})
	return d.val
}

// stop abandons the PING and waits for its goroutine.
func (d *directProbe) stop() {
	if d.cancel != nil {
		d.cancel()
	}
	d.wait()
}

// startDirectEvidence gathers the evidence for isDirect (docs/decisions.md D6, docs/host.md §3.7): a DHT PING
// from the main socket to the peer's published endpoint over plain UDP.
//
// It must not be answered through a hole the punch opened. For a peer whose
// record says "unknown" the PING therefore runs to completion before the call
// is placed (or answered). A peer that publishes full cone accepts unsolicited
// packets anyway, so holes cannot change the answer and the PING runs
// alongside the punch, off its critical path; peers behind filtering NATs are
// never direct and are not tried.
func (h *Host) startDirectEvidence(ctx context.Context, er *protocol.EndpointRecord) *directProbe {
	if er == nil {
		return &directProbe{}
	}
	switch er.NatType {
	case protocol.NATUnknown:
		return &directProbe{val: h.directEvidence(ctx, er)}
	case protocol.NATFullCone:
		pctx, cancel := context.WithCancel(ctx)
		d := &directProbe{ch: make(chan bool, 1), cancel: cancel}
		go func() { d.ch <- h.directEvidence(pctx, er) }()
		return d
	}
	return &directProbe{}
}

// directEvidence PINGs up to two published endpoints (one per family when
// both are published), IPv6 first and IPv4 happyEyeballsStagger later; only
// an answer counts.
func (h *Host) directEvidence(ctx context.Context, er *protocol.EndpointRecord) bool {
	targets := dialTargets(ctx, h.cfg.Net, er.Endpoints, h.fam, 2)
	_, _, err := raceDial(ctx, h.cfg.Clock, targets, happyEyeballsStagger,
		func(ctx context.Context, a *net.UDPAddr) (struct{}, error) {
			pctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
			defer cancel()
			return struct{}{}, h.node.Ping(pctx, a)
		},
		func(struct{}) {})
	return err == nil
}

// onCall handles an incoming hub call (callee side of a punch).
func (h *Host) onCall(s *signal.Session) {
	defer s.Close()
	h.handleCall(s.Peer(), s)
}

// handleCall is the callee side for a caller the hub claims is peer. The
// claim is only trusted as far as "expect this identity": the QUIC connection
// is pooled only if its TLS identity is exactly peer.
func (h *Host) handleCall(peer a2al.Address, s signaler) {
	pid := a2al.NodeIDFromAddress(peer)
	if peer == h.id.Address {
		return
	}
	h.heardFrom(pid) // the peer is online and wants to reach us
	// Glare: if we are punching this peer too, the smaller NodeID keeps its
	// outgoing attempt; the other side abandons its own and answers.
	if h.sched.Running(pid) && lessID(h.id.NodeID, pid) {
		h.m.glare.Inc()
		return
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.PunchTimeout)
	defer cancel()
	call := &inCall{cancel: cancel, start: h.cfg.Clock.Now()}
	ch := make(chan *quic.Conn, 1)
	h.mu.Lock()
	admitted := h.admitCallLocked(pid, call)
	if admitted {
		h.expect[peer] = ch
	}
	h.mu.Unlock()
	if !admitted {
		h.m.callsRefused.Inc()
		return
	}
	superseded := h.sched.Pending(pid)
	if superseded {
		h.m.glare.Inc()
		h.sched.Cancel(pid)
	}
	defer func() {
		h.mu.Lock()
		delete(h.calls, pid)
		if h.expect[peer] == ch {
			delete(h.expect, peer)
		}
		h.mu.Unlock()
		// A connection that raced in after we gave up is closed, not leaked.
		select {
		case c := <-ch:
			_ = c.CloseWithError(2, "late")
		default:
		}
	}()

	start := call.start
	rec := PunchRecord{Peer: peer.String(), Role: "callee", Priority: -1, At: h.cfg.Clock.Now()}
	er := h.node.LocalEndpointRecord(pid, func(r *protocol.EndpointRecord) bool { return r.Address == peer })
	rec.NATPair = h.natPair(pid, er)
	ev := h.startDirectEvidence(ctx, er)
	defer ev.stop()
	qc, path, rel, err := h.punchIn(ctx, s, ch, call)
	rec.Duration, rec.Path = h.cfg.Clock.Now().Sub(start), path
	if err != nil {
		pe := newPunchError(err)
		rec.Reason, rec.Error = pe.Code, err.Error()
		h.logPunch(rec)
		if superseded {
			h.node.OnPunchComplete(pid, peer, nil, false, false, pe.Reason)
			h.notifyPunch(pid, pe)
		}
		return
	}
	remote := qc.RemoteAddr()
	via := PoolPath{Type: PathPunched}
	if rel != nil {
		via = PoolPath{Type: PathRelayed, Release: rel.Close}
	}
	if !h.pool.AddOn(peer, qc, pid, via) && !h.pool.HasConn(pid) {
		rec.Reason = "pool refused"
		h.logPunch(rec)
		return
	}
	direct := rel == nil && ev.wait()
	rec.OK, rec.Remote, rec.Direct = true, remote.String(), direct
	rec.PathType = pathOf(rel != nil, direct)
	h.pool.setPath(pid, qc, rec.PathType)
	h.logPunch(rec)
	h.node.OnPunchComplete(pid, peer, remote, true, direct, dht.PunchFailNone)
	h.notifyPunch(pid, nil)
}

// punchIn runs controlled ICE and waits for the caller's QUIC connection,
// whose TLS identity the accept loop has already matched to the expected
// peer. The caller dials as soon as one of our checks reaches it, usually
// before ICE nominates anything, so the connection is awaited alongside ICE.
func (h *Host) punchIn(ctx context.Context, s signaler, ch chan *quic.Conn, call *inCall) (qc *quic.Conn, path string, relayed *iceSession, err error) {
	is, err := startICE(ctx, h.env, s, false, h.iceHint(), nil)
	if err != nil {
		return nil, "", nil, err
	}
	call.ice.Store(is)
	defer func() {
		// A connection from the caller's relay keeps our agent: it answers
		// the keepalives that keep the caller's allocation in use.
		if err == nil && is.viaPeerRelay(qc.RemoteAddr()) {
			relayed = is
			return
		}
		is.Close()
	}()
	wait := h.cfg.HandshakeLimit
	done := is.done
	var late <-chan time.Time
	for {
		select {
		case qc := <-ch:
			return qc, is.Known().String(), nil, nil
		case <-done:
			select {
			case qc := <-ch:
				return qc, is.Known().String(), nil, nil
			default:
			}
			if is.err != nil {
				return nil, is.Known().String(), nil, is.err
			}
			done = nil
			t := h.cfg.Clock.NewTimer(wait + 2*time.Second)
			defer t.Stop()
			late = t.C()
		case <-late:
			return nil, is.Known().String(), nil, fmt.Errorf("%w: caller's QUIC connection with the expected identity did not arrive", ErrIdentity)
		case <-ctx.Done():
			return nil, is.Known().String(), nil, ctx.Err()
		}
	}
}
