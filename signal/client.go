package signal

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/clock"
	"github.com/gorilla/websocket"
)

// ClientConfig configures a Client. HubURL and Key are required; any other
// field left zero (or negative) takes the DefaultClientConfig value its
// comment states: none of the limits can sensibly be switched off.
type ClientConfig struct {
	HubURL string             // ws:// or wss:// base URL, e.g. ws://127.0.0.1:4122 (SignalPath is appended)
	Key    ed25519.PrivateKey // node identity; Address = a2al.AddressFromEd25519(pub)
	Logger *slog.Logger       // nil: discard
	OnCall func(s *Session)   // incoming call (callee side), run in its own goroutine; nil = reject calls

	TLSConfig      *tls.Config                                                       // for wss:// (nil: Go's defaults)
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error) // e.g. to pick a source address (nil: net.Dialer)
	DialTimeout    time.Duration                                                     // dial + authentication (default 10 s)
	WriteTimeout   time.Duration                                                     // per frame (default 10 s)
	BackoffMin     time.Duration                                                     // first reconnect delay (default 500 ms)
	BackoffMax     time.Duration                                                     // cap, at least BackoffMin (default 10 s: a hub that returns is used again quickly)
	Jitter         func() float64                                                    // [0,1) source for back-off jitter (default math/rand/v2)
	OnState        func(registered bool)                                             // called from the client's goroutine on every change (nil: not reported)
	MaxSessions    int                                                               // concurrent sessions and pending calls (default 64)
	RecvQueue      int                                                               // buffered signals per session (default 64)
	Clock          clock.Clock                                                       // times the reconnect back-off (docs/decisions.md D10); socket deadlines stay on the wall clock (nil: wall clock)
}

// DefaultClientConfig returns the client's defaults; set HubURL and Key.
func DefaultClientConfig() ClientConfig {
	return ClientConfig{
		DialTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		BackoffMin:   500 * time.Millisecond,
		BackoffMax:   10 * time.Second,
		Jitter:       rand.Float64,
		MaxSessions:  64,
		RecvQueue:    64,
	}
}

// fill checks the key and replaces unset fields by their defaults.
func (c *ClientConfig) fill() error {
	if len(c.Key) != ed25519.PrivateKeySize {
		return errors.New("signal: client needs an Ed25519 private key")
	}
	d := DefaultClientConfig()
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	setD := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	setD(&c.DialTimeout, d.DialTimeout)
	setD(&c.WriteTimeout, d.WriteTimeout)
	setD(&c.BackoffMin, d.BackoffMin)
	setD(&c.BackoffMax, d.BackoffMax)
	c.BackoffMax = max(c.BackoffMax, c.BackoffMin)
	if c.Jitter == nil {
		c.Jitter = d.Jitter
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = d.MaxSessions
	}
	if c.RecvQueue <= 0 {
		c.RecvQueue = d.RecvQueue
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	return nil
}

// Client keeps one authenticated connection to a hub, reconnecting with
// jittered exponential back-off, and places and receives calls over it.
type Client struct {
	cfg  ClientConfig
	log  *slog.Logger
	pub  ed25519.PublicKey
	addr a2al.Address
	id   a2al.NodeID
	url  string // canonical signal URL, as signed

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	cur     *clientConn     // authenticated connection, nil while (re)connecting
	dialing *websocket.Conn // connection being authenticated, closed by Close
	upCh    chan struct{}   // closed when cur becomes non-nil
	nextCID uint64
	lastErr error // why the last connection attempt or connection failed

	turn turnState // relay credentials (clientturn.go)
}

// clientConn is one authenticated WebSocket. The client's run goroutine is
// its only reader; writers serialise on wmu (gorilla allows one writer).
type clientConn struct {
	c           *Client
	ws          *websocket.Conn
	wmu         sync.Mutex
	pending     map[uint64]*Session // by cid, until ringing; guarded by c.mu
	sessions    map[string]*Session // by sid; guarded by c.mu
	replaced    bool                // reader only
	readTimeout time.Duration
}

// NewClient validates cfg and starts connecting in the background.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	u, err := SignalURL(cfg.HubURL)
	if err != nil {
		return nil, fmt.Errorf("signal: client: %w", err)
	}
	pub := cfg.Key.Public().(ed25519.PublicKey)
	c := &Client{cfg: cfg, log: cfg.Logger.With("hub", u), pub: pub, url: u, upCh: make(chan struct{})}
	c.turn.reply = make(chan Frame, 1)
	c.addr = a2al.AddressFromEd25519(pub)
	c.id = a2al.NodeIDFromAddress(c.addr)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.run()
	return c, nil
}

// Address is the client's own address.
func (c *Client) Address() a2al.Address { return c.addr }

// URL is the canonical signaling URL the client signs and dials.
func (c *Client) URL() string { return c.url }

// Registered reports whether the client currently holds an authenticated
// hub connection (registered as a callee when OnCall is set).
func (c *Client) Registered() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil
}

