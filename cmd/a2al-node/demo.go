package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/host"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/natprobe/natsim"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
)

var demoCmd = &command{
	name:  "demo",
	short: "watch nodes behind simulated NATs find and punch each other (in-process)",
	long: `Build a small simulated internet in this process (no real network is used):
a signaling hub with STUN, and nodes behind different NAT types. The nodes
join a DHT, publish their records, resolve each other and hole-punch; each
step is printed as it happens.`,
	example: `  a2al-node demo`,
	flags: func(fs *flagSet) func(context.Context, stdio, []string) error {
		var latency time.Duration
		var verbose bool
		fs.Duration(&latency, "latency", 5*time.Millisecond, 0, "simulated one-way delay per router hop")
		fs.Bool(&verbose, "v", false, "show node logs")
		fs.NoEnv("v")
		return func(ctx context.Context, std stdio, args []string) error {
			if len(args) > 0 {
				return usagef("demo takes no arguments, got %q", args)
			}
			return runDemo(ctx, latency, verbose, std.out, std.err)
		}
	},
}

func runDemo(ctx context.Context, latency time.Duration, verbose bool, stdout, stderr io.Writer) error {
	level := slog.LevelError + 4
	if verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	start := time.Now()
	var outMu sync.Mutex
	say := func(format string, a ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(stdout, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
	}

	say("building a simulated internet (pion vnet): WAN 1.2.3.0/24, STUN server at %s, %v per hop", natsim.STUNIP, latency)
	w, err := natsim.NewWorld(natsim.Options{MinDelay: latency})
	if err != nil {
		return err
	}
	defer w.Close()
	hcfg := signal.DefaultHubConfig()
	hcfg.Logger = log
	hub, err := signal.NewHub(hcfg)
	if err != nil {
		return err
	}
	defer hub.Close()
	srv := httptest.NewServer(hub.Handler())
	defer srv.Close()
	hubURL := "ws://" + strings.TrimPrefix(srv.URL, "http://")
	say("signaling hub listening at %s (in-process)", hubURL)

	mk := func(kind natprobe.NATType, withHub bool) (*host.Host, string, error) {
		nh, err := w.AddNAT(kind)
		if err != nil {
			return nil, "", err
		}
		pc, err := nh.Net.ListenPacket("udp4", nh.Bind(4121))
		if err != nil {
			return nil, "", err
		}
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		cfg := host.Config{Key: key, PacketConn: pc, Net: nh.Net, STUNServers: w.STUNServers(), Logger: log,
			ICE:          host.ICETimers{Connect: 6 * time.Second, Failed: 5 * time.Second},
			PunchTimeout: 20 * time.Second, NATTimeout: time.Second, HandshakeLimit: 5 * time.Second,
			DisableMaintenance: true}
		if withHub {
			cfg.HubURLs = []string{hubURL}
		}
		h, err := host.New(cfg)
		if err != nil {
			pc.Close()
			return nil, "", err
		}
		return h, nh.Bind(4121), nil
	}
	boot, bootAddr, err := mk(natprobe.TypeOpen, false)
	if err != nil {
		return err
	}
	defer boot.Close()
	say("bootstrap node %s on the WAN at %s", short(boot.Address()), bootAddr)

	kinds := []natprobe.NATType{natprobe.TypeFullCone, natprobe.TypeAddressRestricted, natprobe.TypePortRestricted, natprobe.TypeSymmetric}
	type node struct {
		h    *host.Host
		kind natprobe.NATType
		got  natprobe.NATType
	}
	var nodes []*node
	defer func() {
		for _, n := range nodes {
			n.h.Close()
		}
	}()
	for _, k := range kinds {
		h, _, err := mk(k, true)
		if err != nil {
			return err
		}
		nodes = append(nodes, &node{h: h, kind: k})
	}
	say("started %d nodes, each alone behind a NAT: %v", len(nodes), kinds)

	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			if err := n.h.Bootstrap(ctx, bootAddr); err != nil {
				errs[i] = fmt.Errorf("bootstrap: %w", err)
				return
			}
			for n.h.HubsRegistered() == 0 && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
			res, err := n.h.ClassifyNAT(ctx)
			if err != nil {
				errs[i] = err
				return
			}
			n.got = res.Type
			rec, err := n.h.Publish(ctx)
			if err != nil {
				errs[i] = err
				return
			}
			er, _ := protocol.ParseEndpointRecord(rec)
			say("%s behind %-18s joined, NAT classified as %-18s published %v (%v)", short(n.h.Address()), n.kind, res.Type, er.Endpoints, time.Since(t0).Round(time.Millisecond))
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return e
		}
	}

	say("resolving every node's endpoint record through the DHT ...")
	resolved := 0
	for _, a := range nodes {
		for _, b := range nodes {
			if a == b {
				continue
			}
			t0 := time.Now()
			rctx, rc := context.WithTimeout(ctx, 10*time.Second)
			er, err := dht.NewQuery(a.h.Node()).Resolve(rctx, b.h.NodeID())
			rc()
			if err != nil || er.Address != b.h.Address() {
				say("  %s could NOT resolve %s: %v", short(a.h.Address()), short(b.h.Address()), err)
				continue
			}
			resolved++
			_ = t0
		}
	}
	say("resolved %d/%d records", resolved, len(nodes)*(len(nodes)-1))

	say("punching every pair (ICE on the shared socket via the hub, then QUIC with mutual TLS identity) ...")
	type row struct {
		a, b   *node
		rec    host.PunchRecord
		err    error
		expect bool
	}
	var rows []*row
	// The more restrictive side calls, so the full-cone node is a callee and
	// its "direct" evidence (an unsolicited PING answered) shows up.
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			rows = append(rows, &row{a: nodes[j], b: nodes[i], expect: natprobe.Punchable(nodes[i].kind, nodes[j].kind)})
		}
	}
	for _, r := range rows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, pc := context.WithTimeout(ctx, 30*time.Second)
			defer pc()
			r.rec, r.err = r.a.h.PunchPeer(pctx, r.b.h.Address())
			if r.err == nil {
				// Prove the path: a DHT FIND_NODE travels over the pooled QUIC connection.
				if ra, ok := r.a.h.Pool().RemoteAddr(r.b.h.NodeID()); ok {
					if _, err := r.a.h.Node().FindNode(pctx, ra, r.a.h.NodeID()); err != nil {
						r.err = fmt.Errorf("FIND_NODE over the punched path: %w", err)
					}
				}
			}
		}()
	}
	wg.Wait()
	fmt.Fprintf(stdout, "\n%-20s %-20s %-8s %9s  %-14s %-7s %s\n", "caller", "callee", "result", "time", "ICE path", "direct", "note")
	mismatch := 0
	for _, r := range rows {
		res, note := "punched", "DHT RPC over QUIC ok"
		if r.err != nil {
			res, note = "FAILED", r.rec.Reason
			if note == "" {
				note = r.err.Error()
			}
			if !r.expect {
				note += " (expected: this pair needs a relay)"
			}
		}
		if (r.err == nil) != r.expect {
			mismatch++
			note += "  <-- UNEXPECTED"
		}
		direct := "no"
		if r.rec.Direct {
			direct = "yes" // a plain UDP PING to the published endpoint was answered before punching
		}
		fmt.Fprintf(stdout, "%-20s %-20s %-8s %9s  %-14s %-7s %s\n", r.a.kind, r.b.kind, res, r.rec.Duration.Round(time.Millisecond), r.rec.Path, direct, note)
	}
	fmt.Fprintln(stdout)
	if mismatch > 0 {
		return fmt.Errorf("%d pair(s) did not behave as expected", mismatch)
	}
	say("done: every pair behaved as NAT theory predicts. Try: a2al-node run")
	return nil
}

func short(a a2al.Address) string { return a.String()[:10] + "…" }
