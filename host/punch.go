package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
	"github.com/quic-go/quic-go"
)

// punchTransport is the Host seen as dht.PunchTransport.
type punchTransport Host

var _ dht.PunchTransport = (*punchTransport)(nil)

// SendTo delivers a DHT message over the pooled connection; never blocks.
func (p *punchTransport) SendTo(ctx context.Context, id a2al.NodeID, msg []byte) (bool, error) {
	ok, err := p.pool.SendTo(ctx, id, msg)
	if ok {
		p.m.rpcs.WithLabelValues("modeB").Inc()
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
	Duration time.Duration `json:"duration_ns"`
	Path     string        `json:"path,omitempty"` // local->remote candidate types
	Remote   string        `json:"remote,omitempty"`
	Direct   bool          `json:"direct"`
	NATPair  string        `json:"nat_pair"` // our NAT type -> peer's published NAT type
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
		for _, sr := range h.node.LocalStoreGet(peer, protocol.RecTypeEndpoint) {
			if r, err := protocol.ParseEndpointRecord(sr); err == nil {
				er = r
				break
			}
		}
	}
	remote := "unknown"
	if er != nil {
		remote = wireNATName(er.NatType)
	}
	return local + "->" + remote
}

func wireNATName(t uint8) string {
	switch t {
	case protocol.NATFullCone:
		return "full-cone"
	case protocol.NATRestricted:
		return "address-restricted"
	case protocol.NATPortRestricted:
		return "port-restricted"
	case protocol.NATSymmetric:
		return "symmetric"
	}
	return "unknown"
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
	}
	h.log.Info("punch finished", "peer", r.Peer, "role", r.Role, "ok", r.OK, "reason", r.Reason,
		"took", r.Duration.Round(time.Millisecond), "path", r.Path, "remote", r.Remote, "direct", r.Direct)
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
		h.logPunch(PunchRecord{Peer: AddressText(job.Record.Address), Role: "caller", Priority: job.Priority,
			Reason: name, NATPair: h.natPair(job.ID, job.Record), At: h.cfg.Now()})
	} else {
		h.m.punches.WithLabelValues("caller", prioName(job.Priority), h.natPair(job.ID, nil), name).Inc()
	}
	h.node.OnPunchComplete(job.ID, a2al.Address{}, nil, false, false, dht.PunchFailOther)
}

var errSuperseded = errors.New("host: punch superseded by the peer's own attempt (glare)")

// runPunch is one caller-side attempt, run by the scheduler.
func (h *Host) runPunch(ctx context.Context, job PunchJob) Outcome {
	start := time.Now()
	rec := PunchRecord{Role: "caller", Priority: job.Priority, At: h.cfg.Now()}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PunchTimeout)
	defer cancel()
	peer, remote, path, direct, err := h.punchOut(ctx, job)
	rec.Peer, rec.Duration, rec.Path, rec.Direct = AddressText(peer), time.Since(start), path, direct
	rec.NATPair = h.natPair(job.ID, job.Record)
	if err == nil {
		rec.OK, rec.Remote = true, remote.String()
		h.logPunch(rec)
		h.node.OnPunchComplete(job.ID, peer, remote, true, direct, dht.PunchFailNone)
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
	reason, name := failReason(err)
	rec.Reason = name
	h.logPunch(rec)
	h.log.Debug("punch failed", "peer", rec.Peer, "err", err)
	h.node.OnPunchComplete(job.ID, peer, nil, false, false, reason)
	return OutcomeFailure
}

