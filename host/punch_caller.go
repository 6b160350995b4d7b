package host

import (
	"context"
	"errors"
	"fmt"
	"net"
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

// The caller side of a punch (docs/host.md §3): resolve the peer's record,
// call it through one of its hubs, run ICE as the controlling agent and dial
// QUIC over the first path ICE proves.

// runPunch is one caller-side attempt, run by the scheduler.
func (h *Host) runPunch(ctx context.Context, job PunchJob) Outcome {
	start := h.cfg.Clock.Now()
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PunchTimeout)
	defer cancel()
	r, err := h.punchOut(ctx, job, start)
	rec := PunchRecord{Peer: r.peer.String(), Role: "caller", Priority: job.Priority, Upgrade: job.Upgrade, At: start,
		Duration: r.took, Path: r.path, Direct: r.direct, NATPair: h.natPair(job.ID, job.Record)}
	if rec.Duration == 0 {
		rec.Duration = h.cfg.Clock.Now().Sub(start)
	}
	end := punchEnd{rec: rec, id: job.ID, peer: r.peer, remote: r.remote, err: err, report: true}
	superseded := err != nil && (errors.Is(err, errSuperseded) || (h.peers.answering(job.ID) && ctx.Err() != nil))
	if superseded {
		end.rec.Reason, end.report = "superseded", false // the callee side reports for this peer
	}
	if err == nil {
		end.rec.PathType = pathOf(r.relayed, r.direct)
		if r.path != "pooled" {
			h.pool.setPath(job.ID, nil, end.rec.PathType)
		}
		if job.Upgrade {
			h.log.Info("relayed connection upgraded", "peer", rec.Peer, "path", r.path, "took", rec.Duration.Round(time.Millisecond))
		}
	}
	switch pe := h.finish(end); {
	case pe == nil:
		return OutcomeSuccess
	case superseded:
		return OutcomeSuperseded
	case errors.Is(pe, ErrNoHub) || job.Upgrade: // an upgrade's peer is connected: nothing to back off
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
	if pa, ra, ok := h.pool.Lookup(job.ID); ok && !job.Upgrade {
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
	if h.peers.answering(job.ID) {
		return r, errSuperseded
	}
	ev := h.startDirectEvidence(ctx, er)
	defer ev.stop()
	relayc := make(chan *iceRelay, 1) // credentials are fetched while the hub rings the peer
	go func() {
		if job.Upgrade {
			relayc <- nil // an upgrade wants a path without the relay
			return
		}
		relayc <- h.iceRelayFor(ctx, er)
	}()
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
	if added := h.pool.AddOn(r.peer, qc, h.id.NodeID, via); !added && (job.Upgrade || !h.pool.HasConn(job.ID)) {
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
