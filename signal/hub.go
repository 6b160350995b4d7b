package signal

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// HubConfig configures a Hub. Zero fields take the DefaultHubConfig value.
type HubConfig struct {
	// PublicURLs are the URLs nodes dial to reach this hub (e.g.
	// "wss://hub.example.org/v2/signal"). A node's signature must name one of
	// them, so a signature obtained by another hub cannot be replayed here.
	// Empty: accept the URL formed from the request's Host header and path
	// (convenient, but an attacker who controls the Host header it sends
	// could relay a signature made for its own hub; configure this in production).
	PublicURLs []string

	MaxConns       int     // total WebSocket connections
	MaxConnsPerIP  int     // connections per remote IPv4 address or IPv6 /64
	MaxMessageSize int64   // larger frames close the connection (1009)
	MsgRate        float64 // sustained frames per second per connection
	MsgBurst       int     // token bucket size

	AuthTimeout     time.Duration // time to answer the challenge
	PairTimeout     time.Duration // time for the callee to accept a call
	SessionLifetime time.Duration // hard cap on a session, from call to end
	MaxSessionBytes int           // relayed signal bytes per session (both directions)

	MaxSessionsPerNode int // concurrent sessions a NodeID takes part in
	MaxSessions        int // concurrent sessions in the hub

	PingInterval  time.Duration // hub sends a WebSocket ping this often
	IdleTimeout   time.Duration // nothing read (not even a pong) for this long: close
	WriteTimeout  time.Duration // per frame write
	SweepInterval time.Duration // period of the shared timeout sweeper
	SendQueue     int           // frames queued per connection; overflow drops the connection

	ReadBufferSize  int // gorilla read buffer per connection
	WriteBufferSize int // gorilla write buffer (pooled, held only while writing)

	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: the hub's own registry (Hub.Registry)
}

// DefaultHubConfig returns limits sized for a public hub with a few
// thousand nodes; signaling sessions are short and small.
func DefaultHubConfig() HubConfig {
	return HubConfig{
		MaxConns:           20000,
		MaxConnsPerIP:      64,
		MaxMessageSize:     8 << 10,
		MsgRate:            20,
		MsgBurst:           60,
		AuthTimeout:        10 * time.Second,
		PairTimeout:        15 * time.Second,
		SessionLifetime:    60 * time.Second,
		MaxSessionBytes:    64 << 10,
		MaxSessionsPerNode: 32,
		MaxSessions:        20000,
		PingInterval:       25 * time.Second,
		IdleTimeout:        60 * time.Second,
		WriteTimeout:       10 * time.Second,
		SweepInterval:      time.Second,
		SendQueue:          32,
		ReadBufferSize:     1024,
		WriteBufferSize:    2048,
	}
}

func (c *HubConfig) fill() {
	d := DefaultHubConfig()
	setI := func(p *int, v int) {
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
	if c.MsgRate <= 0 {
		c.MsgRate = d.MsgRate
	}
	setI(&c.MsgBurst, d.MsgBurst)
	setD(&c.AuthTimeout, d.AuthTimeout)
	setD(&c.PairTimeout, d.PairTimeout)
	setD(&c.SessionLifetime, d.SessionLifetime)
	setI(&c.MaxSessionBytes, d.MaxSessionBytes)
	setI(&c.MaxSessionsPerNode, d.MaxSessionsPerNode)
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
}

// HubStats is a snapshot of hub state.
type HubStats struct {
	Connections int // open (and upgrading) WebSocket connections
	Registered  int // NodeIDs registered as callees
	Sessions    int // sessions ringing or active
}

// Hub is the signaling server. Mount it with Handler (or use it directly as
// the http.Handler of SignalPath). Safe for concurrent use.
type Hub struct {
	cfg        HubConfig
	log        *slog.Logger
	m          *hubMetrics
	reg        *prometheus.Registry
	upgrader   websocket.Upgrader
	publicURLs map[string]bool

	mu           sync.Mutex
	closed       bool
	nconns       int // reserved + open connections
	conns        map[*hubConn]struct{}
	perIP        map[netip.Addr]int
	registered   map[a2al.NodeID]*hubConn
	sessions     map[string]*hubSession
	nodeSessions map[a2al.NodeID]int

	wg        sync.WaitGroup // connection readers and writers
	stop      chan struct{}
	sweepDone chan struct{}
}

// NewHub validates cfg and starts the hub's sweeper.
func NewHub(cfg HubConfig) (*Hub, error) {
	cfg.fill()
	h := &Hub{
		cfg:          cfg,
		log:          cfg.Logger,
		publicURLs:   map[string]bool{},
		conns:        map[*hubConn]struct{}{},
		perIP:        map[netip.Addr]int{},
		registered:   map[a2al.NodeID]*hubConn{},
		sessions:     map[string]*hubSession{},
		nodeSessions: map[a2al.NodeID]int{},
		stop:         make(chan struct{}),
		sweepDone:    make(chan struct{}),
	}
	for _, u := range cfg.PublicURLs {
		c, err := CanonicalURL(u)
		if err != nil {
			return nil, fmt.Errorf("signal: public url: %w", err)
		}
		h.publicURLs[c] = true
	}
	reg := cfg.Registerer
	if reg == nil {
		h.reg = prometheus.NewRegistry()
		reg = h.reg
	}
	m, err := newHubMetrics(reg, h)
	if err != nil {
		return nil, err
	}
	h.m = m
	h.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.AuthTimeout,
		ReadBufferSize:   cfg.ReadBufferSize,
		WriteBufferSize:  cfg.WriteBufferSize,
		WriteBufferPool:  &sync.Pool{},
		Subprotocols:     []string{Subprotocol},
		// Nodes are not browsers and carry no ambient credentials; the
		// signature is the only authentication, so Origin is irrelevant.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	go h.sweep()
	return h, nil
}

// Registry returns the hub's own metrics registry, or nil when the caller
// supplied a Registerer.
func (h *Hub) Registry() *prometheus.Registry { return h.reg }

// Stats returns current counts.
func (h *Hub) Stats() HubStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return HubStats{Connections: h.nconns, Registered: len(h.registered), Sessions: len(h.sessions)}
}

