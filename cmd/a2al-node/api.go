package main

// The local control API of "a2al-node run": a few JSON endpoints next to
// /debug/* and /metrics on --debug-addr, so scripts, dashboards and the NAT
// labs can ask a running node what it sees and make it dial a peer without
// linking the Go packages.
//
// It is unauthenticated and can make the node open connections, so it is
// meant for the loopback interface only: run warns when --debug-addr is not
// a loopback address, every request carrying a browser Origin header is
// refused (a web page must not drive a local node through the browser), and
// every route refuses a Host header that is not a loopback name or address
// (a DNS-rebinding page reaches 127.0.0.1 under its own host name).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/host"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const (
	apiDefaultTimeout = 30 * time.Second
	apiMaxTimeout     = 2 * time.Minute
	apiMaxKept        = 64 // connections kept open by dial?keep=1
	apiMaxInflight    = 16 // concurrent dial/punch/findnode requests
)

// apiUsage documents the endpoints (printed by "a2al-node run -h").
const apiUsage = `Control API (on --debug-addr, JSON; keep it on loopback, it is unauthenticated):
  GET  /api/status                      address, NAT type and mapped address, hubs (and why
                                        one is down), live and total routing peers, pool,
                                        DHT counters (a2al-node status prints it)
  GET  /healthz                         200 once joined, else 503
  GET  /metrics                         Prometheus: node, Go runtime and process metrics
  GET  /debug/host, /debug/routing, /debug/store, /debug/stats
  GET  /api/punches[?peer=ADDR]         recent hole-punch outcomes
  GET  /api/resolve?addr=ADDR[&timeout=10s]
                                        look ADDR's endpoint record up in the DHT
  POST /api/dial?addr=ADDR[&timeout=30s][&keep=1]
                                        Mode A dial (resolve, direct, else punch via a hub);
                                        keep=1 holds the connection open (see /api/conns)
  POST /api/punch?addr=ADDR[&timeout=30s]
                                        make sure a Mode B (DHT) connection to ADDR exists
  POST /api/findnode?addr=ADDR[&target=HEX]
                                        one FIND_NODE RPC to ADDR (over its Mode B connection
                                        when one is pooled, else UDP to its endpoint record)
  GET  /api/conns                       connections kept by dial?keep=1 and whether they live
  POST /api/close?addr=ADDR             close a kept connection
`

// api serves the control endpoints for one host. Close releases kept
// connections; it must be called before the host closes.
type api struct {
	h     *host.Host
	log   *slog.Logger
	start time.Time
	sem   chan struct{}

	mu       sync.Mutex
	kept     map[a2al.Address]*keptConn
	closed   bool
	inflight int           // running dial/punch/findnode/resolve handlers
	drained  chan struct{} // closed when inflight drops to 0 after Close
}

type keptConn struct {
	c     *host.Conn
	since time.Time
	path  string
}

func newAPI(h *host.Host, log *slog.Logger) *api {
	return &api{h: h, log: log, start: time.Now(), sem: make(chan struct{}, apiMaxInflight), kept: map[a2al.Address]*keptConn{}}
}

// handler serves everything on --debug-addr: /api/*, /healthz, /metrics
// (host metrics plus Go runtime and process collectors) and /debug/*.
func (a *api) handler(mon *monitor) http.Handler {
	mux := http.NewServeMux()
	a.mount(mux)
	mux.Handle("/debug/", a.h.DebugHandler())
	rt := prometheus.NewRegistry()
	rt.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{a.h.Registry(), rt}, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		st := a.h.Status()
		v := HealthView{Status: "ok", LivePeers: st.LivePeers, HubsRegistered: st.HubsRegistered, Hubs: st.Hubs}
		w.Header().Set("Content-Type", "application/json")
		if !mon.ready.Load() {
			v.Status = "starting"
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(v)
	})
	return mux
}

// HealthView is GET /healthz: 200 with status "ok" once the node has joined
// the DHT (has a live routing peer; a first node with no seeds at once),
// else 503 with status "starting".
type HealthView struct {
	Status         string `json:"status"`
	LivePeers      int    `json:"live_peers"`
	HubsRegistered int    `json:"hubs_registered"`
	Hubs           int    `json:"hubs"`
}

