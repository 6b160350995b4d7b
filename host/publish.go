package host

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
)

// publishState remembers what was last published so a change republishes at
// once and an unchanged record only before it expires.
type publishState struct {
	seq      uint64
	last     protocol.EndpointPayload
	lastAt   time.Time
	kick     chan struct{}
	rejected int
}

func (h *Host) kickPublish() {
	h.mu.Lock()
	k := h.pub.kick
	h.mu.Unlock()
	if k != nil {
		select {
		case k <- struct{}{}:
		default:
		}
	}
}

// Payload builds the endpoint payload from what we currently know: the public
// mapping (when it is usable by others), the socket's own address(es), the NAT
// type and the hubs.
func (h *Host) Payload() protocol.EndpointPayload {
	if p, ok := h.relaySocketPayload(); ok {
		return p
	}
	var eps []string
	add := func(ip net.IP, port int) {
		if ip == nil || ip.IsUnspecified() || port == 0 {
			return
		}
		s := "quic://" + net.JoinHostPort(ip.String(), strconv.Itoa(port))
		if !slices.Contains(eps, s) {
			eps = append(eps, s)
		}
	}
	forwarded := h.publishedMapping()
	for _, a := range forwarded {
		add(a.IP, a.Port)
	}
	if m := h.ownMapping(); m != nil {
		add(m.IP, m.Port)
	}
	if v := h.votedPublic(); v != nil {
		add(v.IP, v.Port)
	}
	nat, known := h.NATResult()
	if la, ok := h.demux.LocalAddr().(*net.UDPAddr); ok {
		if !la.IP.IsUnspecified() {
			add(la.IP, la.Port)
		} else {
			for _, ip := range localIPs(h.fam) {
				add(ip, la.Port)
			}
		}
	}
	p := protocol.EndpointPayload{Endpoints: eps}
	if known {
		p.NatType = nat.Type.WireNATType()
	}
	if len(forwarded) > 0 {
		// Our first endpoint takes unsolicited packets from anyone.
		p.NatType = protocol.NATFullCone
	}
	h.addSignals(&p)
	p.Turns = h.turnHints()
	return p
}

// addSignals names our hubs in p.
func (h *Host) addSignals(p *protocol.EndpointPayload) {
	if len(h.cfg.HubURLs) > 0 {
		p.Signals = append([]string(nil), h.cfg.HubURLs...)
		p.Signal = p.Signals[0]
	}
}

func samePayload(a, b protocol.EndpointPayload) bool {
	return slices.Equal(a.Endpoints, b.Endpoints) && a.NatType == b.NatType && a.Signal == b.Signal &&
		slices.Equal(a.Signals, b.Signals) && slices.Equal(a.Turns, b.Turns)
}

// Publish signs and publishes the endpoint record now, with a fresh seq.
func (h *Host) Publish(ctx context.Context) (protocol.SignedRecord, error) {
	p := h.Payload()
	now := h.cfg.Clock.Now()
	h.mu.Lock()
	seq := max(h.pub.seq+1, uint64(now.Unix()))
	h.pub.seq = seq
	h.mu.Unlock()
	pub := h.cfg.Key.Public().(ed25519.PublicKey)
	sign := func(msg []byte) ([]byte, error) { return ed25519.Sign(h.cfg.Key, msg), nil }
	rec, err := protocol.NewEndpointRecord(h.id.Address, p, seq, uint64(now.Unix()), h.cfg.RecordTTL, pub, sign)
	if err != nil {
		return rec, fmt.Errorf("host: build endpoint record: %w", err)
	}
	if err := h.node.PublishEndpointRecord(ctx, rec); err != nil {
		return rec, fmt.Errorf("host: publish endpoint record: %w", err)
	}
	h.mu.Lock()
	h.pub.last, h.pub.lastAt = p, now
	h.mu.Unlock()
	h.publishAgents(ctx, p, seq, uint64(now.Unix()))
	h.m.publishes.Inc()
	h.log.Info("endpoint record published", "seq", seq, "endpoints", p.Endpoints, "nat", natprobe.TypeFromWire(p.NatType).String(), "hubs", p.Signals)
	return rec, nil
}

