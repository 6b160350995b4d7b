// Command punchbench measures how long a Mode B hole punch takes on pion's
// vnet, at several per-router latencies, and prints median and p90 against
// the target of 4 round trips plus 50 ms.
//
// Each latency gets a fresh simulated internet (natprobe/natsim), an
// in-process signaling hub and an open bootstrap node. For every round and
// every NAT pair two new nodes are started (so nothing is cached), they join,
// classify their NAT and publish; then the pairs are punched one after
// another (so the measurement is not skewed by CPU contention) with
// host.PunchPeer. The time is the caller's: from the start of the attempt to
// the QUIC connection being pooled.
//
// Round-trip time: a chunk between two NATed peers crosses the caller's NAT
// router, the WAN router and the callee's NAT router, and each adds its
// latency once, so RTT = 6 x latency. The hub is reached over loopback TCP
// (vnet has no TCP), so signaling adds no simulated latency.
//
// With -relay the pairs are the unpunchable ones (a symmetric NAT against a
// symmetric or port-restricted one), which connect through the hub's TURN
// relay (on an open host of the simulated WAN); the time is then the time to
// a working relayed connection, against 1 s at zero latency and 12 RTT
// otherwise.
//
//	go run ./integration/cmd/punchbench                 # 0 and 20 ms, table
//	go run ./integration/cmd/punchbench -json -rounds 8
//	go run ./integration/cmd/punchbench -relay -latencies 0,6666us   # 0 and 40 ms RTT
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/a2alnode/a2al/host"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/natprobe/natsim"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
)

// pairs are punchable without a relay and cover every filtering behaviour
// and the symmetric side that ICE meets as a peer-reflexive candidate.
var pairs = [][2]natprobe.NATType{
	{natprobe.TypePortRestricted, natprobe.TypePortRestricted},
	{natprobe.TypeAddressRestricted, natprobe.TypePortRestricted},
	{natprobe.TypeFullCone, natprobe.TypePortRestricted},
	{natprobe.TypeFullCone, natprobe.TypeSymmetric},
	{natprobe.TypeAddressRestricted, natprobe.TypeSymmetric},
}

// relayPairs cannot be punched; they connect through the relay.
var relayPairs = [][2]natprobe.NATType{
	{natprobe.TypeSymmetric, natprobe.TypeSymmetric},
	{natprobe.TypeSymmetric, natprobe.TypePortRestricted},
	{natprobe.TypePortRestricted, natprobe.TypeSymmetric},
}

// Row is the result for one latency.
type Row struct {
	LatencyMS float64 `json:"latency_per_hop_ms"`
	RTTMS     float64 `json:"rtt_ms"`
	TargetMS  float64 `json:"target_ms"` // 4*RTT + 50 ms (relay: 12*RTT, or 1 s at 0 ms)
	N         int     `json:"n"`
	Failed    int     `json:"failed"`
	MedianMS  float64 `json:"median_ms"`
	P90MS     float64 `json:"p90_ms"`
	MinMS     float64 `json:"min_ms"`
	MaxMS     float64 `json:"max_ms"`
	Met       bool    `json:"median_under_target"`
	// Samples are the individual punch times, by pair, in ms.
	Samples []Sample `json:"samples"`
}

// Sample is one punch.
type Sample struct {
	Pair   string  `json:"pair"`
	MS     float64 `json:"ms"`
	OK     bool    `json:"ok"`
	Path   string  `json:"path,omitempty"`
	Type   string  `json:"type,omitempty"` // direct | punched | relayed
	Reason string  `json:"reason,omitempty"`
}

func main() {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true") // vnet sockets have no buffers to size
	lats := flag.String("latencies", "0,20ms", "comma-separated per-router latencies")
	rounds := flag.Int("rounds", 4, "rounds over the NAT pairs per latency")
	jsonOut := flag.Bool("json", false, "print JSON instead of a table")
	timeout := flag.Duration("timeout", 5*time.Minute, "overall deadline")
	relay := flag.Bool("relay", false, "measure the unpunchable pairs, which connect through the relay")
	flag.Parse()
	if *relay {
		pairs = relayPairs
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var rows []Row
	for _, s := range strings.Split(*lats, ",") {
		s = strings.TrimSpace(s)
		if s == "0" {
			s = "0s"
		}
		lat, err := time.ParseDuration(s)
		if err != nil || lat < 0 {
			fmt.Fprintf(os.Stderr, "punchbench: bad latency %q\n", s)
			os.Exit(2)
		}
		r, err := bench(ctx, lat, *rounds, *relay)
		if err != nil {
			fmt.Fprintf(os.Stderr, "punchbench: latency %v: %v\n", lat, err)
			os.Exit(1)
		}
		rows = append(rows, r)
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rows)
	} else {
		printTable(os.Stdout, rows)
	}
	for _, r := range rows {
		if r.Failed > 0 {
			os.Exit(1)
		}
	}
}

