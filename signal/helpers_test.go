package signal

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/gorilla/websocket"
)

const testWait = 5 * time.Second

type ident struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	addr a2al.Address
	id   a2al.NodeID
}

func newIdent(t testing.TB) ident {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a := a2al.AddressFromEd25519(pub)
	return ident{priv: priv, pub: pub, addr: a, id: a2al.NodeIDFromAddress(a)}
}

func (i ident) idHex() string   { return hex.EncodeToString(i.id[:]) }
func (i ident) addrHex() string { return hex.EncodeToString(i.addr[:]) }

// testHub runs a hub behind an httptest server; base is its ws:// URL.
type testHub struct {
	*Hub
	srv  *httptest.Server
	base string
}

func fastConfig() HubConfig {
	cfg := DefaultHubConfig()
	cfg.SweepInterval = 20 * time.Millisecond
	cfg.WriteTimeout = 2 * time.Second
	return cfg
}

func startHub(t testing.TB, cfg HubConfig) *testHub {
	t.Helper()
	h, err := NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	th := &testHub{Hub: h}
	stop := startServer(t, th)
	t.Cleanup(func() {
		h.Close()
		stop()
	})
	return th
}

// startServer serves th over a loopback httptest server and sets th.base.
func startServer(t testing.TB, th *testHub) func() {
	th.srv = httptest.NewServer(th.Handler())
	th.base = "ws" + strings.TrimPrefix(th.srv.URL, "http")
	return th.srv.Close
}

func (th *testHub) signalURL(t testing.TB) string {
	u, err := SignalURL(th.base)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// rawConn is a hand-driven protocol client for adversarial tests.
type rawConn struct {
	t     testing.TB
	ws    *websocket.Conn
	nonce []byte
}

func dialRaw(t testing.TB, th *testHub) *rawConn { t.Helper(); return dialRawFrom(t, th, "") }

// dialRawFrom dials from a chosen loopback source address (any 127/8
// address is local on Linux), so tests can act as callers at several IPs.
func dialRawFrom(t testing.TB, th *testHub, srcIP string) *rawConn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}, HandshakeTimeout: testWait, NetDialContext: sourceDialer(srcIP)}
	ws, _, err := d.Dial(th.signalURL(t), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	rc := &rawConn{t: t, ws: ws}
	f := rc.read()
	if f.T != TChallenge || len(f.Nonce) != NonceLen {
		t.Fatalf("want challenge, got %+v", f)
	}
	rc.nonce = f.Nonce
	return rc
}

func (rc *rawConn) read() Frame {
	rc.t.Helper()
	f, err := rc.tryRead()
	if err != nil {
		rc.t.Fatalf("read: %v", err)
	}
	return f
}

func (rc *rawConn) tryRead() (Frame, error) {
	rc.ws.SetReadDeadline(time.Now().Add(testWait))
	_, data, err := rc.ws.ReadMessage()
	if err != nil {
		return Frame{}, err
	}
	return DecodeFrame(data)
}

func (rc *rawConn) write(f Frame) {
	rc.t.Helper()
	rc.ws.SetWriteDeadline(time.Now().Add(testWait))
	if err := rc.ws.WriteMessage(websocket.TextMessage, EncodeFrame(f)); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// authFrame builds a correct auth answer for who over url.
func (rc *rawConn) authFrame(who ident, url string, register bool) Frame {
	return Frame{T: TAuth, Pub: who.pub, NodeID: who.idHex(), URL: url, Register: register,
		Sig: ed25519.Sign(who.priv, AuthMessage(rc.nonce, url, who.id))}
}

func (rc *rawConn) auth(th *testHub, who ident, register bool) {
	rc.t.Helper()
	rc.write(rc.authFrame(who, th.signalURL(rc.t), register))
	if f := rc.read(); f.T != TWelcome || f.Addr != who.addrHex() {
		rc.t.Fatalf("want welcome for %s, got %+v", who.addrHex(), f)
	}
}

// expectClosed reads until the hub closes the connection and returns the
// error frame code seen (if any) and the close error.
func (rc *rawConn) expectClosed() (string, error) {
	rc.t.Helper()
	code := ""
	for {
		f, err := rc.tryRead()
		if err != nil {
			if errors.Is(err, ErrBadFrame) {
				continue
			}
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				rc.t.Fatalf("want a close from the hub, got %v", err)
			}
			return code, err
		}
		if f.T == TError {
			code = f.Code
		}
	}
}

// waitFor polls cond until it holds or the test deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newClient(t testing.TB, th *testHub, who ident, onCall func(*Session)) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{HubURL: th.base, Key: who.priv, OnCall: onCall, BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	waitFor(t, "client registered", c.Registered)
	return c
}

// sourceDialer dials from srcIP ("" = the system's choice).
func sourceDialer(srcIP string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: testWait}
	if srcIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(srcIP)}
	}
	return d.DialContext
}

// metricSum adds up the samples of a counter or gauge family in the hub's
// registry whose labels include want (nil: all samples).
func metricSum(t testing.TB, th *testHub, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := th.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	t.Cleanup(cancel)
	return ctx
}