// publishIfNeeded republishes when the payload changed or half the TTL passed.
func (h *Host) publishIfNeeded(ctx context.Context) {
	if nr, ok := h.NATResult(); ok && nr.Type == natprobe.TypeUDPBlocked && !h.relayedSocket() {
		// Nobody could reach what we would publish, and the DHT would
		// replicate it once the relay socket is up (docs/relay.md §1a).
		return
	}
	p := h.Payload()
	h.mu.Lock()
	stale := h.pub.lastAt.IsZero() || h.cfg.Clock.Now().Sub(h.pub.lastAt) > time.Duration(h.cfg.RecordTTL)*time.Second/2
	changed := !samePayload(p, h.pub.last)
	h.mu.Unlock()
	if stale || changed {
		if _, err := h.Publish(ctx); err != nil {
			h.log.Warn("publish failed", "err", err)
		}
	}
}

// ClassifyNAT runs natprobe on the shared socket: requests leave through the
// demux's STUN view and answers are claimed by the demux STUN hook, so ICE's own
// STUN traffic keeps flowing meanwhile.
func (h *Host) ClassifyNAT(ctx context.Context) (natprobe.Result, error) {
	if h.relayedSocket() {
		// STUN would test the relay, not our network: UDP stays blocked
		// until a network change (docs/relay.md §1a).
		nr, _ := h.NATResult()
		return nr, nil
	}
	if len(h.stun) == 0 {
		return natprobe.Result{Type: natprobe.TypeUnknown}, fmt.Errorf("host: no STUN servers configured")
	}
	var locals []net.IP
	if la, ok := h.demux.LocalAddr().(*net.UDPAddr); ok && !la.IP.IsUnspecified() {
		locals = []net.IP{la.IP}
	}
	res, err := natprobe.Classify(ctx, natprobe.ClassifyConfig{
		Conn:      h.demux.STUN(),
		Servers:   natServers(h.stun, h.fam),
		Timeout:   h.cfg.NATTimeout,
		LocalIPs:  locals,
		Logger:    h.log,
		EchoProbe: h.strangerEcho, // a one-IP STUN server cannot test filtering
		Clock:     h.cfg.Clock,
		InstallHook: func(handler func([]byte, net.Addr) bool) (func(), error) {
			return h.demux.AddSTUNHook(handler)
		},
	})
	if err != nil {
		return res, fmt.Errorf("host: NAT classification: %w", err)
	}
	if res.Type == natprobe.TypeUDPBlocked {
		// No STUN server answered. That means UDP is blocked only if the
		// server is known to be up (a hub on its host is registered) and no
		// peer has reached us over UDP either; else the server is what is
		// unreachable, and our NAT type is simply unknown.
		rx := h.node.DebugStatsData().RxPackets
		if rx > 0 || h.HubsRegistered() == 0 {
			return natprobe.Result{Type: natprobe.TypeUnknown}, fmt.Errorf(
				"host: no STUN server answered (%s), so the NAT type is unknown (not udp-blocked: %d DHT packets received, %d hubs registered)",
				strings.Join(h.stun, ", "), rx, h.HubsRegistered())
		}
	}
	h.mu.Lock()
	if res.Type == natprobe.TypeUnknown && h.natKnown && h.sense.byPeers {
		h.mu.Unlock()
		return res, nil // DHT peers told us more than this STUN run did
	}
	prev := h.nat
	h.nat, h.natKnown = res, true
	h.sense.byPeers = false
	h.mu.Unlock()
	if res.PublicIP != nil {
		h.node.SetSelfExtIP(res.PublicIP)
	}
	h.m.natType.Reset()
	h.m.natType.WithLabelValues(string(res.Type)).Set(1)
	if prev.Type != res.Type || !addrEqual(prev.MappedAddr, res.MappedAddr) {
		h.log.Info("NAT classified", "result", res.String())
		if prev.MappedAddr != nil && !addrEqual(prev.MappedAddr, res.MappedAddr) {
			// Our public mapping moved (network change): pooled paths are stale.
			h.pool.EvictAll("network change")
			h.sched.ResetAll()
		}
	}
	return res, nil
}

