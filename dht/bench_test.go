package dht

import (
	"context"
	"fmt"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

func benchResp(b *testing.B) (protocol.BodyFindNodeResp, *testKeys) {
	k := newTestKeys(1)
	var resp protocol.BodyFindNodeResp
	for i := 0; i < 16; i++ {
		a := newTestKeys(uint64(i + 10)).addr
		resp.Nodes = append(resp.Nodes, protocol.NodeInfo{Address: a, NodeID: a2al.NodeIDFromAddress(a), IP: net.IPv4(127, 1, byte(i), 1).To4(), Port: 4000})
	}
	resp.ObservedAddr = ObservedAddr(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5})
	return resp, k
}

func BenchmarkTrimFindNodeResp(b *testing.B) {
	resp, _ := benchResp(b)
	for i := 0; i < b.N; i++ {
		r := resp
		r.Nodes = append([]protocol.NodeInfo(nil), resp.Nodes...)
		_ = protocol.TrimFindNodeResp(&r)
	}
}

func BenchmarkEncodeFindNodeResp(b *testing.B) {
	resp, k := benchResp(b)
	_ = protocol.TrimFindNodeResp(&resp)
	h := protocol.Header{Version: 1, MsgType: protocol.MsgFindNodeResp}
	for i := 0; i < b.N; i++ {
		if _, err := protocol.EncodeMessage(h, resp, k.pub(), k.sign); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeFindNodeResp(b *testing.B) {
	resp, k := benchResp(b)
	_ = protocol.TrimFindNodeResp(&resp)
	h := protocol.Header{Version: 1, MsgType: protocol.MsgFindNodeResp}
	raw, err := protocol.EncodeMessage(h, resp, k.pub(), k.sign)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := protocol.DecodeMessage(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// publishedUDPNet builds a 300-node loopback UDP network (buildUDPNet) in
// which every tenth node published its endpoint record and holds its
// replicas.
func publishedUDPNet(b *testing.B) (nodes []*Node, publishers []int) {
	nodes = buildUDPNet(b, 300)
	for i := 0; i < len(nodes); i += 10 {
		publishUDP(b, nodes[i], uint64(i+1), 1)
		publishers = append(publishers, i)
	}
	for _, i := range publishers {
		n := nodes[i]
		waitFor(b, 20*time.Second, "replicas", func() bool { return n.RepSetSize(n.NodeID(), n.NodeID()) >= nRep })
	}
	return nodes, publishers
}

// publishUDP publishes node n's endpoint record (n's identity is
// newTestKeys(seed), as buildUDPNet creates it).
func publishUDP(b *testing.B, n *Node, seed, seq uint64) {
	k := newTestKeys(seed)
	if k.addr != n.addr {
		b.Fatalf("node identity is not newTestKeys(%d)", seed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.PublishEndpointRecord(ctx, endpointRecord(b, k, seq, time.Now(), 3600, "")); err != nil {
		b.Fatal(err)
	}
}

// reportLatency reports percentiles of lats in ms as "<name>-p<pct>-ms"
// ("p<pct>-ms" for an empty name).
func reportLatency(b *testing.B, lats []time.Duration, name string, pcts ...int) {
	if len(lats) == 0 {
		return
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	if name != "" {
		name += "-"
	}
	for _, p := range pcts {
		b.ReportMetric(float64(lats[len(lats)*p/100])/1e6, fmt.Sprintf("%sp%d-ms", name, p))
	}
}

// BenchmarkResolve300UDP measures one cold resolve at a time on the
// network of BenchmarkLookup300UDP with 30 published records: a random
// node that holds no copy resolves a random record over the network (the
// copy it caches is dropped again afterwards). It reports RPCs per resolve
// and the p50/p99 latency in ms.
//
//	go test -run '^$' -bench Resolve300UDP -benchtime 300x ./dht/
func BenchmarkResolve300UDP(b *testing.B) {
	nodes, publishers := publishedUDPNet(b)
	lats := make([]time.Duration, 0, b.N)
	rpcs := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		owner := nodes[publishers[(i*31)%len(publishers)]]
		q := nodes[(i*7919+1)%len(nodes)]
		if q == owner {
			q = nodes[(i*7919+2)%len(nodes)]
		}
		q.LocalStoreInvalidate(owner.NodeID(), 0)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t0 := time.Now()
		recs, st, err := NewQuery(q).FindRecordsWithStats(ctx, owner.NodeID(), protocol.RecTypeEndpoint)
		lats = append(lats, time.Since(t0))
		cancel()
		if err != nil || len(recs) == 0 {
			b.Fatalf("resolve %d: %d records, err %v", i, len(recs), err)
		}
		q.LocalStoreInvalidate(owner.NodeID(), 0)
		rpcs += st.RPCs
	}
	b.StopTimer()
	b.ReportMetric(float64(rpcs)/float64(b.N), "rpcs/resolve")
	reportLatency(b, lats, "", 50, 99)
}

// BenchmarkPublish300UDP measures publishing one record at a time on the
// network of BenchmarkLookup300UDP, from the start of
// PublishEndpointRecord: until a random other node, its local copy
// dropped, resolves the new record (a failed or stale resolve is retried
// at once), and, for a node's first publish, until the publisher has nRep
// confirmed replicas. Each node publishes in turn (seq rises on later
// rounds). It reports p50/p90 of both in ms, the resolves needed, and the
// requests the network dropped meanwhile (rate limits, challenges, full
// queues: 0 means no replica waited behind one).
//
//	go test -run '^$' -bench Publish300UDP -benchtime 100x ./dht/
func BenchmarkPublish300UDP(b *testing.B) {
	nodes := buildUDPNet(b, 300)
	drops0 := droppedRequests(nodes)
	lats := make([]time.Duration, 0, b.N)
	var reps []time.Duration
	tries := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pi := (i * 7) % len(nodes)
		owner := nodes[pi]
		seq := uint64(1 + i/len(nodes))
		q := nodes[(pi+1+(i*7919)%(len(nodes)-1))%len(nodes)]
		t0 := time.Now()
		publishUDP(b, owner, uint64(pi+1), seq)
		for ok := false; !ok; {
			if tries++; time.Since(t0) > 20*time.Second {
				b.Fatalf("publish %d: not resolvable after 20 s", i)
			}
			q.LocalStoreInvalidate(owner.NodeID(), 0)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			er, err := NewQuery(q).Resolve(ctx, owner.NodeID())
			cancel()
			ok = err == nil && er.Seq == seq
		}
		lats = append(lats, time.Since(t0))
		if seq == 1 {
			for owner.RepSetSize(owner.NodeID(), owner.NodeID()) < nRep {
				if time.Since(t0) > 20*time.Second {
					b.Fatalf("publish %d: %d replicas after 20 s", i, owner.RepSetSize(owner.NodeID(), owner.NodeID()))
				}
				time.Sleep(100 * time.Microsecond)
			}
			reps = append(reps, time.Since(t0))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(tries)/float64(b.N), "resolves/publish")
	b.ReportMetric(float64(droppedRequests(nodes)-drops0), "dropped")
	reportLatency(b, lats, "resolvable", 50, 90)
	reportLatency(b, reps, "replicated", 50, 90)
}

// droppedRequests sums what the nodes dropped for rate limits, address
// challenges, unproven sources and full queues.
func droppedRequests(nodes []*Node) uint64 {
	var sum uint64
	for _, n := range nodes {
		c := &n.cnt
		sum += c.dropRate.Load() + c.dropChallenge.Load() + c.dropUnproven.Load() + c.dropTaskQueue.Load() + c.dropEvictQueue.Load()
	}
	return sum
}
