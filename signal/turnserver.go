package signal

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v2"
	"github.com/pion/turn/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// TURNLimits bound what relaying may cost the hub (see docs/relay.md).
type TURNLimits struct {
	// MaxAllocsPerNode: concurrent allocations one NodeID may hold (a node
	// holds one per relayed peer connection it dialed). Default (0): 16.
	MaxAllocsPerNode int
	// MaxAllocs: concurrent allocations on the server. Default (0): 2000.
	MaxAllocs int
	// AllocLifetime caps the age of one allocation; past it the allocation
	// relays nothing and ends at its next expiry. Default (0): 1 hour.
	AllocLifetime time.Duration
	// AllocBandwidth, NodeBandwidth, TotalBandwidth: relayed bytes per second
	// (both directions together) per allocation, per NodeID and for the
	// server. Defaults (0): 512 KiB/s, 1 MiB/s, 64 MiB/s. Negative: unlimited.
	AllocBandwidth, NodeBandwidth, TotalBandwidth int64
	// MaxStreamConns: concurrent TURN-over-TCP/TLS connections. Default (0): 1000.
	MaxStreamConns int
	// StreamIdle closes a TCP/TLS connection that sent nothing for this long.
	// Default (0): 2 minutes (clients refresh and keep alive far more often).
	StreamIdle time.Duration
}

// DefaultTURNLimits are the limits of a public hub relaying DHT traffic and
// modest application streams.
func DefaultTURNLimits() TURNLimits {
	return TURNLimits{MaxAllocsPerNode: 16, MaxAllocs: 2000, AllocLifetime: time.Hour,
		AllocBandwidth: 512 << 10, NodeBandwidth: 1 << 20, TotalBandwidth: 64 << 20,
		MaxStreamConns: 1000, StreamIdle: 2 * time.Minute}
}

func (l *TURNLimits) fill() {
	d := DefaultTURNLimits()
	setI := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	setB := func(p *int64, v int64) {
		switch {
		case *p == 0:
			*p = v
		case *p < 0:
			*p = 0 // unlimited
		}
	}
	setI(&l.MaxAllocsPerNode, d.MaxAllocsPerNode)
	setI(&l.MaxAllocs, d.MaxAllocs)
	setI(&l.MaxStreamConns, d.MaxStreamConns)
	if l.AllocLifetime <= 0 {
		l.AllocLifetime = d.AllocLifetime
	}
	if l.StreamIdle <= 0 {
		l.StreamIdle = d.StreamIdle
	}
	setB(&l.AllocBandwidth, d.AllocBandwidth)
	setB(&l.NodeBandwidth, d.NodeBandwidth)
	setB(&l.TotalBandwidth, d.TotalBandwidth)
}

