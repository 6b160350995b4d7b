package signal

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// hubMetrics are the hub's Prometheus series. Gauges are computed from hub
// state at scrape time so they can never drift from the truth.
type hubMetrics struct {
	sessionsTotal prometheus.Counter
	noAgent       prometheus.Counter
	authFailures  prometheus.Counter
	relayedBytes  prometheus.Counter
	refused       *prometheus.CounterVec // connection refused before upgrade, by reason
	dropped       *prometheus.CounterVec // connection closed by the hub, by reason
	sessionsEnded *prometheus.CounterVec // by reason
	callsRefused  *prometheus.CounterVec // calls refused by a limit, by reason
}

func newHubMetrics(reg prometheus.Registerer, h *Hub) (*hubMetrics, error) {
	m := &hubMetrics{
		sessionsTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "a2al_signal_sessions_total", Help: "Signaling sessions created."}),
		noAgent:       prometheus.NewCounter(prometheus.CounterOpts{Name: "a2al_signal_noagent_total", Help: "Calls answered noagent (target not registered)."}),
		authFailures:  prometheus.NewCounter(prometheus.CounterOpts{Name: "a2al_signal_auth_failures_total", Help: "Rejected authentication attempts."}),
		relayedBytes:  prometheus.NewCounter(prometheus.CounterOpts{Name: "a2al_signal_relayed_bytes_total", Help: "Signal payload bytes relayed between peers."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_signal_refused_connections_total",
			Help: "WebSocket upgrades refused, by reason."}, []string{"reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_signal_dropped_connections_total",
			Help: "Connections closed by the hub, by reason."}, []string{"reason"}),
		sessionsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_signal_sessions_ended_total",
			Help: "Signaling sessions ended, by reason."}, []string{"reason"}),
		callsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_signal_calls_refused_total",
			Help: "Calls refused by a session or call-rate limit, by reason."}, []string{"reason"}),
	}
	gauge := func(name, help string, f func(s HubStats) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(f(h.Stats())) })
	}
	cs := []prometheus.Collector{
		m.sessionsTotal, m.noAgent, m.authFailures, m.relayedBytes, m.refused, m.dropped, m.sessionsEnded, m.callsRefused,
		gauge("a2al_signal_connections", "Open WebSocket connections.", func(s HubStats) int { return s.Connections }),
		gauge("a2al_signal_pending_connections", "TCP connections accepted and not yet WebSockets.", func(s HubStats) int { return s.Pending }),
		gauge("a2al_signal_registered_nodes", "Nodes registered as callees.", func(s HubStats) int { return s.Registered }),
		gauge("a2al_signal_sessions_active", "Sessions ringing or relaying.", func(s HubStats) int { return s.Sessions }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("signal: register hub metrics: %w", err)
		}
	}
	return m, nil
}
