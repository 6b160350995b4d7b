package host

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

func loopbackHostCfg(tb testing.TB, cfg Config) *Host {
	tb.Helper()
	if cfg.Key == nil {
		_, cfg.Key, _ = ed25519.GenerateKey(rand.Reader)
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	cfg.Logger, cfg.DisableMaintenance, cfg.DisableNAT = testLogger(), true, true
	h, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return h
}

// rawPeer is a bare QUIC endpoint with an identity: it speaks (or not) the
// route frame by hand, as a reference node or an attacker would.
type rawPeer struct {
	id *Identity
	tr *quic.Transport
	ln *quic.Listener
}

func newRawPeer(tb testing.TB, ip string, key ed25519.PrivateKey) *rawPeer {
	tb.Helper()
	if key == nil {
		_, key, _ = ed25519.GenerateKey(rand.Reader)
	}
	id, err := NewIdentity(key, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		tb.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(id.ServerTLS(nil), quicConfig(DefaultHandshakeLimit))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close(); tr.Close(); udp.Close() })
	return &rawPeer{id: id, tr: tr, ln: ln}
}

func (p *rawPeer) dial(tb testing.TB, to *Host) *quic.Conn {
	tb.Helper()
	qc, err := p.tryDial(to)
	if err != nil {
		tb.Fatal(err)
	}
	return qc
}

// tryDial is dial for tests where the acceptor may refuse the connection
// before the handshake completes on our side.
func (p *rawPeer) tryDial(to *Host) (*quic.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.tr.Dial(ctx, to.LocalAddr(), p.id.ClientTLS(to.Address(), ALPNModeA), quicConfig(DefaultHandshakeLimit))
}

// sendRoute writes b on the first stream, FINs, and returns the answer.
func sendRoute(tb testing.TB, qc *quic.Conn, b []byte) ([]byte, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	s.Write(b)
	s.Close()
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	return io.ReadAll(s)
}

type hostFrames struct {
	Route2 struct {
		Target string `json:"target_address_hex"`
		Frame  string `json:"frame_hex"`
	} `json:"agent_route_a2r2"`
	Dialer   string `json:"ctrl_dialer_stream_hex"`
	Acceptor string `json:"ctrl_acceptor_stream_hex"`
	Plain    struct {
		Seed string `json:"key_seed_hex"`
		DER  string `json:"der_hex"`
		Peer string `json:"peer_address_hex"`
	} `json:"tls_cert_plain"`
	Delegated struct {
		DER    string `json:"der_hex"`
		Peer   string `json:"peer_address_hex"`
		OpAddr string `json:"verify_no_expectation_address_hex"`
	} `json:"tls_cert_delegated"`
	Defects []struct {
		Name    string `json:"name"`
		DER     string `json:"der_hex"`
		Correct string `json:"correct_remote_address_hex"`
		BobHex  string `json:"upstream_dialer_check_address_hex"`
	} `json:"tls_upstream_defects"`
}

func loadHostFrames(tb testing.TB) hostFrames {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "vectors", "host_frames.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var hf hostFrames
	if err := json.Unmarshal(b, &hf); err != nil {
		tb.Fatal(err)
	}
	return hf
}

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestRouteBytesVectors: what our dialer and acceptor write on the route
// stream is byte-identical to the reference's (host_frames.json).
func TestRouteBytesVectors(t *testing.T) {
	hf := loadHostFrames(t)
	target := a2al.Address(mustHex(t, hf.Route2.Target))
	want := append(mustHex(t, hf.Route2.Frame), mustHex(t, hf.Dialer)...)
	if got := dialerRouteBytes(target, 1767225600000000001); !bytes.Equal(got, want) {
		t.Fatalf("dialer bytes\n got %x\nwant %x", got, want)
	}
	acc := mustHex(t, hf.Acceptor)
	rec := acc[9+3:] // after ObservedAddr (3+6) and the AgentInfo header (3)
	got := acceptorAnswer(&net.UDPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 50000}, rec)
	if !bytes.Equal(got, acc) {
		t.Fatalf("acceptor bytes\n got %x\nwant %x", got, acc)
	}
}

