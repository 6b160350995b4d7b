package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/crypto"
	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

// NAT type from DHT peers (docs/public-address.md): the mapping behaviour
// comes from the observed_addr votes, the filtering behaviour from the DHT
// NAT probe answered on a fresh "stranger" socket. Used when no STUN server
// is configured or none gave a result.
const (
	strangerPingTimeout = 3 * time.Second // one PING that learns the stranger's mapping
	strangerEchoTimeout = 3 * time.Second // one NAT_PROBE_ECHO awaited
	strangerPeers       = 15              // DHT contacts considered as probe peers
	strangerEchoPeers   = 2               // peers asked for an unsolicited echo
	strangerPingPeers   = 3               // peers the stranger tries to learn its mapping from
	discardPort         = 9               // RFC 863: where the stranger's one touch goes
)

// firstSenseWait bounds how long the first endpoint record waits for the
// first classification from peers (a port-restricted NAT takes about three
// echo timeouts), so that DHT replicas start with the right NAT type.
const firstSenseWait = 15 * time.Second

// natSense is the state of the peer-based classification; byPeers and last
// are guarded by Host.mu.
type natSense struct {
	kick      chan struct{}
	first     chan struct{} // closed after the first classification with a quorum
	firstOnce sync.Once
	byPeers   bool     // Host.nat came from peers, not from STUN
	last      senseKey // what the current peer result was judged from
}

// senseKey is the vote evidence a classification used; equal evidence is
// not re-probed before the next periodic check.
type senseKey struct {
	ip, addr string
	mapping  natprobe.Behavior
}

func (h *Host) kickSense() {
	if h.sense.kick == nil {
		return
	}
	select {
	case h.sense.kick <- struct{}{}:
	default:
	}
}

// senseLoop classifies from peers when the votes change and every
// NATInterval, until Close.
func (h *Host) senseLoop() {
	defer h.wg.Done()
	t := newTicker(h.cfg.Clock, h.cfg.NATInterval)
	defer t.stop()
	for {
		force := false
		select {
		case <-h.ctx.Done():
			return
		case <-h.sense.kick:
		case <-t.C():
			t.next()
			force = true
		}
		ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
		h.classifyByPeers(ctx, force)
		cancel()
	}
}

// waitFirstSense lets the first record carry the NAT type from peers when
// no STUN server is configured and the votes already have a quorum.
func (h *Host) waitFirstSense() {
	if h.cfg.DisableNAT || len(h.stun) > 0 {
		return
	}
	if _, ip := h.PeerPublic(); ip == nil {
		return // nothing to judge yet; the record is republished when there is
	}
	t := h.cfg.Clock.NewTimer(firstSenseWait)
	defer t.Stop()
	select {
	case <-h.sense.first:
	case <-t.C():
	case <-h.ctx.Done():
	}
}

// stunClassified reports whether STUN gave a usable result, which then wins
// over the peers' view.
func (h *Host) stunClassified() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.natKnown && !h.sense.byPeers && h.nat.Type != natprobe.TypeUnknown
}

// peerNATType names the NAT from the vote-based mapping and the probed
// filtering. Endpoint-independent mapping with untestable filtering is
// published as port-restricted, the strictest cone: peers then punch, which
// works against every cone NAT, and none of them sends unsolicited packets
// on the strength of a guess.
func peerNATType(open bool, mapping, filtering natprobe.Behavior) natprobe.NATType {
	switch {
	case open:
		return natprobe.TypeOpen
	case mapping == natprobe.BehaviorAddressDependent || mapping == natprobe.BehaviorAddressPortDep:
		return natprobe.TypeSymmetric
	case mapping != natprobe.BehaviorEndpointIndependent:
		return natprobe.TypeUnknown
	case filtering == natprobe.BehaviorEndpointIndependent:
		return natprobe.TypeFullCone
	case filtering == natprobe.BehaviorAddressDependent:
		return natprobe.TypeAddressRestricted
	default:
		return natprobe.TypePortRestricted
	}
}

// classifyByPeers classifies the NAT from the votes and the DHT NAT probe
// unless STUN already did, and publishes a changed result.
func (h *Host) classifyByPeers(ctx context.Context, force bool) {
	if h.stunClassified() {
		return
	}
	mapping, ip, sample := h.votes.mapping(h.cfg.Clock.Now())
	if ip == nil || sample == nil {
		return // no quorum yet
	}
	defer h.sense.firstOnce.Do(func() { close(h.sense.first) })
	open := isLocalIP(ip)
	if open {
		mapping = natprobe.BehaviorEndpointIndependent
	}
	key := senseKey{ip: ip.String(), mapping: mapping}
	if mapping == natprobe.BehaviorEndpointIndependent {
		key.addr = sample.String()
	}
	h.mu.Lock()
	same := h.natKnown && h.sense.byPeers && h.sense.last == key
	h.mu.Unlock()
	if same && !force {
		return
	}
	filtering := natprobe.BehaviorUnknown
	var trace []string
	switch {
	case open:
		filtering = natprobe.BehaviorEndpointIndependent
	case mapping == natprobe.BehaviorEndpointIndependent:
		filtering, trace = h.probeFiltering(ctx, ip)
	}
	res := natprobe.Result{
		Type:       peerNATType(open, mapping, filtering),
		Mapping:    mapping,
		Filtering:  filtering,
		PublicIP:   ip,
		MappedAddr: sample,
		MappedPort: sample.Port,
		Trace:      trace,
	}
	if la, ok := h.demux.LocalAddr().(*net.UDPAddr); ok {
		res.LocalAddr = la
	}
	if res.Type == natprobe.TypeUnknown {
		return // the votes have not settled: keep what we have
	}
	h.adoptPeerNAT(res, key)
}