// LastError says why the client is not connected: the last dial or
// authentication error, or why the last connection ended. It is nil while
// connected and before the first attempt finished.
func (c *Client) LastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil {
		return nil
	}
	return c.lastErr
}

// Close stops reconnecting, ends every session and waits for the client's
// goroutines, including running OnCall handlers.
func (c *Client) Close() error {
	c.cancel()
	c.mu.Lock()
	if c.cur != nil {
		c.cur.ws.Close()
	}
	if c.dialing != nil {
		c.dialing.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// Backoff returns the delay before reconnect attempt n (0-based): exponential
// from min, capped at max, scaled by 0.5+0.5*jitter so that clients dropped
// together do not return together.
func Backoff(n int, min, max time.Duration, jitter float64) time.Duration {
	d := min
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return time.Duration(float64(d) * (0.5 + 0.5*jitter))
}

func (c *Client) run() {
	defer c.wg.Done()
	attempt := 0
	for {
		cc, err := c.connect()
		if err == nil {
			up := c.cfg.Clock.Now()
			c.setUp(cc)
			err = c.readLoop(cc)
			c.setDown(cc, err)
			if c.cfg.Clock.Now().Sub(up) >= c.cfg.BackoffMax && !cc.replaced {
				attempt = 0 // a long healthy connection resets the back-off
			}
			if cc.replaced { // another instance with our key took over: do not fight it quickly
				attempt = 64
			}
		}
		if c.ctx.Err() != nil {
			return
		}
		if err != nil {
			c.mu.Lock()
			c.lastErr = err
			c.mu.Unlock()
		}
		d := Backoff(attempt, c.cfg.BackoffMin, c.cfg.BackoffMax, c.cfg.Jitter())
		attempt++
		c.log.Debug("signal: hub connection lost, retrying", "err", err, "in", d)
		t := c.cfg.Clock.NewTimer(d)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// connect dials, answers the challenge and waits for welcome, all within DialTimeout.
func (c *Client) connect() (*clientConn, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.DialTimeout)
	defer cancel()
	d := websocket.Dialer{
		NetDialContext:   c.cfg.NetDialContext,
		TLSClientConfig:  c.cfg.TLSConfig,
		HandshakeTimeout: c.cfg.DialTimeout,
		Subprotocols:     []string{Subprotocol},
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
		WriteBufferPool:  &sync.Pool{},
	}
	ws, _, err := d.DialContext(ctx, c.url, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", c.url, err)
	}
	c.mu.Lock()
	if c.ctx.Err() != nil {
		c.mu.Unlock()
		ws.Close()
		return nil, ErrClientClosed
	}
	c.dialing = ws
	c.mu.Unlock()
	cc, err := c.authenticate(ws, ctx)
	c.mu.Lock()
	c.dialing = nil
	c.mu.Unlock()
	if err != nil {
		ws.Close()
		return nil, err
	}
	return cc, nil
}

func (c *Client) authenticate(ws *websocket.Conn, ctx context.Context) (*clientConn, error) {
	if ws.Subprotocol() != Subprotocol {
		return nil, fmt.Errorf("hub did not accept subprotocol %s", Subprotocol)
	}
	ws.SetReadLimit(64 << 10)
	deadline, _ := ctx.Deadline()
	ws.SetReadDeadline(deadline)
	ch, err := readFrame(ws)
	if err != nil {
		return nil, fmt.Errorf("read challenge: %w", err)
	}
	if ch.T != TChallenge {
		return nil, fmt.Errorf("expected challenge, got %q", ch.T)
	}
	auth := Frame{
		T: TAuth, Pub: c.pub, NodeID: hex.EncodeToString(c.id[:]), URL: c.url,
		Sig:      ed25519.Sign(c.cfg.Key, AuthMessage(ch.Nonce, c.url, c.id)),
		Register: c.cfg.OnCall != nil,
	}
	cc := &clientConn{c: c, ws: ws, pending: map[uint64]*Session{}, sessions: map[string]*Session{}}
	if err := cc.write(ctx, auth); err != nil {
		return nil, fmt.Errorf("send auth: %w", err)
	}
	w, err := readFrame(ws)
	if err != nil {
		return nil, fmt.Errorf("read welcome: %w", err)
	}
	if w.T == TError {
		return nil, fmt.Errorf("%w: %s: %s", ErrHub, w.Code, w.Msg)
	}
	if w.T != TWelcome {
		return nil, fmt.Errorf("expected welcome, got %q", w.T)
	}
	if a, _ := ParseAddress(w.Addr); a != c.addr {
		return nil, fmt.Errorf("hub welcomed address %s, we are %x", w.Addr, c.addr[:])
	}
	// The hub pings every PingMS; a silent hub (half-open TCP) is detected
	// when no frame or ping arrives for two intervals plus a write timeout.
	readTimeout := 2*time.Duration(ch.PingMS)*time.Millisecond + c.cfg.WriteTimeout
	if ch.PingMS <= 0 {
		readTimeout = 60 * time.Second
	}
	cc.readTimeout = readTimeout
	ws.SetReadDeadline(time.Now().Add(readTimeout))
	ws.SetPingHandler(func(data string) error {
		ws.SetReadDeadline(time.Now().Add(readTimeout))
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.cfg.WriteTimeout))
		if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil
			}
			return err
		}
		return nil
	})
	return cc, nil
}

