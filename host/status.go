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
	RelaySocket    string          `json:"relay_socket,omitempty"` // UDP blocked: the TURN server our socket runs over
	RoutingPeers   int             `json:"routing_peers"`
	LivePeers      int             `json:"live_peers"` // routing peers heard from in the last LiveWindow
	NetworkSize    int             `json:"network_size_estimate"`
	HubsRegistered int             `json:"hubs_registered"`
	Hubs           int             `json:"hubs"`
	HubStates      []HubState      `json:"hub_states"`
	Pool           []PoolEntryInfo `json:"pool"`
	Sched          SchedStats      `json:"scheduler"`
	Punches        []PunchRecord   `json:"recent_punches"`
	Published      time.Time       `json:"published_at"`
	Seq            uint64          `json:"published_seq"`
	PortMapping    []MappingStatus `json:"port_mapping"`
}

// LiveWindow is how recently a routing peer must have answered to count as
// live in Status.
const LiveWindow = 15 * time.Minute

// HubState is one configured signaling hub: registered, or why not.
type HubState struct {
	URL        string `json:"url"`
	Registered bool   `json:"registered"`
	Error      string `json:"error,omitempty"` // the last dial or connection failure
}

// HubStates reports every configured hub.
func (h *Host) HubStates() []HubState {
	out := make([]HubState, 0, len(h.hubs))
	for _, c := range h.hubs {
		s := HubState{URL: c.URL(), Registered: c.Registered()}
		if err := c.LastError(); err != nil && !s.Registered {
			s.Error = err.Error()
		}
		out = append(out, s)
	}
	return out
}

// Status collects the current state.
func (h *Host) Status() Status {
	st := Status{
		Address: h.id.Address.String(), Local: h.demux.LocalAddr().String(), NAT: "unknown",
		RoutingPeers: h.node.DebugStatsData().TotalPeers, LivePeers: h.node.LivePeers(LiveWindow),
		NetworkSize:    h.node.EstimatedNetworkSize(),
		HubsRegistered: h.HubsRegistered(), Hubs: len(h.hubs), HubStates: h.HubStates(), Pool: h.pool.Snapshot(), Sched: h.sched.Stats(),
		Punches: h.Punches(), PortMapping: h.mappingStatus(),
	}
	if nr, ok := h.NATResult(); ok {
		st.NAT = string(nr.Type)
		if nr.MappedAddr != nil {
			st.Public = nr.MappedAddr.String()
		}
	}
	if _, server, ok := h.RelaySocket(); ok {
		st.RelaySocket = server
	}
	if addr, ip := h.PeerPublic(); st.Public == "" && addr != nil {
		st.Public = addr.String()
	} else if st.Public == "" && ip != nil {
		st.Public = ip.String()
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
