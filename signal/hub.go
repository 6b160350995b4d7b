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

// HubStats is a snapshot of hub state.
type HubStats struct {
	Connections int // open (and upgrading) WebSocket connections
	Pending     int // TCP connections accepted by Hub.Listener and not (yet) WebSockets
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
	npending     int                // connections counted by Hub.Listener, not yet upgraded
	pendingIP    map[netip.Addr]int // npending per address key
	registered   map[a2al.NodeID]*hubConn
	sessions     map[string]*hubSession
	nodeSessions map[a2al.NodeID]int

	wg        sync.WaitGroup // connection readers and writers
	stop      chan struct{}
	sweepDone chan struct{}
}

// NewHub validates cfg and starts the hub's sweeper.
func NewHub(cfg HubConfig) (*Hub, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	h := &Hub{
		cfg:          cfg,
		log:          cfg.Logger,
		publicURLs:   map[string]bool{},
		conns:        map[*hubConn]struct{}{},
		perIP:        map[netip.Addr]int{},
		pendingIP:    map[netip.Addr]int{},
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
		HandshakeTimeout: cfg.HandshakeTimeout,
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
	return HubStats{Connections: h.nconns, Pending: h.npending, Registered: len(h.registered), Sessions: len(h.sessions)}
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

func remoteIP(r *http.Request) netip.Addr { return addrKey(r.RemoteAddr) }

// addrKey is the key of per-address limits: the IPv4 address, or the IPv6
// /64 (one IPv6 host usually owns a whole /64). Invalid input gives the
// zero Addr, one shared key.
func addrKey(hostport string) netip.Addr {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
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
	liftHandshakeLimit(ws.NetConn())
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
	if cs := s.callee.callers[s.caller.ip]; cs != nil {
		cs.sessions--
	}
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
	t := h.cfg.Clock.NewTimer(h.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case now := <-t.C():
			h.sweepOnce(now)
			t.Reset(h.cfg.SweepInterval)
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
			c.enqueue(outMsg{kind: msgPing}, false)
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
