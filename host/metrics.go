package host

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// hostMetrics are the host-level Prometheus series (D9). They live in a
// per-Host registry so several hosts can run in one process (demo, tests).
type hostMetrics struct {
	reg         *prometheus.Registry
	punches     *prometheus.CounterVec
	punchDur    prometheus.Histogram
	modeBSent   atomic.Uint64 // DHT messages handed to the Mode B pool
	natType     *prometheus.GaugeVec
	glare       prometheus.Counter
	unexpectedB prometheus.Counter
	publishes   prometheus.Counter
	dialsA      *prometheus.CounterVec
	// Mode A acceptor: refusals by reason, AgentInfo records by outcome,
	// service streams bridged by service name.
	modeARefused   *prometheus.CounterVec
	routeFrames    *prometheus.CounterVec
	agentInfo      *prometheus.CounterVec
	serviceStreams *prometheus.CounterVec
	conns          *prometheus.CounterVec   // pooled connections by role, path type, NAT pair
	connTime       *prometheus.HistogramVec // time to connection by path type
	callsRefused   prometheus.Counter
	relaySock      *prometheus.CounterVec // relay socket events (UDP-blocked nodes)
}

func newHostMetrics() *hostMetrics {
	m := &hostMetrics{
		reg: prometheus.NewRegistry(),
		punches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_punch_total",
			Help: "Punch attempts by role, priority, NAT pair (ours->peer's published) and outcome (ok or failure reason)."},
			[]string{"role", "priority", "nat_pair", "outcome"}),
		punchDur: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "a2al_punch_duration_seconds",
			Help: "Duration of successful punches.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 10)}),
		natType: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "a2al_nat_type",
			Help: "1 for the current NAT classification."}, []string{"type"}),
		glare:       prometheus.NewCounter(prometheus.CounterOpts{Name: "a2al_punch_glare_total", Help: "Simultaneous punches resolved by role."}),
		unexpectedB: prometheus.NewCounter(prometheus.CounterOpts{Name: "a2al_modeb_unexpected_total", Help: "Mode B connections refused: identity not expected (e.g. lying hub)."}),
		publishes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "a2al_endpoint_publish_total", Help: "Endpoint records published."}),
		dialsA: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_modea_dial_total",
			Help: "Mode A dials by path and outcome."}, []string{"path", "outcome"}),
		modeARefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_modea_refused_total",
			Help: "Inbound Mode A connections refused or closed by the host: limit, route, not_allowed, idle, other."}, []string{"reason"}),
		routeFrames: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_modea_route_frames_total",
			Help: "Agent-route frames received on inbound Mode A connections, by magic: a2r1, a2r2 or unknown."}, []string{"magic"}),
		agentInfo: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_modea_agent_info_total",
			Help: "AgentInfo topic records received on the agent-route stream, by outcome."}, []string{"outcome"}),
		serviceStreams: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_service_streams_total",
			Help: "Application streams bridged to a local service."}, []string{"service"}),
		callsRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "a2al_calls_refused_total",
			Help: "Incoming hub calls refused by the concurrency or rate limits."}),
	}
	m.conns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_connections_total",
		Help: "Mode B connections established by punching, by role, path type (direct, punched, relayed) and NAT pair."},
		[]string{"role", "path", "nat_pair"})
	m.connTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "a2al_time_to_connection_seconds",
		Help:    "From the start of a punch to the first QUIC bytes exchanged (connection pooled), by path type.",
		Buckets: prometheus.ExponentialBuckets(0.025, 2, 12)}, []string{"path"})
	m.relaySock = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a2al_relay_socket_events_total",
		Help: "Relay socket of a UDP-blocked node: allocated, renewed, stream-lost, failed (one server's attempt)."},
		[]string{"event"})
	m.reg.MustRegister(m.relaySock, m.punches, m.punchDur, m.natType, m.glare, m.unexpectedB, m.publishes, m.dialsA,
		m.modeARefused, m.routeFrames, m.agentInfo, m.serviceStreams, m.conns, m.connTime, m.callsRefused)
	return m
}

// registerNodeMetrics adds DHT counters read from the node at scrape time.
func (h *Host) registerNodeMetrics() {
	stat := func() (s struct{ rx, tx, ok uint64 }) {
		d := h.node.DebugStatsData()
		s.rx, s.tx, s.ok = d.RxPackets, d.TxPackets, d.RPCOK
		return s
	}
	h.m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "a2al_dht_packets_sent_total", Help: "DHT messages sent (UDP and Mode B)."},
			func() float64 { return float64(stat().tx) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "a2al_dht_packets_received_total", Help: "Verified DHT messages received."},
			func() float64 { return float64(stat().rx) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "a2al_dht_rpcs_completed_total", Help: "DHT RPCs completed."},
			func() float64 { return float64(stat().ok) }),
		sentByTransport(func() (tx, modeB uint64) { return stat().tx, h.m.modeBSent.Load() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "a2al_relay_upgrades_total",
			Help: "Relayed Mode B connections replaced by a direct (punched) one."},
			func() float64 { return float64(h.pool.Stats().Upgraded.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "a2al_pool_size", Help: "Mode B pooled connections (live)."},
			func() float64 { return float64(h.pool.Len()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "a2al_ice_unproven_checks_sent_total",
			Help: "ICE connectivity checks sent to addresses not yet proven to be the peer's (budgeted, docs/security.md)."},
			func() float64 { return float64(h.env.guard.sent.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "a2al_ice_unproven_checks_dropped_total",
			Help: "ICE connectivity checks dropped: over the per-session, per-address or global budget."},
			func() float64 { return float64(h.env.guard.dropped.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "a2al_hubs_registered", Help: "Signaling hubs with a live registration."},
			func() float64 { return float64(h.HubsRegistered()) }),
		mappingCollector{h},
	)
}

// Registry exposes the host's metrics (mount with promhttp.HandlerFor).
func (h *Host) Registry() *prometheus.Registry { return h.m.reg }

var sentByTransportDesc = prometheus.NewDesc("a2al_dht_messages_sent_total",
	"DHT messages sent, by transport: modeB (over a punched QUIC connection) or udp (plain datagrams).",
	[]string{"transport"}, nil)

// sentByTransport splits the node's send counter at scrape time: the node
// counts every message, the pool only those it carried.
type sentByTransport func() (tx, modeB uint64)

func (c sentByTransport) Describe(ch chan<- *prometheus.Desc) { ch <- sentByTransportDesc }

func (c sentByTransport) Collect(ch chan<- prometheus.Metric) {
	tx, modeB := c()
	udp := uint64(0)
	if tx > modeB {
		udp = tx - modeB
	}
	ch <- prometheus.MustNewConstMetric(sentByTransportDesc, prometheus.CounterValue, float64(modeB), "modeB")
	ch <- prometheus.MustNewConstMetric(sentByTransportDesc, prometheus.CounterValue, float64(udp), "udp")
}
