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
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
)

// The punch owner (docs/architecture.md "A punch"): the DHT asks through
// punchTransport, the scheduler runs the caller side (punch_caller.go), hub
// calls run the callee side (punch_callee.go), both gather the isDirect
// evidence (punch_evidence.go), and every attempt ends in finish, which
// reports back to the DHT. Per-peer state is the peer's peerPath (peer.go).

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
	Upgrade  bool          `json:"upgrade,omitempty"`   // an attempt to replace a relayed connection (docs/relay.md)
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

// punchEnd is one finished attempt, as its side hands it to finish.
type punchEnd struct {
	rec    PunchRecord  // filled by the side; OK, Remote, Reason and Error by finish
	id     a2al.NodeID  // the peer
	peer   a2al.Address // its identity (zero when the attempt never learnt it)
	remote net.Addr     // success: the peer's address on the path
	err    error        // nil: a connection is pooled
	// report: tell the DHT and the peer's waiters. False when another run
	// of ours reports for this peer (a superseded caller attempt, a call we
	// answered without taking over an attempt of ours).
	report bool
}

// finish is the one end of every punch attempt, caller or callee side,
// run or refused (docs/architecture.md "A punch"): it logs and counts the
// outcome, tells the DHT (Node.OnPunchComplete, isDirect only on the D6
// evidence recorded in rec.Direct), wakes the peer's waiters and returns
// the outcome (nil: success).
func (h *Host) finish(e punchEnd) *PunchError {
	rec := e.rec
	var pe *PunchError
	if e.err == nil {
		rec.OK = true
		if e.remote != nil {
			rec.Remote = e.remote.String()
		}
	} else {
		pe = newPunchError(e.err)
		if rec.Reason == "" {
			rec.Reason, rec.Error = pe.Code, e.err.Error()
		}
	}
	if rec.Peer != "" {
		h.logPunch(rec)
	} else { // a request refused before we knew the peer's record
		h.m.punches.WithLabelValues(rec.Role, prioName(rec.Priority), rec.NATPair, rec.Reason).Inc()
	}
	if !e.report {
		return pe
	}
	if pe == nil {
		h.node.OnPunchComplete(e.id, e.peer, e.remote, true, rec.Direct, dht.PunchFailNone)
		h.peers.report(e.id, nil)
		return nil
	}
	if !rec.Upgrade { // a failed upgrade leaves the peer connected over the relay: no failure for the DHT
		h.node.OnPunchComplete(e.id, e.peer, nil, false, false, pe.Reason)
	}
	h.peers.report(e.id, pe)
	return pe
}

// rejectPunch answers requests that never ran so the DHT clears its flag.
func (h *Host) rejectPunch(job PunchJob, why RejectReason) {
	name := "rejected-" + strings.ReplaceAll(string(why), " ", "-")
	rec := PunchRecord{Role: "caller", Priority: job.Priority, Upgrade: job.Upgrade, Reason: name,
		NATPair: h.natPair(job.ID, job.Record), At: h.cfg.Clock.Now()}
	if job.Record != nil {
		rec.Peer = job.Record.Address.String()
	}
	h.finish(punchEnd{rec: rec, id: job.ID, report: true,
		err: &PunchError{Reason: dht.PunchFailOther, Code: name, Err: fmt.Errorf("punch request not run: %s", why)}})
}

var errSuperseded = errors.New("host: punch superseded by the peer's own attempt (glare)")
