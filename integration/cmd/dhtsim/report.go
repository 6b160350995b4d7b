package main

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"
)

// result is the JSON output; the first fields are the agreed benchmark keys.
type result struct {
	LookupSuccess            float64  `json:"lookup_success"`
	KClosestPrecision        float64  `json:"k_closest_precision"`
	LookupP50Ms              float64  `json:"lookup_p50_ms"`
	LookupP99Ms              float64  `json:"lookup_p99_ms"`
	RPCsPerLookup            float64  `json:"rpcs_per_lookup"`
	ResolvableFraction       float64  `json:"resolvable_fraction"`
	SizeEstimateError        float64  `json:"size_estimate_error"`
	HeapPerNodeKiB           float64  `json:"heap_per_node_kib"`
	GoroutinesPerNode        float64  `json:"goroutines_per_node"`
	StackPerNodeKiB          float64  `json:"stack_per_node_kib"`
	RSSPerNodeKiB            float64  `json:"process_rss_kib_per_node"`
	PeakRSSMiB               float64  `json:"process_peak_rss_mib"`
	BuildSeconds             float64  `json:"build_seconds"`
	RPCsLimit                float64  `json:"rpcs_limit"`
	ResolvableAfterRepair    *float64 `json:"resolvable_after_repair,omitempty"`
	ResolvableAfterRepairAll *float64 `json:"resolvable_after_repair_all,omitempty"`

	Nodes               int          `json:"nodes"`
	Transport           string       `json:"transport"`
	JoinSeconds         float64      `json:"join_seconds"`
	ClockScale          float64      `json:"clock_scale"`
	KClosestExact       float64      `json:"k_closest_exact_fraction"`
	LookupP90Ms         float64      `json:"lookup_p90_ms"`
	LoadedConcurrency   int          `json:"lookup_loaded_concurrency,omitempty"`
	LoadedP50Ms         float64      `json:"lookup_loaded_p50_ms,omitempty"`
	LoadedP99Ms         float64      `json:"lookup_loaded_p99_ms,omitempty"`
	RPCsPerLookupMax    float64      `json:"rpcs_per_lookup_max"`
	BytesPerLookup      float64      `json:"bytes_per_lookup"`
	ResolveSuccess      float64      `json:"resolve_success"`
	ResolveP50Ms        float64      `json:"resolve_p50_ms"`
	ResolveP99Ms        float64      `json:"resolve_p99_ms"`
	Published           int          `json:"published"`
	PublishResolveP50Ms float64      `json:"publish_resolvable_p50_ms"`
	PublishResolveP90Ms float64      `json:"publish_resolvable_p90_ms"`
	ReplicasMean        float64      `json:"replicas_mean"`
	ReplicasMin         float64      `json:"replicas_min"`
	HoldersMean         float64      `json:"holders_mean"`
	SizeEstimateMedian  float64      `json:"size_estimate_median"`
	SizeWithin30        float64      `json:"size_estimate_within_30pct"`
	RoutingPeersMean    float64      `json:"routing_peers_mean"`
	TotalPacketsSent    uint64       `json:"total_packets_sent"`
	TotalBytesSent      uint64       `json:"total_bytes_sent"`
	MemDroppedFull      uint64       `json:"mem_dropped_inbox_full,omitempty"`
	KilledNodes         int          `json:"killed_nodes,omitempty"`
	Timescale           float64      `json:"churn_timescale,omitempty"`
	ChurnTimeline       []churnPoint `json:"churn_timeline,omitempty"`

	// Per record, published one at a time, from the start of the publish
	// call: publish_resolvable_* until a random node holding no copy first
	// resolves it, publish_replicated_p90_ms until the publisher holds
	// min(8, N-1) confirmed replicas (docs/dht-benchmarks.md).
	PublishReplicatedP90Ms float64 `json:"publish_replicated_p90_ms"`
}

type churnPoint struct {
	SimMinutes float64 `json:"sim_minutes"`
	LiveOwners float64 `json:"resolvable_live_owners"`
	All        float64 `json:"resolvable_all"`
}

