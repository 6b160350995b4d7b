package signal

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
)

// exchange sends cred, two candidates and done, and reads the peer's four.
func exchange(ctx context.Context, s *Session, tag string) ([]Signal, error) {
	out := []Signal{
		{Kind: KindCred, Ufrag: "u-" + tag, Pwd: "p-" + tag},
		{Kind: KindCand, Candidate: "candidate:1 1 udp 2130706431 10.0.0.1 4000 typ host " + tag},
		{Kind: KindCand, Candidate: "candidate:2 1 udp 1694498815 1.2.3.4 5000 typ srflx " + tag},
		{Kind: KindDone},
	}
	for _, m := range out {
		if err := s.Send(ctx, m); err != nil {
			return nil, err
		}
	}
	var got []Signal
	for {
		m, err := s.Recv(ctx)
		if err != nil {
			return got, err
		}
		got = append(got, m)
	}
}

func checkExchange(t *testing.T, who string, got []Signal, err error, peerTag string) {
	t.Helper()
	if !errors.Is(err, io.EOF) || !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("%s: want end of session, got %v", who, err)
	}
	var ee *EndError
	if !errors.As(err, &ee) || ee.Reason != ReasonDone {
		t.Fatalf("%s: want end reason done, got %v", who, err)
	}
	if len(got) != 4 || got[0].Kind != KindCred || got[0].Ufrag != "u-"+peerTag || got[0].Pwd != "p-"+peerTag ||
		!strings.HasSuffix(got[1].Candidate, peerTag) || !strings.HasSuffix(got[2].Candidate, peerTag) || got[3].Kind != KindDone {
		t.Fatalf("%s: got %+v", who, got)
	}
}

func TestFullCall(t *testing.T) {
	th := startHub(t, fastConfig())
	a, b := newIdent(t), newIdent(t)
	type result struct {
		s   *Session
		got []Signal
		err error
	}
	calleeDone := make(chan result, 1)
	newClient(t, th, b, func(s *Session) {
		got, err := exchange(ctxT(t), s, "b")
		calleeDone <- result{s, got, err}
	})
	ca := newClient(t, th, a, nil)
	s, err := ca.Call(ctxT(t), b.id)
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	if s.Peer() != b.addr || s.Role() != RoleCaller || len(s.ID()) != sidLen {
		t.Fatalf("caller session: peer %x role %v id %q", s.Peer(), s.Role(), s.ID())
	}
	got, err := exchange(ctxT(t), s, "a")
	checkExchange(t, "caller", got, err, "b")
	var r result
	select {
	case r = <-calleeDone:
	case <-time.After(testWait):
		t.Fatal("callee did not finish")
	}
	checkExchange(t, "callee", r.got, r.err, "a")
	if r.s.Peer() != a.addr || r.s.Role() != RoleCallee || r.s.ID() != s.ID() {
		t.Fatalf("callee session: peer %x role %v id %q", r.s.Peer(), r.s.Role(), r.s.ID())
	}
	waitFor(t, "hub session ended", func() bool { return th.Stats().Sessions == 0 })
	if err := s.Send(ctxT(t), Signal{Kind: KindDone}); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("send after end: want ErrSessionClosed, got %v", err)
	}
}

func TestConcurrentCallsSamePairAreSeparate(t *testing.T) {
	th := startHub(t, fastConfig())
	a, b := newIdent(t), newIdent(t)
	newClient(t, th, b, func(s *Session) {
		m, err := s.Recv(ctxT(t))
		if err == nil { // echo the ufrag back so each caller sees its own
			s.Send(ctxT(t), Signal{Kind: KindCred, Ufrag: m.Ufrag, Pwd: "x"})
		}
		<-s.Done()
	})
	ca := newClient(t, th, a, func(*Session) {}) // caller that is also registered
	s1, err := ca.Call(ctxT(t), b.id)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := ca.Call(ctxT(t), b.id)
	if err != nil {
		t.Fatal(err)
	}
	if s1.ID() == s2.ID() {
		t.Fatal("two calls share a session id")
	}
	for i, s := range []*Session{s1, s2} {
		want := []string{"one", "two"}[i]
		if err := s.Send(ctxT(t), Signal{Kind: KindCred, Ufrag: want, Pwd: "p"}); err != nil {
			t.Fatal(err)
		}
		m, err := s.Recv(ctxT(t))
		if err != nil || m.Ufrag != want {
			t.Fatalf("session %d: got %+v %v, want ufrag %s", i, m, err, want)
		}
		s.Close()
	}
	waitFor(t, "sessions ended", func() bool { return th.Stats().Sessions == 0 })
}

