package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/a2alnode/a2al/crypto"
	"github.com/a2alnode/a2al/host"
	"github.com/a2alnode/a2al/portmap"
)

var runCmd = &command{
	name:  "run",
	short: "run a node (joins the network, publishes this node's address record)",
	long: `Run a node: bind the UDP port, join the DHT through --bootstrap nodes (or the
peers cache of an earlier run), learn the NAT type from a STUN server, keep a
connection to every --hub for hole punching, and publish this node's signed
endpoint record. The first run creates the key in --data-dir.

The control API (/api/*, /healthz, /debug/*, /metrics) listens on --debug-addr,
loopback only by default; "a2al-node status" reads it. SIGINT or SIGTERM stops
the node.`,
	example: `  a2al-node run --bootstrap 192.0.2.10 --hub wss://hub.example.org/v2/signal`,
	more:    apiUsage,
	flags: func(fs *flagSet) func(context.Context, stdio, []string) error {
		var o runOptions
		o.register(fs)
		return func(ctx context.Context, std stdio, args []string) error {
			if len(args) > 0 {
				return usagef("run takes no arguments, got %q", args)
			}
			return o.run(ctx, std)
		}
	},
}

// DefaultDebugAddr is where "run" serves its control API and "status" asks.
const DefaultDebugAddr = "127.0.0.1:2634"

// runOptions are the flags of "run". To add one: a field here, one line in
// register, and its use in hostConfig (or run).
type runOptions struct {
	id          identityFlags
	net         netFlags
	log         logFlags
	debugAddr   string
	statusEvery time.Duration
	echo        bool
	portMapping string
	publicAddr  string
	serve       serveFlags
}

func (o *runOptions) register(fs *flagSet) {
	o.id.register(fs)
	o.net.register(fs, host.DefaultListenAddr)
	o.log.register(fs, "info")
	fs.Listen(&o.debugAddr, "debug-addr", DefaultDebugAddr, true, `HTTP address of the control API, /healthz, /debug/* and /metrics ("" = off; keep it on loopback)`)
	fs.Duration(&o.statusEvery, "status-interval", 5*time.Minute, time.Second, "log a status line at least this often (changes are logged at once)")
	fs.Bool(&o.echo, "echo", true, "echo data back on incoming application streams (what connect talks to)")
	fs.Enum(&o.portMapping, "port-mapping", portmap.ModeAuto, portmap.Modes, "ask the home router to forward our port (auto tries PCP, NAT-PMP, then UPnP; see docs/port-mapping.md)")
	fs.String(&o.publicAddr, "public-addr", "", "IPv4:port of a port forward you set up on your router by hand; published first")
	fs.Check(func() error {
		if o.publicAddr == "" {
			return nil
		}
		ap, err := netip.ParseAddrPort(o.publicAddr)
		if err != nil || !ap.Addr().Is4() || ap.Addr().IsUnspecified() || ap.Port() == 0 {
			return usagef("invalid value %q for --public-addr: want IPv4:port", o.publicAddr)
		}
		return nil
	})
	o.serve.register(fs)
}

// hostConfig is the host configuration of these options.
func (o *runOptions) hostConfig(key ed25519.PrivateKey, log *slog.Logger) host.Config {
	return host.Config{
		Key: key, ListenAddr: o.net.listen, Bootstrap: o.net.bootstrap, HubURLs: o.net.hubs,
		STUNServers: o.net.stun, TURN: o.net.turnServers(), DataDir: o.id.dataDir, Logger: log,
		PortMapping: o.portMapping, PublicAddr: o.publicAddr,
	}
}

// run starts the node. Everything that can fail locally (data dir, lock, key,
// the control API listener, the UDP socket) is set up before the host sends
// its first packet, so a failed start publishes nothing.
func (o *runOptions) run(ctx context.Context, std stdio) error {
	log := o.log.logger(std.err)
	if err := os.MkdirAll(o.id.dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	unlock, err := lockDataDir(o.id.dataDir)
	if err != nil {
		return err
	}
	defer unlock()
	key, created, err := crypto.LoadOrCreateKeyFile(o.id.key())
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	if created {
		log.Info("created a new node key", "file", o.id.key())
	}
	agents, err := loadAgents(filepath.Join(o.id.dataDir, agentsDir), time.Now())
	if err != nil {
		return err
	}
	svcs, err := o.serve.plan(agents)
	if err != nil {
		return err
	}
	var ln net.Listener
	if o.debugAddr != "" {
		if ln, err = net.Listen("tcp", o.debugAddr); err != nil {
			return fmt.Errorf("control API listener --debug-addr %s: %w", o.debugAddr, err)
		}
		defer ln.Close()
	}
	h, err := host.New(o.hostConfig(key, log))
	if err != nil {
		return err
	}
	defer func() {
		if err := h.Close(); err != nil {
			log.Warn("shutdown incomplete", "err", err)
		}
	}()
	fmt.Fprintf(std.out, "a2al node %s\nlistening on udp %s (%s)\n", h.Address().String(), h.LocalAddr(), h.Families())
	if err := startServices(h, agents, svcs, std.out, log); err != nil {
		return err
	}
	seeded := len(o.net.bootstrap) > 0 || len(readPeersCache(filepath.Join(o.id.dataDir, "peers.cache"))) > 0
	if !seeded {
		fmt.Fprintf(std.out, "no bootstrap given: this is a first node; others join with --bootstrap <this-host>:%d\n", udpPort(h.LocalAddr()))
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mon := newMonitor(h, log, !seeded)
	if ln != nil {
		ctl := newAPI(h, log)
		defer ctl.Close()
		srv := &http.Server{Handler: localOnly(ctl.handler(mon)), ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() { defer wg.Done(); _ = srv.Serve(ln) }()
		defer srv.Close()
		warnIfExposed(log, ln.Addr())
		log.Info("control API", "addr", ln.Addr().String(), "paths", "/api/status /healthz /metrics /debug/ (a2al-node run -h)")
	}
	if o.echo {
		wg.Add(1)
		go func() { defer wg.Done(); serveEcho(ctx, h, log) }()
	}
	mon.loop(ctx, o.statusEvery)
	log.Info("shutting down")
	return nil
}

func udpPort(a net.Addr) int {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.Port
	}
	return 0
}

// serveEcho answers Mode A connections by echoing every stream back, so
// "a2al-node connect" has something to talk to. The host bounds how many
// connections there are (in total, per IP and per identity) and closes idle
// ones, so squatters cannot take every slot (docs/modea.md).
func serveEcho(ctx context.Context, h *host.Host, log *slog.Logger) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := h.Accept(ctx)
		if err != nil {
			return
		}
		log.Info("application connection", "peer", c.Peer.String(), "remote", c.RemoteAddr())
		wg.Add(1)
		go func() {
			defer wg.Done()
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