// TestRouteAcceptorOnWire: a reference-style dialer (vector bytes, a target
// we do not host) gets ObservedAddr and FIN back, and the application only
// ever sees the stream opened after the route stream.
func TestRouteAcceptorOnWire(t *testing.T) {
	hf := loadHostFrames(t)
	b := loopbackHostCfg(t, Config{})
	p := newRawPeer(t, "127.0.0.1", nil)
	qc := p.dial(t, b)
	defer qc.CloseWithError(0, "")
	ans, err := sendRoute(t, qc, append(mustHex(t, hf.Route2.Frame), mustHex(t, hf.Dialer)...))
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	if want := acceptorAnswer(qc.LocalAddr(), nil); !bytes.Equal(ans, want) {
		t.Fatalf("answer %x, want %x", ans, want)
	}
	var m dto.Metric
	if err := b.m.routeFrames.WithLabelValues("a2r2").Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("a2r2 frames counted: %v %v", m.GetCounter().GetValue(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("application bytes"))
	s.Close()
	c, err := b.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Peer != p.id.Address || c.Local != b.Address() {
		t.Fatalf("peer %s local %s", c.Peer, c.Local)
	}
	as, err := c.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(as)
	if string(got) != "application bytes" {
		t.Fatalf("application saw %q (route bytes leaked?)", got)
	}
}

// TestRouteDialerOnWire: our Dial writes exactly the route bytes before any
// application stream, and picks up the acceptor's ObservedAddr.
func TestRouteDialerOnWire(t *testing.T) {
	a := loopbackHostCfg(t, Config{})
	p := newRawPeer(t, "127.0.0.1", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type result struct {
		route, app []byte
		err        error
	}
	res := make(chan result, 1)
	go func() {
		qc, err := p.ln.Accept(ctx)
		if err != nil {
			res <- result{err: err}
			return
		}
		s, err := qc.AcceptStream(ctx)
		if err != nil {
			res <- result{err: err}
			return
		}
		route, _ := io.ReadAll(s)
		s.Write(acceptorAnswer(&net.UDPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 50000}, nil))
		s.Close()
		s2, err := qc.AcceptStream(ctx)
		if err != nil {
			res <- result{err: err}
			return
		}
		app, _ := io.ReadAll(s2)
		res <- result{route: route, app: app}
	}()
	c, err := a.DialEndpoint(ctx, p.tr.Conn.LocalAddr(), p.id.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WaitRoute(ctx); err != nil {
		t.Fatalf("route: %v", err)
	}
	if obs := c.Observed(); obs == nil || obs.String() != "203.0.113.7:50000" {
		t.Fatalf("observed %v", obs)
	}
	s, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("data"))
	s.Close()
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if want := dialerRouteBytes(p.id.Address, 0); !bytes.Equal(r.route, want) {
		t.Fatalf("route stream %x, want %x", r.route, want)
	}
	if string(r.app) != "data" {
		t.Fatalf("app stream %q", r.app)
	}
}

// TestRouteBadFrames: no route stream, a truncated frame or an oversized
// control message close the connection with CodeRoute and a reason; nothing
// reaches the application.
func TestRouteBadFrames(t *testing.T) {
	b := loopbackHostCfg(t, Config{ModeA: ModeAConfig{RouteTimeout: 300 * time.Millisecond}})
	p := newRawPeer(t, "127.0.0.1", nil)
	target := b.Address()
	cases := map[string][]byte{
		"truncated": []byte("a2r2\x01\x02"),
		"oversize":  append(protocol.EncodeRouteFrame(protocol.RouteMagicV2, target), 0x02, 0xff, 0xff),
		"silent":    nil,
	}
	for name, frame := range cases {
		t.Run(name, func(t *testing.T) {
			qc := p.dial(t, b)
			if frame != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				s, err := qc.OpenStreamSync(ctx)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				s.Write(frame)
				s.Close()
			}
			select {
			case <-qc.Context().Done():
			case <-time.After(10 * time.Second):
				t.Fatal("connection not closed")
			}
			var ae *quic.ApplicationError
			if err := context.Cause(qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != CodeRoute {
				t.Fatalf("close cause %v", err)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if c, err := b.Accept(ctx); err == nil {
		t.Fatalf("application got a connection from %s", c.Peer)
	}
}

// TestRouteSelectsAgent: the route frame's target picks the hosted agent, the
// TLS certificate presented is the agent's (the dialer expects it), and the
// accepted connection says which identity it is for.
func TestRouteSelectsAgent(t *testing.T) {
	a := loopbackHostCfg(t, Config{})
	b := loopbackHostCfg(t, Config{})
	_, ak, _ := ed25519.GenerateKey(rand.Reader)
	agent, err := NewIdentity(ak, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddAgent(agent); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.DialEndpoint(ctx, b.LocalAddr(), agent.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bc, err := b.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bc.Local != agent.Address || bc.Peer != a.Address() {
		t.Fatalf("local %s peer %s", bc.Local, bc.Peer)
	}
}
