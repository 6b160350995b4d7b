package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v2"

	"github.com/a2alnode/a2al/signal"
)

// TestRunServesTURN: a node authenticated at the hub gets credentials over
// signaling, allocates on the hub's TURN port, and /metrics shows it.
func TestRunServesTURN(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-stun-addr", "off", "-turn-addr", "127.0.0.1:0",
			"-turn-max-allocs-per-node", "1", "-turn-relay-ports", "40000-40100", "-log-level", "warn"}, io.Discard, ready)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("no shutdown")
		}
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cl, err := signal.NewClient(signal.ClientConfig{HubURL: "ws://" + addr, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	cr, err := cl.TURNCredentials(cctx)
	if err != nil {
		t.Fatal(err)
	}
	server := strings.TrimSuffix(strings.TrimPrefix(cr.URLs[0], "turn:"), "?transport=udp")
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	tc, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: server, Conn: pc, Username: cr.Username,
		Password: cr.Password, Realm: "a2al", LoggerFactory: lf})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if err := tc.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := tc.Allocate()
	if err != nil {
		t.Fatalf("allocate with hub credentials at %s: %v", server, err)
	}
	if p := relay.LocalAddr().(*net.UDPAddr).Port; p < 40000 || p > 40100 {
		t.Errorf("relayed port %d outside -turn-relay-ports 40000-40100", p)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"a2al_turn_allocations 1", `a2al_turn_limit{limit="allocations_per_node"} 1`,
		"a2al_turn_credentials_issued_total 1"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
