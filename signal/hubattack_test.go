package signal

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// nodeLikeOnCall answers a call the way a node's ICE agent does: credentials,
// a few candidates, end of candidates, then waits for the peer's.
func nodeLikeOnCall(s *Session) {
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.Send(ctx, Signal{Kind: KindCred, Ufrag: "callee", Pwd: "calleepasswordcalleepassword"})
	for i := 0; i < 3; i++ {
		s.Send(ctx, Signal{Kind: KindCand, Candidate: fmt.Sprintf("candidate:%d 1 udp 2130706431 192.0.2.1 %d typ host", i, 4000+i)})
	}
	s.Send(ctx, Signal{Kind: KindDone})
	for {
		if m, err := s.Recv(ctx); err != nil || m.Kind == KindDone {
			return
		}
	}
}

// Attack 4 (docs/signaling.md §6): 100 identities at two addresses call one
// node at 100 calls/s. Before, the callee's own answers counted against its
// frame rate and it was disconnected (rate_limited) within a second, again
// after every reconnect. Now calls are limited per callee and per caller
// address, answers have their own budget, and a legitimate caller at a third
// address gets through.
func TestCallFloodKeepsCalleeRegistered(t *testing.T) {
	th := startHub(t, fastConfig())
	victim := newIdent(t)
	var downs atomic.Int32
	vc, err := NewClient(ClientConfig{HubURL: th.base, Key: victim.priv, OnCall: nodeLikeOnCall,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		OnState: func(up bool) {
			if !up {
				downs.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	waitFor(t, "victim registered", vc.Registered)
	th.mu.Lock()
	victimConn := th.registered[victim.id]
	th.mu.Unlock()

	legit := newIdent(t)
	lc, err := NewClient(ClientConfig{HubURL: th.base, Key: legit.priv, NetDialContext: sourceDialer("127.0.0.3")})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()

	const attackers, rate, seconds = 100, 100, 2
	conns := make([]*rawConn, attackers)
	var readers sync.WaitGroup
	for i := range conns {
		conns[i] = dialRawFrom(t, th, fmt.Sprintf("127.0.0.%d", 1+i%2))
		conns[i].auth(th, newIdent(t), false)
		readers.Add(1)
		go func(ws *websocket.Conn) { // attackers read and ignore everything
			defer readers.Done()
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
			}
		}(conns[i].ws)
	}

	legitErr := make(chan error, 1)
	go func() {
		time.Sleep(time.Second) // in the middle of the flood
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		s, err := lc.Call(ctx, victim.id)
		if err != nil {
			legitErr <- fmt.Errorf("call: %w", err)
			return
		}
		defer s.Close()
		if m, err := s.Recv(ctx); err != nil || m.Kind != KindCred {
			legitErr <- fmt.Errorf("want the callee's credentials, got %+v %v", m, err)
			return
		}
		legitErr <- s.Send(ctx, Signal{Kind: KindDone})
	}()

	tick := time.NewTicker(time.Second / rate)
	for i := 0; i < rate*seconds; i++ {
		<-tick.C
		ws := conns[i%attackers].ws
		ws.SetWriteDeadline(time.Now().Add(testWait))
		ws.WriteMessage(websocket.TextMessage, EncodeFrame(Frame{T: TCall, CID: uint64(i + 1), Target: victim.idHex()}))
	}
	tick.Stop()
	if err := <-legitErr; err != nil {
		t.Errorf("legitimate call during the flood: %v", err)
	}
	for _, rc := range conns {
		rc.ws.Close()
	}
	readers.Wait()

	th.mu.Lock()
	still := th.registered[victim.id] == victimConn
	th.mu.Unlock()
	dropped := metricSum(t, th, "a2al_signal_dropped_connections_total", nil)
	refused := metricSum(t, th, "a2al_signal_calls_refused_total", nil)
	t.Logf("%d calls at %d/s from %d identities: victim disconnects %d, hub drops %v, calls refused %v, sessions %v",
		rate*seconds, rate, attackers, downs.Load(), dropped, refused, metricSum(t, th, "a2al_signal_sessions_total", nil))
	if !still || downs.Load() != 0 || dropped != 0 {
		t.Errorf("victim lost its registration (same connection %v, client disconnects %d, hub drops %v)", still, downs.Load(), dropped)
	}
	if refused == 0 {
		t.Error("no call was refused: the flood reached the victim unlimited")
	}
}

// Calls to one node are limited per caller address and in total, with
// error{cid, callee_busy} for the excess, and counted.
func TestCallsToOneCalleeLimited(t *testing.T) {
	cfg := fastConfig()
	cfg.CalleeCallRate, cfg.CalleeCallBurst = 0.001, 4
	cfg.SourceCallRate, cfg.SourceCallBurst = 0.001, 2
	th := startHub(t, cfg)
	callee := newIdent(t)
	ce := dialRaw(t, th)
	ce.auth(th, callee, true)
	cid := uint64(0)
	call := func(rc *rawConn) Frame {
		t.Helper()
		cid++
		rc.write(Frame{T: TCall, CID: cid, Target: callee.idHex()})
		return rc.read()
	}
	a, b, c := dialRawFrom(t, th, "127.0.0.2"), dialRawFrom(t, th, "127.0.0.3"), dialRawFrom(t, th, "127.0.0.4")
	for _, rc := range []*rawConn{a, b, c} {
		rc.auth(th, newIdent(t), false)
	}
	for i, step := range []struct {
		rc   *rawConn
		want string
	}{{a, TRinging}, {a, TRinging}, {a, CodeCalleeBusy}, {b, TRinging}, {b, TRinging}, {c, CodeCalleeBusy}} {
		f := call(step.rc)
		got := f.T
		if f.T == TError {
			got = f.Code
		}
		if got != step.want || f.CID != cid {
			t.Fatalf("call %d: want %s, got %+v", i+1, step.want, f)
		}
	}
	for reason, want := range map[string]float64{refuseSourceRate: 1, refuseCalleeRate: 1} {
		if got := metricSum(t, th, "a2al_signal_calls_refused_total", map[string]string{"reason": reason}); got != want {
			t.Errorf("calls refused for %s = %v, want %v", reason, got, want)
		}
	}
}

// Callers at one address hold at most MaxSessionsPerSource sessions with a
// callee; a hangup frees a slot.
func TestSessionsPerCallerAddressLimited(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxSessionsPerSource = 2
	th := startHub(t, cfg)
	callee := newIdent(t)
	ce := dialRaw(t, th)
	ce.auth(th, callee, true)
	rc := dialRaw(t, th)
	rc.auth(th, newIdent(t), false)
	var sids []string
	for i := 1; i <= 3; i++ {
		rc.write(Frame{T: TCall, CID: uint64(i), Target: callee.idHex()})
		f := rc.read()
		if i < 3 && f.T != TRinging || i == 3 && f.Code != CodeCalleeBusy {
			t.Fatalf("call %d: got %+v", i, f)
		}
		sids = append(sids, f.SID)
	}
	rc.write(Frame{T: THangup, SID: sids[0]})
	if f := rc.read(); f.T != TEnd {
		t.Fatalf("want end after hangup, got %+v", f)
	}
	rc.write(Frame{T: TCall, CID: 4, Target: callee.idHex()})
	if f := rc.read(); f.T != TRinging {
		t.Fatalf("after a hangup the address may call again, got %+v", f)
	}
}

// A callee's answers in sessions others opened use their own budget: over it,
// the session ends (rate_limited) and the callee stays connected. Before,
// the fourth answer disconnected the callee.
func TestCalleeAnswersNeverDisconnect(t *testing.T) {
	cfg := fastConfig()
	cfg.MsgRate, cfg.MsgBurst = 0.001, 3
	cfg.ReplyRate, cfg.ReplyBurst = 0.001, 3
	th := startHub(t, cfg)
	callee := newIdent(t)
	ce := dialRaw(t, th)
	ce.auth(th, callee, true) // own token 1
	ca := dialRaw(t, th)
	ca.auth(th, newIdent(t), false)
	ca.write(Frame{T: TCall, CID: 1, Target: callee.idHex()})
	in := ce.read()
	ce.write(Frame{T: TAccept, SID: in.SID}) // reply 1
	for i := 0; i < 4; i++ {                 // replies 2, 3, then over budget
		ce.write(Frame{T: TSig, SID: in.SID, Kind: KindCand, Cand: fmt.Sprintf("candidate:%d 1 udp 1 192.0.2.1 9 typ host", i)})
	}
	var end Frame
	for end.T != TEnd {
		end = ce.read()
	}
	if end.Reason != ReasonRateLimited {
		t.Fatalf("want end{rate_limited}, got %+v", end)
	}
	// Still connected and registered: another call rings through (the
	// callee's last sig named the ended session: error{unknown_session}).
	ca.write(Frame{T: TCall, CID: 2, Target: callee.idHex()})
	f := ce.read()
	for f.T == TError && f.SID == in.SID {
		f = ce.read()
	}
	if f.T != TIncoming {
		t.Fatalf("callee should still be registered, got %+v", f)
	}
	if n := metricSum(t, th, "a2al_signal_dropped_connections_total", nil); n != 0 {
		t.Fatalf("hub dropped %v connections", n)
	}
}

// gatedListener holds every server-side write while the gate is closed, like
// a client on a link that is slow for a moment.
type gatedListener struct {
	net.Listener
	gate *sync.RWMutex
}

type gatedConn struct {
	net.Conn
	gate *sync.RWMutex
}

func (l gatedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return gatedConn{c, l.gate}, nil
}

func (c gatedConn) Write(b []byte) (int, error) {
	c.gate.RLock()
	c.gate.RUnlock()
	return c.Conn.Write(b)
}

// Attack 9: a node sends its whole advertised burst (MsgBurst frames) while
// the hub cannot write to it for a moment. Before, the 32-frame send queue
// overflowed and the hub dropped the node (queue_full); now the queue keeps
// a reserve for answers to the node's own frames and every answer arrives.
func TestBurstWithinAllowanceNotDropped(t *testing.T) {
	cfg := fastConfig()
	h, err := NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gate := &sync.RWMutex{}
	srv := httptest.NewUnstartedServer(h.Handler())
	srv.Listener = gatedListener{srv.Listener, gate}
	srv.Start()
	th := &testHub{Hub: h, srv: srv, base: "ws" + strings.TrimPrefix(srv.URL, "http")}
	t.Cleanup(func() { h.Close(); srv.Close() })

	rc := dialRaw(t, th)
	rc.auth(th, newIdent(t), false) // one token of the burst
	absent := newIdent(t)
	gate.Lock()
	unblock := sync.OnceFunc(gate.Unlock)
	defer unblock() // before the cleanups, which wait for the hub's writers
	n := cfg.MsgBurst - 1
	for i := 1; i <= n; i++ {
		rc.write(Frame{T: TCall, CID: uint64(i), Target: absent.idHex()})
	}
	// Let the hub read and answer all of them into its queue.
	waitFor(t, "hub answered the burst", func() bool {
		return metricSum(t, th, "a2al_signal_noagent_total", nil) == float64(n) ||
			metricSum(t, th, "a2al_signal_dropped_connections_total", nil) > 0
	})
	unblock()
	for i := 1; i <= n; i++ {
		f, err := rc.tryRead()
		if err != nil || f.T != TNoAgent || f.CID != uint64(i) {
			t.Fatalf("answer %d of %d: got %+v %v (hub drops: %v)", i, n, f, err,
				metricSum(t, th, "a2al_signal_dropped_connections_total", nil))
		}
	}
}

// Frames relayed from others never overflow a slow callee's queue: once its
// relay share is full, further calls are refused (callee_busy) and the callee
// stays connected.
func TestSlowCalleeRefusesCallsNotDropped(t *testing.T) {
	cfg := fastConfig()
	cfg.SendQueue = cfg.ownReserve() + 4 // room for 4 relayed frames
	cfg.MaxSessionsPerSource = cfg.MaxSessionsPerNode
	cfg.SourceCallBurst = cfg.CalleeCallBurst
	h, err := NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gate := &sync.RWMutex{}
	srv := httptest.NewUnstartedServer(h.Handler())
	srv.Listener = gatedListener{srv.Listener, gate}
	srv.Start()
	th := &testHub{Hub: h, srv: srv, base: "ws" + strings.TrimPrefix(srv.URL, "http")}
	t.Cleanup(func() { h.Close(); srv.Close() })

	callee := newIdent(t)
	ce := dialRaw(t, th)
	ce.auth(th, callee, true)
	ca := dialRaw(t, th)
	ca.auth(th, newIdent(t), false)
	gate.Lock()
	unblock := sync.OnceFunc(gate.Unlock)
	defer unblock()
	// The callee's writer blocks on the first incoming; frames being written
	// still count, so at most 4 incoming fit and at least 2 calls are
	// refused (3 if the writer has not yet counted the welcome as written).
	for i := 1; i <= 6; i++ {
		ca.write(Frame{T: TCall, CID: uint64(i), Target: callee.idHex()})
	}
	waitFor(t, "calls handled", func() bool {
		return metricSum(t, th, "a2al_signal_sessions_total", nil)+metricSum(t, th, "a2al_signal_calls_refused_total", nil) == 6
	})
	unblock()
	refused := int(metricSum(t, th, "a2al_signal_calls_refused_total", map[string]string{"reason": refuseCalleeQueue}))
	if refused < 2 || refused > 3 {
		t.Fatalf("calls refused for the callee's queue = %v, want 2 or 3", refused)
	}
	for i := 0; i < 6-refused; i++ {
		if f := ce.read(); f.T != TIncoming {
			t.Fatalf("callee: want incoming, got %+v", f)
		}
	}
	if n := metricSum(t, th, "a2al_signal_dropped_connections_total", nil); n != 0 {
		t.Fatalf("hub dropped %v connections", n)
	}
}

// countingListener counts the accepted connections that are still open.
type countingListener struct {
	net.Listener
	accepted, open atomic.Int64
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.accepted.Add(1)
	l.open.Add(1)
	return &countedConn{Conn: c, l: l}, nil
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// startListenerHub serves the hub the way cmd/signal-hub does: an
// http.Server on Hub.Listener. raw counts the sockets the server holds.
func startListenerHub(t *testing.T, cfg HubConfig, srvCfg func(*http.Server)) (*testHub, *countingListener) {
	t.Helper()
	h, err := NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raw := &countingListener{Listener: ln}
	srv := &http.Server{Handler: h.Handler()}
	if srvCfg != nil {
		srvCfg(srv)
	}
	go srv.Serve(h.Listener(raw))
	t.Cleanup(func() { h.Close(); srv.Close() })
	return &testHub{Hub: h, base: "ws://" + ln.Addr().String()}, raw
}

// Attack 7: one address opens many connections and sends half a request on
// each. Before, every one held a socket (and a goroutine and buffers) until
// the server's header timeout; now connections beyond MaxPendingPerIP are
// closed at accept and a client at another address is served meanwhile.
func TestHalfOpenFloodBounded(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxPendingPerIP, cfg.MaxPending = 8, 64
	th, raw := startListenerHub(t, cfg, func(s *http.Server) { s.ReadHeaderTimeout = 10 * time.Second })
	const flood = 300
	addr := strings.TrimPrefix(th.base, "ws://")
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; i < flood; i++ {
		c, err := net.DialTimeout("tcp", addr, testWait)
		if err != nil {
			t.Fatalf("attacker dial %d: %v", i, err)
		}
		held = append(held, c)
		c.Write([]byte("GET " + SignalPath + " HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\n"))
	}
	waitFor(t, "server accepted the flood", func() bool { return raw.accepted.Load() >= flood })
	// Let refused connections finish closing before counting.
	waitFor(t, "refusals settled", func() bool {
		return float64(raw.accepted.Load()-raw.open.Load()) >= metricSum(t, th, "a2al_signal_refused_connections_total", nil)
	})
	openDuring := raw.open.Load()

	// A legitimate node at another address registers and is called.
	legit, caller := newIdent(t), newIdent(t)
	c, err := NewClient(ClientConfig{HubURL: th.base, Key: legit.priv, OnCall: nodeLikeOnCall, NetDialContext: sourceDialer("127.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "legitimate node registered", c.Registered)
	cc := dialRawFrom(t, th, "127.0.0.3")
	cc.auth(th, caller, false)
	cc.write(Frame{T: TCall, CID: 1, Target: legit.idHex()})
	if f := cc.read(); f.T != TRinging {
		t.Fatalf("legitimate call during the flood: got %+v", f)
	}
	t.Logf("%d half-sent requests from one address: server sockets held %d (cap %d per address), refused at accept %v",
		flood, openDuring, cfg.MaxPendingPerIP, metricSum(t, th, "a2al_signal_refused_connections_total", nil))
	if openDuring > int64(cfg.MaxPendingPerIP) {
		t.Fatalf("server holds %d sockets for one address's half-sent requests, want <= %d", openDuring, cfg.MaxPendingPerIP)
	}
	if p := metricSum(t, th, "a2al_signal_pending_connections", nil); p > float64(cfg.MaxPendingPerIP) {
		t.Fatalf("pending gauge %v over the per-address cap", p)
	}
}

// A connection that does not become a WebSocket within HandshakeTimeout is
// closed even if the HTTP server has no header timeout, and a WebSocket that
// did upgrade is not affected by it.
func TestHandshakeTimeout(t *testing.T) {
	cfg := fastConfig()
	cfg.HandshakeTimeout = 200 * time.Millisecond
	th, _ := startListenerHub(t, cfg, nil) // no ReadHeaderTimeout at all
	legit := newIdent(t)
	ws := dialRaw(t, th)
	ws.auth(th, legit, true)

	c, err := net.DialTimeout("tcp", strings.TrimPrefix(th.base, "ws://"), testWait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET " + SignalPath + " HTTP/1.1\r\nHost: hub\r\n"))
	c.SetReadDeadline(time.Now().Add(testWait))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("half-sent request: want the hub to close it, got %v", err)
	}

	time.Sleep(3 * cfg.HandshakeTimeout)
	cl := dialRaw(t, th)
	cl.auth(th, newIdent(t), false)
	cl.write(Frame{T: TCall, CID: 1, Target: legit.idHex()})
	if f := ws.read(); f.T != TIncoming {
		t.Fatalf("upgraded connection past the handshake timeout: want incoming, got %+v", f)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// Over TLS the hub finds its listener's connection under the *tls.Conn and
// lifts the handshake limit too: a wss node is not cut off after it.
func TestHandshakeLimitLiftedOverTLS(t *testing.T) {
	cfg := fastConfig()
	cfg.HandshakeTimeout = 200 * time.Millisecond
	h, err := NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h.Handler())
	srv.Listener = h.Listener(srv.Listener)
	srv.StartTLS()
	t.Cleanup(func() { h.Close(); srv.Close() })
	th := &testHub{Hub: h, srv: srv, base: "wss" + strings.TrimPrefix(srv.URL, "https")}
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}, HandshakeTimeout: testWait,
		TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig}
	dial := func() *rawConn {
		ws, _, err := d.Dial(th.signalURL(t), nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { ws.Close() })
		rc := &rawConn{t: t, ws: ws}
		rc.nonce = rc.read().Nonce
		return rc
	}
	callee := newIdent(t)
	ce := dial()
	ce.auth(th, callee, true)
	time.Sleep(3 * cfg.HandshakeTimeout)
	ca := dial()
	ca.auth(th, newIdent(t), false)
	ca.write(Frame{T: TCall, CID: 1, Target: callee.idHex()})
	if f := ce.read(); f.T != TIncoming {
		t.Fatalf("wss connection past the handshake timeout: want incoming, got %+v", f)
	}
}
