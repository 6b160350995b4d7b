package signal

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/a2alnode/a2al/clock"
	"github.com/prometheus/client_golang/prometheus"
)

// HubConfig configures a Hub. Every numeric field takes its
// DefaultHubConfig value when zero (or negative). docs/signaling.md §6
// explains why each limit has the value it has.
type HubConfig struct {
	// PublicURLs are the URLs nodes dial to reach this hub (e.g.
	// "wss://hub.example.org/v2/signal"). A node's signature must name one of
	// them, so a signature obtained by another hub cannot be replayed here.
	// Empty: accept the URL formed from the request's Host header and path
	// (convenient, but an attacker who controls the Host header it sends
	// could relay a signature made for its own hub; configure this in production).
	PublicURLs []string

	MaxConns       int     // total WebSocket connections (default 20000)
	MaxConnsPerIP  int     // WebSocket connections per remote IPv4 address or IPv6 /64 (default 64)
	MaxMessageSize int64   // larger frames close the connection with 1009 (default 8 KiB)
	MsgRate        float64 // sustained frames per second per connection (default 20)
	MsgBurst       int     // token bucket size of MsgRate (default 60)

	// MaxPending caps TCP connections accepted through Hub.Listener that are
	// not (yet) WebSockets: TLS and HTTP handshakes in progress, plain HTTP
	// requests. Together with MaxConns it bounds the sockets the hub holds.
	// Default 1024.
	MaxPending int
	// MaxPendingPerIP caps those per remote IPv4 address or IPv6 /64; excess
	// connections are closed at accept, before a byte is read. Default 32.
	MaxPendingPerIP int
	// HandshakeTimeout is the time from TCP accept until the WebSocket is
	// up: TLS handshake, request headers and upgrade must all fit in it, and
	// a connection that never upgrades (e.g. /metrics) is closed when it
	// ends. Enforced by Hub.Listener. Default 5 s.
	HandshakeTimeout time.Duration

	// CalleeCallRate and CalleeCallBurst bound the calls the hub rings
	// through to one registered node, from all callers together (defaults
	// 20/s, burst 40). Excess calls get error{cid, callee_busy}.
	CalleeCallRate  float64
	CalleeCallBurst int
	// SourceCallRate and SourceCallBurst bound the calls to one node from
	// callers at one IPv4 address or IPv6 /64 (defaults 2/s, burst 8), so
	// one address cannot use up a callee's budget (capped at the callee
	// values). Excess: callee_busy.
	SourceCallRate  float64
	SourceCallBurst int
	// MaxSessionsPerSource caps concurrent sessions between one callee and
	// callers at one address (default 8): callers at a few addresses cannot
	// fill the callee's MaxSessionsPerNode (capped at it). Excess: callee_busy.
	MaxSessionsPerSource int
	// ReplyRate and ReplyBurst are a callee's budget for the frames it sends
	// in sessions others opened (accept, reject, sig, hangup), kept apart
	// from MsgRate so that being called can never get a node disconnected.
	// A reply over budget ends that session (reason rate_limited) and
	// nothing else. Defaults 200/s, burst 400: CalleeCallBurst calls of ten
	// frames each.
	ReplyRate  float64
	ReplyBurst int

	AuthTimeout     time.Duration // time to answer the challenge (default 10 s)
	PairTimeout     time.Duration // time for the callee to accept a call (default 15 s)
	SessionLifetime time.Duration // hard cap on a session, from call to end (default 60 s)
	MaxSessionBytes int           // relayed signal bytes per session, both directions (default 64 KiB)

	MaxSessionsPerNode int // concurrent sessions a NodeID takes part in (default 32)
	MaxSessions        int // concurrent sessions in the hub (default 20000)

	PingInterval  time.Duration // hub sends a WebSocket ping this often (default 25 s)
	IdleTimeout   time.Duration // nothing read (not even a pong) for this long: close (default 60 s)
	WriteTimeout  time.Duration // per frame write (default 10 s)
	SweepInterval time.Duration // period of the shared timeout sweeper (default 1 s)
	// SendQueue is the number of frames queued per connection (default 256).
	// Frames a node caused itself (answers to its own frames, accepted/end
	// of its sessions, pings) have a reserve of MsgBurst +
	// 2·MaxSessionsPerNode + 8 frames, so a node within its allowance is
	// never dropped; frames relayed from others (incoming calls, sig) use
	// the rest and are refused when it is full (the call gets callee_busy,
	// the session ends with reason busy). Must exceed the reserve. A node
	// that lets even the reserve overflow (it does not read) is dropped.
	SendQueue int

	ReadBufferSize  int // gorilla read buffer per connection (default 1024)
	WriteBufferSize int // gorilla write buffer, pooled, held only while writing (default 2048)

	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: the hub's own registry (Hub.Registry)
	// Clock drives the sweeper, the rate limits and the session and idle
	// timeouts (docs/decisions.md D10); socket deadlines stay on the wall clock. Nil:
	// the wall clock.
	Clock clock.Clock

	// TURN issues relay credentials to authenticated nodes (docs/relay.md);
	// nil: the hub serves no TURN and answers turn_req with no_turn.
	TURN *TURNAuth
}

