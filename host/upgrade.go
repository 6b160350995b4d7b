package host

import (
	"context"
	"errors"
	"fmt"
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

// watchRelayed runs while conn is the pooled relayed connection to peer.
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
		if h.relayWait(er) > 0 && !h.sched.Running(id) && !h.sched.Pending(id) {
			ctx, cancel := context.WithTimeout(h.ctx, h.cfg.PunchTimeout)
			err := h.punchDirect(ctx, peer, er)
			cancel()
			if err == nil {
				return
			}
			h.log.Debug("relayed peer still not punchable", "peer", peer.String(), "err", err)
		}
		wait = min(2*wait, maxRelayUpgrade)
		t.Reset(wait)
	}
}

// punchDirect is one caller-side punch without relay candidates whose
// connection, if any, replaces the pooled one.
func (h *Host) punchDirect(ctx context.Context, peer a2al.Address, er *protocol.EndpointRecord) error {
	start := h.cfg.Clock.Now()
	client, release, err := h.clientFor(ctx, er.SignalURLs())
	if err != nil {
		return err
	}
	defer release()
	sess, err := client.Call(ctx, a2al.NodeIDFromAddress(peer))
	if err != nil {
		return fmt.Errorf("call via hub: %w", err)
	}
	defer sess.Close()
	if sess.Peer() != peer {
		return fmt.Errorf("%w: hub connected us to %s", ErrIdentity, sess.Peer().String())
	}
	is, err := startICE(ctx, h.env, sess, true, h.iceHint(), nil)
	if err != nil {
		return err
	}
	defer is.Close()
	qc, p, _, err := h.dialICE(ctx, is, peer, ALPNModeB)
	if err != nil {
		return err
	}
	if !h.pool.AddOn(peer, qc, h.id.NodeID, PoolPath{Type: PathPunched}) {
		return errors.New("pool kept the relayed connection")
	}
	h.log.Info("relayed connection upgraded", "peer", peer.String(), "path", p.String(), "took", h.cfg.Clock.Now().Sub(start).Round(time.Millisecond))
	return nil
}
