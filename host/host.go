package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/logging"
	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/crypto"
	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/signal"
	"github.com/a2alnode/a2al/transport"
)

// Host is an a2al node: one UDP socket shared by the DHT, STUN/ICE and QUIC, a
// DHT node, NAT sensing, signaling clients, the Mode B pool with its punch
// scheduler, endpoint publishing and Mode A application connections.
//
// Locks (docs/architecture.md "Lock order"): h.mu guards the group below
// it and is a leaf: it is never held while calling the pool, the peer
// table, the scheduler, the DHT node, a hub client or votes, each of which
// has its own lock, and nothing takes h.mu while holding another lock of
// the host but a tunnel's (held while it dials).
type Host struct {
	// Set in New, read-only afterwards.
	cfg   Config
	log   *slog.Logger
	id    *Identity
	demux *transport.Demux
	sock  *sockSwitch        // under the demux: the UDP socket or a relay socket (own lock, a leaf)
	fam   transport.Families // the IP families the socket reaches (docs/host.md §7)
	qtr   *quic.Transport
	ln    *quic.Listener
	env   *iceEnv
	node  *dht.Node
	pool  *Pool      // own lock (Pool.mu)
	peers *peerTable // one peerPath per peer being reached (own lock peerTable.mu)
	sched *Scheduler // runs caller-side punches; locks peers.mu
	hubs  []*signal.Client
	stun  []string
	m     *hostMetrics
	votes addrVotes // own lock (addrVotes.mu), never taken together with h.mu
	// callRate admits incoming calls per minute (own lock callGate.mu, a
	// leaf).
	callRate *callGate

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error // set inside closeOnce

	acceptA     chan *Conn
	unexpectedB atomic.Uint64 // Mode B connections refused for identity
	admit       admission     // inbound Mode A caps (own lock admission.mu, a leaf)
	agents      agentSet      // hosted agent identities (own lock agentSet.mu, a leaf)
	svcMu       sync.RWMutex  // guards services; a leaf
	services    map[a2al.Address]*service

	mu sync.Mutex // guards every field from here to the end of the struct

	punchLog []PunchRecord // recent punch outcomes, at most maxPunchLog

	// What we know of our own reachability, and what we published.
	nat        natprobe.Result
	natKnown   bool
	sense      natSense // NAT type from DHT peers (natsense.go): byPeers and last; its channels are set in New
	pub        publishState
	pm         mappingState   // pm.mapper is set in New and read-only afterwards
	peerPublic *net.UDPAddr   // the address DHT peers agree on (nil: no quorum)
	peerIP     net.IP         // the IP they agree on, whatever the ports
	rsock      relaySockState // the relay socket's supervisor (udpblocked.go)
}