// adoptPeerNAT makes a peer-based result the node's NAT result (unless STUN
// answered meanwhile) and republishes when it changed.
func (h *Host) adoptPeerNAT(res natprobe.Result, key senseKey) {
	h.mu.Lock()
	if h.natKnown && !h.sense.byPeers && h.nat.Type != natprobe.TypeUnknown {
		h.mu.Unlock()
		return
	}
	prev := h.nat
	h.nat, h.natKnown = res, true
	h.sense.byPeers, h.sense.last = true, key
	h.mu.Unlock()
	h.node.SetSelfExtIP(res.PublicIP)
	h.m.natType.Reset()
	h.m.natType.WithLabelValues(string(res.Type)).Set(1)
	if prev.Type != res.Type || !prev.PublicIP.Equal(res.PublicIP) {
		h.log.Info("NAT classified from DHT peers", "type", res.Type, "mapping", res.Mapping,
			"filtering", res.Filtering, "public", res.MappedAddr.String())
	}
	h.log.Debug("DHT NAT probe", "result", res.String(), "trace", res.Trace)
	h.kickPublish()
}

// isLocalIP reports whether ip is one of this machine's addresses (our
// public address is our own: no NAT).
func isLocalIP(ip net.IP) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// probeFiltering tests the NAT's filtering with the DHT NAT probe. Our
// shared socket has talked to the peers that could echo, which opened its
// mapping to them, so the echo is awaited on a stranger socket instead:
//
//  1. the stranger PINGs one peer (Q) and learns its public mapping;
//  2. our node asks another peer (P, at another IP) to echo to that
//     mapping: arriving, the NAT lets in packets from anyone
//     (endpoint-independent filtering, full cone);
//  3. else the stranger sends one datagram to P's IP at the discard port
//     and P is asked again: arriving now, the NAT lets in any port of an
//     IP we sent to (address-dependent); still not, only the exact
//     address (address-and-port-dependent).
//
// Without two usable peers, or when the stranger's mapping has another IP,
// the filtering stays unknown.
func (h *Host) probeFiltering(ctx context.Context, ourIP net.IP) (natprobe.Behavior, []string) {
	var trace []string
	tracef := func(format string, args ...any) { trace = append(trace, fmt.Sprintf(format, args...)) }
	s, err := h.newStranger(ctx, ourIP, tracef)
	if err != nil {
		tracef("filtering untested: %v", err)
		h.log.Debug("DHT NAT probe: filtering untested", "err", err)
		return natprobe.BehaviorUnknown, trace
	}
	defer s.close()
	if len(s.echoers) == 0 {
		tracef("filtering untested: no second peer IP to echo")
		return natprobe.BehaviorUnknown, trace
	}
	for i, p := range s.echoers {
		if i >= strangerEchoPeers {
			break
		}
		if s.echo(ctx, p) {
			tracef("echo from %s (never contacted) arrived", p)
			return natprobe.BehaviorEndpointIndependent, trace
		}
		tracef("echo from %s (never contacted) did not arrive", p)
	}
	p := s.echoers[0]
	if err := s.touch(p.IP); err != nil {
		tracef("touch %s: %v", p.IP, err)
		return natprobe.BehaviorAddressPortDep, trace
	}
	if s.echo(ctx, p) {
		tracef("echo from %s arrived after a packet to its IP's discard port", p)
		return natprobe.BehaviorAddressDependent, trace
	}
	tracef("echo from %s did not arrive after a packet to its IP's discard port", p)
	return natprobe.BehaviorAddressPortDep, trace
}

// stranger is a throwaway DHT identity on a fresh socket: its mapping is
// open only towards the one peer it pinged.
type stranger struct {
	h       *Host
	node    *dht.Node
	pc      net.PacketConn
	dm      *transport.Demux
	mapped  []byte         // its public mapping, wire form
	echoers []*net.UDPAddr // peers at IPs it never sent to
}

