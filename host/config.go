package host

import (
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	ptransport "github.com/pion/transport/v2"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/clock"
	"github.com/a2alnode/a2al/internal/defaults"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/portmap"
	"github.com/a2alnode/a2al/signal"
)

// The host's configuration. Config, the parts it nests (ICETimers,
// SchedConfig, ModeAConfig) and PoolConfig each have a Default… constructor
// holding every default and a fill method, the one place that validates
// them and replaces zero fields by their defaults; New, NewPool and
// NewScheduler call it before they start anything. The per-call
// ServiceConfig and TunnelConfig have their fill here too (Serve, Tunnel).

// Defaults of Config (DefaultConfig holds them all).
const (
	DefaultListenAddr     = ":4121" // the node's UDP port for DHT, STUN/ICE and QUIC
	DefaultPoolSize       = 64
	DefaultPoolIdle       = 5 * time.Minute
	DefaultPunchTimeout   = 45 * time.Second
	DefaultHandshakeLimit = 10 * time.Second
	DefaultNATInterval    = 20 * time.Minute
	DefaultNATTimeout     = natprobe.DefaultTimeout
	DefaultRecordTTL      = 3600 // seconds
)

var errConfig = errors.New("host: invalid config")

// Config configures a Host. Key is required; every other field may be left
// zero, which means the default its comment states (DefaultConfig holds
// them). New validates a copy and fills it in one place (fill).
type Config struct {
	// Key is the node's Ed25519 identity. Required.
	Key ed25519.PrivateKey
	// ListenAddr is the UDP address to bind. Empty: DefaultListenAddr
	// (":4121"). Ignored when PacketConn is set.
	ListenAddr string
	// PacketConn is a caller-supplied socket (pion vnet in tests and the
	// demo); the Host owns it from then on and closes it. Nil: New binds
	// ListenAddr.
	PacketConn net.PacketConn
	// Net is the network ICE gathers on and names are resolved in (vnet).
	// Nil: the OS network.
	Net ptransport.Net
	// Bootstrap are DHT seed "host:port" addresses. Nil: none (the peers
	// cache in DataDir, if any, is still used).
	Bootstrap []string
	// HubURLs are signaling hubs (ws:// or wss://) to register at and
	// publish. Nil: none, so this node can be called by nobody and punch
	// only through the hubs peers publish.
	HubURLs []string
	// STUNServers are "host:port". Nil: "<hub host>:3478" for every hub.
	STUNServers []string
	// DataDir holds peers.cache and the DHT seen-peers file. Empty: nothing
	// is persisted.
	DataDir string
	// Logger receives diagnostics. Nil: slog.Default().
	Logger *slog.Logger
	// Clock drives the host's timestamps, timers, back-off and expiry
	// (docs/decisions.md D10) and is passed on to the pool, the scheduler
	// (unless Sched.Clock is set), the DHT node, the hub clients, the NAT
	// classifier and the port mapper. Context deadlines (punch and dial
	// budgets), socket deadlines and pion's ICE timers stay on the wall
	// clock. Nil: the wall clock.
	Clock clock.Clock

	// ICE are the ICE agent's timers. Zero fields: DefaultICETimers.
	ICE ICETimers
	// Sched bounds the punch scheduler. Zero fields: DefaultSchedConfig.
	Sched SchedConfig
	// PoolSize is the number of Mode B connections kept; the least recently
	// used goes beyond it. Zero: DefaultPoolSize (64).
	PoolSize int
	// PoolIdle closes a Mode B connection that carried no DHT message for
	// this long. Zero: DefaultPoolIdle (5 min).
	PoolIdle time.Duration
	// DisablePoolIdle keeps idle Mode B connections until they die, are
	// evicted or the host closes. False (the default): PoolIdle applies.
	DisablePoolIdle bool
	// PunchTimeout is the budget of a whole punch attempt, caller or callee
	// side. Zero: DefaultPunchTimeout (45 s).
	PunchTimeout time.Duration
	// HandshakeLimit bounds a QUIC handshake. Zero: DefaultHandshakeLimit
	// (10 s).
	HandshakeLimit time.Duration
	// NATInterval is the period of NAT re-classification. Zero:
	// DefaultNATInterval (20 min).
	NATInterval time.Duration
	// NATTimeout bounds each STUN transaction of a classification. Zero:
	// DefaultNATTimeout (2 s).
	NATTimeout time.Duration
	// RecordTTL is the TTL, in seconds, of the endpoint records we publish.
	// Zero: DefaultRecordTTL (3600).
	RecordTTL uint32
	// TURN are relays of our own choosing (e.g. coturn), used besides the
	// hubs' relays. Nil: none.
	TURN []TURNServer
	// NoHubTURN stops asking hubs for relay credentials. False (the
	// default): every connected hub that serves TURN is a relay of last
	// resort.
	NoHubTURN bool
	// RelayWait is how long a caller's ICE prefers a direct path before it
	// may settle for a relayed one, unless the NAT pair is known to be
	// unpunchable (then: no wait). Zero: 1.5 s.
	RelayWait time.Duration
	// RelayUpgrade is how long a relayed connection we dialed runs before we
	// try once more to punch the peer directly (then twice as long after
	// each failure, up to 30 min). Zero: 2 min.
	RelayUpgrade time.Duration
	// RelayRootCAs verifies the TLS certificates of turns: relays a
	// UDP-blocked node puts its socket on (docs/relay.md §1a). Nil: the
	// system roots.
	RelayRootCAs *x509.CertPool
	// RelaySocketRenew is how long a UDP-blocked node keeps one relay
	// socket allocation before it makes a fresh one (below the relay's
	// allocation lifetime cap, 1 h on our hubs and coturn's default;
	// docs/relay.md). Zero: 45 min.
	RelaySocketRenew time.Duration
	// Limits bound what callers can make this host send or run
	// (docs/security.md). Zero fields: DefaultPunchLimits.
	Limits PunchLimits
	// IncludeLoopback lets ICE offer loopback candidates (single-machine
	// tests). False (the default): it does not.
	IncludeLoopback bool
	// DisableNAT skips NAT classification (the record then says "unknown").
	// False (the default): classify at start and every NATInterval.
	DisableNAT bool
	// DisableMaintenance stops the background bootstrap/NAT/publish loop;
	// tests drive those steps explicitly. False (the default): the loop runs.
	DisableMaintenance bool
	// PortMapping asks the home router to forward our UDP port
	// (docs/port-mapping.md): "auto" (PCP, then NAT-PMP, then UPnP), "pcp",
	// "natpmp", "upnp" or "off". Default (""): "auto", except "off" with
	// PacketConn or DisableMaintenance (tests, one-shot clients). A
	// loopback ListenAddr is never mapped, whatever the mode.
	PortMapping string
	// PortMap tunes the mapper (gateway, lease, check interval, timeouts);
	// zero fields take portmap.Config's defaults. Mode, InternalPort,
	// Logger, Now and OnChange are set by the host.
	PortMap portmap.Config
	// PublicAddr is a port forward the user set up by hand ("IPv4:port"); it
	// is published first in the endpoint record as stated, without proof.
	// Default (""): none.
	PublicAddr string
	// ModeA bounds inbound application connections. Zero fields:
	// DefaultModeAConfig.
	ModeA ModeAConfig
}