func addrEqual(a, b *net.UDPAddr) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.IP.Equal(b.IP) && a.Port == b.Port
}

// maintain is the background loop: bootstrap, classify, publish, then keep the
// record fresh and re-check the NAT periodically.
func (h *Host) maintain() {
	defer h.wg.Done()
	kick := make(chan struct{}, 1)
	h.mu.Lock()
	h.pub.kick = kick
	h.mu.Unlock()
	step := func(ctx context.Context, natToo bool) {
		if natToo && !h.cfg.DisableNAT && len(h.stun) > 0 {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			res, err := h.ClassifyNAT(cctx)
			if err == nil && res.Type == natprobe.TypeUDPBlocked {
				h.useRelaySocket()
			}
			if err != nil || res.Type == natprobe.TypeUnknown {
				if err != nil {
					h.log.Warn("NAT classification failed", "err", err)
				}
				h.kickSense() // no STUN answer: DHT peers may still tell
			}
			cancel()
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		h.verifyMapping(pctx)
		h.publishIfNeeded(pctx)
		cancel()
	}
	if len(h.cfg.Bootstrap) > 0 || len(h.cachedPeers()) > 0 {
		bctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
		if err := h.Bootstrap(bctx); err != nil {
			h.log.Warn("bootstrap failed; will retry", "err", err)
		}
		cancel()
	}
	// Give the hubs a moment so the first record already names a live hub (docs/host.md §8.2).
	if len(h.hubs) > 0 {
		deadline := h.cfg.Clock.NewTimer(5 * time.Second)
		poll := time.NewTicker(100 * time.Millisecond) // polls hub state; wall clock
		defer poll.Stop()
		for h.HubsRegistered() == 0 {
			select {
			case <-h.ctx.Done():
				deadline.Stop()
				return
			case <-deadline.C():
			case <-poll.C:
				continue
			}
			break
		}
		deadline.Stop()
	}
	// Let the first record carry a router mapping if one comes quickly: DHT
	// replicas that later updates cannot reach keep the first record.
	if h.pm.mapper != nil {
		t := h.cfg.Clock.NewTimer(firstMappingWait)
		select {
		case <-h.pm.mapper.FirstAttempt():
		case <-t.C():
		case <-h.ctx.Done():
		}
		t.Stop()
	}
	h.waitFirstSense()
	step(h.ctx, true)
	natT := newTicker(h.cfg.Clock, h.cfg.NATInterval)
	defer natT.stop()
	pubT := newTicker(h.cfg.Clock, time.Minute)
	defer pubT.stop()
	bootT := newTicker(h.cfg.Clock, 5*time.Minute)
	defer bootT.stop()
	netT := newTicker(h.cfg.Clock, 10*time.Second)
	defer netT.stop()
	fp := h.netFingerprint()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-netT.C():
			netT.next()
			if now := h.netFingerprint(); now != fp {
				fp = now
				h.log.Info("network change detected: evicting punched paths, re-checking NAT, republishing")
				h.leaveRelaySocket() // the new network may pass UDP
				h.pool.EvictAll("network change")
				h.sched.ResetAll() // failures seen from the old network say nothing now
				if h.pm.mapper != nil {
					h.pm.mapper.Reset()
				}
				h.votes.reset()
				h.mu.Lock()
				h.peerPublic, h.peerIP = nil, nil
				if h.sense.byPeers {
					h.nat, h.natKnown, h.sense.byPeers = natprobe.Result{}, false, false
				}
				h.mu.Unlock()
				step(h.ctx, true)
			}
		case <-natT.C():
			natT.next()
			step(h.ctx, true)
		case <-pubT.C():
			pubT.next()
			_, known := h.NATResult()
			step(h.ctx, !known) // an unknown NAT type is retried every minute
		case <-kick:
			step(h.ctx, false)
		case <-bootT.C():
			bootT.next()
			if h.node.EstimatedNetworkSize() == 0 && len(h.cfg.Bootstrap) > 0 {
				bctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
				_ = h.Bootstrap(bctx)
				cancel()
			}
			h.savePeers()
		}
	}
}