// newStranger opens the stranger socket and learns its public mapping from
// the first DHT contact that answers a PING.
func (h *Host) newStranger(ctx context.Context, ourIP net.IP, tracef func(string, ...any)) (*stranger, error) {
	var peers []*net.UDPAddr
	for _, a := range h.node.BootstrapCandidateAddrs(strangerPeers) {
		u, ok := a.(*net.UDPAddr)
		if ok && u.IP.To4() != nil && protocol.IsPublicIP(u.IP) && !u.IP.Equal(ourIP) {
			peers = append(peers, u)
		}
	}
	if len(peers) < 2 {
		return nil, fmt.Errorf("%d public DHT contacts, need two at different IPs", len(peers))
	}
	bind := "0.0.0.0:0"
	if la, ok := h.demux.LocalAddr().(*net.UDPAddr); ok && !la.IP.IsUnspecified() {
		bind = net.JoinHostPort(la.IP.String(), "0")
	}
	// The stranger lives on the network our own socket is on (vnet in
	// simulations), never on another one.
	var pc net.PacketConn
	var err error
	if h.cfg.Net != nil {
		pc, err = h.cfg.Net.ListenPacket("udp4", bind)
	} else {
		pc, err = net.ListenPacket("udp4", bind)
	}
	if err != nil {
		return nil, fmt.Errorf("stranger socket: %w", err)
	}
	dm := transport.NewDemux(pc, transport.DemuxOptions{})
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		_ = dm.Close()
		return nil, fmt.Errorf("stranger key: %w", err)
	}
	ks, err := crypto.NewMemKeyStoreFromPrivateKey(key)
	if err != nil {
		_ = dm.Close()
		return nil, fmt.Errorf("stranger key store: %w", err)
	}
	obs := make(chan []byte, 1)
	node, err := dht.NewNode(dht.Config{
		Transport: dm.DHT(),
		Keystore:  ks,
		Logger:    slog.New(slog.DiscardHandler),
		OnObservedAddr: func(_ a2al.NodeID, _ net.Addr, wire []byte) {
			select {
			case obs <- append([]byte(nil), wire...):
			default:
			}
		},
	})
	if err != nil {
		_ = dm.Close()
		return nil, fmt.Errorf("stranger node: %w", err)
	}
	node.Start() // its PINGs need the receive loop; RPCs no longer start a node
	s := &stranger{h: h, node: node, pc: pc, dm: dm}
	var pinged []net.IP // a PING without answer still opened the mapping to its IP
	for i, q := range peers {
		if i >= strangerPingPeers {
			break
		}
		pinged = append(pinged, q.IP)
		pctx, cancel := context.WithTimeout(ctx, strangerPingTimeout)
		err := node.Ping(pctx, q)
		cancel()
		if err != nil {
			tracef("stranger PING %s: %v", q, err)
			continue
		}
		select {
		case s.mapped = <-obs:
		default:
		}
		if s.mapped == nil {
			continue
		}
		m, err := protocol.DecodeUDPAddr(s.mapped)
		if err != nil || !m.IP.Equal(ourIP) {
			s.close()
			return nil, fmt.Errorf("stranger mapped to %v, not our public IP %s", m, ourIP)
		}
		tracef("stranger %s mapped to %s by %s", pc.LocalAddr(), m, q)
		for _, p := range peers {
			if !slices.ContainsFunc(pinged, p.IP.Equal) {
				s.echoers = append(s.echoers, p)
			}
		}
		return s, nil
	}
	s.close()
	return nil, fmt.Errorf("no DHT contact answered the stranger's PING")
}

// echo asks p, through our own node, to send a NAT_PROBE_ECHO to the
// stranger's mapping, and reports whether the stranger got it.
func (s *stranger) echo(ctx context.Context, p *net.UDPAddr) bool {
	tok, wait, err := s.node.ExpectNATEcho()
	if err != nil {
		return false
	}
	if err := s.h.node.SendNATProbeToken(p, s.mapped, tok); err != nil {
		_, _ = wait(nil)
		return false
	}
	ectx, cancel := context.WithTimeout(ctx, strangerEchoTimeout)
	defer cancel()
	ok, _ := wait(ectx)
	return ok
}

// touch sends one empty datagram from the stranger to ip's discard port,
// which opens an address-dependent filter to ip but not a port-dependent
// one towards the peer's own port.
func (s *stranger) touch(ip net.IP) error {
	_, err := s.pc.WriteTo([]byte{0}, &net.UDPAddr{IP: ip, Port: discardPort})
	return err
}

// close closes the socket first: the DHT view's Close is a no-op, and the
// node's receive loop returns only once the demux is closed.
func (s *stranger) close() {
	_ = s.dm.Close()
	_ = s.node.Close()
}

// strangerEcho is natprobe's EchoProbe: does a DHT peer we never sent to get
// an unsolicited packet through our NAT? It tests a stranger socket's
// mapping rather than claimed (the shared socket's), which our DHT traffic
// has opened to most peers (docs/public-address.md).
func (h *Host) strangerEcho(ctx context.Context, claimed *net.UDPAddr) (bool, error) {
	s, err := h.newStranger(ctx, claimed.IP, func(string, ...any) {})
	if err != nil {
		return false, fmt.Errorf("host: DHT NAT probe: %w", err)
	}
	defer s.close()
	for i, p := range s.echoers {
		if i >= strangerEchoPeers {
			break
		}
		if s.echo(ctx, p) {
			return true, nil
		}
	}
	if len(s.echoers) == 0 {
		return false, fmt.Errorf("host: DHT NAT probe: no second peer IP to echo")
	}
	return false, nil
}