// DefaultConfig returns every tunable at its default; set Key before New.
func DefaultConfig() Config {
	return Config{
		ListenAddr:       DefaultListenAddr,
		ICE:              DefaultICETimers(),
		Sched:            DefaultSchedConfig(),
		PoolSize:         DefaultPoolSize,
		PoolIdle:         DefaultPoolIdle,
		PunchTimeout:     DefaultPunchTimeout,
		HandshakeLimit:   DefaultHandshakeLimit,
		NATInterval:      DefaultNATInterval,
		NATTimeout:       DefaultNATTimeout,
		RecordTTL:        DefaultRecordTTL,
		RelayWait:        defaultRelayWait,
		RelayUpgrade:     defaultRelayUpgrade,
		RelaySocketRenew: defaultRelaySocketRenew,
		ModeA:            DefaultModeAConfig(),
		Limits:           DefaultPunchLimits(),
	}
}

// fill validates c and replaces zero fields by their defaults. It resolves
// PortMapping to the mode that applies (never "" afterwards).
func (c *Config) fill() error {
	if len(c.Key) != ed25519.PrivateKeySize {
		return fmt.Errorf("%w: Key must be an Ed25519 private key (%d bytes), got %d bytes",
			errConfig, ed25519.PrivateKeySize, len(c.Key))
	}
	if c.PoolSize < 0 || c.PoolIdle < 0 || c.PunchTimeout < 0 || c.HandshakeLimit < 0 ||
		c.NATInterval < 0 || c.NATTimeout < 0 || c.RelayWait < 0 || c.RelayUpgrade < 0 || c.RelaySocketRenew < 0 {
		return fmt.Errorf("%w: negative PoolSize, PoolIdle, PunchTimeout, HandshakeLimit, NATInterval, NATTimeout, RelayWait, RelayUpgrade or RelaySocketRenew", errConfig)
	}
	for _, t := range c.TURN {
		if err := t.validate(); err != nil {
			return fmt.Errorf("host: %w", err)
		}
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	for _, u := range c.HubURLs { // refused before anything binds or is published
		if _, err := signal.CanonicalURL(u); err != nil {
			return fmt.Errorf("host: hub URL %q: %w", u, err)
		}
	}
	mode, err := c.portMappingMode()
	if err != nil {
		return fmt.Errorf("host: %w", err)
	}
	c.PortMapping = mode
	pc := c.PortMap
	pc.Mode, pc.InternalPort = portmap.ModeAuto, 1 // the mode is checked above, the port known once bound
	if err := portmap.Validate(pc); err != nil {
		return fmt.Errorf("host: %w", err)
	}
	if _, err := parsePublicAddr(c.PublicAddr); err != nil {
		return err
	}
	if err := c.ICE.fill(); err != nil {
		return err
	}
	if c.Sched.Clock == nil { // the scheduler follows the host's clock
		c.Sched.Clock = c.Clock
	}
	if err := c.Sched.fill(); err != nil {
		return err
	}
	if err := c.ModeA.fill(); err != nil {
		return err
	}
	if err := c.Limits.fill(); err != nil {
		return err
	}
	d := DefaultConfig()
	defaults.Or(&c.ListenAddr, d.ListenAddr)
	defaults.Or(&c.PoolSize, d.PoolSize)
	defaults.Or(&c.PoolIdle, d.PoolIdle)
	defaults.Or(&c.PunchTimeout, d.PunchTimeout)
	defaults.Or(&c.HandshakeLimit, d.HandshakeLimit)
	defaults.Or(&c.NATInterval, d.NATInterval)
	defaults.Or(&c.NATTimeout, d.NATTimeout)
	defaults.Or(&c.RecordTTL, d.RecordTTL)
	defaults.Or(&c.RelayWait, d.RelayWait)
	defaults.Or(&c.RelayUpgrade, d.RelayUpgrade)
	defaults.Or(&c.RelaySocketRenew, d.RelaySocketRenew)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// ICETimers are the pion timers, set explicitly so behaviour does not drift
// with the library version; short values suit vnet tests. None can be
// switched off: zero means the default (DefaultICETimers).
type ICETimers struct {
	// CredWait bounds the wait for the peer's ufrag and pwd. Zero: 15 s.
	CredWait time.Duration
	// Connect bounds the connectivity checks until a pair is selected.
	// Zero: 20 s.
	Connect time.Duration
	// Check is pion's CheckInterval. Zero: 50 ms.
	Check time.Duration
	// Disconnected is pion's DisconnectedTimeout. Zero: 5 s.
	Disconnected time.Duration
	// Failed is pion's FailedTimeout. Zero: 15 s.
	Failed time.Duration
	// Keepalive is pion's KeepaliveInterval. Zero: 2 s.
	Keepalive time.Duration
}

// DefaultICETimers suit the internet: generous connect budget, pion-like checks.
func DefaultICETimers() ICETimers {
	return ICETimers{CredWait: 15 * time.Second, Connect: 20 * time.Second, Check: 50 * time.Millisecond,
		Disconnected: 5 * time.Second, Failed: 15 * time.Second, Keepalive: 2 * time.Second}
}

func (t *ICETimers) fill() error {
	d := DefaultICETimers()
	for _, f := range []struct{ v, def *time.Duration }{
		{&t.CredWait, &d.CredWait}, {&t.Connect, &d.Connect}, {&t.Check, &d.Check},
		{&t.Disconnected, &d.Disconnected}, {&t.Failed, &d.Failed}, {&t.Keepalive, &d.Keepalive},
	} {
		if *f.v < 0 {
			return fmt.Errorf("%w: negative ICE timer", errConfig)
		}
		defaults.Or(f.v, *f.def)
	}
	return nil
}

// SchedConfig bounds the punch scheduler (docs/host.md). Zero fields take
// DefaultSchedConfig's values.
type SchedConfig struct {
	// MaxConcurrent caps running attempts. Zero: 4.
	MaxConcurrent int
	// MaxLowest caps running attempts at Lowest (speculative) priority.
	// Zero: 1.
	MaxLowest int
	// QueueLen bounds each priority's queue; Lowest drops its oldest
	// request beyond it, the others refuse the new one. Zero: 64.
	QueueLen int
	// BackoffBase is the back-off after a peer's first failure, doubled per
	// further failure. Zero: 30 s.
	BackoffBase time.Duration
	// BackoffMax caps the back-off. Zero: 10 min.
	BackoffMax time.Duration
	// MaxBackoff bounds the peers remembered in the back-off table. Zero:
	// 4096.
	MaxBackoff int
	// DisableBackoff never refuses a request for earlier failures. False
	// (the default): failed peers are backed off.
	DisableBackoff bool
	// Clock times the back-off (docs/decisions.md D10). Nil: the wall
	// clock (in a Host: Config.Clock).
	Clock clock.Clock
}

// DefaultSchedConfig returns the scheduler's defaults.
func DefaultSchedConfig() SchedConfig {
	return SchedConfig{MaxConcurrent: 4, MaxLowest: 1, QueueLen: 64, BackoffBase: 30 * time.Second,
		BackoffMax: 10 * time.Minute, MaxBackoff: 4096}
}

func (c *SchedConfig) fill() error {
	if c.MaxConcurrent < 0 || c.MaxLowest < 0 || c.QueueLen < 0 || c.BackoffBase < 0 || c.BackoffMax < 0 || c.MaxBackoff < 0 {
		return fmt.Errorf("%w: negative scheduler limit", errConfig)
	}
	d := DefaultSchedConfig()
	defaults.Or(&c.MaxConcurrent, d.MaxConcurrent)
	defaults.Or(&c.MaxLowest, d.MaxLowest)
	defaults.Or(&c.QueueLen, d.QueueLen)
	defaults.Or(&c.BackoffBase, d.BackoffBase)
	defaults.Or(&c.BackoffMax, d.BackoffMax)
	defaults.Or(&c.MaxBackoff, d.MaxBackoff)
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	return nil
}

// PoolConfig configures a Mode B pool. Zero fields take DefaultPoolConfig's
// values.
type PoolConfig struct {
	// Self is our NodeID, for the glare tie-break.
	Self a2al.NodeID
	// MaxSize is the number of entries; the least recently used goes beyond
	// it. Zero: DefaultPoolSize (64).
	MaxSize int
	// IdleTimeout closes an entry that carried no DHT message for this long
	// (checked by ExpireIdle). Zero: DefaultPoolIdle (5 min).
	IdleTimeout time.Duration
	// DisableIdleExpiry makes ExpireIdle a no-op. False (the default):
	// IdleTimeout applies.
	DisableIdleExpiry bool
	// SendQueueLen bounds each entry's send queue; a message beyond it is
	// refused with ErrSendQueueFull. Zero: 64.
	SendQueueLen int
	// SilenceTimeout: a connection that receives no packet at all (not even
	// a QUIC ACK) within this long after we sent on it is dead. Zero: 5 s.
	SilenceTimeout time.Duration
	// Logger receives diagnostics. Nil: slog.Default().
	Logger *slog.Logger
	// Clock drives idle expiry, freshness and the silence check
	// (docs/decisions.md D10); stream deadlines stay on the wall clock.
	// Nil: the wall clock (in a Host: Config.Clock).
	Clock clock.Clock
	// OnRemove is called (outside the pool lock) when an entry leaves the
	// pool. Nil: nothing is called.
	OnRemove func(id a2al.NodeID, reason string)
	// OnReceive is called (from a receive goroutine) for every DHT message
	// that arrives over a pooled connection; it must not block. Nil:
	// nothing is called.
	OnReceive func(id a2al.NodeID)
	// Relayed reports a connection to id at remote as relayed although ICE
	// picked no relay candidate: our socket or the peer's endpoint is a
	// TURN allocation (docs/relay.md §1a). Called without
	// the pool's lock. Nil: only the path type the caller gives counts.
	Relayed func(id a2al.NodeID, remote net.Addr) bool
}

// DefaultPoolConfig returns the pool's defaults; set Self.
func DefaultPoolConfig() PoolConfig {
	return PoolConfig{MaxSize: DefaultPoolSize, IdleTimeout: DefaultPoolIdle, SendQueueLen: 64,
		SilenceTimeout: 5 * time.Second}
}

func (c *PoolConfig) fill() error {
	if c.MaxSize < 0 || c.IdleTimeout < 0 || c.SendQueueLen < 0 || c.SilenceTimeout < 0 {
		return fmt.Errorf("%w: negative pool limit", errConfig)
	}
	d := DefaultPoolConfig()
	defaults.Or(&c.MaxSize, d.MaxSize)
	defaults.Or(&c.IdleTimeout, d.IdleTimeout)
	defaults.Or(&c.SendQueueLen, d.SendQueueLen)
	defaults.Or(&c.SilenceTimeout, d.SilenceTimeout)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	return nil
}

// ModeAConfig bounds inbound application (Mode A) connections so callers
// cannot squat on a node's slots (docs/modea.md). Zero fields take
// DefaultModeAConfig's values.
type ModeAConfig struct {
	// MaxConns caps inbound Mode A connections in total. Zero: 256.
	MaxConns int
	// MaxPerIP caps inbound Mode A connections from one remote IPv4 address
	// or IPv6 /64 (one subscriber's prefix). Zero: 16 (a household behind
	// one NAT).
	MaxPerIP int
	// MaxPerPeer caps inbound Mode A connections from one verified identity.
	// Zero: 4.
	MaxPerPeer int
	// IdleTimeout closes an inbound connection after this long without
	// application activity (stream opened, bytes read or written); QUIC
	// keepalives do not count. Zero: 5 min.
	IdleTimeout time.Duration
	// DisableIdleTimeout keeps idle inbound connections open. False (the
	// default): IdleTimeout applies.
	DisableIdleTimeout bool
	// RouteTimeout bounds the agent-route exchange on both sides. Zero:
	// 10 s.
	RouteTimeout time.Duration
}

// DefaultModeAConfig returns the Mode A defaults.
func DefaultModeAConfig() ModeAConfig {
	return ModeAConfig{MaxConns: 256, MaxPerIP: 16, MaxPerPeer: 4, IdleTimeout: 5 * time.Minute,
		RouteTimeout: 10 * time.Second}
}

func (c *ModeAConfig) fill() error {
	if c.MaxConns < 0 || c.MaxPerIP < 0 || c.MaxPerPeer < 0 || c.IdleTimeout < 0 || c.RouteTimeout < 0 {
		return fmt.Errorf("%w: negative Mode A limit", errConfig)
	}
	d := DefaultModeAConfig()
	defaults.Or(&c.MaxConns, d.MaxConns)
	defaults.Or(&c.MaxPerIP, d.MaxPerIP)
	defaults.Or(&c.MaxPerPeer, d.MaxPerPeer)
	defaults.Or(&c.IdleTimeout, d.IdleTimeout)
	defaults.Or(&c.RouteTimeout, d.RouteTimeout)
	return nil
}

// fill replaces ServiceConfig's zero limits by their defaults and refuses
// negative ones (Serve checks the rest, which needs the host).
func (c *ServiceConfig) fill() error {
	if c.MaxStreams < 0 || c.DialTimeout < 0 {
		return fmt.Errorf("%w: negative MaxStreams or DialTimeout", errConfig)
	}
	defaults.Or(&c.MaxStreams, 32)
	defaults.Or(&c.DialTimeout, 5*time.Second)
	return nil
}

// fill replaces TunnelConfig's zero limits by their defaults and refuses
// negative ones.
func (c *TunnelConfig) fill() error {
	if c.MaxConns < 0 || c.DialTimeout < 0 {
		return fmt.Errorf("%w: negative MaxConns or DialTimeout", errConfig)
	}
	defaults.Or(&c.MaxConns, 64)
	defaults.Or(&c.DialTimeout, 30*time.Second)
	return nil
}