func printTable(w io.Writer, rows []Row) {
	fmt.Fprintf(w, "%-10s %-8s %-13s %4s %6s %9s %9s %9s %9s  %s\n",
		"lat/hop", "RTT", "target", "n", "failed", "median", "p90", "min", "max", "median<target")
	for _, r := range rows {
		fmt.Fprintf(w, "%-10s %-8s %-13s %4d %6d %9s %9s %9s %9s  %v\n",
			ms(r.LatencyMS), ms(r.RTTMS), ms(r.TargetMS), r.N, r.Failed,
			ms(r.MedianMS), ms(r.P90MS), ms(r.MinMS), ms(r.MaxMS), r.Met)
	}
	fmt.Fprintln(w, "RTT = 6 x latency (caller NAT, WAN and callee NAT routers each add it once); target = 4 x RTT + 50 ms (-relay: 12 x RTT, 1 s at 0 ms)")
}

func ms(v float64) string { return fmt.Sprintf("%.0fms", v) }

type world struct {
	w      *natsim.World
	turn   *signal.TURNServer
	hub    *signal.Hub
	srv    *httptest.Server
	hubURL string
	boot   *host.Host
	bootAt string
	log    *slog.Logger
}

func newWorld(lat time.Duration) (*world, error) {
	w, err := natsim.NewWorld(natsim.Options{MinDelay: lat})
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.DiscardHandler)
	turnSrv, err := startTURN(w)
	if err != nil {
		w.Close()
		return nil, err
	}
	cfg := signal.DefaultHubConfig()
	cfg.Logger = log
	cfg.TURN = turnSrv.Auth()
	hub, err := signal.NewHub(cfg)
	if err != nil {
		turnSrv.Close()
		w.Close()
		return nil, err
	}
	srv := httptest.NewServer(hub.Handler())
	wd := &world{w: w, turn: turnSrv, hub: hub, srv: srv, hubURL: "ws://" + strings.TrimPrefix(srv.URL, "http://"), log: log}
	bh, err := w.AddOpenHost()
	if err != nil {
		wd.close()
		return nil, err
	}
	if wd.boot, err = wd.start(bh, false); err != nil {
		wd.close()
		return nil, err
	}
	wd.bootAt = bh.Bind(4121)
	return wd, nil
}

func (wd *world) close() {
	if wd.boot != nil {
		wd.boot.Close()
	}
	wd.srv.Close()
	wd.hub.Close()
	wd.turn.Close()
	wd.w.Close()
}

// startTURN runs the hub's TURN relay on an open host of the WAN.
func startTURN(w *natsim.World) (*signal.TURNServer, error) {
	th, err := w.AddOpenHost()
	if err != nil {
		return nil, err
	}
	pc, err := th.Net.ListenPacket("udp4", th.Bind(3480))
	if err != nil {
		return nil, err
	}
	auth, err := signal.NewTURNAuth(signal.TURNAuthConfig{URLs: []string{"turn:" + th.Bind(3480) + "?transport=udp"}})
	if err != nil {
		pc.Close()
		return nil, err
	}
	s, err := signal.NewTURNServer(signal.TURNServerConfig{Auth: auth, PacketConn: pc, RelayIP: th.IP,
		RelayBind: th.IP.String(), Net: th.Net})
	if err != nil {
		pc.Close()
		return nil, err
	}
	return s, nil
}

