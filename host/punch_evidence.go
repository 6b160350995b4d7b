package host

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
)

// The evidence behind isDirect (docs/decisions.md D6): a punch's direct
// probe runs for the length of the attempt; its verdict becomes the pool
// entry's path type (PathDirect) and the isDirect of Node.OnPunchComplete,
// and is kept nowhere else.

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
	if !ok || nr.MappedAddr == nil {
		return nil // (udp-blocked: the mapping is the relay socket's, docs/relay.md §1a)
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