// localOnly refuses requests whose Host header is not a loopback name or
// address (403), on every route.
func localOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackHost(r.Host) {
			apiError(w, http.StatusForbidden, "forbidden", "Host header must name the loopback interface (localhost, 127.0.0.1 or ::1): the control API is for local tools")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// loopbackHost reports whether an HTTP Host header ("name[:port]") names
// this machine's loopback interface.
func loopbackHost(hostport string) bool {
	h := hostport
	if sh, _, err := net.SplitHostPort(hostport); err == nil {
		h = sh
	}
	h = strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.Unmap().IsLoopback()
}

// mount registers the /api/ routes on mux.
func (a *api) mount(mux *http.ServeMux) {
	mux.Handle("/api/status", a.only(http.MethodGet, a.status))
	mux.Handle("/api/punches", a.only(http.MethodGet, a.punches))
	mux.Handle("/api/resolve", a.only(http.MethodGet, a.limited(a.resolve)))
	mux.Handle("/api/conns", a.only(http.MethodGet, a.conns))
	mux.Handle("/api/dial", a.only(http.MethodPost, a.limited(a.dial)))
	mux.Handle("/api/punch", a.only(http.MethodPost, a.limited(a.punch)))
	mux.Handle("/api/findnode", a.only(http.MethodPost, a.limited(a.findNode)))
	mux.Handle("/api/close", a.only(http.MethodPost, a.closeConn))
	mux.Handle("/api/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, "not-found", fmt.Sprintf("no endpoint %s; see a2al-node run -h", r.URL.Path))
	}))
}

// Close waits (bounded) for running dial/punch/findnode requests, whose
// contexts end when the HTTP server closes, then closes kept connections.
func (a *api) Close() {
	a.mu.Lock()
	a.closed = true
	var drained chan struct{}
	if a.inflight > 0 {
		a.drained = make(chan struct{})
		drained = a.drained
	}
	a.mu.Unlock()
	if drained != nil {
		select {
		case <-drained:
		case <-time.After(15 * time.Second):
			a.log.Warn("control API: requests still running at shutdown")
		}
	}
	a.mu.Lock()
	kept := a.kept
	a.kept = map[a2al.Address]*keptConn{}
	a.mu.Unlock()
	for _, k := range kept {
		_ = k.c.Close()
	}
}

// warnIfExposed logs when the listener is reachable from other machines.
func warnIfExposed(log *slog.Logger, addr net.Addr) {
	if ta, ok := addr.(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		log.Warn("debug address is not loopback: /api/ (unauthenticated, can dial peers), /debug/ and /metrics are reachable from the network; use 127.0.0.1 unless a firewall shields it", "addr", addr.String())
	}
}

type apiErr struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(apiErr{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// only enforces the method and refuses browser-originated requests.
func (a *api) only(method string, f http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") != "" {
			apiError(w, http.StatusForbidden, "forbidden", "cross-origin requests are refused: the control API is for local tools, not web pages")
			return
		}
		if r.Method != method {
			w.Header().Set("Allow", method)
			apiError(w, http.StatusMethodNotAllowed, "method", fmt.Sprintf("%s needs %s", r.URL.Path, method))
			return
		}
		f(w, r)
	})
}

// limited bounds the number of concurrent long-running requests.
func (a *api) limited(f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case a.sem <- struct{}{}:
		default:
			apiError(w, http.StatusTooManyRequests, "busy", fmt.Sprintf("%d requests already running", apiMaxInflight))
			return
		}
		defer func() { <-a.sem }()
		a.mu.Lock()
		if a.closed {
			a.mu.Unlock()
			apiError(w, http.StatusServiceUnavailable, "closed", "the node is shutting down")
			return
		}
		a.inflight++
		a.mu.Unlock()
		defer func() {
			a.mu.Lock()
			a.inflight--
			if a.inflight == 0 && a.drained != nil {
				close(a.drained)
				a.drained = nil
			}
			a.mu.Unlock()
		}()
		f(w, r)
	}
}

// peerParam parses ?addr= (the a2al address text).
func peerParam(w http.ResponseWriter, r *http.Request) (a2al.Address, bool) {
	s := r.URL.Query().Get("addr")
	if s == "" {
		apiError(w, http.StatusBadRequest, "bad-request", "missing ?addr=<a2al address>")
		return a2al.Address{}, false
	}
	addr, err := a2al.ParseAddress(s)
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad-request", fmt.Sprintf("addr: %v", err))
		return a2al.Address{}, false
	}
	return addr, true
}