// start runs a node with production defaults (ICE timers included) except
// that background maintenance is off: the bench drives join and publish.
func (wd *world) start(nh *natsim.Host, withHub bool) (*host.Host, error) {
	pc, err := nh.Net.ListenPacket("udp4", nh.Bind(4121))
	if err != nil {
		return nil, err
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	cfg := host.Config{Key: key, PacketConn: pc, Net: nh.Net, STUNServers: wd.w.STUNServers(), Logger: wd.log,
		NATTimeout: time.Second, DisableMaintenance: true}
	if withHub {
		cfg.HubURLs = []string{wd.hubURL}
	}
	h, err := host.New(cfg)
	if err != nil {
		pc.Close()
		return nil, err
	}
	return h, nil
}

// join starts a node behind a NAT of the given kind, bootstraps it, waits for
// its hub registration, classifies its NAT and publishes its record.
func (wd *world) join(ctx context.Context, kind natprobe.NATType) (*host.Host, protocol.SignedRecord, error) {
	var rec protocol.SignedRecord
	nh, err := wd.w.AddNAT(kind)
	if err != nil {
		return nil, rec, err
	}
	h, err := wd.start(nh, true)
	if err != nil {
		return nil, rec, err
	}
	fail := func(err error) (*host.Host, protocol.SignedRecord, error) {
		h.Close()
		return nil, rec, fmt.Errorf("%s node: %w", kind, err)
	}
	if err := h.Bootstrap(ctx, wd.bootAt); err != nil {
		return fail(err)
	}
	for h.HubsRegistered() == 0 {
		select {
		case <-ctx.Done():
			return fail(fmt.Errorf("hub registration: %w", ctx.Err()))
		case <-time.After(10 * time.Millisecond):
		}
	}
	if _, err := h.ClassifyNAT(ctx); err != nil {
		return fail(err)
	}
	if rec, err = h.Publish(ctx); err != nil {
		return fail(err)
	}
	return h, rec, nil
}

func bench(ctx context.Context, lat time.Duration, rounds int, relay bool) (Row, error) {
	wd, err := newWorld(lat)
	if err != nil {
		return Row{}, err
	}
	defer wd.close()
	type job struct {
		name string
		a, b *host.Host
		err  error
	}
	var jobs []*job
	for r := 0; r < rounds; r++ {
		for _, p := range pairs {
			jobs = append(jobs, &job{name: string(p[0]) + "->" + string(p[1])})
		}
	}
	// Nodes join concurrently (that part is not measured).
	var wg sync.WaitGroup
	for i, j := range jobs {
		p := pairs[i%len(pairs)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			jctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			a, _, errA := wd.join(jctx, p[0])
			b, recB, errB := wd.join(jctx, p[1])
			j.a, j.b, j.err = a, b, errors.Join(errA, errB)
			if j.err == nil {
				// The caller already holds the callee's record (as after a
				// lookup), so the time measured is the punch, not the DHT.
				j.err = a.Node().LocalStorePut(b.NodeID(), recB)
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, j := range jobs {
			for _, h := range []*host.Host{j.a, j.b} {
				if h != nil {
					h.Close()
				}
			}
		}
	}()
	row := Row{LatencyMS: msOf(lat), RTTMS: msOf(6 * lat), TargetMS: msOf(4*6*lat + 50*time.Millisecond)}
	if relay {
		row.TargetMS = msOf(12 * 6 * lat)
		if lat == 0 {
			row.TargetMS = msOf(time.Second)
		}
	}
	var durs []time.Duration
	for _, j := range jobs {
		if j.err != nil {
			return row, j.err
		}
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		rec, err := j.a.PunchPeer(pctx, j.b.Address())
		cancel()
		s := Sample{Pair: j.name, MS: msOf(rec.Duration), OK: err == nil, Path: rec.Path, Type: string(rec.PathType), Reason: rec.Reason}
		if err == nil && (rec.PathType == host.PathRelayed) != relay {
			err = fmt.Errorf("path type %q", rec.PathType)
		}
		if err != nil {
			s.Reason = err.Error()
			row.Failed++
		} else {
			durs = append(durs, rec.Duration)
		}
		row.Samples = append(row.Samples, s)
	}
	row.N = len(durs)
	if len(durs) > 0 {
		slices.Sort(durs)
		row.MedianMS = msOf(quantile(durs, 0.5))
		row.P90MS = msOf(quantile(durs, 0.9))
		row.MinMS, row.MaxMS = msOf(durs[0]), msOf(durs[len(durs)-1])
		row.Met = row.MedianMS < row.TargetMS
	}
	return row, nil
}

// quantile is the nearest-rank quantile of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