// New binds the socket and starts every component. The DHT is started but not
// bootstrapped; unless DisableMaintenance, a background loop bootstraps,
// classifies the NAT and publishes the endpoint record.
func New(cfg Config) (*Host, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	public, _ := parsePublicAddr(cfg.PublicAddr) // checked by fill
	id, err := NewIdentity(cfg.Key, cfg.Clock.Now())
	if err != nil {
		return nil, err
	}
	id.now = cfg.Clock.Now
	conn := cfg.PacketConn
	if conn == nil {
		uc, _, err := transport.Listen(cfg.ListenAddr)
		if err != nil {
			return nil, fmt.Errorf("host: %w", err)
		}
		conn = uc
	}
	h := &Host{cfg: cfg, log: cfg.Logger, id: id, peers: newPeerTable(cfg.Sched.MaxBackoff, cfg.Clock.Now),
		acceptA: make(chan *Conn, 16), services: make(map[a2al.Address]*service),
		admit:  admission{byIP: make(map[string]int), byPeer: make(map[a2al.Address]int)},
		agents: agentSet{m: make(map[a2al.Address]*Identity)}}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.m = newHostMetrics()
	h.pm.public = public
	h.stun = cfg.STUNServers
	if len(h.stun) == 0 {
		h.stun = stunFromHubs(cfg.HubURLs)
	}

	h.fam = transport.SocketFamilies(conn.LocalAddr())
	h.sock = &sockSwitch{base: conn}
	h.demux = transport.NewDemux(h.sock, transport.DemuxOptions{Logger: cfg.Logger})
	h.qtr = &quic.Transport{Conn: h.demux.QUIC()}
	h.ln, err = h.qtr.Listen(id.ServerTLS(h.agentBySNI), quicConfig(cfg.HandshakeLimit))
	if err != nil {
		h.qtr.Close()
		h.demux.Close()
		return nil, fmt.Errorf("host: quic listen: %w", err)
	}
	guard := newCheckGuard(h.demux.STUN(), cfg.Limits, cfg.Clock.Now)
	h.env = &iceEnv{
		mux: ice.NewUniversalUDPMuxDefault(ice.UniversalUDPMuxParams{
			UDPConn: guard, Net: cfg.Net, Logger: quietPion().NewLogger("udpmux"),
		}),
		net: cfg.Net, timers: cfg.ICE, loopback: cfg.IncludeLoopback, logf: quietPion(),
		guard: guard, limits: cfg.Limits, clk: cfg.Clock,
	}
	h.callRate = newCallGate(cfg.Limits, cfg.Clock.Now)
	h.env.urls = stunURIs(h.stun)

	h.pool, err = NewPool(PoolConfig{Self: id.NodeID, MaxSize: cfg.PoolSize, IdleTimeout: cfg.PoolIdle,
		DisableIdleExpiry: cfg.DisablePoolIdle, Logger: cfg.Logger, Clock: cfg.Clock, OnRemove: h.connGone,
		OnReceive: h.heardFrom, Relayed: h.relayedTo})
	if err != nil { // not expected: fill checked every field it takes
		return nil, errors.Join(err, h.closeParts())
	}
	h.sched = newScheduler(cfg.Sched, h.peers, h.runPunch, h.rejectPunch)
	abort := func(what string, err error) (*Host, error) {
		h.sched.Close()
		// The cause comes first; what tearing down the parts met follows.
		return nil, errors.Join(fmt.Errorf("host: %s: %w", what, err), h.pool.Close(), h.closeParts())
	}
	seen := ""
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return abort("data dir", err)
		}
		seen = filepath.Join(cfg.DataDir, "seen-peers")
	}
	ks, err := crypto.NewMemKeyStoreFromPrivateKey(cfg.Key)
	if err != nil {
		return abort("key store", err)
	}
	h.sense.kick, h.sense.first = make(chan struct{}, 1), make(chan struct{})
	h.node, err = dht.NewNode(dht.Config{
		Transport:      h.demux.DHT(),
		Keystore:       ks,
		RecordAuth:     dht.SecureRecordAuth,
		Logger:         cfg.Logger,
		SeenPeersPath:  seen,
		PunchTransport: (*punchTransport)(h),
		OnObservedAddr: h.onObserved,
		Clock:          cfg.Clock,
	})
	if err != nil {
		return abort("dht node", err)
	}
	h.pool.SetInjector(h.node)
	h.registerNodeMetrics()
	if err := h.newMapper(cfg.PortMapping); err != nil {
		_ = h.node.Close()
		return abort("port mapping", err)
	}
	h.node.Start()

	for _, u := range cfg.HubURLs {
		c, err := signal.NewClient(signal.ClientConfig{HubURL: u, Key: cfg.Key, Logger: cfg.Logger, OnCall: h.onCall,
			OnState: func(bool) { h.kickPublish() }, NetDialContext: hubDialer.DialContext, Clock: cfg.Clock})
		if err != nil {
			h.log.Warn("signal hub rejected", "url", u, "err", err)
			continue
		}
		h.hubs = append(h.hubs, c)
	}

	if h.pm.mapper != nil {
		h.pm.mapper.Start()
	}
	h.wg.Add(2)
	go h.acceptLoop()
	go h.janitor()
	if !cfg.DisableMaintenance {
		h.wg.Add(1)
		go h.maintain()
		if !cfg.DisableNAT {
			h.wg.Add(1)
			go h.senseLoop()
		}
	}
	return h, nil
}

