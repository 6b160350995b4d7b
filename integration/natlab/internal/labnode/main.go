// Command labnode is a thin test daemon over host.Host for the NAT lab: it
// runs the product's host layer (one socket, DHT, NAT sensing, signaling,
// ICE punch, Mode B pool, Mode A dial) with an HTTP control API, so the lab
// can drive real punches before/independently of cmd/a2al-node's CLI.
//
//	labnode -listen :4121 -bootstrap 203.0.113.5:4121 -hub ws://203.0.113.2:4122 \
//	        -data-dir DIR -debug-addr 127.0.0.1:8080
//
// API: /lab/status, /lab/punches, /lab/dial?addr=A&timeout=30s, /metrics,
// /debug/* (the DHT's debug handler).
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/a2alnode/a2al/host"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "labnode:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", ":4121", "UDP listen address")
	boot := flag.String("bootstrap", "", "comma-separated DHT seeds")
	hubs := flag.String("hub", "", "comma-separated hub URLs")
	stun := flag.String("stun", "", "comma-separated STUN servers (default: hub host:3478)")
	dataDir := flag.String("data-dir", "", "key and peer cache directory")
	debugAddr := flag.String("debug-addr", "127.0.0.1:8080", "HTTP control/debug address")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	key, err := loadKey(*dataDir)
	if err != nil {
		return err
	}
	h, err := host.New(host.Config{
		Key: key, ListenAddr: *listen, Bootstrap: split(*boot), HubURLs: split(*hubs),
		STUNServers: split(*stun), DataDir: *dataDir, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("start host: %w", err)
	}
	defer h.Close()
	log.Info("labnode up", "address", host.AddressText(h.Address()), "local", h.LocalAddr())

	mux := http.NewServeMux()
	mux.Handle("/debug/", h.Node().DebugHTTPHandler())
	mux.Handle("/metrics", promhttp.HandlerFor(h.Registry(), promhttp.HandlerOpts{}))
	mux.HandleFunc("/lab/status", func(w http.ResponseWriter, r *http.Request) {
		res, known := h.NATResult()
		st := map[string]any{
			"address":   host.AddressText(h.Address()),
			"local":     h.LocalAddr().String(),
			"hubs":      h.HubsRegistered(),
			"nat_known": known,
			"nat":       string(res.Type),
			"mapped":    fmt.Sprint(res.MappedAddr),
			"routing":   h.Node().DebugStatsData(),
		}
		writeJSON(w, st)
	})
	mux.HandleFunc("/lab/punches", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, h.Punches()) })
	mux.HandleFunc("/lab/dial", func(w http.ResponseWriter, r *http.Request) {
		addr, err := host.ParseAddressText(r.URL.Query().Get("addr"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		timeout := 40 * time.Second
		if d, err := time.ParseDuration(r.URL.Query().Get("timeout")); err == nil && d > 0 && d < 5*time.Minute {
			timeout = d
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		start := time.Now()
		c, err := h.Dial(ctx, addr)
		out := map[string]any{"ok": err == nil, "took_ms": time.Since(start).Milliseconds()}
		if err != nil {
			out["error"] = err.Error()
		} else {
			out["remote"] = c.RemoteAddr().String()
			c.Close()
		}
		writeJSON(w, out)
	})
	// Held connections: dialled once, then left idle so tests can watch
	// keepalives hold the NAT mappings open (bounded).
	var heldMu sync.Mutex
	held := map[string]*host.Conn{}
	mux.HandleFunc("/lab/hold", func(w http.ResponseWriter, r *http.Request) {
		addr, err := host.ParseAddressText(r.URL.Query().Get("addr"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 40*time.Second)
		defer cancel()
		start := time.Now()
		c, err := h.Dial(ctx, addr)
		out := map[string]any{"ok": err == nil, "took_ms": time.Since(start).Milliseconds()}
		if err != nil {
			out["error"] = err.Error()
			writeJSON(w, out)
			return
		}
		out["remote"] = c.RemoteAddr().String()
		heldMu.Lock()
		if old := held[r.URL.Query().Get("addr")]; old != nil {
			old.Close()
		}
		if len(held) >= 64 {
			heldMu.Unlock()
			c.Close()
			http.Error(w, "too many held connections", http.StatusTooManyRequests)
			return
		}
		held[r.URL.Query().Get("addr")] = c
		heldMu.Unlock()
		writeJSON(w, out)
	})
	mux.HandleFunc("/lab/held", func(w http.ResponseWriter, r *http.Request) {
		heldMu.Lock()
		defer heldMu.Unlock()
		out := map[string]any{}
		for a, c := range held {
			e := map[string]any{"alive": c.Context().Err() == nil, "remote": c.RemoteAddr().String()}
			if err := context.Cause(c.Context()); err != nil {
				e["error"] = err.Error()
			}
			out[a] = e
		}
		writeJSON(w, out)
	})
	defer func() {
		heldMu.Lock()
		for _, c := range held {
			c.Close()
		}
		heldMu.Unlock()
	}()
	srv := &http.Server{Addr: *debugAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("debug server: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// loadKey keeps the node identity in DIR/labnode.key (hex seed) so a
// restarted node keeps its address.
func loadKey(dir string) (ed25519.PrivateKey, error) {
	if dir == "" {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, "labnode.key")
	if b, err := os.ReadFile(path); err == nil {
		seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("bad key file %s", path)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(k.Seed())), 0o600); err != nil {
		return nil, fmt.Errorf("write key: %w", err)
	}
	return k, nil
}