// Handler serves SignalPath, and answers the reference hub's /signal and /ice
// with 426 so that a reference node gets a clear error.
func (h *Hub) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(SignalPath, h)
	legacy := func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "this hub speaks "+Subprotocol+" at "+SignalPath+"; a2al.ice.v1 is not supported", http.StatusUpgradeRequired)
	}
	mux.HandleFunc("/signal", legacy)
	mux.HandleFunc("/ice", legacy)
	return mux
}

// Close disconnects every node (close code 1001), stops the sweeper and
// waits for every connection goroutine; bounded by WriteTimeout.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	for c := range h.conns {
		c.fail(websocket.CloseGoingAway, CodeShutdown, "hub shutting down")
	}
	h.mu.Unlock()
	close(h.stop)
	<-h.sweepDone
	h.wg.Wait()
	return nil
}

func remoteIP(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		// One IPv6 host usually owns a whole /64; limit per prefix, not per address.
		ip = netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	return ip
}

func offersSubprotocol(r *http.Request) bool {
	for _, p := range websocket.Subprotocols(r) {
		if p == Subprotocol {
			return true
		}
	}
	return false
}

// ServeHTTP upgrades one node connection and starts its reader and writer
// goroutines (exactly two per connection).
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "websocket upgrade with subprotocol "+Subprotocol+" required", http.StatusBadRequest)
		return
	}
	if !offersSubprotocol(r) {
		h.m.refused.WithLabelValues("subprotocol").Inc()
		http.Error(w, "subprotocol "+Subprotocol+" required", http.StatusBadRequest)
		return
	}
	ip := remoteIP(r)
	h.mu.Lock()
	switch {
	case h.closed:
		h.mu.Unlock()
		h.m.refused.WithLabelValues("shutdown").Inc()
		http.Error(w, "hub shutting down", http.StatusServiceUnavailable)
		return
	case h.nconns >= h.cfg.MaxConns:
		h.mu.Unlock()
		h.m.refused.WithLabelValues("max_conns").Inc()
		http.Error(w, "hub full", http.StatusServiceUnavailable)
		return
	case h.perIP[ip] >= h.cfg.MaxConnsPerIP:
		h.mu.Unlock()
		h.m.refused.WithLabelValues("per_ip").Inc()
		http.Error(w, "too many connections from your address", http.StatusTooManyRequests)
		return
	}
	h.nconns++
	h.perIP[ip]++
	h.mu.Unlock()

	ws, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil { // the upgrader already answered with an HTTP error
		h.mu.Lock()
		h.release(ip)
		h.mu.Unlock()
		return
	}
	c := newHubConn(h, ws, ip, r)
	h.mu.Lock()
	if h.closed {
		h.release(ip)
		h.mu.Unlock()
		ws.Close()
		return
	}
	h.conns[c] = struct{}{}
	h.wg.Add(2)
	h.mu.Unlock()

	c.send(Frame{T: TChallenge, Nonce: c.nonce[:], PingMS: h.cfg.PingInterval.Milliseconds(), MaxMsg: int(h.cfg.MaxMessageSize)})
	go c.writeLoop()
	// The reader gets a fresh goroutine and this HTTP handler returns: the
	// server's per-connection state (request, buffers, a deep stack) is
	// released, which roughly halves the memory each idle node costs.
	go func() {
		defer h.wg.Done()
		c.readLoop()
		h.teardown(c)
	}()
}

