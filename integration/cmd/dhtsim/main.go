// Command dhtsim builds an in-process network of DHT nodes (in-memory or real
// UDP sockets on 127.0.0.0/8), bootstraps it like a real network, publishes
// endpoint records and measures lookups, replication, size estimation, memory
// and, optionally, repair after abrupt churn.
//
//	go run ./integration/cmd/dhtsim -n 1000 -transport mem
//	go run ./integration/cmd/dhtsim -n 300 -transport udp -churn 0.3 -json
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/integration/internal/sim"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

type options struct {
	n            int
	transport    string
	lookups      int
	churn        float64
	latency      time.Duration
	json         bool
	seed         int64
	seeds        int
	publish      float64
	timescale    float64
	clockScale   float64
	repair       time.Duration
	concurrency  int
	lookupTimout time.Duration
	verbose      bool
	cpuprofile   string
	churnprofile string
	memprofile   string
	gogc         int
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 200, "number of nodes")
	flag.StringVar(&o.transport, "transport", "mem", "mem (in-memory network with UDP addressing) or udp (real sockets on 127.A.B.1)")
	flag.IntVar(&o.lookups, "lookups", 200, "number of FIND_NODE lookups and of resolves")
	flag.Float64Var(&o.churn, "churn", 0, "fraction of nodes killed abruptly after the measurements (0 = no churn phase)")
	flag.DurationVar(&o.latency, "latency", 0, "one-way packet latency (mem transport only)")
	flag.BoolVar(&o.json, "json", false, "print one JSON object instead of a table")
	flag.Int64Var(&o.seed, "seed", 1, "random seed (identities, choices)")
	flag.IntVar(&o.seeds, "seeds", 4, "number of bootstrap seed nodes")
	flag.Float64Var(&o.publish, "publish", 0.1, "fraction of nodes publishing an endpoint record")
	flag.Float64Var(&o.timescale, "timescale", 0, "speed of the nodes' clock relative to real time during the churn phase (maintenance timers, expiry); other phases run in real time. 0 = min(20, 10000/n): faster would compress more maintenance into each real second than two cores can serve")
	flag.Float64Var(&o.clockScale, "clock-scale", 0, "speed of the nodes' clock relative to real time while the network is built and measured (all phases but churn); 0 = min(1, 1000/n). Every node's maintenance runs on the node clock, so in real time the whole network's maintenance grows with n while the two cores do not: slowing the clock keeps the background work per real second that of 1000 nodes, as if each node had its own CPU. RPC deadlines use real time and are not affected")
	flag.DurationVar(&o.repair, "repair", 40*time.Minute, "simulated time observed after churn")
	flag.IntVar(&o.concurrency, "concurrency", 8, "parallel joins / lookups")
	flag.DurationVar(&o.lookupTimout, "lookup-timeout", 20*time.Second, "deadline of one lookup")
	flag.BoolVar(&o.verbose, "v", false, "log node warnings to stderr")
	flag.IntVar(&o.gogc, "gogc", 50, "garbage-collector target of the simulator process (GOGC; Go's default is 100): heap may grow to (1+gogc/100)× the live heap before a collection, and with tens of thousands of nodes in one process that headroom is most of the peak RSS")
	flag.StringVar(&o.memprofile, "memprofile", "", "write a heap profile (after the measurements, before churn) to this file")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.StringVar(&o.churnprofile, "cpuprofile-churn", "", "write a CPU profile of the churn phase only to this file")
	flag.Parse()
	if o.timescale == 0 {
		o.timescale = min(20, max(1, 10000/float64(o.n)))
	}
	if o.clockScale == 0 {
		o.clockScale = min(1, 1000/float64(o.n))
	}
	if err := validate(o); err != nil {
		fmt.Fprintln(os.Stderr, "dhtsim:", err)
		os.Exit(2)
	}
	debug.SetGCPercent(o.gogc)
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dhtsim:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "dhtsim: cpu profile:", err)
			os.Exit(1)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	res, err := run(o)
	if err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "dhtsim:", err)
		os.Exit(1)
	}
	if o.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
		return
	}
	printTable(os.Stdout, o, res)
}

