package signal

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/a2alnode/a2al"
)

const (
	msgText uint8 = iota
	msgPing
	msgClose
)

type outMsg struct {
	data []byte
	kind uint8
}

// hubConn is one node connection. Fields are grouped by who may touch them.
type hubConn struct {
	h       *Hub
	ws      *websocket.Conn
	ip      netip.Addr
	created time.Time
	nonce   [NonceLen]byte
	reqHost string // only used when no PublicURLs are configured
	reqPath string

	sendq     chan outMsg
	done      chan struct{}
	closeOnce sync.Once
	lastRead  atomic.Int64 // unix nanos of the last frame or pong
	failed    atomic.Bool  // a closing frame was queued; the reader stops acting

	// reader goroutine only
	nonceUsed bool
	tokens    float64
	lastTok   time.Time

	// guarded by h.mu
	authed     bool
	registered bool
	id         a2al.NodeID
	addr       a2al.Address
	addrHex    string
	lastPing   int64
	sessions   map[string]*hubSession
}

func newHubConn(h *Hub, ws *websocket.Conn, ip netip.Addr, r *http.Request) *hubConn {
	now := time.Now()
	c := &hubConn{
		h: h, ws: ws, ip: ip, created: now,
		sendq:    make(chan outMsg, h.cfg.SendQueue),
		done:     make(chan struct{}),
		tokens:   float64(h.cfg.MsgBurst),
		lastTok:  now,
		lastPing: now.UnixNano(),
	}
	if len(h.publicURLs) == 0 {
		c.reqHost, c.reqPath = hostPath(r)
	}
	rand.Read(c.nonce[:])
	c.lastRead.Store(now.UnixNano())
	ws.SetReadLimit(h.cfg.MaxMessageSize)
	ws.SetPongHandler(func(string) error { c.lastRead.Store(time.Now().UnixNano()); return nil })
	return c
}

// shutdown closes the socket at once; the reader and writer then exit.
func (c *hubConn) shutdown() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.ws.Close()
	})
}

// enqueue never blocks: a full queue means a slow or dead reader, and the
// connection is dropped rather than letting it hold hub memory or the hub lock.
func (c *hubConn) enqueue(m outMsg) {
	select {
	case <-c.done:
	case c.sendq <- m:
	default:
		c.h.m.dropped.WithLabelValues(CodeQueueFull).Inc()
		c.shutdown()
	}
}

func (c *hubConn) send(f Frame) {
	if c.failed.Load() {
		return
	}
	c.enqueue(outMsg{kind: msgText, data: EncodeFrame(f)})
}

// fail queues an error frame and a close frame; the writer closes the socket
// after sending them. Safe from any goroutine.
func (c *hubConn) fail(closeCode int, code, msg string) {
	if c.failed.Swap(true) {
		return
	}
	c.enqueue(outMsg{kind: msgText, data: EncodeFrame(Frame{T: TError, Code: code, Msg: msg})})
	c.enqueue(outMsg{kind: msgClose, data: websocket.FormatCloseMessage(closeCode, code)})
}

func (c *hubConn) writeLoop() {
	defer c.h.wg.Done()
	defer c.shutdown()
	wt := c.h.cfg.WriteTimeout
	for {
		select {
		case <-c.done:
			return
		case m := <-c.sendq:
			deadline := time.Now().Add(wt)
			var err error
			switch m.kind {
			case msgText:
				if err = c.ws.SetWriteDeadline(deadline); err == nil {
					err = c.ws.WriteMessage(websocket.TextMessage, m.data)
				}
			case msgPing:
				err = c.ws.WriteControl(websocket.PingMessage, nil, deadline)
			case msgClose:
				c.ws.WriteControl(websocket.CloseMessage, m.data, deadline)
				return
			}
			if err != nil {
				return
			}
		}
	}
}

// readLoop runs in the HTTP handler goroutine until the connection ends.
func (c *hubConn) readLoop() {
	for {
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			if err == websocket.ErrReadLimit {
				c.h.m.dropped.WithLabelValues("oversize").Inc()
			}
			c.shutdown()
			return
		}
		now := time.Now()
		c.lastRead.Store(now.UnixNano())
		if c.failed.Load() {
			continue // draining until the writer closes the socket
		}
		if !c.take(now) {
			c.h.m.dropped.WithLabelValues(CodeRateLimited).Inc()
			c.fail(websocket.ClosePolicyViolation, CodeRateLimited, "too many messages")
			continue
		}
		if mt != websocket.TextMessage {
			c.fail(websocket.CloseUnsupportedData, CodeBadFrame, "text frames only")
			continue
		}
		f, err := DecodeFrame(data)
		if err != nil {
			c.h.m.dropped.WithLabelValues(CodeBadFrame).Inc()
			c.fail(websocket.CloseProtocolError, CodeBadFrame, err.Error())
			continue
		}
		c.handle(f)
	}
}

// take spends one token of the per-connection bucket.
func (c *hubConn) take(now time.Time) bool {
	cfg := &c.h.cfg
	c.tokens += now.Sub(c.lastTok).Seconds() * cfg.MsgRate
	c.lastTok = now
	if max := float64(cfg.MsgBurst); c.tokens > max {
		c.tokens = max
	}
	if c.tokens < 1 {
		return false
	}
	c.tokens--
	return true
}