// release undoes a connection reservation. Caller holds h.mu.
func (h *Hub) release(ip netip.Addr) {
	h.nconns--
	if h.perIP[ip]--; h.perIP[ip] <= 0 {
		delete(h.perIP, ip)
	}
}

// teardown forgets a connection whose reader has finished and ends its sessions.
func (h *Hub) teardown(c *hubConn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.release(c.ip)
	if c.authed && c.registered && h.registered[c.id] == c {
		delete(h.registered, c.id)
	}
	for _, s := range c.sessions {
		h.endSession(s, ReasonGone)
	}
	h.mu.Unlock()
	c.shutdown()
}

// acceptsURL reports whether a canonical signed URL names this hub.
func (h *Hub) acceptsURL(c *hubConn, signed string) bool {
	if len(h.publicURLs) > 0 {
		return h.publicURLs[signed]
	}
	for _, scheme := range []string{"ws://", "wss://"} {
		if u, err := CanonicalURL(scheme + c.reqHost + c.reqPath); err == nil && u == signed {
			return true
		}
	}
	return false
}

func newSID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand aborts the process instead)
	return hex.EncodeToString(b[:])
}

// hubSession is one call between two authenticated connections.
type hubSession struct {
	id             string
	cid            uint64
	caller, callee *hubConn
	created        time.Time
	active         bool // callee accepted
	doneCaller     bool
	doneCallee     bool
	bytes          int
}

func (s *hubSession) other(c *hubConn) *hubConn {
	if c == s.caller {
		return s.callee
	}
	return s.caller
}

// endSession removes s and tells both parties. Caller holds h.mu.
func (h *Hub) endSession(s *hubSession, reason string) {
	if _, ok := h.sessions[s.id]; !ok {
		return
	}
	delete(h.sessions, s.id)
	delete(s.caller.sessions, s.id)
	delete(s.callee.sessions, s.id)
	for _, id := range []a2al.NodeID{s.caller.id, s.callee.id} {
		if h.nodeSessions[id]--; h.nodeSessions[id] <= 0 {
			delete(h.nodeSessions, id)
		}
	}
	end := Frame{T: TEnd, SID: s.id, Reason: reason}
	s.caller.send(end)
	s.callee.send(end)
	h.m.sessionsEnded.WithLabelValues(reason).Inc()
}

// sweep enforces every time-based limit from one goroutine, so connections
// and sessions need no timers of their own.
func (h *Hub) sweep() {
	defer close(h.sweepDone)
	t := time.NewTicker(h.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case now := <-t.C:
			h.sweepOnce(now)
		}
	}
}

func (h *Hub) sweepOnce(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	nowNano := now.UnixNano()
	for c := range h.conns {
		switch {
		case !c.authed && now.Sub(c.created) > h.cfg.AuthTimeout:
			h.m.dropped.WithLabelValues("auth_timeout").Inc()
			c.fail(websocket.ClosePolicyViolation, CodeAuthFailed, "authentication timeout")
		case time.Duration(nowNano-c.lastRead.Load()) > h.cfg.IdleTimeout:
			h.m.dropped.WithLabelValues(CodeIdle).Inc()
			c.shutdown()
		case time.Duration(nowNano-c.lastPing) >= h.cfg.PingInterval:
			c.lastPing = nowNano
			c.enqueue(outMsg{kind: msgPing})
		}
	}
	for _, s := range h.sessions {
		age := now.Sub(s.created)
		switch {
		case !s.active && age > h.cfg.PairTimeout:
			h.endSession(s, ReasonTimeout)
		case age > h.cfg.SessionLifetime:
			h.endSession(s, ReasonLifetime)
		}
	}
}

// errAuth is the reason text sent for authentication failures.
var errAuth = errors.New("authentication failed")

func hostPath(r *http.Request) (string, string) {
	return strings.ToLower(r.Host), r.URL.EscapedPath()
}