// TURNServerConfig configures a TURNServer. Auth, RelayIP and at least one
// socket are required.
type TURNServerConfig struct {
	Auth *TURNAuth
	// Realm of the long-term credentials. Default: "a2al".
	Realm string
	// PacketConn serves TURN over UDP; Listeners serve TURN over TCP or TLS
	// (wrap with tls.NewListener). The server owns and closes them.
	PacketConn net.PacketConn
	Listeners  []net.Listener
	// RelayIP is the address relayed candidates carry (the hub's public IP).
	RelayIP net.IP
	// RelayBind is the local IP relay sockets bind. Default: "0.0.0.0".
	RelayBind string
	// RelayPortMin and RelayPortMax bound the UDP ports of relayed addresses
	// (to open in a firewall or publish from a container). Default (0, 0):
	// any ephemeral port.
	RelayPortMin, RelayPortMax uint16
	// Net opens relay sockets (pion vnet in tests). Default: the OS network.
	Net transport.Net
	// AllowPeer decides which peer IPs an allocation may reach. Default:
	// every unicast address except loopback, unspecified and link-local, so
	// the relay cannot be pointed at the hub host itself.
	AllowPeer func(net.IP) bool
	Limits    TURNLimits
	Logger    *slog.Logger
	// Registerer receives the a2al_turn_* metrics; nil: not exported.
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// TURNServer is the hub's relay of last resort: pion's TURN server behind the
// turnGate, which enforces per-node quotas and bandwidth.
type TURNServer struct {
	srv  *turn.Server
	gate *turnGate
	auth *TURNAuth
	m    *turnMetrics
	log  *slog.Logger

	streams   chan struct{} // TCP/TLS connection slots
	closeOnce sync.Once

	mu     sync.Mutex
	live   map[*turnStreamConn]struct{} // open TCP/TLS connections, closed by Close
	closed bool
}

// DefaultAllowPeer refuses loopback, unspecified, multicast and link-local peers.
func DefaultAllowPeer(ip net.IP) bool {
	return !(ip.IsLoopback() || ip.IsUnspecified() || ip.IsMulticast() ||
		ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast())
}

// NewTURNServer starts serving on the given sockets.
func NewTURNServer(cfg TURNServerConfig) (*TURNServer, error) {
	if cfg.Auth == nil {
		return nil, errors.New("signal: turn server needs Auth")
	}
	if cfg.RelayIP == nil {
		return nil, errors.New("signal: turn server needs RelayIP")
	}
	if cfg.PacketConn == nil && len(cfg.Listeners) == 0 {
		return nil, errors.New("signal: turn server needs a PacketConn or a Listener")
	}
	if (cfg.RelayPortMin == 0) != (cfg.RelayPortMax == 0) || cfg.RelayPortMin > cfg.RelayPortMax {
		return nil, fmt.Errorf("signal: turn relay ports %d-%d: give both, min <= max", cfg.RelayPortMin, cfg.RelayPortMax)
	}
	if cfg.Realm == "" {
		cfg.Realm = "a2al"
	}
	if cfg.RelayBind == "" {
		cfg.RelayBind = "0.0.0.0"
	}
	if cfg.AllowPeer == nil {
		cfg.AllowPeer = DefaultAllowPeer
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Limits.fill()
	s := &TURNServer{auth: cfg.Auth, log: cfg.Logger, streams: make(chan struct{}, cfg.Limits.MaxStreamConns),
		live: map[*turnStreamConn]struct{}{}}
	s.m = newTURNMetrics()
	s.gate = newTURNGate(cfg.Limits, cfg.Auth, cfg.Realm, cfg.Now, s.m)
	if cfg.Registerer != nil {
		if err := s.register(cfg.Registerer, cfg.Limits); err != nil {
			return nil, err
		}
	}
	perm := func(_ net.Addr, ip net.IP) bool { return cfg.AllowPeer(ip) }
	gen := func() turn.RelayAddressGenerator {
		if cfg.RelayPortMin != 0 {
			return &turn.RelayAddressGeneratorPortRange{RelayAddress: cfg.RelayIP, Address: cfg.RelayBind, Net: cfg.Net,
				MinPort: cfg.RelayPortMin, MaxPort: cfg.RelayPortMax}
		}
		return &turn.RelayAddressGeneratorStatic{RelayAddress: cfg.RelayIP, Address: cfg.RelayBind, Net: cfg.Net}
	}
	sc := turn.ServerConfig{Realm: cfg.Realm, AuthHandler: s.authHandler, LoggerFactory: pionLogs()}
	if cfg.PacketConn != nil {
		sc.PacketConnConfigs = []turn.PacketConnConfig{{PacketConn: &turnPacketConn{PacketConn: cfg.PacketConn, g: s.gate},
			RelayAddressGenerator: gen(), PermissionHandler: perm}}
	}
	for _, ln := range cfg.Listeners {
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{
			Listener: &turnListener{Listener: ln, s: s, idle: cfg.Limits.StreamIdle}, RelayAddressGenerator: gen(), PermissionHandler: perm})
	}
	srv, err := turn.NewServer(sc)
	if err != nil {
		return nil, fmt.Errorf("signal: turn server: %w", err)
	}
	s.srv = srv
	return s, nil
}

// authHandler gives pion the long-term key for a username. An expired
// credential still authenticates requests on its node's live allocation
// (refreshes, permissions), so a relayed session outlives its credential
// up to the allocation lifetime cap; new allocations need a fresh one.
func (s *TURNServer) authHandler(user, realm string, src net.Addr) ([]byte, bool) {
	pass, id, err := s.auth.Check(user)
	if errors.Is(err, ErrTURNExpired) && s.gate.liveFor(gateKey(src), id) {
		err = nil
	}
	if err != nil {
		reason := "malformed"
		if errors.Is(err, ErrTURNExpired) {
			reason = "expired"
		}
		s.m.authFails.WithLabelValues(reason).Inc()
		s.log.Debug("turn: credential refused", "src", src, "why", err)
		return nil, false
	}
	return turn.GenerateAuthKey(user, realm, pass), true
}

// gateKey names the client transport address of an allocation.
func gateKey(a net.Addr) string {
	switch a.(type) {
	case *net.TCPAddr:
		return "tcp|" + a.String()
	}
	return "udp|" + a.String()
}

// Auth is the credential issuer/checker the server was built with.
func (s *TURNServer) Auth() *TURNAuth { return s.auth }

// Allocations counts live (or being created) allocations and the nodes holding them.
func (s *TURNServer) Allocations() (allocs, nodes int) { return s.gate.counts() }

// Close stops the server and closes its sockets and relay allocations.
func (s *TURNServer) Close() error {
	var err error
	s.closeOnce.Do(func() {
		err = s.srv.Close() // listeners and the UDP socket; pion then frees the allocations
		s.mu.Lock()
		s.closed = true
		live := s.live
		s.live = nil
		s.mu.Unlock()
		for c := range live { // pion leaves accepted connections open
			_ = c.Close()
		}
	})
	return err
}

// pionLogs silences pion: every refused request is an "error" there.
func pionLogs() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelDisabled
	return f
}

// turnPacketConn is the UDP socket as pion sees it.
type turnPacketConn struct {
	net.PacketConn
	g *turnGate
}

