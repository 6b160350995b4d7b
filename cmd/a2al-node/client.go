package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/crypto"
	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/host"
	"github.com/a2alnode/a2al/protocol"
)

// clientHost starts a short-lived host for a client command: an ephemeral key
// (unless --key is given, so it never collides with a running node's identity),
// a random port, bootstrapped into the network.
func clientHost(ctx context.Context, name string, args []string, stderr io.Writer) (*host.Host, a2al.Address, time.Duration, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, "0.0.0.0:0")
	timeout := fs.Duration("timeout", envDuration("A2AL_TIMEOUT", 30*time.Second), "overall timeout [A2AL_TIMEOUT]")
	// Accept the address before or after the flags.
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, a2al.Address{}, 0, err
		}
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	if len(pos) != 1 {
		return nil, a2al.Address{}, 0, fmt.Errorf("want exactly one address argument, got %d", len(pos))
	}
	target, err := a2al.ParseAddress(pos[0])
	if err != nil {
		return nil, a2al.Address{}, 0, err
	}
	var key ed25519.PrivateKey
	if c.keyFile != "" {
		if key, err = crypto.LoadKeyFile(c.keyFile); err != nil {
			return nil, target, 0, fmt.Errorf("key: %w", err)
		}
	} else if _, key, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, target, 0, err
	}
	boot := splitList(c.bootstrap)
	if len(boot) == 0 {
		boot = readPeersCache(filepath.Join(c.dataDir, "peers.cache"))
	}
	if len(boot) == 0 {
		return nil, target, 0, fmt.Errorf("no bootstrap address: pass --bootstrap host:port (or run a node first to fill %s)", filepath.Join(c.dataDir, "peers.cache"))
	}
	h, err := host.New(host.Config{
		Key: key, ListenAddr: c.listen, Bootstrap: boot, HubURLs: splitList(c.hubs), STUNServers: splitList(c.stun),
		Logger: newLogger(stderr, env("A2AL_LOG_LEVEL", "warn")), DisableMaintenance: true, DisableNAT: true,
	})
	if err != nil {
		return nil, target, 0, err
	}
	bctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := h.Bootstrap(bctx); err != nil {
		h.Close()
		return nil, target, 0, err
	}
	return h, target, *timeout, nil
}

func readPeersCache(p string) []string {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func resolve(ctx context.Context, h *host.Host, target a2al.Address) (*protocol.EndpointRecord, error) {
	rec, err := dht.NewQuery(h.Node()).Resolve(ctx, a2al.NodeIDFromAddress(target))
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", target.String(), err)
	}
	return rec, nil
}

func printRecord(w io.Writer, er *protocol.EndpointRecord) {
	fmt.Fprintf(w, "address   %s\n", er.Address.String())
	fmt.Fprintf(w, "seq       %d (published %s, ttl %ds)\n", er.Seq, time.Unix(int64(er.Timestamp), 0).UTC().Format(time.RFC3339), er.TTL)
	fmt.Fprintf(w, "nat       %s\n", natName(er.NatType))
	for _, e := range er.Endpoints {
		fmt.Fprintf(w, "endpoint  %s\n", e)
	}
	for _, s := range er.Signals {
		fmt.Fprintf(w, "hub       %s\n", s)
	}
	if len(er.Signals) == 0 && er.Signal != "" {
		fmt.Fprintf(w, "hub       %s\n", er.Signal)
	}
}

func natName(t uint8) string {
	if t == protocol.NATFullCone {
		return host.WireNATName(t) + "/open"
	}
	return host.WireNATName(t)
}

// clientResolve starts a client host for command name and resolves the
// target's endpoint record; the caller closes the host and cancels ctx.
func clientResolve(ctx context.Context, name string, args []string, stderr io.Writer) (*host.Host, *protocol.EndpointRecord, context.Context, context.CancelFunc, error) {
	h, target, timeout, err := clientHost(ctx, name, args, stderr)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	er, err := resolve(ctx, h, target)
	if err != nil {
		cancel()
		h.Close()
		return nil, nil, nil, nil, err
	}
	return h, er, ctx, cancel, nil
}

func cmdResolve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	h, er, _, cancel, err := clientResolve(ctx, "resolve", args, stderr)
	if err != nil {
		return err
	}
	defer h.Close()
	defer cancel()
	printRecord(stdout, er)
	return nil
}

func cmdPing(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	h, er, ctx, cancel, err := clientResolve(ctx, "ping", args, stderr)
	if err != nil {
		return err
	}
	defer h.Close()
	defer cancel()
	target := er.Address
	okAny := false
	for _, ep := range er.Endpoints {
		ua, err := h.ResolveEndpoint(ctx, ep)
		if err != nil {
			fmt.Fprintf(stdout, "%-28s skipped: %v\n", ep, err)
			continue
		}
		pctx, pc := context.WithTimeout(ctx, 3*time.Second)
		start := time.Now()
		id, err := h.Node().PingIdentity(pctx, ua)
		pc()
		switch {
		case err != nil:
			fmt.Fprintf(stdout, "%-28s no answer (%v)\n", ep, err)
		case id.Address != target:
			fmt.Fprintf(stdout, "%-28s answered by a different node %s\n", ep, id.Address.String())
		default:
			okAny = true
			fmt.Fprintf(stdout, "%-28s pong in %v\n", ep, time.Since(start).Round(10*time.Microsecond))
		}
	}
	if !okAny {
		return fmt.Errorf("no endpoint of %s answered over UDP (it may be behind a NAT: try connect)", target.String())
	}
	return nil
}

func cmdConnect(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	h, target, timeout, err := clientHost(ctx, "connect", args, stderr)
	if err != nil {
		return err
	}
	defer h.Close()
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := h.Dial(dctx, target)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(stderr, "connected to %s via %s (%s)\n", c.Peer.String(), c.RemoteAddr(), c.Path)
	s, err := c.OpenStream(dctx)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(s, stdin)
		_ = s.Close() // FIN: the peer sees EOF
		done <- err
	}()
	_, rerr := io.Copy(stdout, s)
	select {
	case <-done:
	case <-ctx.Done():
	case <-time.After(100 * time.Millisecond):
	}
	if rerr != nil && ctx.Err() == nil {
		return fmt.Errorf("read stream: %w", rerr)
	}
	return nil
}
