package host

import (
	"time"

	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// Relayed connections are temporary (docs/relay.md): the caller that dialed
// one keeps trying, now and then, to punch the peer directly; when a punch
// succeeds the direct connection replaces the relayed one in the pool (the
// same dialer's newcomer wins), which closes the relayed connection and its
// allocation.

const (
	defaultRelayUpgrade = 2 * time.Minute
	maxRelayUpgrade     = 30 * time.Minute
)

// watchRelayed runs while conn is the pooled relayed connection to peer:
// now and then it asks the scheduler for an upgrade (PunchJob.Upgrade), a
// caller-side punch without relay candidates whose connection replaces the
// relayed one. The attempt is the peer's like any other (one in flight,
// glare rules, one finish).
func (h *Host) watchRelayed(peer a2al.Address, er *protocol.EndpointRecord, conn *quic.Conn) {
	id := a2al.NodeIDFromAddress(peer)
	wait := h.cfg.RelayUpgrade
	t := h.cfg.Clock.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-t.C():
		case <-conn.Context().Done():
			return
		case <-h.ctx.Done():
			return
		}
		if path, _, ok := h.pool.Path(id); !ok || path != PathRelayed || !h.pool.holds(id, conn) {
			return
		}
		// A pair our NAT types say cannot be punched is left alone until one
		// of them changes; a punch the scheduler runs settles it anyway.
		if h.relayWait(er) > 0 {
			h.sched.enqueueUpgrade(id, er)
		}
		wait = min(2*wait, maxRelayUpgrade)
		t.Reset(wait)
	}
}