func readFrame(ws *websocket.Conn) (Frame, error) {
	mt, data, err := ws.ReadMessage()
	if err != nil {
		return Frame{}, err
	}
	if mt != websocket.TextMessage {
		return Frame{}, errors.New("hub sent a binary frame")
	}
	return DecodeFrame(data)
}

func (c *Client) setUp(cc *clientConn) {
	c.mu.Lock()
	if c.ctx.Err() != nil { // Close raced with authentication
		cc.ws.Close()
	}
	c.cur = cc
	close(c.upCh)
	c.mu.Unlock()
	c.log.Info("signal: connected to hub", "registered", c.cfg.OnCall != nil)
	if c.cfg.OnState != nil {
		c.cfg.OnState(true)
	}
}

// setDown ends everything that lived on cc.
func (c *Client) setDown(cc *clientConn, err error) {
	cc.ws.Close()
	c.mu.Lock()
	c.cur = nil
	c.lastErr = err
	c.upCh = make(chan struct{})
	reason := "disconnected"
	if c.ctx.Err() != nil {
		reason = "client closed"
	}
	for cid, s := range cc.pending {
		delete(cc.pending, cid)
		s.end(&EndError{Reason: reason})
	}
	for sid, s := range cc.sessions {
		delete(cc.sessions, sid)
		s.end(&EndError{Reason: reason})
	}
	c.mu.Unlock()
	if c.ctx.Err() == nil {
		c.log.Info("signal: hub connection lost", "err", err)
	}
	if c.cfg.OnState != nil {
		c.cfg.OnState(false)
	}
}

// waitConn returns the current connection, waiting for one within ctx.
func (c *Client) waitConn(ctx context.Context) (*clientConn, error) {
	for {
		c.mu.Lock()
		cur, ch := c.cur, c.upCh
		c.mu.Unlock()
		if c.ctx.Err() != nil {
			return nil, ErrClientClosed
		}
		if cur != nil {
			return cur, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("signal: no hub connection: %w", ctx.Err())
		case <-c.ctx.Done():
			return nil, ErrClientClosed
		}
	}
}

// Call asks the hub to connect us with target and returns the session once
// the callee accepted. It fails fast with ErrNoAgent when target is not
// registered, and with ErrRejected or ErrCallTimeout when the callee refuses
// or does not answer.
func (c *Client) Call(ctx context.Context, target a2al.NodeID) (*Session, error) {
	if target == c.id {
		return nil, errors.New("signal: cannot call ourselves")
	}
	cc, err := c.waitConn(ctx)
	if err != nil {
		return nil, err
	}
	s := newSession(cc, RoleCaller, c.cfg.RecvQueue)
	c.mu.Lock()
	if len(cc.pending)+len(cc.sessions) >= c.cfg.MaxSessions {
		c.mu.Unlock()
		return nil, ErrTooManySessions
	}
	c.nextCID++
	s.cid = c.nextCID
	cc.pending[s.cid] = s
	c.mu.Unlock()
	if err := cc.write(ctx, Frame{T: TCall, CID: s.cid, Target: hex.EncodeToString(target[:])}); err != nil {
		c.abandon(s)
		return nil, fmt.Errorf("signal: call: %w", err)
	}
	select {
	case <-s.accepted:
		return s, nil
	case <-s.done:
		select {
		case <-s.accepted: // accepted and already over: Recv drains, then EOF
			return s, nil
		default:
			return nil, s.err
		}
	case <-ctx.Done():
		c.abandon(s)
		return nil, fmt.Errorf("signal: call: %w", ctx.Err())
	}
}

// abandon ends s locally and tells the hub if it knows the session id. A
// call still waiting for ringing stays in pending (ended), so the reader can
// hang up when the id arrives.
func (c *Client) abandon(s *Session) {
	s.end(&EndError{Reason: "closed locally"})
	c.mu.Lock()
	sid := s.id
	if sid != "" {
		delete(s.cc.sessions, sid)
	}
	c.mu.Unlock()
	if sid != "" {
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.WriteTimeout)
		s.cc.write(ctx, Frame{T: THangup, SID: sid}) // best effort: the session may be over already
		cancel()
	}
}

// write sends one frame; gorilla permits a single concurrent writer.
func (cc *clientConn) write(ctx context.Context, f Frame) error {
	deadline := time.Now().Add(cc.c.cfg.WriteTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.ws.SetWriteDeadline(deadline)
	if err := cc.ws.WriteMessage(websocket.TextMessage, EncodeFrame(f)); err != nil {
		cc.ws.Close() // the reader notices and reconnects
		return fmt.Errorf("write %s frame: %w", f.T, err)
	}
	return nil
}
