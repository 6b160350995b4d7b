package signal

import (
	"crypto/ed25519"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/a2alnode/a2al/clock"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestAuthRefusesBadSignature(t *testing.T) {
	th := startHub(t, fastConfig())
	a := newIdent(t)
	rc := dialRaw(t, th)
	f := rc.authFrame(a, th.signalURL(t), true)
	f.Sig[0] ^= 1
	rc.write(f)
	if code, _ := rc.expectClosed(); code != CodeAuthFailed {
		t.Fatalf("want %s, got %q", CodeAuthFailed, code)
	}
	if st := th.Stats(); st.Registered != 0 {
		t.Fatalf("registered %d nodes after a bad signature", st.Registered)
	}
}

func TestAuthRefusesKeyNotDerivingNodeID(t *testing.T) {
	th := startHub(t, fastConfig())
	attacker, victim := newIdent(t), newIdent(t)
	rc := dialRaw(t, th)
	u := th.signalURL(t)
	// Valid signature by the attacker's key, but claiming the victim's NodeID.
	f := Frame{T: TAuth, Pub: attacker.pub, NodeID: victim.idHex(), URL: u, Register: true,
		Sig: ed25519Sign(attacker, AuthMessage(rc.nonce, u, victim.id))}
	rc.write(f)
	if code, _ := rc.expectClosed(); code != CodeAuthFailed {
		t.Fatalf("want %s, got %q", CodeAuthFailed, code)
	}
	if th.Stats().Registered != 0 {
		t.Fatal("victim registered by attacker")
	}
}

func TestAuthRefusesReplayedNonce(t *testing.T) {
	th := startHub(t, fastConfig())
	a := newIdent(t)
	first := dialRaw(t, th)
	captured := first.authFrame(a, th.signalURL(t), true)
	first.write(captured)
	if f := first.read(); f.T != TWelcome {
		t.Fatalf("want welcome, got %+v", f)
	}
	// Same answer on a new connection: its nonce differs, so it must fail.
	second := dialRaw(t, th)
	second.write(captured)
	if code, _ := second.expectClosed(); code != CodeAuthFailed {
		t.Fatalf("replay on a new connection: want %s, got %q", CodeAuthFailed, code)
	}
	// And a second auth on the same connection is refused: the nonce is spent.
	first.write(captured)
	if code, _ := first.expectClosed(); code != CodeAuthFailed {
		t.Fatalf("replay on the same connection: want %s, got %q", CodeAuthFailed, code)
	}
}

func TestAuthRefusesSignatureForAnotherHub(t *testing.T) {
	th := startHub(t, fastConfig())
	a := newIdent(t)
	rc := dialRaw(t, th)
	rc.write(rc.authFrame(a, "ws://evil.example:4122"+SignalPath, true))
	if code, _ := rc.expectClosed(); code != CodeAuthFailed {
		t.Fatalf("want %s, got %q", CodeAuthFailed, code)
	}
}

func TestAuthPublicURLsOnly(t *testing.T) {
	cfg := fastConfig()
	cfg.PublicURLs = []string{"wss://hub.example.org" + SignalPath}
	th := startHub(t, cfg)
	a := newIdent(t)
	// The Host-header form is not accepted when public URLs are configured.
	rc := dialRaw(t, th)
	rc.write(rc.authFrame(a, th.signalURL(t), true))
	if code, _ := rc.expectClosed(); code != CodeAuthFailed {
		t.Fatalf("want %s, got %q", CodeAuthFailed, code)
	}
	rc2 := dialRaw(t, th)
	rc2.write(rc2.authFrame(a, "wss://hub.example.org"+SignalPath, true))
	if f := rc2.read(); f.T != TWelcome {
		t.Fatalf("want welcome for the configured URL, got %+v", f)
	}
}

func TestCallBeforeAuthRefused(t *testing.T) {
	th := startHub(t, fastConfig())
	b := newIdent(t)
	rc := dialRaw(t, th)
	rc.write(Frame{T: TCall, CID: 1, Target: b.idHex()})
	if code, _ := rc.expectClosed(); code != CodeNotAuthed {
		t.Fatalf("want %s, got %q", CodeNotAuthed, code)
	}
}