// hubDialer keeps our hub connections' NAT state fresh. When our router loses
// its state (reboot, conntrack flush) the hub can no longer reach us over the
// old TCP mapping, and nothing leaves our side while the connection is idle,
// so a peer's call would sit undelivered until our next outbound packet (with
// Go's default 15 s TCP keepalive, ~14 s in the NAT lab). An idle probe every
// 3 s re-creates the mapping quickly for about 20 bytes/s per hub.
var hubDialer = &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
	Enable: true, Idle: 3 * time.Second, Interval: 3 * time.Second, Count: 5}}

func quietPion() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelError
	return f
}

// stunFromHubs derives "<hub host>:3478" for every hub (the hub binary runs its
// STUN server there by default).
func stunFromHubs(hubs []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, u := range hubs {
		rest := u
		if i := strings.Index(rest, "://"); i >= 0 {
			rest = rest[i+3:]
		}
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			rest = rest[:i]
		}
		host := rest
		if hh, _, err := net.SplitHostPort(rest); err == nil {
			host = hh
		}
		if host == "" || seen[host] {
			continue
		}
		seen[host] = true
		out = append(out, net.JoinHostPort(host, "3478"))
	}
	return out
}

// Address is the node's identity.
func (h *Host) Address() a2al.Address { return h.id.Address }

// NodeID is the node's DHT key.
func (h *Host) NodeID() a2al.NodeID { return h.id.NodeID }

// Node exposes the DHT node (for queries and debug handlers).
func (h *Host) Node() *dht.Node { return h.node }

// Pool exposes the Mode B pool (debug and tests).
func (h *Host) Pool() *Pool { return h.pool }

// LocalAddr is the shared socket's address.
func (h *Host) LocalAddr() net.Addr { return h.demux.LocalAddr() }

// HubsRegistered counts hubs with a live registration.
func (h *Host) HubsRegistered() int {
	n := 0
	for _, c := range h.hubs {
		if c.Registered() {
			n++
		}
	}
	return n
}

// NATResult returns the last classification (ok=false before the first one).
func (h *Host) NATResult() (natprobe.Result, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.nat, h.natKnown
}

// Bootstrap joins the DHT through the given seeds (or the configured ones).
func (h *Host) Bootstrap(ctx context.Context, seeds ...string) error {
	if len(seeds) == 0 {
		seeds = h.cfg.Bootstrap
	}
	seeds = append(seeds, h.cachedPeers()...)
	var addrs []net.Addr
	for _, s := range seeds {
		as, err := resolveSeed(h.cfg.Net, s, h.fam)
		if err != nil {
			h.log.Warn("bad bootstrap address", "addr", s, "err", err)
			continue
		}
		addrs = append(addrs, as...)
	}
	if len(addrs) == 0 {
		return errors.New("host: bootstrap: no usable seed addresses")
	}
	if err := h.node.BootstrapAddrs(ctx, addrs); err != nil {
		return fmt.Errorf("host: bootstrap: %w", err)
	}
	h.savePeers()
	return nil
}

func (h *Host) cachedPeers() []string {
	if h.cfg.DataDir == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(h.cfg.DataDir, "peers.cache"))
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") && len(out) < 32 {
			out = append(out, l)
		}
	}
	return out
}

func (h *Host) savePeers() {
	if h.cfg.DataDir == "" {
		return
	}
	var b strings.Builder
	b.WriteString("# a2al peers cache: DHT addresses that answered recently\n")
	for _, a := range h.node.BootstrapCandidateAddrs(32) {
		b.WriteString(a.String() + "\n")
	}
	p := filepath.Join(h.cfg.DataDir, "peers.cache")
	if err := os.WriteFile(p+".tmp", []byte(b.String()), 0o600); err == nil {
		_ = os.Rename(p+".tmp", p)
	}
}

// acceptLoop takes every inbound QUIC connection (Mode A and Mode B share the
// listener) and dispatches it by ALPN after the identity check.
func (h *Host) acceptLoop() {
	defer h.wg.Done()
	h.acceptFrom(h.ln)
}