func printTable(w io.Writer, o options, r *result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, v ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, v...)) }
	row("nodes / transport", "%d / %s (latency %v, seed %d)", r.Nodes, r.Transport, o.latency, o.seed)
	row("build wall time", "%.1f s (of which joining %.1f s; node clock at %gx real time)", r.BuildSeconds, r.JoinSeconds, r.ClockScale)
	row("routing peers per node", "%.1f", r.RoutingPeersMean)
	row("lookup success", "%.3f", r.LookupSuccess)
	row("k-closest precision", "%.3f (exact %.3f)", r.KClosestPrecision, r.KClosestExact)
	row("lookup latency p50/p90/p99", "%.1f / %.1f / %.1f ms (one lookup at a time)", r.LookupP50Ms, r.LookupP90Ms, r.LookupP99Ms)
	if r.LoadedConcurrency > 0 {
		row("lookup latency under load", "p50 %.1f ms, p99 %.1f ms (%d lookups in parallel)", r.LoadedP50Ms, r.LoadedP99Ms, r.LoadedConcurrency)
	}
	row("RPCs per lookup", "%.1f mean, %.0f max (the lookup's own requests; limit 3·log2 N = %.1f)", r.RPCsPerLookup, r.RPCsPerLookupMax, r.RPCsLimit)
	row("bytes per lookup (tx+rx)", "%.0f", r.BytesPerLookup)
	row("resolve success", "%.3f (p50 %.1f ms, p99 %.1f ms)", r.ResolveSuccess, r.ResolveP50Ms, r.ResolveP99Ms)
	row("published records", "%d", r.Published)
	row("publish→resolvable", "%.3f; p50 %.1f ms, p90 %.1f ms (replicated p90 %.1f ms)", r.ResolvableFraction, r.PublishResolveP50Ms, r.PublishResolveP90Ms, r.PublishReplicatedP90Ms)
	row("replicas per record", "%.1f confirmed (min %.0f); %.1f nodes hold a copy", r.ReplicasMean, r.ReplicasMin, r.HoldersMean)
	row("network size estimate", "median %.0f vs %d; mean abs error %.2f; %.0f%% of nodes within ±30%%", r.SizeEstimateMedian, r.Nodes, r.SizeEstimateError, 100*r.SizeWithin30)
	row("heap per node", "%.1f KiB", r.HeapPerNodeKiB)
	row("goroutines per node", "%.1f", r.GoroutinesPerNode)
	row("stack per node", "%.1f KiB", r.StackPerNodeKiB)
	row("process RSS per node", "%.1f KiB (peak %.0f MiB)", r.RSSPerNodeKiB, r.PeakRSSMiB)
	row("total sent", "%d packets, %d bytes (mem inbox-full drops %d)", r.TotalPacketsSent, r.TotalBytesSent, r.MemDroppedFull)
	if r.ResolvableAfterRepair != nil {
		row("churn", "%d nodes killed abruptly; node clocks at %gx real time", r.KilledNodes, r.Timescale)
		for _, p := range r.ChurnTimeline {
			row(fmt.Sprintf("  resolvable at +%.0f sim-min", p.SimMinutes), "%.3f live publishers, %.3f all", p.LiveOwners, p.All)
		}
		row("resolvable after repair", "%.3f (all records %.3f)", *r.ResolvableAfterRepair, *r.ResolvableAfterRepairAll)
	}
	tw.Flush()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func frac(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(p / 100 * float64(len(s)-1))
	return s[i]
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t / float64(len(xs))
}

func minF(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	m := xs[0]
	for _, x := range xs[1:] {
		m = min(m, x)
	}
	return m
}

func maxF(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func countIf(xs []float64, f func(float64) bool) int {
	n := 0
	for _, x := range xs {
		if f(x) {
			n++
		}
	}
	return n
}

func boolsToF(bs []bool) []float64 {
	out := make([]float64, len(bs))
	for i, b := range bs {
		if b {
			out[i] = 1
		}
	}
	return out
}