func validate(o options) error {
	switch {
	case o.n < 2 || o.n > 60000:
		return errors.New("-n must be in [2, 60000]")
	case o.transport != "mem" && o.transport != "udp":
		return fmt.Errorf("-transport %q: want mem or udp", o.transport)
	case o.timescale < 1:
		return errors.New("-timescale must be ≥ 1 (or 0 for automatic)")
	case o.gogc < 10:
		return errors.New("-gogc must be ≥ 10")
	case o.clockScale < 0 || o.clockScale > 1:
		return errors.New("-clock-scale must be in (0, 1] (or 0 for automatic)")
	case o.churn < 0 || o.churn >= 1:
		return errors.New("-churn must be in [0, 1)")
	case o.publish <= 0 || o.publish > 1:
		return errors.New("-publish must be in (0, 1]")
	case o.seeds < 1 || o.concurrency < 1 || o.lookups < 0:
		return errors.New("-seeds and -concurrency must be ≥ 1, -lookups ≥ 0")
	}
	return nil
}

type simNode struct {
	idx   int
	ks    *sim.KeyStore
	node  *dht.Node
	ctr   *sim.Counting
	addr  *net.UDPAddr
	alive bool
}

type record struct {
	owner    int
	key      a2al.NodeID
	seq      uint64
	resolved time.Duration // publish → first network resolve; < 0 = never
}

// world is the simulation state shared by the phases.
type world struct {
	o     options
	rng   *rand.Rand
	rngMu sync.Mutex
	clk   *sim.ScaledClock
	mem   *transport.MemNetwork
	holes *sim.Blackholes
	nodes []*simNode
	recs  []*record
	log   *slog.Logger
}

