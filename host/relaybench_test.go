package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
)

// BenchmarkModeABulk measures one Mode A stream's throughput on loopback,
// directly and through the hub's TURN relay (the caller offers only relay
// candidates, so the same two hosts are forced through the allocation):
//
//	go test ./host -run XXX -bench ModeABulk -benchtime 5x
func BenchmarkModeABulk(b *testing.B) {
	for _, relayed := range []bool{false, true} {
		name := "direct"
		if relayed {
			name = "relayed"
		}
		b.Run(name, func(b *testing.B) { benchBulk(b, relayed) })
	}
}

func benchBulk(b *testing.B, relayed bool) {
	hubURL := loopbackRelayHub(b)
	mk := func() *Host {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		h, err := New(Config{Key: key, ListenAddr: "127.0.0.1:0", Logger: testLogger(), DisableMaintenance: true,
			DisableNAT: true, IncludeLoopback: true, HubURLs: []string{hubURL}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { h.Close() })
		waitFor(b, "hub registration", func() bool { return h.HubsRegistered() == 1 })
		return h
	}
	x, y := mk(), mk()
	x.env.relayOnly.Store(relayed)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := y.Payload()
	if relayed {
		p.NatType = protocol.NATSymmetric // so the dial does not try the direct path first
	}
	er := &protocol.EndpointRecord{Address: y.Address(), Endpoints: p.Endpoints, NatType: p.NatType, Signal: p.Signal, Signals: p.Signals}
	var c *Conn
	var err error
	if relayed {
		c, err = x.dialPunched(ctx, er)
	} else {
		c, err = x.dialDirect(ctx, er)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if want := map[bool]string{false: "direct", true: "relayed"}[relayed]; c.Path != want {
		b.Fatalf("path %q, want %s", c.Path, want)
	}
	go func() {
		for {
			sc, err := y.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				for {
					st, err := sc.AcceptStream(ctx)
					if err != nil {
						return
					}
					io.Copy(io.Discard, st)
					st.Write([]byte{1})
					st.Close()
				}
			}()
		}
	}()
	const size = 32 << 20
	buf := make([]byte, 256<<10)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st, err := c.OpenStream(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := st.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		st.Close()
		if _, err := io.ReadAll(st); err != nil {
			b.Fatal(err)
		}
	}
}

// loopbackRelayHub runs a hub with an unlimited TURN relay on loopback.
func loopbackRelayHub(b *testing.B) string {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	auth, err := signal.NewTURNAuth(signal.TURNAuthConfig{URLs: []string{"turn:" + pc.LocalAddr().String() + "?transport=udp"}})
	if err != nil {
		b.Fatal(err)
	}
	ts, err := signal.NewTURNServer(signal.TURNServerConfig{Auth: auth, PacketConn: pc, RelayIP: net.IPv4(127, 0, 0, 1),
		RelayBind: "127.0.0.1", AllowPeer: func(net.IP) bool { return true },
		Limits: signal.TURNLimits{AllocBandwidth: -1, NodeBandwidth: -1, TotalBandwidth: -1}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ts.Close() })
	cfg := signal.DefaultHubConfig()
	cfg.TURN = auth
	hub, err := signal.NewHub(cfg)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(hub.Handler())
	b.Cleanup(func() { srv.Close(); hub.Close() })
	return "ws://" + strings.TrimPrefix(srv.URL, "http://")
}