func TestCallerCannotImpersonate(t *testing.T) {
	th := startHub(t, fastConfig())
	attacker, victim, callee := newIdent(t), newIdent(t), newIdent(t)
	ce := dialRaw(t, th)
	ce.auth(th, callee, true)
	at := dialRaw(t, th)
	at.auth(th, attacker, false)
	// The call frame tries to name the victim as the caller; the hub must
	// report the authenticated identity instead.
	at.write(Frame{T: TCall, CID: 7, Target: callee.idHex(), Peer: victim.addrHex()})
	in := ce.read()
	if in.T != TIncoming || in.Peer != attacker.addrHex() {
		t.Fatalf("callee told %+v, want incoming from the attacker %s", in, attacker.addrHex())
	}
}

func TestNoAgentRaw(t *testing.T) {
	th := startHub(t, fastConfig())
	a, b := newIdent(t), newIdent(t)
	rc := dialRaw(t, th)
	rc.auth(th, a, false)
	rc.write(Frame{T: TCall, CID: 3, Target: b.idHex()})
	if f := rc.read(); f.T != TNoAgent || f.CID != 3 {
		t.Fatalf("want noagent cid 3, got %+v", f)
	}
}

func TestReRegistrationReplacesOld(t *testing.T) {
	th := startHub(t, fastConfig())
	a, caller := newIdent(t), newIdent(t)
	old := dialRaw(t, th)
	old.auth(th, a, true)
	nw := dialRaw(t, th)
	nw.auth(th, a, true)
	if f := old.read(); f.T != TReplaced {
		t.Fatalf("old connection: want replaced, got %+v", f)
	}
	old.expectClosed()
	cl := dialRaw(t, th)
	cl.auth(th, caller, false)
	cl.write(Frame{T: TCall, CID: 1, Target: a.idHex()})
	if f := nw.read(); f.T != TIncoming {
		t.Fatalf("new connection: want incoming, got %+v", f)
	}
}

func TestUnauthenticatedRegistrationDoesNotReplace(t *testing.T) {
	th := startHub(t, fastConfig())
	a, attacker := newIdent(t), newIdent(t)
	old := dialRaw(t, th)
	old.auth(th, a, true)
	rc := dialRaw(t, th)
	u := th.signalURL(t)
	rc.write(Frame{T: TAuth, Pub: attacker.pub, NodeID: a.idHex(), URL: u, Register: true,
		Sig: ed25519Sign(attacker, AuthMessage(rc.nonce, u, a.id))})
	rc.expectClosed()
	cl := dialRaw(t, th)
	cl.auth(th, newIdent(t), false)
	cl.write(Frame{T: TCall, CID: 1, Target: a.idHex()})
	if f := old.read(); f.T != TIncoming {
		t.Fatalf("legitimate registration lost: got %+v", f)
	}
}

func TestReferenceClientFailsCleanly(t *testing.T) {
	th := startHub(t, fastConfig())
	d := websocket.Dialer{Subprotocols: []string{"a2al.ice.v1"}, HandshakeTimeout: testWait}
	_, resp, err := d.Dial(th.signalURL(t), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("wrong subprotocol: want HTTP 400, got %v %v", resp, err)
	}
	_, resp, err = d.Dial(th.base+"/signal", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("legacy path: want HTTP 426, got %v %v", resp, err)
	}
}

func TestOversizedFrameClosesConnection(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxMessageSize = 512
	th := startHub(t, cfg)
	rc := dialRaw(t, th)
	rc.ws.WriteMessage(websocket.TextMessage, []byte(`{"t":"call","msg":"`+strings.Repeat("x", 1024)+`"}`))
	_, err := rc.expectClosed()
	if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("want close 1009, got %v", err)
	}
	waitFor(t, "connection gone", func() bool { return th.Stats().Connections == 0 })
}

func TestPerIPLimitRefuses(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxConnsPerIP = 2
	th := startHub(t, cfg)
	dialRaw(t, th)
	dialRaw(t, th)
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}, HandshakeTimeout: testWait}
	_, resp, err := d.Dial(th.signalURL(t), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third connection: want HTTP 429, got %v %v", resp, err)
	}
}

func TestTotalConnLimitRefuses(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxConns = 1
	th := startHub(t, cfg)
	dialRaw(t, th)
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}, HandshakeTimeout: testWait}
	_, resp, err := d.Dial(th.signalURL(t), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second connection: want HTTP 503, got %v %v", resp, err)
	}
}