func (w *world) intn(n int) int {
	w.rngMu.Lock()
	defer w.rngMu.Unlock()
	return w.rng.Intn(n)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[dhtsim %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(o options) (*result, error) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap, baseStack, baseG := ms.HeapAlloc, ms.StackInuse, runtime.NumGoroutine()

	w := &world{o: o, rng: rand.New(rand.NewSource(o.seed)), clk: sim.NewScaledClock(time.Now(), o.clockScale)}
	w.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.verbose {
		w.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if o.transport == "mem" {
		w.mem = transport.NewMemNetwork()
		w.mem.SetSeed(uint64(o.seed))
		w.mem.SetLatency(o.latency)
		w.holes = sim.NewBlackholes(w.mem)
	} else if o.latency > 0 {
		progress("-latency is ignored with -transport udp")
	}
	defer w.shutdown()

	res := &result{Nodes: o.n, Transport: o.transport}
	start := time.Now()
	if err := w.build(); err != nil {
		return nil, err
	}
	joinStart := time.Now()
	if err := w.bootstrap(); err != nil {
		return nil, err
	}
	res.BuildSeconds, res.JoinSeconds = time.Since(start).Seconds(), time.Since(joinStart).Seconds()
	res.ClockScale = o.clockScale
	res.RPCsLimit = 3 * math.Log2(float64(o.n))

	w.publishAll(res)
	w.measureLookups(res)
	w.measureResolves(res)
	w.measureReplicas(res)
	w.measureSize(res)

	w.measureMemory(res, baseHeap, baseStack, baseG)
	w.totals(res)

	if o.churn > 0 {
		w.churnPhase(res)
	}
	return res, nil
}

// build creates identities, transports and nodes (not started).
func (w *world) build() error {
	progress("creating %d nodes (%s transport)", w.o.n, w.o.transport)
	for i := 0; i < w.o.n; i++ {
		seed := make([]byte, ed25519.SeedSize)
		w.rng.Read(seed)
		ks := sim.NewKeyStore(ed25519.NewKeyFromSeed(seed))
		var tr transport.Transport
		var addr *net.UDPAddr
		if w.o.transport == "mem" {
			addr = sim.NodeAddr(i, 4121)
			m, err := sim.NewMemUDP(w.mem, addr)
			if err != nil {
				return err
			}
			tr = m
		} else {
			u, err := transport.ListenUDP("udp4", sim.NodeAddr(i, 0).String())
			if err != nil {
				return fmt.Errorf("node %d: listen: %w", i, err)
			}
			tr, addr = u, u.LocalAddr().(*net.UDPAddr)
		}
		ctr := &sim.Counting{Transport: tr}
		node, err := dht.NewNode(dht.Config{
			Transport:  ctr,
			Keystore:   ks,
			RecordAuth: dht.SecureRecordAuth,
			Logger:     w.log,
			Clock:      w.clk,
		})
		if err != nil {
			tr.Close()
			return fmt.Errorf("node %d: %w", i, err)
		}
		w.nodes = append(w.nodes, &simNode{idx: i, ks: ks, node: node, ctr: ctr, addr: addr})
	}
	return nil
}

// bootstrap starts the seeds, then lets the other nodes join a few at a time,
// each through one seed and one random node that joined before it.
func (w *world) bootstrap() error {
	seeds := min(w.o.seeds, w.o.n)
	seedAddrs := make([]net.Addr, 0, seeds)
	for i := 0; i < seeds; i++ {
		sn := w.nodes[i]
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var err error
		if i == 0 {
			sn.node.Start()
		} else {
			err = sn.node.StartWithBootstrap(ctx, seedAddrs)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("seed %d: %w", i, err)
		}
		sn.alive = true
		seedAddrs = append(seedAddrs, sn.addr)
	}
	progress("%d seeds up; joining %d nodes", seeds, w.o.n-seeds)
	var mu sync.Mutex
	joined := append([]int(nil), seqInts(seeds)...)
	failed := 0
	sem := make(chan struct{}, w.o.concurrency)
	var wg sync.WaitGroup
	step := max(1, (w.o.n-seeds)/10)
	for i := seeds; i < w.o.n; i++ {
		sem <- struct{}{}
		mu.Lock()
		via := []net.Addr{seedAddrs[w.intn(len(seedAddrs))], w.nodes[joined[w.intn(len(joined))]].addr}
		mu.Unlock()
		wg.Add(1)
		go func(sn *simNode) {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := sn.node.StartWithBootstrap(ctx, via)
			mu.Lock()
			defer mu.Unlock()
			sn.alive = true // started either way; a failed bootstrap is a measured outcome
			if err != nil {
				failed++
			} else {
				joined = append(joined, sn.idx)
			}
		}(w.nodes[i])
		if (i-seeds+1)%step == 0 {
			progress("joined %d/%d", i+1, w.o.n)
		}
	}
	wg.Wait()
	if failed > 0 {
		progress("%d nodes failed to bootstrap", failed)
	}
	return nil
}

func seqInts(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func (w *world) liveCount() int {
	n := 0
	for _, sn := range w.nodes {
		if sn.alive {
			n++
		}
	}
	return n
}

func (w *world) randomLive(exclude int) *simNode {
	for {
		sn := w.nodes[w.intn(len(w.nodes))]
		if sn.alive && sn.idx != exclude {
			return sn
		}
	}
}

// publishAll publishes one endpoint record from each of a random subset of
// nodes, one record at a time, and measures per record:
//   - publish→resolvable: from the start of the publish call until the
//     first successful resolve by a random node holding no copy (a failed
//     resolve is retried at once from another such node, at most
//     publishTries times within publishWait);
//   - publish→replicated: from the same start until the publisher's
//     replica set holds min(8, live nodes - 1) confirmed replicas.
//
// Records are published one after the other, so neither figure includes
// queueing behind other records' publishes.
func (w *world) publishAll(res *result) {
	count := max(1, int(float64(w.o.n)*w.o.publish))
	perm := w.rng.Perm(w.o.n)[:count]
	progress("publishing %d endpoint records", count)
	var ds, reps []float64
	wantReps := min(8, w.liveCount()-1)
	for _, i := range perm {
		sn := w.nodes[i]
		r := &record{owner: i, key: sn.node.NodeID(), seq: 1, resolved: -1}
		t0 := time.Now()
		if err := w.publish(sn, r.seq); err != nil {
			progress("publish from node %d: %v", i, err)
			continue
		}
		w.recs = append(w.recs, r)
		deadline := t0.Add(publishWait)
		for try := 0; try < publishTries && time.Now().Before(deadline); try++ {
			if ok, _ := w.resolveOnce(r, time.Until(deadline)); ok {
				r.resolved = time.Since(t0)
				ds = append(ds, ms(r.resolved))
				break
			}
		}
		for time.Now().Before(deadline) {
			if sn.node.RepSetSize(r.key, r.key) >= wantReps {
				reps = append(reps, ms(time.Since(t0)))
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	res.Published = len(w.recs)
	res.PublishResolveP50Ms = percentile(ds, 50)
	res.PublishResolveP90Ms = percentile(ds, 90)
	res.PublishReplicatedP90Ms = percentile(reps, 90)
	progress("publish→resolvable: %d/%d; publish→replicated: %d/%d", len(ds), len(w.recs), len(reps), len(w.recs))
	// Every record must then resolve from each of several random
	// non-publisher nodes that hold no copy.
	ok := 0
	for _, r := range w.recs {
		all := r.resolved >= 0
		for j := 0; j < resolveCheckers && all; j++ {
			all, _ = w.resolveOnce(r, 5*time.Second)
		}
		if all {
			ok++
		}
	}
	res.ResolvableFraction = frac(ok, len(w.recs))
	progress("resolvable from %d random non-publishers each: %d/%d", resolveCheckers, ok, len(w.recs))
}

// Bounds of the publish→resolvable measurement of one record.
const (
	publishWait  = 30 * time.Second
	publishTries = 1000
)

// resolveCheckers is the number of random non-publisher nodes that must
// each resolve a record for it to count as resolvable.
const resolveCheckers = 3

func (w *world) publish(sn *simNode, seq uint64) error {
	p := protocol.EndpointPayload{Endpoints: []string{"quic://" + sn.addr.String()}, NatType: protocol.NATFullCone}
	rec, err := protocol.NewEndpointRecord(sn.ks.Address(), p, seq, uint64(w.clk.Now().Unix()), 3600, sn.ks.Pub(), sn.ks.SignFunc)
	if err != nil {
		return fmt.Errorf("sign endpoint record: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return sn.node.PublishEndpointRecord(ctx, rec)
}

// resolveOnce resolves r from a random live node that holds no local copy,
// so the answer comes from the network. ok reports a matching record.
func (w *world) resolveOnce(r *record, timeout time.Duration) (bool, time.Duration) {
	var q *simNode
	for try := 0; try < 64; try++ {
		q = w.randomLive(r.owner)
		if len(q.node.LocalStoreGet(r.key, protocol.RecTypeEndpoint)) == 0 {
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	t := time.Now()
	rp0, sp0 := q.ctr.RecvPackets.Load(), q.ctr.SentPackets.Load()
	recs, st, err := dht.NewQuery(q.node).FindRecordsWithStats(ctx, r.key, protocol.RecTypeEndpoint)
	rp1, sp1 := q.ctr.RecvPackets.Load(), q.ctr.SentPackets.Load()
	d := time.Since(t)
	ok := false
	for _, rec := range recs {
		if er, perr := protocol.ParseEndpointRecord(rec); perr == nil && a2al.NodeIDFromAddress(er.Address) == r.key {
			ok = true
		}
	}
	if w.o.verbose && (!ok || d > time.Second) {
		progress("resolve of node %d's record from node %d: ok=%v in %v, %d RPCs, %d answered, err=%v (node sent %d, received %d datagrams meanwhile)", r.owner, q.idx, ok, d.Round(time.Millisecond), st.RPCs, st.Answered, err, sp1-sp0, rp1-rp0)
	}
	return ok, d
}

// measureLookups runs FIND_NODE lookups for random targets from random nodes
// and compares the result with the true K closest live nodes. Latency is
// measured twice: one lookup at a time (the latency of a lookup on an
// otherwise idle network) and with -concurrency lookups in parallel (the
// machine's cores shared by all of them). RPCs and bytes are the lookup's
// own (dht.LookupStats), not the node's background traffic.
func (w *world) measureLookups(res *result) {
	if w.o.lookups == 0 {
		return
	}
	progress("running %d lookups one at a time", w.o.lookups)
	idle := w.lookupBatch(w.o.lookups, 1)
	var lats, prec, rpcs, bytes []float64
	okN := 0
	for _, r := range idle {
		if r.ok {
			okN++
		}
		lats = append(lats, ms(r.lat))
		prec = append(prec, r.precision)
		rpcs = append(rpcs, float64(r.st.RPCs))
		bytes = append(bytes, float64(r.st.BytesSent+r.st.BytesReceived))
	}
	if w.o.concurrency > 1 {
		progress("running %d lookups, %d in parallel", w.o.lookups, w.o.concurrency)
		var llats []float64
		for _, r := range w.lookupBatch(w.o.lookups, w.o.concurrency) {
			if r.ok {
				okN++
			}
			llats = append(llats, ms(r.lat))
			prec = append(prec, r.precision)
			rpcs = append(rpcs, float64(r.st.RPCs))
		}
		res.LoadedConcurrency = w.o.concurrency
		res.LoadedP50Ms, res.LoadedP99Ms = percentile(llats, 50), percentile(llats, 99)
	}
	res.LookupSuccess = frac(okN, len(prec))
	res.KClosestPrecision = mean(prec)
	res.KClosestExact = frac(countIf(prec, func(p float64) bool { return p == 1 }), len(prec))
	res.LookupP50Ms, res.LookupP90Ms, res.LookupP99Ms = percentile(lats, 50), percentile(lats, 90), percentile(lats, 99)
	res.RPCsPerLookup = mean(rpcs)
	res.RPCsPerLookupMax = maxF(rpcs)
	res.BytesPerLookup = mean(bytes)
}

type lookupOutcome struct {
	ok        bool
	precision float64
	lat       time.Duration
	st        dht.LookupStats
}

// lookupBatch runs count lookups, at most par at a time and never two from
// the same node at once.
func (w *world) lookupBatch(count, par int) []lookupOutcome {
	out := make([]lookupOutcome, count)
	busy := make(map[int]bool)
	var busyMu sync.Mutex
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := 0; i < count; i++ {
		sem <- struct{}{}
		var q *simNode
		busyMu.Lock()
		for q == nil || busy[q.idx] {
			q = w.randomLive(-1)
		}
		busy[q.idx] = true
		busyMu.Unlock()
		var target a2al.NodeID
		w.rngMu.Lock()
		w.rng.Read(target[:])
		w.rngMu.Unlock()
		wg.Add(1)
		go func(i int, q *simNode) {
			defer wg.Done()
			defer func() { <-sem; busyMu.Lock(); delete(busy, q.idx); busyMu.Unlock() }()
			ctx, cancel := context.WithTimeout(context.Background(), w.o.lookupTimout)
			t := time.Now()
			found, st, err := dht.NewQuery(q.node).FindNodeWithStats(ctx, target)
			lat := time.Since(t)
			cancel()
			truth := w.trueClosest(target, q.idx, 16)
			hit := 0
			for _, ni := range found {
				if truth[ni.NodeID] {
					hit++
				}
			}
			out[i] = lookupOutcome{ok: err == nil && len(found) > 0, precision: float64(hit) / float64(len(truth)), lat: lat, st: st}
		}(i, q)
		if (i+1)%max(1, count/5) == 0 {
			progress("lookups %d/%d", i+1, count)
		}
	}
	wg.Wait()
	return out
}

// trueClosest returns the k live nodes closest to target, excluding exclude.
func (w *world) trueClosest(target a2al.NodeID, exclude, k int) map[a2al.NodeID]bool {
	ids := make([]a2al.NodeID, 0, len(w.nodes))
	for _, sn := range w.nodes {
		if sn.alive && sn.idx != exclude {
			ids = append(ids, sn.node.NodeID())
		}
	}
	sort.Slice(ids, func(i, j int) bool { return a2al.Closer(ids[i], ids[j], target) })
	m := make(map[a2al.NodeID]bool, k)
	for _, id := range ids[:min(k, len(ids))] {
		m[id] = true
	}
	return m
}

// measureResolves resolves random published records from random nodes
// holding no copy, one resolve at a time (like lookup_p50_ms: the latency
// of a resolve, not of queueing for the two cores).
func (w *world) measureResolves(res *result) {
	if w.o.lookups == 0 || len(w.recs) == 0 {
		return
	}
	progress("running %d resolves one at a time", w.o.lookups)
	oks := make([]bool, w.o.lookups)
	lats := make([]float64, w.o.lookups)
	sem := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for i := 0; i < w.o.lookups; i++ {
		r := w.recs[w.intn(len(w.recs))]
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			ok, d := w.resolveOnce(r, w.o.lookupTimout)
			oks[i], lats[i] = ok, ms(d)
		}(i)
	}
	wg.Wait()
	res.ResolveSuccess = frac(countIf(boolsToF(oks), func(f float64) bool { return f == 1 }), len(oks))
	res.ResolveP50Ms, res.ResolveP99Ms = percentile(lats, 50), percentile(lats, 99)
}

// measureReplicas counts confirmed replicas (publisher's RepSetSize) and
// nodes holding a copy (including copies cached by resolvers).
func (w *world) measureReplicas(res *result) {
	var rep, held []float64
	for _, r := range w.recs {
		owner := w.nodes[r.owner]
		rep = append(rep, float64(owner.node.RepSetSize(r.key, r.key)))
		n := 0
		for _, sn := range w.nodes {
			if sn.alive && sn.idx != r.owner && len(sn.node.LocalStoreGet(r.key, protocol.RecTypeEndpoint)) > 0 {
				n++
			}
		}
		held = append(held, float64(n))
	}
	res.ReplicasMean = mean(rep)
	res.ReplicasMin = minF(rep)
	res.HoldersMean = mean(held)
}

func (w *world) measureSize(res *result) {
	live := w.liveCount()
	var errs, ests []float64
	for _, sn := range w.nodes {
		if !sn.alive {
			continue
		}
		est := float64(sn.node.EstimatedNetworkSize())
		ests = append(ests, est)
		d := est - float64(live)
		if d < 0 {
			d = -d
		}
		errs = append(errs, d/float64(live))
	}
	res.SizeEstimateMedian = percentile(ests, 50)
	res.SizeEstimateError = mean(errs)
	res.SizeWithin30 = frac(countIf(errs, func(e float64) bool { return e <= 0.3 }), len(errs))
}

func (w *world) totals(res *result) {
	var tx, rx uint64
	for _, sn := range w.nodes {
		tx += sn.ctr.SentPackets.Load()
		rx += sn.ctr.SentBytes.Load()
	}
	res.TotalPacketsSent, res.TotalBytesSent = tx, rx
	if w.mem != nil {
		st := w.mem.Stats()
		res.MemDroppedFull = st.DroppedFull
	}
	for _, sn := range w.nodes {
		if sn.alive {
			s := sn.node.DebugStatsData()
			res.RoutingPeersMean += float64(s.TotalPeers)
		}
	}
	res.RoutingPeersMean /= float64(w.liveCount())
}

// churnPhase kills a fraction of the nodes without warning, then samples
// resolvability over simulated time while live publishers republish every
// 30 min (TTL/2, as the daemon does).
func (w *world) churnPhase(res *result) {
	kill := int(float64(len(w.nodes)) * w.o.churn)
	progress("churn: killing %d nodes abruptly; clock now runs %gx real time", kill, w.o.timescale)
	w.clk.SetScale(w.o.timescale)
	if w.o.churnprofile != "" && w.o.cpuprofile == "" {
		if f, err := os.Create(w.o.churnprofile); err != nil {
			progress("churn profile: %v", err)
		} else if err := pprof.StartCPUProfile(f); err != nil {
			progress("churn profile: %v", err)
			f.Close()
		} else {
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
	}
	for _, i := range w.rng.Perm(len(w.nodes))[:kill] {
		sn := w.nodes[i]
		sn.alive = false
		sn.node.Close()
		if w.holes != nil {
			if err := w.holes.Add(sn.addr); err != nil {
				progress("%v", err)
			}
		}
	}
	simStart := w.clk.Now()
	lastRepublish := simStart
	const republishEvery = 30 * time.Minute
	steps := 8
	for s := 0; s <= steps; s++ {
		at := time.Duration(s) * w.o.repair / time.Duration(steps)
		if wait := simStart.Add(at).Sub(w.clk.Now()); wait > 0 {
			w.clk.Sleep(wait)
		}
		if w.clk.Now().Sub(lastRepublish) >= republishEvery {
			w.republish()
			lastRepublish = w.clk.Now()
		}
		liveOK, liveN, allOK := w.sampleResolvable()
		p := churnPoint{SimMinutes: w.clk.Now().Sub(simStart).Minutes(), LiveOwners: frac(liveOK, liveN), All: frac(allOK, len(w.recs))}
		res.ChurnTimeline = append(res.ChurnTimeline, p)
		progress("churn t=+%.0f sim-min: resolvable live-owner %.3f, all %.3f", p.SimMinutes, p.LiveOwners, p.All)
	}
	last := res.ChurnTimeline[len(res.ChurnTimeline)-1]
	res.ResolvableAfterRepair = &last.LiveOwners
	res.ResolvableAfterRepairAll = &last.All
	res.KilledNodes = kill
	res.Timescale = w.o.timescale
}

func (w *world) republish() {
	n := 0
	for _, r := range w.recs {
		sn := w.nodes[r.owner]
		if !sn.alive {
			continue
		}
		r.seq++
		if err := w.publish(sn, r.seq); err == nil {
			n++
		}
	}
	progress("republished %d records", n)
}

// sampleResolvable resolves every published record once.
func (w *world) sampleResolvable() (liveOK, liveN, allOK int) {
	var mu sync.Mutex
	sem := make(chan struct{}, w.o.concurrency)
	var wg sync.WaitGroup
	for _, r := range w.recs {
		ownerAlive := w.nodes[r.owner].alive
		if ownerAlive {
			liveN++
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(r *record) {
			defer wg.Done()
			defer func() { <-sem }()
			ok, _ := w.resolveOnce(r, 10*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if ok {
				allOK++
				if ownerAlive {
					liveOK++
				}
			}
		}(r)
	}
	wg.Wait()
	return
}

func (w *world) shutdown() {
	progress("shutting down")
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, sn := range w.nodes {
		if sn.node == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(n *dht.Node) {
			defer wg.Done()
			defer func() { <-sem }()
			n.Close()
		}(sn.node)
	}
	wg.Wait()
	if w.mem != nil {
		w.mem.Close()
	}
}
