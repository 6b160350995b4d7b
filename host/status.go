package host

import (
	"encoding/json"
	"net/http"
	"time"
)

// Status is a snapshot of the host for logs, the CLI and /debug/host.
type Status struct {
	Address        string          `json:"address"`
	Local          string          `json:"local"`
	NAT            string          `json:"nat"`
	Public         string          `json:"public,omitempty"`
	RoutingPeers   int             `json:"routing_peers"`
	NetworkSize    int             `json:"network_size_estimate"`
	HubsRegistered int             `json:"hubs_registered"`
	Hubs           int             `json:"hubs"`
	Pool           []PoolEntryInfo `json:"pool"`
	Sched          SchedStats      `json:"scheduler"`
	Punches        []PunchRecord   `json:"recent_punches"`
	Published      time.Time       `json:"published_at"`
	Seq            uint64          `json:"published_seq"`
}

// Status collects the current state.
func (h *Host) Status() Status {
	st := Status{
		Address: h.id.Address.String(), Local: h.demux.LocalAddr().String(), NAT: "unknown",
		RoutingPeers: h.node.DebugStatsData().TotalPeers, NetworkSize: h.node.EstimatedNetworkSize(),
		HubsRegistered: h.HubsRegistered(), Hubs: len(h.hubs), Pool: h.pool.Snapshot(), Sched: h.sched.Stats(),
		Punches: h.Punches(),
	}
	if nr, ok := h.NATResult(); ok {
		st.NAT = string(nr.Type)
		if nr.MappedAddr != nil {
			st.Public = nr.MappedAddr.String()
		}
	}
	h.mu.Lock()
	st.Published, st.Seq = h.pub.lastAt, h.pub.seq
	h.mu.Unlock()
	return st
}

// DebugHandler serves /debug/host (host state as JSON) and the DHT's /debug/*.
func (h *Host) DebugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/host", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(h.Status())
	})
	mux.Handle("/debug/", h.node.DebugHTTPHandler())
	return mux
}