// timeoutParam parses ?timeout= (default 30 s, at most 2 min).
func timeoutParam(w http.ResponseWriter, r *http.Request) (time.Duration, bool) {
	s := r.URL.Query().Get("timeout")
	if s == "" {
		return apiDefaultTimeout, true
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > apiMaxTimeout {
		apiError(w, http.StatusBadRequest, "bad-request", fmt.Sprintf("timeout %q: want a duration in (0, %v]", s, apiMaxTimeout))
		return 0, false
	}
	return d, true
}

// StatusView is GET /api/status.
type StatusView struct {
	Address      string          `json:"address"`
	Local        string          `json:"local"`
	UptimeS      int64           `json:"uptime_s"`
	NAT          NATView         `json:"nat"`
	Hubs         HubsView        `json:"hubs"`
	RoutingPeers int             `json:"routing_peers"`
	LivePeers    int             `json:"live_peers"`
	NetworkSize  int             `json:"network_size_estimate"`
	Pool         PoolView        `json:"pool"`
	DHT          DHTView         `json:"dht"`
	Published    PublishedView   `json:"published"`
	Kept         int             `json:"kept_conns"`
	Scheduler    host.SchedStats `json:"scheduler"`
}

// NATView is the node's own NAT classification.
type NATView struct {
	Known  bool   `json:"known"`
	Type   string `json:"type"`
	Mapped string `json:"mapped,omitempty"`
	// Relay is the TURN server (credential-free URL) the socket runs over
	// when UDP is blocked; Mapped is then the relayed address.
	Relay string `json:"relay,omitempty"`
}

// HubsView counts signaling hubs and says, per hub, why it is down.
type HubsView struct {
	Registered int             `json:"registered"`
	Configured int             `json:"configured"`
	List       []host.HubState `json:"list"`
}

// PoolView is the Mode B pool: live connections and cumulative traffic.
type PoolView struct {
	Size          int                  `json:"size"`
	Peers         []host.PoolEntryInfo `json:"peers"`
	SentDatagrams uint64               `json:"sent_datagrams"`
	SentStreams   uint64               `json:"sent_streams"`
	RecvDatagrams uint64               `json:"recv_datagrams"`
	RecvStreams   uint64               `json:"recv_streams"`
	QueueDrops    uint64               `json:"queue_drops"`
	SendErrors    uint64               `json:"send_errors"`
}

// DHTView are the DHT's cumulative message counters.
type DHTView struct {
	TxPackets uint64 `json:"tx_packets"`
	RxPackets uint64 `json:"rx_packets"`
	RPCsOK    uint64 `json:"rpcs_completed"`
}

// PublishedView is the last endpoint record publication.
type PublishedView struct {
	Seq uint64    `json:"seq"`
	At  time.Time `json:"at"`
}

func (a *api) statusView() StatusView {
	st := a.h.Status()
	nr, known := a.h.NATResult()
	v := StatusView{
		Address: st.Address, Local: st.Local, UptimeS: int64(time.Since(a.start).Seconds()),
		NAT:          NATView{Known: known, Type: st.NAT, Mapped: st.Public, Relay: st.RelaySocket},
		Hubs:         HubsView{Registered: st.HubsRegistered, Configured: st.Hubs, List: st.HubStates},
		RoutingPeers: st.RoutingPeers, LivePeers: st.LivePeers, NetworkSize: st.NetworkSize,
		Published: PublishedView{Seq: st.Seq, At: st.Published}, Scheduler: st.Sched,
	}
	if known {
		v.NAT.Type = string(nr.Type)
	}
	ps := a.h.Pool().Stats()
	v.Pool = PoolView{
		Size: len(st.Pool), Peers: st.Pool,
		SentDatagrams: ps.SentDatagrams.Load(), SentStreams: ps.SentStreams.Load(),
		RecvDatagrams: ps.RecvDatagrams.Load(), RecvStreams: ps.RecvStreams.Load(),
		QueueDrops: ps.QueueDrops.Load(), SendErrors: ps.SendErrors.Load(),
	}
	if v.Pool.Peers == nil {
		v.Pool.Peers = []host.PoolEntryInfo{}
	}
	d := a.h.Node().DebugStatsData()
	v.DHT = DHTView{TxPackets: d.TxPackets, RxPackets: d.RxPackets, RPCsOK: d.RPCOK}
	a.mu.Lock()
	v.Kept = len(a.kept)
	a.mu.Unlock()
	return v
}

func (a *api) status(w http.ResponseWriter, _ *http.Request) { writeJSON(w, a.statusView()) }

func (a *api) punches(w http.ResponseWriter, r *http.Request) {
	ps := a.h.Punches()
	if p := r.URL.Query().Get("peer"); p != "" {
		addr, err := a2al.ParseAddress(p)
		if err != nil {
			apiError(w, http.StatusBadRequest, "bad-request", fmt.Sprintf("peer: %v", err))
			return
		}
		want := addr.String()
		out := ps[:0]
		for _, rec := range ps {
			if rec.Peer == want {
				out = append(out, rec)
			}
		}
		ps = out
	}
	if ps == nil {
		ps = []host.PunchRecord{}
	}
	writeJSON(w, ps)
}

// DialResult is POST /api/dial. The HTTP status is 200 whenever the request
// was valid; OK says whether the peer was reached, Reason why not.
type DialResult struct {
	OK     bool   `json:"ok"`
	Peer   string `json:"peer"`
	Path   string `json:"path,omitempty"` // direct | punched | relayed
	Remote string `json:"remote,omitempty"`
	TookMS int64  `json:"took_ms"`
	// Punch is the hole punch this dial ran or waited for, if any.
	Punch *PunchView `json:"punch,omitempty"`
	Kept  bool       `json:"kept,omitempty"`
	// Reason is a stable failure code: no-endpoint-record, unreachable,
	// punch-failed, no-hub (a punch was needed but this node has no live
	// hub connection), udp-blocked (this node cannot use UDP at all),
	// timeout, self, closed or error.
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
}

// PunchView summarises one punch record.
type PunchView struct {
	OK         bool   `json:"ok"`
	Role       string `json:"role"`
	TookMS     int64  `json:"took_ms"`
	Candidates string `json:"candidates,omitempty"` // local->remote ICE candidate types
	Remote     string `json:"remote,omitempty"`
	Reason     string `json:"reason,omitempty"`
	NATPair    string `json:"nat_pair,omitempty"`
}

func punchView(p host.PunchRecord) *PunchView {
	return &PunchView{OK: p.OK, Role: p.Role, TookMS: p.Duration.Milliseconds(), Candidates: p.Path,
		Remote: p.Remote, Reason: p.Reason, NATPair: p.NATPair}
}

// lastPunch is the newest settled punch with peer that finished after since.
func (a *api) lastPunch(peer a2al.Address, since time.Time) (host.PunchRecord, bool) {
	want := peer.String()
	ps := a.h.Punches()
	for i := len(ps) - 1; i >= 0; i-- {
		p := ps[i]
		if p.Peer == want && !p.At.Before(since) && p.Reason != "superseded" {
			return p, true
		}
	}
	return host.PunchRecord{}, false
}

// dialReason maps a dial error to a stable code through the host's typed
// errors (the error text is reported as is, never parsed).
func dialReason(err error) string {
	switch {
	case errors.Is(err, host.ErrSelf):
		return "self"
	case errors.Is(err, host.ErrClosed):
		return "closed"
	case errors.Is(err, host.ErrNoHub):
		return "no-hub"
	case errors.Is(err, host.ErrNoEndpointRecord):
		return "no-endpoint-record"
	case errors.Is(err, host.ErrPunchFailed), errors.Is(err, signal.ErrNoAgent):
		return "punch-failed"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, host.ErrNoRoute):
		return "unreachable"
	}
	return "error"
}