func TestCallNoAgent(t *testing.T) {
	th := startHub(t, fastConfig())
	ca := newClient(t, th, newIdent(t), nil)
	_, err := ca.Call(ctxT(t), newIdent(t).id)
	if !errors.Is(err, ErrNoAgent) {
		t.Fatalf("want ErrNoAgent, got %v", err)
	}
	// A client without OnCall authenticates but does not register.
	other := newClient(t, th, newIdent(t), nil)
	if _, err := other.Call(ctxT(t), ca.id); !errors.Is(err, ErrNoAgent) {
		t.Fatalf("calling a non-registered client: want ErrNoAgent, got %v", err)
	}
}

func TestCallRejectedWhenCalleeRefuses(t *testing.T) {
	th := startHub(t, fastConfig())
	b := newIdent(t)
	rc := dialRaw(t, th)
	rc.auth(th, b, true)
	ca := newClient(t, th, newIdent(t), nil)
	errc := make(chan error, 1)
	go func() { _, err := ca.Call(ctxT(t), b.id); errc <- err }()
	in := rc.read()
	rc.write(Frame{T: TReject, SID: in.SID})
	if err := <-errc; !errors.Is(err, ErrRejected) {
		t.Fatalf("want ErrRejected, got %v", err)
	}
}

func TestPairingTimeoutEndsSession(t *testing.T) {
	cfg := fastConfig()
	cfg.PairTimeout = 150 * time.Millisecond
	th := startHub(t, cfg)
	b := newIdent(t)
	rc := dialRaw(t, th) // registered callee that never answers
	rc.auth(th, b, true)
	ca := newClient(t, th, newIdent(t), nil)
	_, err := ca.Call(ctxT(t), b.id)
	if !errors.Is(err, ErrCallTimeout) {
		t.Fatalf("want ErrCallTimeout, got %v", err)
	}
	if in := rc.read(); in.T != TIncoming {
		t.Fatalf("callee: want incoming, got %+v", in)
	}
	if end := rc.read(); end.T != TEnd || end.Reason != ReasonTimeout {
		t.Fatalf("callee: want end timeout, got %+v", end)
	}
	if th.Stats().Sessions != 0 {
		t.Fatal("session still active")
	}
}

func TestSessionLifetimeEndsSession(t *testing.T) {
	cfg := fastConfig()
	cfg.SessionLifetime = 200 * time.Millisecond
	th := startHub(t, cfg)
	b := newIdent(t)
	newClient(t, th, b, func(s *Session) { <-s.Done() })
	ca := newClient(t, th, newIdent(t), nil)
	s, err := ca.Call(ctxT(t), b.id)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Recv(ctxT(t))
	var ee *EndError
	if !errors.As(err, &ee) || ee.Reason != ReasonLifetime {
		t.Fatalf("want end reason lifetime, got %v", err)
	}
}

func TestSessionByteLimit(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxSessionBytes = 600
	th := startHub(t, cfg)
	b := newIdent(t)
	newClient(t, th, b, func(s *Session) { <-s.Done() })
	ca := newClient(t, th, newIdent(t), nil)
	s, err := ca.Call(ctxT(t), b.id)
	if err != nil {
		t.Fatal(err)
	}
	big := Signal{Kind: KindCand, Candidate: strings.Repeat("c", 250)}
	for i := 0; i < 3; i++ {
		if err := s.Send(ctxT(t), big); err != nil && !errors.Is(err, ErrSessionClosed) {
			t.Fatal(err)
		}
	}
	_, err = s.Recv(ctxT(t))
	var ee *EndError
	if !errors.As(err, &ee) || ee.Reason != ReasonLimit {
		t.Fatalf("want end reason limit, got %v", err)
	}
}

