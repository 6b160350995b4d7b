package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al/host"
)

// squatClient dials h from one UDP socket on ip with a fresh identity per
// connection and sends the agent-route frame, as a reference node would.
type squatClient struct{ tr *quic.Transport }

func newSquatClient(t *testing.T, ip string) *squatClient {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	t.Cleanup(func() { tr.Close(); udp.Close() })
	return &squatClient{tr: tr}
}

func (s *squatClient) connect(ctx context.Context, h *host.Host) (*quic.Conn, error) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	id, err := host.NewIdentity(key, time.Now())
	if err != nil {
		return nil, err
	}
	target := h.Address()
	qc, err := s.tr.Dial(ctx, h.LocalAddr(), id.ClientTLS(target, host.ALPNModeA),
		&quic.Config{KeepAlivePeriod: time.Second, MaxIdleTimeout: time.Minute})
	if err != nil {
		return nil, err
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	st.Write(append([]byte("a2r2"), target[:]...))
	st.Close()
	return qc, nil
}

// TestModeASlotSquatting (issue 10, attack 6): 300 connections from fresh
// identities on one IP, kept alive and idle, must not shut a legitimate
// caller from another IP out of the echo service. (On ee3e354 the echo
// server's 64 slots filled up and every later connection was closed at once.)
func TestModeASlotSquatting(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	h, err := host.New(host.Config{Key: key, ListenAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler),
		DisableMaintenance: true, DisableNAT: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer h.Close()
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); serveEcho(ctx, h, slog.New(slog.DiscardHandler)) }()

	attacker := newSquatClient(t, "127.0.0.1")
	var squat []*quic.Conn
	for range 300 {
		qc, err := attacker.connect(ctx, h)
		if err == nil {
			squat = append(squat, qc)
		}
	}
	defer func() {
		for _, qc := range squat {
			qc.CloseWithError(0, "")
		}
	}()
	open := 0
	for _, qc := range squat {
		if qc.Context().Err() == nil {
			open++
		}
	}
	t.Logf("%d of 300 attacker connections handshaken, %d still open", len(squat), open)

	legit := newSquatClient(t, "127.0.0.2")
	qc, err := legit.connect(ctx, h)
	if err != nil {
		t.Fatalf("legitimate connection: %v", err)
	}
	defer qc.CloseWithError(0, "")
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatalf("legitimate stream: %v", err)
	}
	st.Write([]byte("ping"))
	st.Close()
	_ = st.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "ping" {
		t.Fatalf("legitimate echo %q, err %v (shut out by squatters)", got, err)
	}
}