// DefaultHubConfig returns limits sized for a public hub with a few
// thousand nodes; signaling sessions are short and small.
func DefaultHubConfig() HubConfig {
	return HubConfig{
		MaxConns:             20000,
		MaxConnsPerIP:        64,
		MaxMessageSize:       8 << 10,
		MsgRate:              20,
		MsgBurst:             60,
		MaxPending:           1024,
		MaxPendingPerIP:      32,
		HandshakeTimeout:     5 * time.Second,
		CalleeCallRate:       20,
		CalleeCallBurst:      40,
		SourceCallRate:       2,
		SourceCallBurst:      8,
		MaxSessionsPerSource: 8,
		ReplyRate:            200,
		ReplyBurst:           400,
		AuthTimeout:          10 * time.Second,
		PairTimeout:          15 * time.Second,
		SessionLifetime:      60 * time.Second,
		MaxSessionBytes:      64 << 10,
		MaxSessionsPerNode:   32,
		MaxSessions:          20000,
		PingInterval:         25 * time.Second,
		IdleTimeout:          60 * time.Second,
		WriteTimeout:         10 * time.Second,
		SweepInterval:        time.Second,
		SendQueue:            256,
		ReadBufferSize:       1024,
		WriteBufferSize:      2048,
	}
}

// fill replaces zero fields by their defaults and checks the relations
// between limits.
func (c *HubConfig) fill() error {
	d := DefaultHubConfig()
	setI := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	setF := func(p *float64, v float64) {
		if *p <= 0 {
			*p = v
		}
	}
	setD := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	setI(&c.MaxConns, d.MaxConns)
	setI(&c.MaxConnsPerIP, d.MaxConnsPerIP)
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = d.MaxMessageSize
	}
	setF(&c.MsgRate, d.MsgRate)
	setI(&c.MsgBurst, d.MsgBurst)
	setI(&c.MaxPending, d.MaxPending)
	setI(&c.MaxPendingPerIP, d.MaxPendingPerIP)
	setD(&c.HandshakeTimeout, d.HandshakeTimeout)
	setF(&c.CalleeCallRate, d.CalleeCallRate)
	setI(&c.CalleeCallBurst, d.CalleeCallBurst)
	setF(&c.SourceCallRate, d.SourceCallRate)
	setI(&c.SourceCallBurst, d.SourceCallBurst)
	setI(&c.MaxSessionsPerSource, d.MaxSessionsPerSource)
	// Per-address limits above the per-callee ones would mean nothing.
	c.SourceCallBurst = min(c.SourceCallBurst, c.CalleeCallBurst)
	c.SourceCallRate = min(c.SourceCallRate, c.CalleeCallRate)
	setF(&c.ReplyRate, d.ReplyRate)
	setI(&c.ReplyBurst, d.ReplyBurst)
	setD(&c.AuthTimeout, d.AuthTimeout)
	setD(&c.PairTimeout, d.PairTimeout)
	setD(&c.SessionLifetime, d.SessionLifetime)
	setI(&c.MaxSessionBytes, d.MaxSessionBytes)
	setI(&c.MaxSessionsPerNode, d.MaxSessionsPerNode)
	c.MaxSessionsPerSource = min(c.MaxSessionsPerSource, c.MaxSessionsPerNode)
	setI(&c.MaxSessions, d.MaxSessions)
	setD(&c.PingInterval, d.PingInterval)
	setD(&c.IdleTimeout, d.IdleTimeout)
	setD(&c.WriteTimeout, d.WriteTimeout)
	setD(&c.SweepInterval, d.SweepInterval)
	setI(&c.SendQueue, d.SendQueue)
	setI(&c.ReadBufferSize, d.ReadBufferSize)
	setI(&c.WriteBufferSize, d.WriteBufferSize)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if r := c.ownReserve(); c.SendQueue <= r {
		return fmt.Errorf("signal: hub config: SendQueue %d must exceed MsgBurst + 2*MaxSessionsPerNode + 8 = %d, "+
			"or a node within its frame allowance could be dropped", c.SendQueue, r)
	}
	if c.IdleTimeout <= c.PingInterval {
		return fmt.Errorf("signal: hub config: IdleTimeout %v must exceed PingInterval %v, "+
			"or idle nodes are dropped before they can answer a ping", c.IdleTimeout, c.PingInterval)
	}
	return nil
}

// ownReserve is the part of SendQueue kept for frames a node caused itself:
// one answer per frame of its burst, accepted and end for each of its
// sessions, and a few control frames (ping, replaced, error, close).
func (c *HubConfig) ownReserve() int { return c.MsgBurst + 2*c.MaxSessionsPerNode + 8 }