// acceptFrom dispatches every connection ln accepts (the shared socket's
// listener, or a relay transport's) until ln closes.
func (h *Host) acceptFrom(ln *quic.Listener) {
	for {
		c, err := ln.Accept(h.ctx)
		if err != nil {
			return
		}
		peer, err := h.id.PeerAddress(c)
		if err != nil {
			_ = c.CloseWithError(CodeIdentity, "identity")
			continue
		}
		h.heardFrom(a2al.NodeIDFromAddress(peer))
		switch c.ConnectionState().TLS.NegotiatedProtocol {
		case ALPNModeB:
			expected, taken := h.peers.handOver(peer, c)
			if !expected {
				// Nobody here is punching with this identity (e.g. the hub lied
				// about who was calling): never pool it.
				h.m.unexpectedB.Inc()
				h.unexpectedB.Add(1)
				_ = c.CloseWithError(CodeUnexpectedB, "unexpected mode B connection")
			} else if !taken {
				_ = c.CloseWithError(CodeUnexpectedB, "duplicate mode B connection")
			}
		case ALPNModeA:
			h.acceptModeA(c, peer)
		default:
			_ = c.CloseWithError(CodeALPN, "alpn")
		}
	}
}

// heardFrom is called for authenticated signs of life from a peer (a Mode B
// message, an inbound QUIC connection, a hub call): whatever failed before, the
// peer is there now, so its punch back-off is lifted. Unauthenticated DHT UDP
// packets do not count: anyone could spoof them to lift another peer's
// back-off.
func (h *Host) heardFrom(id a2al.NodeID) {
	if h.sched != nil {
		h.sched.Reset(id)
	}
}

// connGone is the pool's OnRemove: a connection to id ended (died, went
// silent, was replaced or evicted). Failures from before that connection
// existed say nothing about the path now, so the next punch must not be
// refused by back-off.
func (h *Host) connGone(id a2al.NodeID, _ string) {
	if h.sched != nil {
		h.sched.Reset(id)
	}
}

// janitor expires idle pool entries and drops peers nothing is known of.
func (h *Host) janitor() {
	defer h.wg.Done()
	t := newTicker(h.cfg.Clock, 30*time.Second)
	defer t.stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C():
			h.pool.ExpireIdle()
			h.peers.sweep()
			t.next()
		}
	}
}

// Close stops everything: punches, hubs, pool, DHT, QUIC, ICE and the socket.
// It returns the errors it met doing so (joined); later calls return the
// same.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.cancel()
		h.sched.Close()
		var errs []error
		for _, c := range h.hubs {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("host: close hub client %s: %w", c.URL(), err))
			}
		}
		h.wg.Wait()
		if h.pm.mapper != nil {
			if err := h.pm.mapper.Close(); err != nil { // removes the mapping from the router
				errs = append(errs, fmt.Errorf("host: close port mapping: %w", err))
			}
		}
		if err := h.pool.Close(); err != nil {
			errs = append(errs, fmt.Errorf("host: close pool: %w", err))
		}
		// The demux's DHT view cannot be closed on its own: closing the socket
		// is what ends the DHT's receive loop, so the node closes last.
		errs = append(errs, h.closeParts())
		if err := h.node.Close(); err != nil {
			errs = append(errs, fmt.Errorf("host: close dht node: %w", err))
		}
		h.closeErr = errors.Join(errs...)
	})
	return h.closeErr
}

// closeParts closes the QUIC listener and transport, the ICE mux and the
// socket, in that order, and returns the errors it met.
func (h *Host) closeParts() error {
	var errs []error
	if h.ln != nil {
		if err := h.ln.Close(); err != nil {
			errs = append(errs, fmt.Errorf("host: close quic listener: %w", err))
		}
	}
	if err := h.qtr.Close(); err != nil {
		errs = append(errs, fmt.Errorf("host: close quic transport: %w", err))
	}
	if h.env != nil {
		if err := h.env.mux.Close(); err != nil {
			errs = append(errs, fmt.Errorf("host: close ice mux: %w", err))
		}
	}
	if err := h.demux.Close(); err != nil {
		errs = append(errs, fmt.Errorf("host: close socket: %w", err))
	}
	return errors.Join(errs...)
}
