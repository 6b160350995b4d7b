package signal

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// Listener wraps ln so that the hub's pre-upgrade limits apply from the
// moment a TCP connection is accepted, before a byte of HTTP is read:
// at most MaxPending connections that are not yet WebSockets (MaxPendingPerIP
// per address), each of which must become a WebSocket within
// HandshakeTimeout of accept or be closed. Connections over a limit are
// closed at once and counted in a2al_signal_refused_connections_total. Serve
// the hub's handler (and any other routes) with an http.Server on the
// returned listener; TLS wrapped around it (http.Server.ServeTLS) is covered.
// Without it, the per-IP limits apply only after the upgrade and a client
// can hold any number of half-sent requests (docs/signaling.md §6).
func (h *Hub) Listener(ln net.Listener) net.Listener {
	return &hubListener{Listener: ln, h: h}
}

type hubListener struct {
	net.Listener
	h *Hub
}

// Accept returns the next connection within the limits; refused ones are
// closed here and never reach the HTTP server.
func (l *hubListener) Accept() (net.Conn, error) {
	h := l.h
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrKey(c.RemoteAddr().String())
		reason := ""
		h.mu.Lock()
		switch {
		case h.closed:
			reason = "shutdown"
		case h.npending >= h.cfg.MaxPending:
			reason = "max_pending"
		case h.pendingIP[ip] >= h.cfg.MaxPendingPerIP:
			reason = "pending_per_ip"
		default:
			h.npending++
			h.pendingIP[ip]++
		}
		h.mu.Unlock()
		if reason != "" {
			h.m.refused.WithLabelValues(reason).Inc()
			c.Close()
			continue
		}
		lc := &limitedConn{Conn: c, h: h, ip: ip, limit: time.Now().Add(h.cfg.HandshakeTimeout)}
		c.SetDeadline(lc.limit)
		return lc, nil
	}
}

// limitedConn is a connection that has not become a WebSocket yet. Until
// then every deadline the HTTP server or the upgrader sets is cut to the
// handshake limit, so neither keep-alive nor a slow client can extend it.
type limitedConn struct {
	net.Conn
	h  *Hub
	ip netip.Addr

	mu    sync.Mutex
	limit time.Time // zero once upgraded
	left  bool      // no longer counted as pending
}

func (c *limitedConn) clamp(t time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.limit.IsZero() && (t.IsZero() || t.After(c.limit)) {
		return c.limit
	}
	return t
}

func (c *limitedConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *limitedConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c *limitedConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.clamp(t)) }

func (c *limitedConn) Close() error {
	c.leave()
	return c.Conn.Close()
}

// leave stops counting c as pending (once).
func (c *limitedConn) leave() {
	c.mu.Lock()
	left := c.left
	c.left, c.limit = true, time.Time{}
	c.mu.Unlock()
	if left {
		return
	}
	h := c.h
	h.mu.Lock()
	h.npending--
	if h.pendingIP[c.ip]--; h.pendingIP[c.ip] <= 0 {
		delete(h.pendingIP, c.ip)
	}
	h.mu.Unlock()
}

// liftHandshakeLimit is called once a connection is a WebSocket: from then on
// the hub's own limits (auth and idle timeouts, per-IP WebSocket count)
// govern it. A no-op for connections that did not come through Listener.
func liftHandshakeLimit(nc net.Conn) {
	for {
		switch c := nc.(type) {
		case *limitedConn:
			c.leave()
			c.Conn.SetDeadline(time.Time{})
			return
		case interface{ NetConn() net.Conn }: // *tls.Conn
			nc = c.NetConn()
		default:
			return
		}
	}
}
