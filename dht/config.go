package dht

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/clock"
	"github.com/a2alnode/a2al/crypto"
	"github.com/a2alnode/a2al/internal/defaults"
	"github.com/a2alnode/a2al/transport"
)

// Config holds the dependencies and tunables of a DHT node. Transport and
// Keystore are required; every other field may be left zero, which means
// the default its comment states (DefaultConfig holds them all). NewNode
// fills and validates a copy in one place (fill).
type Config struct {
	// Transport carries the node's datagrams. Required.
	Transport transport.Transport
	// Keystore holds the node's one Ed25519 identity. Required.
	Keystore crypto.KeyStore
	// OnObservedAddr receives the observed_addr of PONG / FIND_*_RESP
	// answers with the address the answer came from (the reporter's, as we
	// reach it). Nil: they are not reported.
	OnObservedAddr func(reporter a2al.NodeID, from net.Addr, wire []byte)
	// RecordAuth is the authority policy for stored and fetched records.
	// Nil means none (tests only; NewNode logs a warning): production code
	// passes SecureRecordAuth.
	RecordAuth RecordAuthFunc
	// Logger receives diagnostics. Nil: slog.Default().
	Logger *slog.Logger
	// SeenPeersPath persists the seen-peers window (mode 0600). Empty: not
	// persisted.
	SeenPeersPath string
	// PunchTransport is the optional hole-punch layer. Nil: UDP only.
	PunchTransport PunchTransport
	// Clock drives timers, expiry and back-off (docs/decisions.md D10). Nil: the wall
	// clock.
	Clock Clock

	// MaxStoreKeys limits the distinct keys in the local store. Zero:
	// DefaultMaxTotalKeys. SetMaxStoreKeys changes it on a running node.
	MaxStoreKeys int
	// MaxStoreBytes bounds the approximate memory of the local store;
	// records are evicted fairly per source prefix beyond it. Zero:
	// DefaultMaxStoreBytes.
	MaxStoreBytes int64
	// PassiveRouting suppresses the node's own proactive lookups (bucket
	// refill, renewal lookups); caller-initiated queries still run. False
	// (the default): the node keeps its table and replicas fresh itself.
	// SetPassiveRouting changes it on a running node.
	PassiveRouting bool

	// Security limits (docs/dht-security.md). None can be switched off:
	// zero means the default.

	// ReplayWindow is how long a verified request's (sender, tx_id) is
	// remembered so that a replay of it is dropped. Zero:
	// DefaultReplayWindow (10 min).
	ReplayWindow time.Duration
	// ReplayCacheSize bounds the replay cache: entries per generation (two
	// are kept). Zero: DefaultReplayCacheSize (65536, about 2 MB at most).
	ReplayCacheSize int
	// MaxAddrChallenges bounds the PINGs in flight that check a peer's new
	// address before its dial address moves there. Zero:
	// DefaultMaxAddrChallenges (64).
	MaxAddrChallenges int
	// AddrChallengeRate is the global budget, per second, of those PINGs
	// (burst twice as many). Zero: DefaultAddrChallengeRate (20).
	AddrChallengeRate float64
	// UnprovenAnswerRate is the per-source-IP budget, per second, of
	// answers larger than their request (FIND_NODE, FIND_VALUE) sent to a
	// source not yet proven to be the sender's address (burst twice as
	// many). Proven sources get the amplify budget of 100/s. Zero:
	// DefaultUnprovenAnswerRate (10).
	UnprovenAnswerRate float64
}

// Security defaults (see the Config fields).
const (
	DefaultReplayWindow       = 10 * time.Minute
	DefaultReplayCacheSize    = 1 << 16
	DefaultMaxAddrChallenges  = 64
	DefaultAddrChallengeRate  = 20
	DefaultUnprovenAnswerRate = 10
)

// DefaultConfig returns every tunable at its default; set Transport,
// Keystore and RecordAuth before NewNode.
func DefaultConfig() Config {
	return Config{
		MaxStoreKeys:       DefaultMaxTotalKeys,
		MaxStoreBytes:      DefaultMaxStoreBytes,
		ReplayWindow:       DefaultReplayWindow,
		ReplayCacheSize:    DefaultReplayCacheSize,
		MaxAddrChallenges:  DefaultMaxAddrChallenges,
		AddrChallengeRate:  DefaultAddrChallengeRate,
		UnprovenAnswerRate: DefaultUnprovenAnswerRate,
	}
}

// fill replaces zero fields by their defaults (DefaultConfig, slog.Default,
// the wall clock) and rejects a missing transport or key store and
// negative limits.
func (c *Config) fill() error {
	if c.Transport == nil || c.Keystore == nil {
		return fmt.Errorf("%w: Transport and Keystore are required", errConfig)
	}
	if c.MaxStoreKeys < 0 || c.MaxStoreBytes < 0 || c.ReplayWindow < 0 || c.ReplayCacheSize < 0 ||
		c.MaxAddrChallenges < 0 || c.AddrChallengeRate < 0 || c.UnprovenAnswerRate < 0 {
		return fmt.Errorf("%w: negative limit", errConfig)
	}
	d := DefaultConfig()
	defaults.Or(&c.MaxStoreKeys, d.MaxStoreKeys)
	defaults.Or(&c.MaxStoreBytes, d.MaxStoreBytes)
	defaults.Or(&c.ReplayWindow, d.ReplayWindow)
	defaults.Or(&c.ReplayCacheSize, d.ReplayCacheSize)
	defaults.Or(&c.MaxAddrChallenges, d.MaxAddrChallenges)
	defaults.Or(&c.AddrChallengeRate, d.AddrChallengeRate)
	defaults.Or(&c.UnprovenAnswerRate, d.UnprovenAnswerRate)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	return nil
}
