package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/a2alnode/a2al/crypto"
	"github.com/a2alnode/a2al/host"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, host.DefaultListenAddr)
	debugAddr := fs.String("debug-addr", env("A2AL_DEBUG_ADDR", ""), "HTTP address for the /api/* control API, /debug/* and /metrics, e.g. 127.0.0.1:2634 (off if empty; keep it on loopback) [A2AL_DEBUG_ADDR]")
	statusEvery := fs.Duration("status-interval", envDuration("A2AL_STATUS_INTERVAL", 30*time.Second), "status line period [A2AL_STATUS_INTERVAL]")
	echo := fs.Bool("echo", env("A2AL_ECHO", "true") == "true", "echo back data on incoming application streams (for connect) [A2AL_ECHO]")
	fs.Usage = func() { fs.PrintDefaults(); fmt.Fprint(stderr, "\n"+apiUsage) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := newLogger(stderr, c.logLevel)
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	unlock, err := lockDataDir(c.dataDir)
	if err != nil {
		return err
	}
	defer unlock()
	key, created, err := crypto.LoadOrCreateKeyFile(c.key())
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	if created {
		log.Info("created a new node key", "file", c.key())
	}
	h, err := host.New(host.Config{
		Key: key, ListenAddr: c.listen, Bootstrap: splitList(c.bootstrap), HubURLs: splitList(c.hubs),
		STUNServers: splitList(c.stun), DataDir: c.dataDir, Logger: log,
	})
	if err != nil {
		return err
	}
	defer h.Close()
	fmt.Fprintf(stdout, "a2al node %s\nlistening on udp %s\n", (h.Address()).String(), h.LocalAddr())
	if len(splitList(c.bootstrap)) == 0 {
		fmt.Fprintf(stdout, "no bootstrap given: this is a first node; others join with --bootstrap <this-host>:%d\n", udpPort(h.LocalAddr()))
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if *debugAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/debug/", h.DebugHandler())
		mux.Handle("/metrics", promhttp.HandlerFor(h.Registry(), promhttp.HandlerOpts{}))
		ctl := newAPI(h, log)
		defer ctl.Close()
		ctl.mount(mux)
		ln, err := net.Listen("tcp", *debugAddr)
		if err != nil {
			return fmt.Errorf("debug listener: %w", err)
		}
		warnIfExposed(log, ln.Addr())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() { defer wg.Done(); _ = srv.Serve(ln) }()
		defer srv.Close()
		log.Info("debug HTTP", "addr", ln.Addr().String(), "paths", "/api/status /api/dial /debug/host /debug/routing /debug/store /debug/stats /metrics")
	}
	if *echo {
		wg.Add(1)
		go func() { defer wg.Done(); serveEcho(ctx, h, log) }()
	}
	t := time.NewTicker(*statusEvery)
	defer t.Stop()
	logStatus(log, h)
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			cancel()
			return nil
		case <-t.C:
			logStatus(log, h)
		}
	}
}

func udpPort(a net.Addr) int {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.Port
	}
	return 0
}

func logStatus(log *slog.Logger, h *host.Host) {
	st := h.Status()
	pub := st.Public
	if pub == "" {
		pub = "-"
	}
	log.Info("status", "address", st.Address, "nat", st.NAT, "public", pub, "routing_peers", st.RoutingPeers,
		"hubs", fmt.Sprintf("%d/%d registered", st.HubsRegistered, st.Hubs), "pool", len(st.Pool),
		"published_seq", st.Seq)
}

const maxEchoConns = 64

// serveEcho answers Mode A connections by echoing every stream back, so
// "a2al-node connect" has something to talk to.
func serveEcho(ctx context.Context, h *host.Host, log *slog.Logger) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxEchoConns)
	for {
		c, err := h.Accept(ctx)
		if err != nil {
			return
		}
		select {
		case sem <- struct{}{}:
		default:
			_ = c.Close()
			continue
		}
		log.Info("application connection", "peer", c.Peer.String(), "remote", c.RemoteAddr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			echoConn(ctx, c)
		}()
	}
}

// maxEchoStreams bounds the concurrent echo streams of one connection.
const maxEchoStreams = 16

// echoConn echoes every stream of c until c or ctx ends; it returns only when
// all of its goroutines have.
func echoConn(ctx context.Context, c *host.Conn) {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer c.Close()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-c.Context().Done():
		case <-cctx.Done():
		}
		_ = c.Close() // unblocks AcceptStream and every stream copy
	}()
	streams := make(chan struct{}, maxEchoStreams)
	for {
		s, err := c.AcceptStream(cctx)
		if err != nil {
			return
		}
		select {
		case streams <- struct{}{}:
		default:
			s.CancelRead(0)
			s.CancelWrite(0)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-streams }()
			defer s.Close()
			_, _ = io.Copy(s, io.LimitReader(s, 1<<20))
		}()
	}
}

func cmdID(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("id", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, host.DefaultListenAddr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	key, created, err := crypto.LoadOrCreateKeyFile(c.key())
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	id, err := host.NewIdentity(key, time.Now())
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(stderr, "created %s\n", c.key())
	}
	fmt.Fprintf(stdout, "address  %s\nnode id  %x\nkey file %s\n", id.Address.String(), id.NodeID[:], c.key())
	return nil
}

var errUsage = errors.New("usage")
