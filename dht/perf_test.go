package dht

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/transport"
)

// TestLookupPerfUDP measures lookups on a loopback UDP network. It is a
// measurement, not an assertion of timing: it only runs with DHT_PERF=N and
// reports p50/p99 latency, RPCs per lookup and heap per node.
func TestLookupPerfUDP(t *testing.T) {
	size, _ := strconv.Atoi(os.Getenv("DHT_PERF"))
	if size <= 0 {
		t.Skip("set DHT_PERF=<nodes> to run the loopback UDP measurement")
	}
	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	nodes := buildUDPNet(t, size)
	ids := make([]a2al.NodeID, len(nodes))
	for i, n := range nodes {
		ids[i] = n.NodeID()
	}
	var lats []time.Duration
	var rpcs []int
	prec := 0.0
	const lookups = 200
	for i := 0; i < lookups; i++ {
		q := nodes[(i*7919)%len(nodes)]
		target := a2al.NodeIDFromAddress(newTestKeys(uint64(100000 + i)).addr)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t0 := time.Now()
		got, st := NewQuery(q).findNodeStats(ctx, target)
		lats = append(lats, time.Since(t0))
		cancel()
		rpcs = append(rpcs, st.RPCs)
		want := append([]a2al.NodeID(nil), ids...)
		sortIDs(want, target)
		truth := map[a2al.NodeID]bool{}
		for _, w := range want {
			if w != q.NodeID() && len(truth) < 16 {
				truth[w] = true
			}
		}
		hit := 0
		for _, g := range got {
			if truth[g.NodeID] {
				hit++
			}
		}
		prec += float64(hit) / 16
	}
	var rtts []time.Duration
	for i := 0; i < 50; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		t0 := time.Now()
		if err := nodes[0].Ping(ctx, nodes[1+i].LocalAddr()); err == nil {
			rtts = append(rtts, time.Since(t0))
		}
		cancel()
	}
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	if len(rtts) > 0 {
		t.Logf("ping rtt p50=%v p90=%v", rtts[len(rtts)/2], rtts[len(rtts)*9/10])
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	sort.Ints(rpcs)
	sum := 0
	for _, r := range rpcs {
		sum += r
	}
	runtime.GC()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	t.Logf("lookups=%d p50=%v p90=%v p99=%v rpcs mean=%.1f p50=%d max=%d precision=%.3f heap/node=%.1f KiB",
		lookups, lats[len(lats)/2], lats[len(lats)*9/10], lats[len(lats)*99/100],
		float64(sum)/float64(len(rpcs)), rpcs[len(rpcs)/2], rpcs[len(rpcs)-1], prec/lookups,
		float64(int64(ms1.HeapAlloc)-int64(ms0.HeapAlloc))/1024/float64(size))
}

// buildUDPNet starts size nodes on loopback UDP (each on its own
// 127.A.B.1 with A varying fastest, so the /24 and /16 diversity limits
// stay on), bootstraps them through
// three seeds and lets every node run a second self-lookup. Close runs at
// cleanup.
func buildUDPNet(tb testing.TB, size int) []*Node {
	nodes := make([]*Node, 0, size)
	tb.Cleanup(func() {
		for _, n := range nodes {
			_ = n.Close()
		}
	})
	for i := 0; i < size; i++ {
		ip := fmt.Sprintf("127.%d.%d.1", 1+i%250, 1+i/250)
		tr, err := transport.ListenUDP("udp4", ip+":0")
		if err != nil {
			tb.Fatalf("listen %s: %v", ip, err)
		}
		n, err := NewNode(Config{Transport: tr, Keystore: newTestKeys(uint64(i + 1)), Logger: quietLogger()})
		if err != nil {
			tb.Fatal(err)
		}
		n.Start()
		nodes = append(nodes, n)
	}
	seeds := []net.Addr{nodes[0].LocalAddr(), nodes[1].LocalAddr(), nodes[2].LocalAddr()}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, n := range nodes[1:] {
		wg.Add(1)
		sem <- struct{}{}
		go func(n *Node) {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := n.BootstrapAddrs(ctx, seeds); err != nil {
				tb.Errorf("bootstrap: %v", err)
			}
		}(n)
	}
	wg.Wait()
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n.selfLookup(ctx)
		cancel()
	}
	return nodes
}

// BenchmarkLookup300UDP measures one FindNode at a time on an in-process
// network of 300 nodes over loopback UDP (every RPC signed and verified).
// It reports RPCs and bytes per lookup and the p50/p99 latency in ms.
//
//	go test -run '^$' -bench Lookup300UDP -benchtime 300x ./dht/
func BenchmarkLookup300UDP(b *testing.B) {
	nodes := buildUDPNet(b, 300)
	lats := make([]time.Duration, 0, b.N)
	rpcs, bytes := 0, 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		q := nodes[(i*7919)%len(nodes)]
		target := a2al.NodeIDFromAddress(newTestKeys(uint64(200000 + i)).addr)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t0 := time.Now()
		got, st, err := NewQuery(q).FindNodeWithStats(ctx, target)
		lats = append(lats, time.Since(t0))
		cancel()
		if err != nil || len(got) == 0 {
			b.Fatalf("lookup %d: %d contacts, err %v", i, len(got), err)
		}
		rpcs += st.RPCs
		bytes += st.BytesSent + st.BytesReceived
	}
	b.StopTimer()
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	b.ReportMetric(float64(rpcs)/float64(b.N), "rpcs/lookup")
	b.ReportMetric(float64(bytes)/float64(b.N), "bytes/lookup")
	b.ReportMetric(float64(lats[len(lats)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lats[len(lats)*99/100])/1e6, "p99-ms")
}