func TestMessageRateLimit(t *testing.T) {
	cfg := fastConfig()
	cfg.MsgRate = 0.001
	cfg.MsgBurst = 3
	th := startHub(t, cfg)
	a, b := newIdent(t), newIdent(t)
	rc := dialRaw(t, th)
	rc.auth(th, a, false) // token 1
	for i := 0; i < 5; i++ {
		rc.ws.WriteMessage(websocket.TextMessage, EncodeFrame(Frame{T: TCall, CID: uint64(i + 1), Target: b.idHex()}))
	}
	if code, _ := rc.expectClosed(); code != CodeRateLimited {
		t.Fatalf("want %s, got %q", CodeRateLimited, code)
	}
}

func TestAuthTimeout(t *testing.T) {
	cfg := fastConfig()
	cfg.AuthTimeout = 100 * time.Millisecond
	th := startHub(t, cfg)
	rc := dialRaw(t, th)
	if code, _ := rc.expectClosed(); code != CodeAuthFailed {
		t.Fatalf("want %s, got %q", CodeAuthFailed, code)
	}
}

// The hub's timeouts run on its Clock: an unauthenticated connection stays
// while the fake clock stands still and is closed once it has moved past
// AuthTimeout (10 s, longer than this test waits in wall time).
func TestAuthTimeoutOnClock(t *testing.T) {
	cfg := fastConfig()
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	cfg.Clock = clk
	th := startHub(t, cfg)
	rc := dialRaw(t, th)
	waitFor(t, "connection counted", func() bool { return th.Stats().Connections == 1 })
	clk.Advance(cfg.AuthTimeout / 2)
	time.Sleep(50 * time.Millisecond) // a sweep would have run by now
	if n := th.Stats().Connections; n != 1 {
		t.Fatalf("connection closed before AuthTimeout on the hub clock (%d open)", n)
	}
	waitFor(t, "connection closed by the sweeper", func() bool {
		clk.Advance(cfg.AuthTimeout)
		return th.Stats().Connections == 0
	})
	if code, _ := rc.expectClosed(); code != CodeAuthFailed {
		t.Fatalf("want %s, got %q", CodeAuthFailed, code)
	}
}

func TestIdleConnectionDropped(t *testing.T) {
	cfg := fastConfig()
	cfg.PingInterval = 50 * time.Millisecond
	cfg.IdleTimeout = 200 * time.Millisecond
	th := startHub(t, cfg)
	rc := dialRaw(t, th)
	rc.auth(th, newIdent(t), true)
	// We never read again, so gorilla never answers the hub's pings.
	waitFor(t, "idle connection dropped", func() bool { return th.Stats().Connections == 0 })
}

func TestPongKeepsConnectionAlive(t *testing.T) {
	cfg := fastConfig()
	cfg.PingInterval = 50 * time.Millisecond
	cfg.IdleTimeout = 500 * time.Millisecond
	th := startHub(t, cfg)
	newClient(t, th, newIdent(t), func(*Session) {})
	time.Sleep(1500 * time.Millisecond) // three idle timeouts
	if n := counterValue(t, th.m.dropped.WithLabelValues(CodeIdle)); n != 0 {
		t.Fatalf("%v connections dropped as idle although the client answers pings", n)
	}
	if th.Stats().Registered != 1 {
		t.Fatal("client not registered")
	}
}

func ed25519Sign(who ident, msg []byte) []byte { return ed25519.Sign(who.priv, msg) }

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestSlowReaderIsDropped(t *testing.T) {
	cfg := fastConfig()
	cfg.MsgBurst, cfg.MaxSessionsPerNode, cfg.MaxSessionsPerSource = 1, 1, 1
	cfg.SendQueue = cfg.ownReserve() + 1
	th := startHub(t, cfg)
	a := newIdent(t)
	rc := dialRaw(t, th)
	rc.auth(th, a, true)
	th.mu.Lock()
	c := th.registered[a.id]
	th.mu.Unlock()
	// The client never reads: socket buffers fill, the writer blocks, the
	// queue overflows and the hub drops the connection instead of waiting.
	big := strings.Repeat("x", 64<<10)
	for i := 0; i < 4000; i++ {
		select {
		case <-c.done:
			i = 4000
		default:
			c.send(Frame{T: TError, Msg: big})
		}
	}
	waitFor(t, "slow reader dropped", func() bool { return th.Stats().Connections == 0 })
	if n := counterValue(t, th.m.dropped.WithLabelValues(CodeQueueFull)); n != 1 {
		t.Fatalf("queue_full drops = %v, want 1", n)
	}
}

