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
// Lock order: h.mu before qmu (frames are queued while h.mu is held); qmu
// is never held while taking another lock.
type hubConn struct {
	h       *Hub
	ws      *websocket.Conn
	ip      netip.Addr
	created time.Time
	nonce   [NonceLen]byte
	reqHost string // only used when no PublicURLs are configured
	reqPath string

	qmu       sync.Mutex
	queue     []outMsg      // guarded by qmu; swapped out whole by the writer
	queued    int           // guarded by qmu; frames queued or being written
	wake      chan struct{} // capacity 1: the queue became non-empty
	done      chan struct{}
	closeOnce sync.Once
	lastRead  atomic.Int64 // unix nanos of the last frame or pong
	failed    atomic.Bool  // a closing frame was queued; the reader stops acting

	// reader goroutine only
	nonceUsed bool
	msgs      bucket // frames the node sends on its own account
	replies   bucket // frames it sends in sessions others opened

	// guarded by h.mu
	authed     bool
	registered bool
	id         a2al.NodeID
	addr       a2al.Address
	addrHex    string
	lastPing   int64
	sessions   map[string]*hubSession
	calls      bucket                      // calls rung through to this node
	callers    map[netip.Addr]*callerState // per caller address; bounded, see callerState
}

func newHubConn(h *Hub, ws *websocket.Conn, ip netip.Addr, r *http.Request) *hubConn {
	now := h.cfg.Clock.Now()
	c := &hubConn{
		h: h, ws: ws, ip: ip, created: now,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		msgs:     newBucket(h.cfg.MsgRate, h.cfg.MsgBurst, now),
		replies:  newBucket(h.cfg.ReplyRate, h.cfg.ReplyBurst, now),
		calls:    newBucket(h.cfg.CalleeCallRate, h.cfg.CalleeCallBurst, now),
		lastPing: now.UnixNano(),
	}
	if len(h.publicURLs) == 0 {
		c.reqHost, c.reqPath = hostPath(r)
	}
	rand.Read(c.nonce[:])
	c.lastRead.Store(now.UnixNano())
	ws.SetReadLimit(h.cfg.MaxMessageSize)
	ws.SetPongHandler(func(string) error { c.lastRead.Store(h.cfg.Clock.Now().UnixNano()); return nil })
	return c
}

// shutdown closes the socket at once; the reader and writer then exit.
func (c *hubConn) shutdown() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.ws.Close()
	})
}

// enqueue never blocks. A frame the node caused itself (relay false) may
// use the whole queue; if even that is full the node does not read and is
// dropped rather than holding hub memory. A frame relayed from another node
// may use only the part above the node's own reserve (HubConfig.SendQueue)
// and is refused when it does not fit: enqueue reports false and the
// connection stays up.
func (c *hubConn) enqueue(m outMsg, relay bool) bool {
	limit := c.h.cfg.SendQueue
	if relay {
		limit -= c.h.cfg.ownReserve()
	}
	c.qmu.Lock()
	select {
	case <-c.done:
		c.qmu.Unlock()
		return false
	default:
	}
	if c.queued >= limit {
		c.qmu.Unlock()
		if !relay {
			c.h.m.dropped.WithLabelValues(CodeQueueFull).Inc()
			c.shutdown()
		}
		return false
	}
	c.queue = append(c.queue, m)
	c.queued++
	c.qmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return true
}

// send queues a frame the node caused itself (see enqueue).
func (c *hubConn) send(f Frame) {
	if c.failed.Load() {
		return
	}
	c.enqueue(outMsg{kind: msgText, data: EncodeFrame(f)}, false)
}

// relay queues a frame from another node; false means it was refused.
func (c *hubConn) relay(f Frame) bool {
	if c.failed.Load() {
		return false
	}
	return c.enqueue(outMsg{kind: msgText, data: EncodeFrame(f)}, true)
}

// fail queues an error frame and a close frame; the writer closes the socket
// after sending them. Safe from any goroutine.
func (c *hubConn) fail(closeCode int, code, msg string) {
	if c.failed.Swap(true) {
		return
	}
	c.enqueue(outMsg{kind: msgText, data: EncodeFrame(Frame{T: TError, Code: code, Msg: msg})}, false)
	c.enqueue(outMsg{kind: msgClose, data: websocket.FormatCloseMessage(closeCode, code)}, false)
}

func (c *hubConn) writeLoop() {
	defer c.h.wg.Done()
	defer c.shutdown()
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
		}
		c.qmu.Lock()
		batch := c.queue
		c.queue = nil
		c.qmu.Unlock()
		for _, m := range batch {
			if !c.write(m) {
				return
			}
			c.qmu.Lock()
			c.queued--
			c.qmu.Unlock()
		}
	}
}

// write sends one queued message; false ends the writer.
func (c *hubConn) write(m outMsg) bool {
	deadline := time.Now().Add(c.h.cfg.WriteTimeout)
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
		return false
	}
	return err == nil
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
		now := c.h.cfg.Clock.Now()
		c.lastRead.Store(now.UnixNano())
		if c.failed.Load() {
			continue // draining until the writer closes the socket
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
		c.handle(f, now)
	}
}

func (c *hubConn) rateLimited() {
	c.h.m.dropped.WithLabelValues(CodeRateLimited).Inc()
	c.fail(websocket.ClosePolicyViolation, CodeRateLimited, "too many messages")
}

// handle charges a frame to the right budget and acts on it. A callee's
// answers in sessions others opened are charged to its reply budget, which
// can end that session but never the connection; everything else is
// charged to the connection's own budget, whose overflow is fatal.
func (c *hubConn) handle(f Frame, now time.Time) {
	if f.T == TAuth {
		if !c.msgs.take(now) {
			c.rateLimited()
			return
		}
		c.handleAuth(f)
		return
	}
	h := c.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := c.replyTo(f); s != nil {
		if !c.replies.take(now) {
			h.endSession(s, ReasonRateLimited)
			return
		}
		c.handleSession(f)
		return
	}
	if !c.msgs.take(now) {
		c.rateLimited()
		return
	}
	if !c.authed {
		c.fail(websocket.ClosePolicyViolation, CodeNotAuthed, "authenticate first")
		return
	}
	switch f.T {
	case TCall:
		c.handleCall(f)
	case TAccept, TReject, THangup, TSig:
		c.handleSession(f)
	case TTURNReq:
		c.handleTURN()
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