func TestMaxSessionsPerNode(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxSessionsPerNode = 1
	th := startHub(t, cfg)
	b := newIdent(t)
	newClient(t, th, b, func(s *Session) { <-s.Done() })
	ca := newClient(t, th, newIdent(t), nil)
	s, err := ca.Call(ctxT(t), b.id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Call(ctxT(t), b.id); !errors.Is(err, ErrTooManySessions) {
		t.Fatalf("second concurrent call: want ErrTooManySessions, got %v", err)
	}
	s.Close()
	waitFor(t, "session ended", func() bool { return th.Stats().Sessions == 0 })
	s, err = ca.Call(ctxT(t), b.id)
	if err != nil {
		t.Fatalf("call after the first ended: %v", err)
	}
	s.Close()
}

func TestCallContextCancelHangsUp(t *testing.T) {
	th := startHub(t, fastConfig())
	b := newIdent(t)
	rc := dialRaw(t, th)
	rc.auth(th, b, true)
	ca := newClient(t, th, newIdent(t), nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := ca.Call(ctx, b.id); errc <- err }()
	in := rc.read()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	if end := rc.read(); end.T != TEnd || end.SID != in.SID || end.Reason != ReasonHangup {
		t.Fatalf("callee: want end hangup, got %+v", end)
	}
}

func TestClientReconnectsAndReRegisters(t *testing.T) {
	th := startHub(t, fastConfig())
	b := newIdent(t)
	states := make(chan bool, 16)
	cb, err := NewClient(ClientConfig{HubURL: th.base, Key: b.priv, OnCall: func(s *Session) { <-s.Done() },
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		OnState: func(up bool) { states <- up }})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	waitFor(t, "registered", func() bool { return th.Stats().Registered == 1 })
	// Drop the connection from the hub side.
	th.mu.Lock()
	first := th.registered[b.id]
	th.mu.Unlock()
	first.shutdown()
	waitFor(t, "re-registered on a new connection", func() bool {
		th.mu.Lock()
		defer th.mu.Unlock()
		c := th.registered[b.id]
		return c != nil && c != first
	})
	want := []bool{true, false, true}
	for i, w := range want {
		select {
		case got := <-states:
			if got != w {
				t.Fatalf("state %d: got %v want %v", i, got, w)
			}
		case <-time.After(testWait):
			t.Fatalf("state %d missing", i)
		}
	}
	ca := newClient(t, th, newIdent(t), nil)
	s, err := ca.Call(ctxT(t), b.id)
	if err != nil {
		t.Fatalf("call after reconnect: %v", err)
	}
	s.Close()
}

func TestCallWaitsForConnection(t *testing.T) {
	// No hub listening: Call must give up at the context deadline.
	c, err := NewClient(ClientConfig{HubURL: "ws://127.0.0.1:1", Key: newIdent(t).priv, BackoffMin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Call(ctx, newIdent(t).id); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want deadline exceeded, got %v", err)
	}
	// The reason is available to callers that want to fail fast.
	waitFor(t, "last dial error", func() bool { return c.LastError() != nil })
	if c.Registered() {
		t.Fatal("registered without a hub")
	}
}

func TestBackoff(t *testing.T) {
	min, max := 100*time.Millisecond, 2*time.Second
	cases := []struct {
		n      int
		jitter float64
		want   time.Duration
	}{
		{0, 0, 50 * time.Millisecond},
		{0, 0.999999, 100 * time.Millisecond},
		{1, 0, 100 * time.Millisecond},
		{3, 1, 800 * time.Millisecond},
		{10, 1, max},
		{1000, 0, max / 2},
	}
	for _, c := range cases {
		got := Backoff(c.n, min, max, c.jitter)
		if got < c.want-time.Millisecond || got > c.want {
			t.Errorf("Backoff(%d, jitter %v) = %v, want ~%v", c.n, c.jitter, got, c.want)
		}
	}
}

func TestNewClientValidates(t *testing.T) {
	if _, err := NewClient(ClientConfig{HubURL: "http://x", Key: newIdent(t).priv}); err == nil {
		t.Fatal("http scheme accepted")
	}
	if _, err := NewClient(ClientConfig{HubURL: "ws://x"}); err == nil {
		t.Fatal("missing key accepted")
	}
}

func TestNothingLeaksAfterClose(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		h, err := NewHub(fastConfig())
		if err != nil {
			t.Fatal(err)
		}
		th := &testHub{Hub: h}
		srvClose := startServer(t, th)
		a, b := newIdent(t), newIdent(t)
		cb, _ := NewClient(ClientConfig{HubURL: th.base, Key: b.priv, OnCall: func(s *Session) { exchange(ctxT(t), s, "b") }})
		ca, _ := NewClient(ClientConfig{HubURL: th.base, Key: a.priv})
		waitFor(t, "both up", func() bool { return ca.Registered() && cb.Registered() })
		s, err := ca.Call(ctxT(t), b.id)
		if err != nil {
			t.Fatal(err)
		}
		exchange(ctxT(t), s, "a")
		// Leave a second session open across Close.
		if _, err := ca.Call(ctxT(t), b.id); err != nil {
			t.Fatal(err)
		}
		ca.Close()
		cb.Close()
		h.Close()
		srvClose()
	}()
	waitFor(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= before })
}

func TestClientOverTLS(t *testing.T) {
	h, err := NewHub(fastConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	srv := httptest.NewTLSServer(h.Handler())
	defer srv.Close()
	base := "wss" + strings.TrimPrefix(srv.URL, "https")
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	a, b := newIdent(t), newIdent(t)
	mk := func(who ident, onCall func(*Session)) *Client {
		c, err := NewClient(ClientConfig{HubURL: base, Key: who.priv, OnCall: onCall, TLSConfig: &tls.Config{RootCAs: pool}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		waitFor(t, "registered over wss", c.Registered)
		return c
	}
	mk(b, func(s *Session) { exchange(ctxT(t), s, "b") })
	ca := mk(a, nil)
	s, err := ca.Call(ctxT(t), b.id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := exchange(ctxT(t), s, "a")
	checkExchange(t, "caller over wss", got, err, "b")
}