func (a *api) dial(w http.ResponseWriter, r *http.Request) {
	peer, ok := peerParam(w, r)
	if !ok {
		return
	}
	timeout, ok := timeoutParam(w, r)
	if !ok {
		return
	}
	keep := r.URL.Query().Get("keep")
	keepIt := keep == "1" || keep == "true"
	if keepIt {
		a.mu.Lock()
		full := len(a.kept) >= apiMaxKept && a.kept[peer] == nil
		a.mu.Unlock()
		if full {
			apiError(w, http.StatusTooManyRequests, "busy", fmt.Sprintf("already keeping %d connections; close one first", apiMaxKept))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	start := time.Now()
	c, err := a.h.Dial(ctx, peer)
	res := DialResult{OK: err == nil, Peer: peer.String(), TookMS: time.Since(start).Milliseconds()}
	p, punched := a.lastPunch(peer, start)
	if punched {
		res.Punch = punchView(p)
	}
	if err != nil {
		res.Error, res.Reason = err.Error(), dialReason(err)
		a.explain(&res)
		writeJSON(w, res)
		return
	}
	res.Path, res.Remote = c.Path, c.RemoteAddr().String()
	if !keepIt {
		_ = c.Close()
		writeJSON(w, res)
		return
	}
	a.mu.Lock()
	var old *keptConn
	if !a.closed {
		old = a.kept[peer]
		a.kept[peer] = &keptConn{c: c, since: time.Now(), path: c.Path}
		res.Kept = true
	}
	a.mu.Unlock()
	if old != nil {
		_ = old.c.Close()
	}
	if !res.Kept {
		_ = c.Close()
	}
	writeJSON(w, res)
}

// explain replaces a failure code with the local condition that caused it
// when the node knows one: it cannot use UDP at all. (No live hub is reported
// by the host itself, as host.ErrNoHub.)
func (a *api) explain(res *DialResult) {
	switch res.Reason {
	case "self", "closed":
		return
	}
	if _, _, relayed := a.h.RelaySocket(); relayed {
		return // UDP is blocked but the node works through its relay socket
	}
	if nr, ok := a.h.NATResult(); ok && nr.Type == natprobe.TypeUDPBlocked {
		res.Reason = "udp-blocked"
		res.Error = "this node's UDP is blocked (NAT classification udp-blocked), so it cannot reach the DHT or punch; " + res.Error
	}
}

func (a *api) punch(w http.ResponseWriter, r *http.Request) {
	peer, ok := peerParam(w, r)
	if !ok {
		return
	}
	timeout, ok := timeoutParam(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	start := time.Now()
	p, err := a.h.PunchPeer(ctx, peer)
	res := DialResult{OK: err == nil, Peer: peer.String(), TookMS: time.Since(start).Milliseconds()}
	if p.Peer != "" {
		res.Punch = punchView(p)
		res.Remote = p.Remote
	}
	if err != nil {
		res.Error = err.Error()
		res.Reason = dialReason(err)
		a.explain(&res)
	}
	writeJSON(w, res)
}

// RecordView is GET /api/resolve: the peer's signed endpoint record.
type RecordView struct {
	OK        bool      `json:"ok"`
	Address   string    `json:"address"`
	Seq       uint64    `json:"seq,omitempty"`
	Published time.Time `json:"published,omitempty"`
	TTL       uint32    `json:"ttl,omitempty"`
	NAT       string    `json:"nat,omitempty"`
	Endpoints []string  `json:"endpoints,omitempty"`
	Hubs      []string  `json:"hubs,omitempty"`
	Turns     []string  `json:"turns,omitempty"` // relay hints (docs/relay.md)
	TookMS    int64     `json:"took_ms"`
	Reason    string    `json:"reason,omitempty"`
	Error     string    `json:"error,omitempty"`
}

func (a *api) resolve(w http.ResponseWriter, r *http.Request) {
	peer, ok := peerParam(w, r)
	if !ok {
		return
	}
	timeout := 10 * time.Second
	if r.URL.Query().Get("timeout") != "" {
		if timeout, ok = timeoutParam(w, r); !ok {
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	start := time.Now()
	er, err := resolve(ctx, a.h, peer)
	v := RecordView{Address: peer.String(), TookMS: time.Since(start).Milliseconds()}
	if err != nil {
		v.Error, v.Reason = err.Error(), dialReason(err)
		writeJSON(w, v)
		return
	}
	v.OK, v.Seq, v.TTL, v.NAT = true, er.Seq, er.TTL, natName(er.NatType)
	v.Published = time.Unix(int64(er.Timestamp), 0).UTC()
	v.Endpoints, v.Hubs, v.Turns = er.Endpoints, er.Signals, er.Turns
	if len(v.Hubs) == 0 && er.Signal != "" {
		v.Hubs = []string{er.Signal}
	}
	writeJSON(w, v)
}

// FindNodeResult is POST /api/findnode.
type FindNodeResult struct {
	OK        bool   `json:"ok"`
	Peer      string `json:"peer"`
	Remote    string `json:"remote,omitempty"`
	Transport string `json:"transport,omitempty"` // modeB (pooled connection) | udp
	Contacts  int    `json:"contacts"`
	TookMS    int64  `json:"took_ms"`
	Error     string `json:"error,omitempty"`
}

// peerNetAddr finds where to reach peer: its pooled Mode B connection, else
// the first usable endpoint of its locally known endpoint record.
func (a *api) peerNetAddr(peer a2al.Address) (net.Addr, string, error) {
	id := a2al.NodeIDFromAddress(peer)
	if _, remote, ok := a.h.Pool().Lookup(id); ok {
		a.h.Node().BindPeerAddr(id, remote)
		return remote, "modeB", nil
	}
	var to *net.UDPAddr
	a.h.Node().LocalEndpointRecord(id, func(er *protocol.EndpointRecord) bool {
		for _, ep := range er.Endpoints {
			if ua, err := endpointUDPAddr(ep); err == nil {
				to = ua
				return true
			}
		}
		return false
	})
	if to != nil {
		return to, "udp", nil
	}
	return nil, "", errors.New("no Mode B connection and no known endpoint record for this peer; dial or punch it first")
}

// endpointUDPAddr parses an endpoint URL ("quic://ip:port"; a bare
// "ip:port" is taken as quic); names are not resolved (records carry
// addresses).
func endpointUDPAddr(ep string) (*net.UDPAddr, error) {
	if !strings.Contains(ep, "://") {
		ep = "quic://" + ep
	}
	host, port, err := protocol.ParseEndpointURL(ep)
	if err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: host is not an IP address: %w", ep, err)
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port)), nil
}

func (a *api) findNode(w http.ResponseWriter, r *http.Request) {
	peer, ok := peerParam(w, r)
	if !ok {
		return
	}
	var target a2al.NodeID
	if s := r.URL.Query().Get("target"); s != "" {
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != len(target) {
			apiError(w, http.StatusBadRequest, "bad-request", fmt.Sprintf("target: want %d hex bytes", len(target)))
			return
		}
		copy(target[:], b)
	} else if _, err := rand.Read(target[:]); err != nil {
		apiError(w, http.StatusInternalServerError, "error", fmt.Sprintf("random target: %v", err))
		return
	}
	res := FindNodeResult{Peer: peer.String()}
	to, transport, err := a.peerNetAddr(peer)
	if err != nil {
		res.Error = err.Error()
		writeJSON(w, res)
		return
	}
	res.Remote, res.Transport = to.String(), transport
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	nodes, err := a.h.Node().FindNode(ctx, to, target)
	res.TookMS = time.Since(start).Milliseconds()
	if err != nil {
		res.Error = err.Error()
	} else {
		res.OK, res.Contacts = true, len(nodes)
	}
	writeJSON(w, res)
}

// KeptView is one entry of GET /api/conns.
type KeptView struct {
	Peer   string    `json:"peer"`
	Path   string    `json:"path"`
	Remote string    `json:"remote"`
	Since  time.Time `json:"since"`
	Alive  bool      `json:"alive"`
	Error  string    `json:"error,omitempty"` // why it closed
}

func (a *api) conns(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	out := make([]KeptView, 0, len(a.kept))
	for peer, k := range a.kept {
		v := KeptView{Peer: peer.String(), Path: k.path, Remote: k.c.RemoteAddr().String(), Since: k.since,
			Alive: k.c.Context().Err() == nil}
		if err := context.Cause(k.c.Context()); err != nil {
			v.Error = err.Error()
		}
		out = append(out, v)
	}
	a.mu.Unlock()
	writeJSON(w, out)
}

func (a *api) closeConn(w http.ResponseWriter, r *http.Request) {
	peer, ok := peerParam(w, r)
	if !ok {
		return
	}
	a.mu.Lock()
	k := a.kept[peer]
	delete(a.kept, peer)
	a.mu.Unlock()
	if k == nil {
		apiError(w, http.StatusNotFound, "not-found", "no kept connection to "+peer.String())
		return
	}
	_ = k.c.Close()
	writeJSON(w, map[string]any{"ok": true, "peer": peer.String()})
}