func (h *Host) endpointRecord(ctx context.Context, id a2al.NodeID, er *protocol.EndpointRecord) (*protocol.EndpointRecord, error) {
	if er != nil && a2al.NodeIDFromAddress(er.Address) == id {
		return er, nil
	}
	for _, sr := range h.node.LocalStoreGet(id, protocol.RecTypeEndpoint) {
		if r, err := protocol.ParseEndpointRecord(sr); err == nil && a2al.NodeIDFromAddress(r.Address) == id {
			return r, nil
		}
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

// hubsOf lists the hub URLs a record names.
func hubsOf(er *protocol.EndpointRecord) []string {
	if len(er.Signals) > 0 {
		return er.Signals
	}
	if er.Signal != "" {
		return []string{er.Signal}
	}
	return nil
}

// clientFor returns a registered client for one of urls: ours if we are
// registered there, else a temporary one (closed by release).
func (h *Host) clientFor(ctx context.Context, urls []string) (*signal.Client, func(), error) {
	for _, u := range urls {
		cu, err := signal.CanonicalURL(u)
		if err != nil {
			continue
		}
		for _, c := range h.hubs {
			if mine, err := signal.CanonicalURL(c.URL()); err == nil && mine == cu {
				return c, func() {}, nil
			}
		}
	}
	var lastErr error = errors.New("record names no usable hub")
	for _, u := range urls {
		c, err := signal.NewClient(signal.ClientConfig{HubURL: u, Key: h.cfg.Key, Logger: h.log})
		if err != nil {
			lastErr = err
			continue
		}
		return c, func() { _ = c.Close() }, nil
	}
	return nil, nil, fmt.Errorf("%w: %w", ErrSignaling, lastErr)
}

// punchOut calls the peer through its hub, runs ICE as the controlling side
// and dials QUIC from the shared socket to the selected remote address.
func (h *Host) punchOut(ctx context.Context, job PunchJob) (peer a2al.Address, remote net.Addr, path string, direct bool, err error) {
	if job.ID == h.id.NodeID {
		return peer, nil, "", false, errors.New("refusing to punch ourselves")
	}
	if job.Record != nil {
		peer = job.Record.Address
	}
	if pa, ra, ok := h.pool.Lookup(job.ID); ok {
		return pa, ra, "pooled", false, nil
	}
	er, err := h.endpointRecord(ctx, job.ID, job.Record)
	if err != nil {
		return peer, nil, "", false, err
	}
	peer = er.Address
	urls := hubsOf(er)
	if len(urls) == 0 {
		return peer, nil, "", false, errors.New("endpoint record names no hub")
	}
	client, release, err := h.clientFor(ctx, urls)
	if err != nil {
		return peer, nil, "", false, err
	}
	defer release()
	h.mu.Lock()
	_, incoming := h.calls[job.ID]
	h.mu.Unlock()
	if incoming {
		return peer, nil, "", false, errSuperseded
	}
	// Evidence for "direct" must be gathered before ICE opens our NAT towards
	// the peer on this very socket, or the PING would prove nothing.
	direct = h.directEvidence(ctx, er)
	sess, err := client.Call(ctx, job.ID)
	if err != nil {
		return peer, nil, "", false, fmt.Errorf("call via hub: %w", err)
	}
	defer sess.Close()
	if sess.Peer() != peer {
		return peer, nil, "", false, fmt.Errorf("%w: hub connected us to %s", ErrIdentity, AddressText(sess.Peer()))
	}
	res, err := runICE(ctx, h.env, sess, true)
	if err != nil {
		return peer, nil, "", false, err
	}
	defer res.agent.Close() // ICE only punched the hole; QUIC owns the path now
	path = res.localType.String() + "->" + res.remoteType.String()
	qc, err := h.qtr.Dial(ctx, res.remote, h.id.ClientTLS(peer, ALPNModeB), quicConfig(h.cfg.HandshakeLimit))
	if err != nil {
		return peer, nil, path, false, fmt.Errorf("quic dial %v: %w", res.remote, err)
	}
	if !h.pool.Add(peer, qc, h.id.NodeID, nil) && !h.pool.HasConn(job.ID) {
		return peer, nil, path, false, errors.New("pool refused connection")
	}
	return peer, res.remote, path, direct, nil
}

// directEvidence PINGs the peer's published endpoints from the main socket over
// plain UDP, before any punching and before the peer is pooled (so neither an
// ICE-opened hole nor the QUIC path can answer for it). Only an answer counts
// as "direct" (D6, L12). Peers that publish a filtering NAT are not tried.
func (h *Host) directEvidence(ctx context.Context, er *protocol.EndpointRecord) bool {
	if er == nil || (er.NatType != protocol.NATUnknown && er.NatType != protocol.NATFullCone) {
		return false
	}
	for i, ep := range er.Endpoints {
		if i >= 2 {
			break
		}
		a, err := parseEndpoint(h.cfg.Net, ep)
		if err != nil {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		err = h.node.Ping(pctx, a)
		cancel()
		if err == nil {
			return true
		}
	}
	return false
}

// parseEndpoint turns "quic://ip:port" (or legacy udp://) into a UDP address.
func parseEndpoint(n interface {
	ResolveUDPAddr(string, string) (*net.UDPAddr, error)
}, ep string) (*net.UDPAddr, error) {
	rest, ok := strings.CutPrefix(ep, "quic://")
	if !ok {
		if rest, ok = strings.CutPrefix(ep, "udp://"); !ok {
			return nil, fmt.Errorf("endpoint %q: unsupported scheme", ep)
		}
	}
	if n != nil {
		return n.ResolveUDPAddr("udp4", rest)
	}
	return net.ResolveUDPAddr("udp4", rest)
}

const maxIncomingCalls = 16

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
	// Glare: if we are punching this peer too, the smaller NodeID keeps its
	// outgoing attempt; the other side abandons its own and answers.
	if h.sched.Running(pid) && lessID(h.id.NodeID, pid) {
		h.m.glare.Inc()
		return
	}
	h.mu.Lock()
	if _, busy := h.calls[pid]; busy || len(h.calls) >= maxIncomingCalls {
		h.mu.Unlock()
		return
	}
	h.calls[pid] = struct{}{}
	ch := make(chan *quic.Conn, 1)
	h.expect[peer] = ch
	h.mu.Unlock()
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

	start := time.Now()
	rec := PunchRecord{Peer: AddressText(peer), Role: "callee", Priority: -1, At: h.cfg.Now()}
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.PunchTimeout)
	defer cancel()
	var er *protocol.EndpointRecord
	for _, sr := range h.node.LocalStoreGet(pid, protocol.RecTypeEndpoint) {
		if r, err := protocol.ParseEndpointRecord(sr); err == nil && r.Address == peer {
			er = r
			break
		}
	}
	rec.NATPair = h.natPair(pid, er)
	direct := h.directEvidence(ctx, er)
	qc, path, err := h.punchIn(ctx, s, ch)
	rec.Duration, rec.Path = time.Since(start), path
	if err != nil {
		reason, name := failReason(err)
		rec.Reason = name
		h.logPunch(rec)
		if superseded {
			h.node.OnPunchComplete(pid, peer, nil, false, false, reason)
		}
		return
	}
	remote := qc.RemoteAddr()
	if !h.pool.Add(peer, qc, pid, nil) && !h.pool.HasConn(pid) {
		rec.Reason = "pool refused"
		h.logPunch(rec)
		return
	}
	rec.OK, rec.Remote, rec.Direct = true, remote.String(), direct
	h.logPunch(rec)
	h.node.OnPunchComplete(pid, peer, remote, true, direct, dht.PunchFailNone)
}

// punchIn runs controlled ICE and waits for the caller's QUIC connection,
// whose TLS identity the accept loop has already matched to the expected peer.
func (h *Host) punchIn(ctx context.Context, s signaler, ch chan *quic.Conn) (*quic.Conn, string, error) {
	res, err := runICE(ctx, h.env, s, false)
	if err != nil {
		return nil, "", err
	}
	defer res.agent.Close()
	path := res.localType.String() + "->" + res.remoteType.String()
	wait := h.cfg.HandshakeLimit
	if wait <= 0 {
		wait = quicHandshakeTimeout
	}
	t := time.NewTimer(wait + 2*time.Second)
	defer t.Stop()
	select {
	case qc := <-ch:
		return qc, path, nil
	case <-t.C:
		return nil, path, fmt.Errorf("%w: caller's QUIC connection with the expected identity did not arrive", ErrIdentity)
	case <-ctx.Done():
		return nil, path, ctx.Err()
	}
}