func TestHubCloseDisconnectsEveryone(t *testing.T) {
	before := runtime.NumGoroutine()
	h, err := NewHub(fastConfig())
	if err != nil {
		t.Fatal(err)
	}
	th := &testHub{Hub: h}
	stop := startServer(t, th)
	defer stop()
	rc := dialRaw(t, th)
	rc.auth(th, newIdent(t), true)
	h.Close()
	code, err := rc.expectClosed()
	if code != CodeShutdown || !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("want shutting_down + 1001, got %q %v", code, err)
	}
	if h.Stats().Connections != 0 {
		t.Fatal("connections left after Close")
	}
	rc.ws.Close()
	stop()
	waitFor(t, "hub goroutines gone", func() bool { return runtime.NumGoroutine() <= before })
}

func TestThirdPartyCannotInjectIntoSession(t *testing.T) {
	th := startHub(t, fastConfig())
	a, b, x := newIdent(t), newIdent(t), newIdent(t)
	cb := dialRaw(t, th)
	cb.auth(th, b, true)
	ca := dialRaw(t, th)
	ca.auth(th, a, false)
	cx := dialRaw(t, th)
	cx.auth(th, x, false)
	ca.write(Frame{T: TCall, CID: 1, Target: b.idHex()})
	in := cb.read()
	if r := ca.read(); r.T != TRinging {
		t.Fatalf("want ringing, got %+v", r)
	}
	// The outsider knows the sid (worst case) and tries to accept and inject.
	cx.write(Frame{T: TAccept, SID: in.SID})
	if f := cx.read(); f.T != TError || f.Code != CodeUnknownSession {
		t.Fatalf("outsider accept: got %+v", f)
	}
	cx.write(Frame{T: TSig, SID: in.SID, Kind: KindCred, Ufrag: "evil", Pwd: "evil"})
	if f := cx.read(); f.T != TError || f.Code != CodeUnknownSession {
		t.Fatalf("outsider sig: got %+v", f)
	}
	// The caller cannot accept its own call either.
	ca.write(Frame{T: TAccept, SID: in.SID})
	if f := ca.read(); f.T != TError || f.Code != CodeBadState {
		t.Fatalf("caller accept: got %+v", f)
	}
	cb.write(Frame{T: TAccept, SID: in.SID})
	if f := ca.read(); f.T != TAccepted || f.Peer != b.addrHex() {
		t.Fatalf("want accepted from b, got %+v", f)
	}
	cb.write(Frame{T: TSig, SID: in.SID, Kind: KindCred, Ufrag: "real", Pwd: "real"})
	if f := ca.read(); f.T != TSig || f.Ufrag != "real" {
		t.Fatalf("want b's cred, got %+v", f)
	}
}

func TestRemoteIPKey(t *testing.T) {
	for in, want := range map[string]string{
		"1.2.3.4:5":                   "1.2.3.4",
		"[::ffff:1.2.3.4]:5":          "1.2.3.4",
		"[2001:db8:1:2:3:4:5:6]:7":    "2001:db8:1:2::",
		"[2001:db8:1:2:ff::1%eth0]:7": "2001:db8:1:2::",
		"garbage":                     "invalid IP",
	} {
		if got := remoteIP(&http.Request{RemoteAddr: in}).String(); got != want {
			t.Errorf("remoteIP(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestHubConfigValidated(t *testing.T) {
	for name, mod := range map[string]func(*HubConfig){
		"send queue within the own reserve": func(c *HubConfig) { c.SendQueue = c.MsgBurst },
		"idle timeout below ping interval":  func(c *HubConfig) { c.IdleTimeout = c.PingInterval / 2 },
	} {
		cfg := DefaultHubConfig()
		mod(&cfg)
		if _, err := NewHub(cfg); err == nil {
			t.Errorf("%s: NewHub accepted it", name)
		}
	}
	cfg := HubConfig{MaxSessionsPerNode: 4, CalleeCallBurst: 5}
	h, err := NewHub(cfg)
	if err != nil {
		t.Fatalf("zero config with two limits set: %v", err)
	}
	defer h.Close()
	if h.cfg.MaxSessionsPerSource != 4 || h.cfg.SourceCallBurst != 5 || h.cfg.SendQueue != DefaultHubConfig().SendQueue {
		t.Fatalf("fill: per-address limits not capped or defaults missing: %+v", h.cfg)
	}
}
