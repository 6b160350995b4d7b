package dht

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// DebugStats is the DHT portion of GET /debug/stats.
type DebugStats struct {
	RxPackets             uint64  `json:"rx_packets_verified"`
	TxPackets             uint64  `json:"tx_packets"`
	RPCOK                 uint64  `json:"rpc_completed"`
	TotalPeers            int     `json:"total_peers"`
	Reach1h               int     `json:"reach_1h"`
	Reach24h              int     `json:"reach_24h"`
	Reach7d               int     `json:"reach_7d"`
	EstimatedNetworkSize  int     `json:"estimated_network_size"`
	EstimateConfidence    float64 `json:"estimate_confidence,omitempty"`
	VerifiedPeers1h       int     `json:"verified_peers_1h,omitempty"`
	UniqueNodesSinceStart uint64  `json:"unique_nodes_since_start"`
}

// DebugStatsData returns a snapshot of counters and estimates.
func (n *Node) DebugStatsData() DebugStats {
	now := n.now()
	h1, h24, d7 := n.seen.reach(now)
	n.tabMu.RLock()
	total := n.tab.Len()
	est, conf := n.tab.EstimateSize(time.Time{})
	if est == 0 {
		est = n.tab.EstimateSizeAny()
	}
	n.tabMu.RUnlock()
	if est < d7 {
		est = d7 // never below what we saw first-hand this week (docs/dht.md §17.5)
	}
	return DebugStats{
		RxPackets:             n.cnt.rx.Load(),
		TxPackets:             n.cnt.tx.Load(),
		RPCOK:                 n.cnt.rpcOK.Load(),
		TotalPeers:            total,
		Reach1h:               h1,
		Reach24h:              h24,
		Reach7d:               d7,
		EstimatedNetworkSize:  est,
		EstimateConfidence:    conf,
		VerifiedPeers1h:       h1,
		UniqueNodesSinceStart: n.seen.uniqueCount(),
	}
}

type routingRow struct {
	Bucket      int    `json:"bucket"`
	XORDistance string `json:"xor_distance_to_self_hex"`
	AddressHex  string `json:"address_hex"`
	NodeIDHex   string `json:"node_id_hex"`
	IP          string `json:"ip"`
	Port        int    `json:"port"`
	VerifiedAgo string `json:"verified_ago,omitempty"`
}

// DebugHTTPHandler returns read-only /debug/* JSON handlers:
// /debug/identity, /debug/routing, /debug/store, /debug/stats, /debug/health.
func (n *Node) DebugHTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/identity", n.getOnly(func() any {
		la := ""
		if a := n.tr.LocalAddr(); a != nil {
			la = a.String()
		}
		return map[string]string{
			"address":     n.addr.String(),
			"node_id_hex": hex.EncodeToString(n.id[:]),
			"local_addr":  la,
		}
	}))
	mux.HandleFunc("/debug/routing", n.getOnly(func() any {
		now := n.now()
		n.tabMu.RLock()
		all := n.tab.All()
		n.tabMu.RUnlock()
		var rows []routingRow
		for _, c := range all {
			d := xorHex(n.id[:], c.Info.NodeID[:])
			r := routingRow{
				Bucket:      n.tab.BucketIndex(c.Info.NodeID),
				XORDistance: d,
				AddressHex:  hex.EncodeToString(c.Info.Address[:]),
				NodeIDHex:   hex.EncodeToString(c.Info.NodeID[:]),
				Port:        int(c.Info.Port),
			}
			if len(c.Info.IP) == 4 || len(c.Info.IP) == 16 {
				r.IP = net.IP(c.Info.IP).String()
			}
			if !c.VerifiedAt.IsZero() {
				r.VerifiedAgo = now.Sub(c.VerifiedAt.Time()).Round(time.Second).String()
			}
			rows = append(rows, r)
		}
		return map[string]any{
			"self_node_id_hex": hex.EncodeToString(n.id[:]),
			"peers":            rows,
			"total_peers":      len(rows),
		}
	}))
	mux.HandleFunc("/debug/store", n.getOnly(func() any { return n.store.DebugRecords(n.now()) }))
	mux.HandleFunc("/debug/stats", n.getOnly(func() any { return n.DebugStatsData() }))
	mux.HandleFunc("/debug/health", n.getOnly(func() any { return n.debugHealth() }))
	return mux
}

// debugHealth exposes drop counters and bounded-structure sizes (ours).
func (n *Node) debugHealth() map[string]any {
	hl, outage, events := n.health.stats()
	n.rpc.mu.Lock()
	pend := len(n.rpc.pending)
	n.rpc.mu.Unlock()
	n.repl.mu.Lock()
	sets := len(n.repl.sets)
	n.repl.mu.Unlock()
	replayEntries, replayEarly := n.replay.stats()
	return map[string]any{
		"replay_cache":        replayEntries,
		"replay_early_rotate": replayEarly,
		"drop_decode":         n.cnt.dropDecode.Load(),
		"drop_unknown":        n.cnt.dropUnknown.Load(),
		"drop_signature":      n.cnt.dropSig.Load(),
		"drop_rate_limit":     n.cnt.dropRate.Load(),
		"drop_wrong_peer":     n.cnt.dropWrongPeer.Load(),
		"drop_evict_queue":    n.cnt.dropEvictQueue.Load(),
		"drop_task_queue":     n.cnt.dropTaskQueue.Load(),
		"drop_punched_queue":  n.cnt.dropPunchedQueue.Load(),
		"punches":             n.cnt.punches.Load(),
		"punch_send_fallback": n.cnt.punchFallback.Load(),
		"drop_replay":         n.cnt.dropReplay.Load(),
		"drop_unproven":       n.cnt.dropUnproven.Load(),
		"drop_challenge":      n.cnt.dropChallenge.Load(),
		"addr_challenges":     n.cnt.challenges.Load(),
		"addr_moves":          n.cnt.addrMoves.Load(),
		"pending_rpcs":        pend,
		"health_entries":      hl,
		"addr_book":           n.book.len(),
		"rep_sets":            sets,
		"outage":              outage,
		"outage_events":       events,
		"store_keys":          n.store.Len(),
		"push":                n.PushStatsData(),
	}
}

func xorHex(a, b []byte) string {
	d := make([]byte, len(a))
	for i := range a {
		d[i] = a[i] ^ b[i]
	}
	return hex.EncodeToString(d)
}

func (n *Node) getOnly(f func() any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusMethodNotAllowed)
			_, _ = w.Write([]byte("method not allowed"))
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(f())
	}
}

// StartDebugHTTP serves DebugHTTPHandler on addr. stop shuts the server
// down within 3 s; it is idempotent, and Close calls it too.
func (n *Node) StartDebugHTTP(addr string) (stop func(), err error) {
	if n == nil {
		return nil, errNilNode
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           n.DebugHTTPHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Debug("dht: debug http", "err", err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			_ = ln.Close()
			<-done
		})
	}
	// Close stops it too, so a forgotten stop does not leak the server.
	n.debugMu.Lock()
	n.debugStops = append(n.debugStops, stop)
	n.debugMu.Unlock()
	return stop, nil
}
