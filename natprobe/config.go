package natprobe

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/a2alnode/a2al/clock"
)

// Defaults for ClassifyConfig and ServerConfig (DefaultClassifyConfig,
// DefaultServerConfig hold them all).
const (
	DefaultTimeout        = 2 * time.Second
	DefaultEchoTimeout    = 5 * time.Second
	DefaultRatePerSource  = 50
	DefaultBurstPerSource = 100
)

// ClassifyConfig configures Classify. Conn and Servers are required; any
// other field left zero takes the default its comment states.
type ClassifyConfig struct {
	// Conn is the socket to classify, normally the node's shared socket.
	// Classify writes requests to it and never closes it. Required.
	Conn net.PacketConn
	// Servers are STUN "host:port" addresses. The first that answers is the
	// primary; one RFC 5780 server (with OTHER-ADDRESS on a second IP) is
	// enough, a second server at another IP substitutes for it in the
	// mapping test. Required (at least one).
	Servers []string
	// Timeout bounds each transaction (3 sends with back-off inside it);
	// zero or negative means DefaultTimeout (2 s): a transaction without a
	// bound makes no sense. Filtering tests that get no answer cost one
	// Timeout each (they run concurrently).
	Timeout time.Duration
	// EchoProbe, optional, asks a peer at another IP to send an unsolicited
	// packet to claimed (our mapped address) and reports whether it arrived.
	// Used when the server cannot change IP. Nil: no echo test.
	EchoProbe func(ctx context.Context, claimed *net.UDPAddr) (bool, error)
	// EchoTimeout bounds EchoProbe; zero or negative means
	// DefaultEchoTimeout (5 s).
	EchoTimeout time.Duration
	// InstallHook, when set, is called with the classifier's packet handler
	// and must route incoming STUN packets to it until the returned remove
	// function is called (wire it to transport.Demux.AddSTUNHook). The
	// handler returns true only for answers to its own transactions, so
	// several classifications may share one socket. When
	// nil, Classify reads Conn itself for the duration of the run and
	// discards packets that are not its answers, so only do that on a
	// socket that carries nothing else meanwhile.
	InstallHook func(handler func(pkt []byte, from net.Addr) bool) (remove func(), err error)
	// LocalIPs are this host's addresses, used to recognise "open" when Conn
	// is bound to the unspecified address. Nil: net.InterfaceAddrs().
	LocalIPs []net.IP
	// Resolver resolves server names. Nil: net.DefaultResolver.
	Resolver Resolver
	// Logger receives debug logs. Nil: discarded.
	Logger *slog.Logger
	// Clock times transactions and retransmissions (docs/decisions.md D10). Nil: the
	// wall clock.
	Clock clock.Clock
}

// DefaultClassifyConfig returns the defaults; set Conn and Servers.
func DefaultClassifyConfig() ClassifyConfig {
	return ClassifyConfig{Timeout: DefaultTimeout, EchoTimeout: DefaultEchoTimeout}
}

// fill checks the required fields and replaces unset ones by their
// defaults.
func (c *ClassifyConfig) fill() error {
	if c.Conn == nil {
		return errors.New("natprobe: ClassifyConfig.Conn is nil")
	}
	if len(c.Servers) == 0 {
		return errors.New("natprobe: no STUN servers configured")
	}
	d := DefaultClassifyConfig()
	if c.Timeout <= 0 {
		c.Timeout = d.Timeout
	}
	if c.EchoTimeout <= 0 {
		c.EchoTimeout = d.EchoTimeout
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	if c.Logger == nil {
		c.Logger = discardLogger()
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	return nil
}

// ServerConfig configures NewServer. Either Conns or Addr must be set; any
// other field left zero takes the default its comment states.
type ServerConfig struct {
	// Addr is the primary "ip:port" to listen on, e.g. "203.0.113.7:3478".
	// Use a concrete IP: it is advertised in RESPONSE-ORIGIN/OTHER-ADDRESS
	// (override with AdvertiseIP when behind a 1:1 NAT).
	Addr string
	// AltPort is the alternate port; 0 means Addr's port + 1 (or an
	// ephemeral port when Addr's port is 0).
	AltPort int
	// AltIP is the optional second IP; when set the server listens on both
	// ports of it too and supports CHANGE-REQUEST change-IP. Empty: one IP.
	AltIP string
	// Net opens the sockets. Nil: the real network.
	Net PacketListener
	// Conns, when Primary is set, are used instead of listening. The server
	// does not close them; it unblocks its readers with a past read
	// deadline on Close, so they must honour SetReadDeadline.
	Conns ServerConns
	// AdvertiseIP / AdvertiseAltIP override the addresses put in
	// RESPONSE-ORIGIN and OTHER-ADDRESS. Nil: the sockets' own addresses.
	AdvertiseIP, AdvertiseAltIP net.IP
	// ReplySlack lets replies exceed the request size by this many bytes.
	// 0 (the default) means strictly no amplification. Plain ICE/STUN
	// clients send 20-byte requests and need a slack of at least 12 for
	// the minimal IPv4 reply.
	ReplySlack int
	// RatePerSource is the sustained number of requests per second the
	// server answers from one source (IPv4 address or IPv6 /64); the rest
	// are dropped and counted. Sources can be forged, so this bounds what
	// the server sends to any one address. Zero means DefaultRatePerSource
	// (50/s): a NAT classification takes about ten requests, an ICE
	// gathering one or two, so many nodes behind one address fit.
	RatePerSource float64
	// BurstPerSource is the bucket size of RatePerSource. Zero:
	// DefaultBurstPerSource (100).
	BurstPerSource int
	// DisableRateLimit answers every source without limit (tests, private
	// deployments). False (the default): RatePerSource applies.
	DisableRateLimit bool
	// Logger receives debug logs. Nil: discarded.
	Logger *slog.Logger
	// Clock refills the per-source buckets (docs/decisions.md D10). Nil: the wall
	// clock.
	Clock clock.Clock
}

// DefaultServerConfig returns the defaults; set Addr or Conns.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{RatePerSource: DefaultRatePerSource, BurstPerSource: DefaultBurstPerSource}
}

// fill replaces zero fields by their defaults and rejects negative ones.
func (c *ServerConfig) fill() error {
	if c.ReplySlack < 0 || c.AltPort < 0 || (!c.DisableRateLimit && (c.RatePerSource < 0 || c.BurstPerSource < 0)) {
		return errors.New("natprobe: server config: negative ReplySlack, AltPort or rate limit (switch the limit off with DisableRateLimit)")
	}
	d := DefaultServerConfig()
	if c.RatePerSource == 0 {
		c.RatePerSource = d.RatePerSource
	}
	if c.BurstPerSource == 0 {
		c.BurstPerSource = d.BurstPerSource
	}
	if c.Logger == nil {
		c.Logger = discardLogger()
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	return nil
}