func (c *hubConn) handle(f Frame) {
	if f.T == TAuth {
		c.handleAuth(f)
		return
	}
	h := c.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if !c.authed {
		c.fail(websocket.ClosePolicyViolation, CodeNotAuthed, "authenticate first")
		return
	}
	switch f.T {
	case TCall:
		c.handleCall(f)
	case TAccept, TReject, THangup, TSig:
		c.handleSession(f)
	default:
		c.fail(websocket.CloseProtocolError, CodeBadFrame, "frame type "+f.T+" is not sent by nodes")
	}
}

func (c *hubConn) authFail(why string) {
	c.h.m.authFailures.Inc()
	c.h.log.Debug("signal: auth refused", "ip", c.ip, "why", why)
	c.fail(websocket.ClosePolicyViolation, CodeAuthFailed, errAuth.Error()+": "+why)
}

// handleAuth verifies the challenge answer. The nonce is consumed by the
// first attempt, successful or not, so a signature can never be replayed.
func (c *hubConn) handleAuth(f Frame) {
	if c.nonceUsed {
		c.authFail("nonce already used")
		return
	}
	c.nonceUsed = true
	id, _ := a2al.ParseNodeID(f.NodeID) // validated by DecodeFrame
	addr := a2al.AddressFromEd25519(f.Pub)
	if a2al.NodeIDFromAddress(addr) != id {
		c.authFail("public key does not derive the claimed node id")
		return
	}
	if canon, err := CanonicalURL(f.URL); err != nil || canon != f.URL {
		c.authFail("url is not canonical")
		return
	}
	if !c.h.acceptsURL(c, f.URL) {
		c.authFail("signed url does not name this hub")
		return
	}
	if !ed25519.Verify(f.Pub, AuthMessage(c.nonce[:], f.URL, id), f.Sig) {
		c.authFail("bad signature")
		return
	}
	h := c.h
	h.mu.Lock()
	defer h.mu.Unlock()
	c.authed, c.id, c.addr, c.addrHex = true, id, addr, hex.EncodeToString(addr[:])
	if f.Register {
		if old := h.registered[id]; old != nil && old != c {
			old.registered = false
			old.send(Frame{T: TReplaced})
			old.fail(websocket.ClosePolicyViolation, TReplaced, "another connection registered this node")
		}
		h.registered[id] = c
		c.registered = true
	}
	c.send(Frame{T: TWelcome, Addr: c.addrHex, Register: c.registered})
}

// handleCall creates a session. Caller holds h.mu.
func (c *hubConn) handleCall(f Frame) {
	h := c.h
	target, _ := a2al.ParseNodeID(f.Target)
	if target == c.id {
		c.send(Frame{T: TError, CID: f.CID, Code: CodeBadTarget, Msg: "cannot call yourself"})
		return
	}
	callee := h.registered[target]
	if callee == nil || callee.failed.Load() {
		h.m.noAgent.Inc()
		c.send(Frame{T: TNoAgent, CID: f.CID})
		return
	}
	max := h.cfg.MaxSessionsPerNode
	if len(h.sessions) >= h.cfg.MaxSessions || h.nodeSessions[c.id] >= max || h.nodeSessions[target] >= max {
		c.send(Frame{T: TError, CID: f.CID, Code: CodeTooManySessions, Msg: "session limit reached"})
		return
	}
	s := &hubSession{id: newSID(), cid: f.CID, caller: c, callee: callee, created: time.Now()}
	h.sessions[s.id] = s
	h.nodeSessions[c.id]++
	h.nodeSessions[target]++
	for _, p := range []*hubConn{c, callee} {
		if p.sessions == nil {
			p.sessions = map[string]*hubSession{}
		}
		p.sessions[s.id] = s
	}
	h.m.sessionsTotal.Inc()
	callee.send(Frame{T: TIncoming, SID: s.id, Peer: c.addrHex})
	c.send(Frame{T: TRinging, CID: f.CID, SID: s.id, Peer: callee.addrHex})
}

// handleSession processes accept, reject, hangup and sig. Caller holds h.mu.
func (c *hubConn) handleSession(f Frame) {
	h := c.h
	s := c.sessions[f.SID]
	if s == nil {
		// Normal when the session just ended; not fatal.
		c.send(Frame{T: TError, SID: f.SID, Code: CodeUnknownSession, Msg: "no such session on this connection"})
		return
	}
	switch f.T {
	case TAccept, TReject:
		if c != s.callee || s.active {
			c.send(Frame{T: TError, SID: f.SID, Code: CodeBadState, Msg: "only the callee answers, once"})
			return
		}
		if f.T == TReject {
			h.endSession(s, ReasonReject)
			return
		}
		s.active = true
		s.caller.send(Frame{T: TAccepted, CID: s.cid, SID: s.id, Peer: s.callee.addrHex})
	case THangup:
		h.endSession(s, ReasonHangup)
	case TSig:
		if !s.active {
			c.send(Frame{T: TError, SID: f.SID, Code: CodeBadState, Msg: "session not accepted yet"})
			return
		}
		sig, _ := f.Signal() // validated by DecodeFrame
		s.bytes += sig.size()
		if s.bytes > h.cfg.MaxSessionBytes {
			h.endSession(s, ReasonLimit)
			return
		}
		h.m.relayedBytes.Add(float64(sig.size()))
		s.other(c).send(sigFrame(s.id, sig))
		if sig.Kind == KindDone {
			if c == s.caller {
				s.doneCaller = true
			} else {
				s.doneCallee = true
			}
			if s.doneCaller && s.doneCallee {
				h.endSession(s, ReasonDone)
			}
		}
	}
}
