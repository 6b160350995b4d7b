package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/a2alnode/a2al/host"
)

// TestMonitorLogsOnChangeOrInterval: the status line is logged at start,
// not again while nothing changed within the interval, and again once the
// interval passed; a hub that cannot be reached is warned about once per
// distinct reason.
func TestMonitorLogsOnChangeOrInterval(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	h, err := host.New(host.Config{Key: key, ListenAddr: "127.0.0.1:0", HubURLs: []string{"ws://127.0.0.1:1/v2/signal"},
		DisableNAT: true, DisableMaintenance: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var buf bytes.Buffer
	m := newMonitor(h, slog.New(slog.NewTextHandler(&buf, nil)), false)
	count := func(s string) int { return strings.Count(buf.String(), s) }
	m.step(time.Hour)
	if count("msg=status") != 1 {
		t.Fatalf("first step:\n%s", buf.String())
	}
	for i := 0; i < 3; i++ {
		m.step(time.Hour)
	}
	if count("msg=status") != 1 {
		t.Fatalf("status repeated without a change:\n%s", buf.String())
	}
	m.step(0) // the interval has passed
	if count("msg=status") != 2 {
		t.Fatalf("no status line after the interval:\n%s", buf.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for count("signaling hub unreachable") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no warning for the unreachable hub:\n%s", buf.String())
		}
		time.Sleep(50 * time.Millisecond)
		m.step(time.Hour)
	}
	if !strings.Contains(buf.String(), "level=WARN") || m.ready.Load() {
		t.Fatalf("want a warning and not ready (no live peer):\n%s", buf.String())
	}
	before, reason := count("signaling hub unreachable"), m.hubState["ws://127.0.0.1:1/v2/signal"]
	m.step(time.Hour)
	m.step(time.Hour)
	if now := h.HubStates()[0].Error; now == reason && count("signaling hub unreachable") != before {
		t.Fatalf("warning repeated for the same reason %q:\n%s", reason, buf.String())
	}
}