func (c *turnPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		pass, reply := c.g.inbound(gateKey(addr), p[:n])
		if reply != nil {
			_, _ = c.PacketConn.WriteTo(reply, addr)
		}
		if pass {
			return n, addr, nil
		}
	}
}

func (c *turnPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if !c.g.outbound(gateKey(addr), p) {
		return len(p), nil // policed: dropped like a lost datagram
	}
	return c.PacketConn.WriteTo(p, addr)
}

// turnListener hands pion gated TCP/TLS connections, within the slot limit.
type turnListener struct {
	net.Listener
	s    *TURNServer
	idle time.Duration
}

func (l *turnListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.s.streams <- struct{}{}:
		default:
			_ = c.Close()
			l.s.m.allocs.WithLabelValues("stream-limit").Inc()
			continue
		}
		sc := &turnStreamConn{Conn: c, s: l.s, key: gateKey(c.RemoteAddr()), idle: l.idle, fr: turn.NewSTUNConn(c)}
		l.s.mu.Lock()
		if l.s.closed {
			l.s.mu.Unlock()
			<-l.s.streams
			_ = c.Close()
			return nil, net.ErrClosed
		}
		l.s.live[sc] = struct{}{}
		l.s.mu.Unlock()
		return sc, nil
	}
}

// turnStreamConn reframes a TURN-over-TCP stream so the gate sees whole
// STUN and ChannelData frames; pion re-frames what Read returns.
type turnStreamConn struct {
	net.Conn
	s     *TURNServer
	key   string
	idle  time.Duration
	fr    *turn.STUNConn
	frame []byte // unread rest of the current frame
	buf   []byte
	once  sync.Once
}

// maxStreamFrame is the largest STUN or padded ChannelData frame.
const maxStreamFrame = 20 + 65535 + 4

func (c *turnStreamConn) Read(p []byte) (int, error) {
	for len(c.frame) == 0 {
		if c.buf == nil {
			c.buf = make([]byte, maxStreamFrame)
		}
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
		n, _, err := c.fr.ReadFrom(c.buf)
		if err != nil {
			return 0, err
		}
		pass, reply := c.s.gate.inbound(c.key, c.buf[:n])
		if reply != nil {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Conn.Write(reply); err != nil {
				return 0, err
			}
		}
		if pass {
			c.frame = c.buf[:n]
		}
	}
	n := copy(p, c.frame)
	c.frame = c.frame[n:]
	return n, nil
}

func (c *turnStreamConn) Write(p []byte) (int, error) {
	if !c.s.gate.outbound(c.key, p) {
		return len(p), nil
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.Conn.Write(p)
}

func (c *turnStreamConn) Close() error {
	c.once.Do(func() {
		c.s.gate.release(c.key)
		c.s.mu.Lock()
		delete(c.s.live, c)
		c.s.mu.Unlock()
		<-c.s.streams
	})
	return c.Conn.Close()
}

func newTURNMetrics() *turnMetrics {
	return &turnMetrics{
		allocs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_turn_allocations_total",
			Help: "Authenticated allocation attempts seen by the limiter, by result (ok, quota, refused, stream-limit)."}, []string{"result"}),
		relayed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_turn_relayed_bytes_total",
			Help: "Relayed bytes, by direction (in: from clients, out: to clients)."}, []string{"dir"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_turn_dropped_bytes_total",
			Help: "Relayed bytes dropped, by the limit that hit (allocation, node, total, lifetime)."}, []string{"limit"}),
		authFails: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_turn_auth_failures_total",
			Help: "TURN credentials refused, by reason."}, []string{"reason"}),
	}
}

func (s *TURNServer) register(reg prometheus.Registerer, l TURNLimits) error {
	limit := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "a2al_turn_limit",
		Help: "Configured TURN limits (bandwidth in bytes/s, 0 = unlimited; lifetime in seconds)."}, []string{"limit"})
	for name, v := range map[string]float64{
		"allocations_per_node": float64(l.MaxAllocsPerNode), "allocations": float64(l.MaxAllocs),
		"allocation_lifetime_seconds": l.AllocLifetime.Seconds(), "allocation_bandwidth": float64(l.AllocBandwidth),
		"node_bandwidth": float64(l.NodeBandwidth), "total_bandwidth": float64(l.TotalBandwidth),
		"stream_conns": float64(l.MaxStreamConns),
	} {
		limit.WithLabelValues(name).Set(v)
	}
	cs := []prometheus.Collector{s.m.allocs, s.m.relayed, s.m.dropped, s.m.authFails, limit,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "a2al_turn_credentials_issued_total",
			Help: "TURN credentials issued to authenticated nodes."}, func() float64 { return float64(s.auth.issued.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "a2al_turn_allocations", Help: "Live TURN allocations."},
			func() float64 { a, _ := s.gate.counts(); return float64(a) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "a2al_turn_nodes", Help: "NodeIDs holding TURN allocations."},
			func() float64 { _, n := s.gate.counts(); return float64(n) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("signal: register turn metrics: %w", err)
		}
	}
	return nil
}
