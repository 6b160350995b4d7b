// Command signal-hub runs an a2al signaling hub (WebSocket, protocol
// a2al.signal.v2, see docs/signaling.md) together with an RFC 5780 STUN
// server on the same host, so nodes can learn their mapping, classify their
// NAT and exchange ICE candidates with one service.
//
// Every flag has an environment default: A2AL_<FLAG> with dashes as
// underscores, e.g. A2AL_LISTEN=:4122, A2AL_PUBLIC_URL=wss://hub.example/v2/signal.
// Running it with no flags starts a working hub on :4122 and STUN on 3478/3479.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	ossignal "os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/signal"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	ctx, stop := ossignal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(exitCode(run(ctx, os.Args[1:], os.Stderr, nil), os.Stdout, os.Stderr))
}

// configError is a bad flag, variable or file named by one: exit code 2,
// nothing was started.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

func configErrorf(format string, a ...any) error { return &configError{fmt.Errorf(format, a...)} }

// errVersion asks main to print the version (-version).
var errVersion = errors.New("version")

// exitCode reports err as the Go tools do: 0 success or help, 2 bad
// configuration (one line), 1 anything that failed while running.
func exitCode(err error, stdout, stderr io.Writer) int {
	var ce *configError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errVersion):
		fmt.Fprintln(stdout, versionString())
		return 0
	case errors.As(err, &ce):
		fmt.Fprintf(stderr, "signal-hub: %v (see \"signal-hub -h\")\n", err)
		return 2
	}
	fmt.Fprintln(stderr, "signal-hub:", err)
	return 1
}

// versionString is the module version and VCS revision from the build info.
func versionString() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "signal-hub (no build info)"
	}
	out := "signal-hub " + bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" || (s.Key == "vcs.modified" && s.Value == "true") {
			out += " " + strings.TrimPrefix(s.Key+"="+s.Value, "vcs.revision=")
		}
	}
	return out + " " + bi.GoVersion
}

const helpText = `signal-hub runs an a2al signaling hub: nodes behind NATs keep a WebSocket
to it, and it relays the candidate exchange that lets two of them punch a
direct path. It also answers STUN on UDP 3478/3479 so nodes learn their
public address and NAT type. It never carries application traffic.

Usage:
  signal-hub [flags]

Every flag also reads A2AL_<FLAG> (dashes as underscores), e.g.
A2AL_PUBLIC_URL=wss://hub.example.org/v2/signal; the flag wins. Numbers and
durations must be positive unless the flag says 0 is allowed.

Flags:
`

const helpExample = `
Example:
  signal-hub -listen :4122 -public-url wss://hub.example.org/v2/signal \
    -tls-cert /etc/a2al/hub.crt -tls-key /etc/a2al/hub.key
`

// zeroAllowed lists numeric flags for which 0 is meaningful; every other
// numeric flag must be positive.
var zeroAllowed = map[string]bool{"stun-reply-slack": true, "stun-alt-port": true}

type options struct {
	listen, tlsCert, tlsKey     string
	publicURLs                  string
	stunAddr, stunAltIP         string
	stunAltPort, stunSlack      int
	stunRate                    float64
	stunBurst                   int
	stunAdvertise, stunAdvAltIP string
	logLevel, logFormat         string
	version                     bool
	hub                         signal.HubConfig
	turn                        turnOptions
}

// parseFlags reads A2AL_* variables, then args, and checks every value;
// errors are *configError (or flag.ErrHelp after printing help to out).
// To add a flag: one fs.XxxVar line below (numbers must then be positive
// unless listed in zeroAllowed), plus a check in checkOptions if it needs one.
func parseFlags(args []string, out io.Writer) (*options, error) {
	o := &options{hub: signal.DefaultHubConfig()}
	fs := flag.NewFlagSet("signal-hub", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.StringVar(&o.listen, "listen", ":4122", "TCP address for WebSocket signaling, /healthz and /metrics")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "TLS certificate file (PEM); with -tls-key serves wss:// and https://")
	fs.StringVar(&o.tlsKey, "tls-key", "", "TLS private key file (PEM)")
	fs.StringVar(&o.publicURLs, "public-url", "", "comma-separated URLs nodes dial (e.g. wss://hub.example.org/v2/signal); signatures must name one. Empty: accept the Host header form")
	fs.StringVar(&o.stunAddr, "stun-addr", ":3478", `STUN primary UDP address ("off" disables STUN)`)
	fs.IntVar(&o.stunAltPort, "stun-alt-port", 3479, "STUN alternate port (CHANGE-REQUEST change-port; 0 = any free port)")
	fs.StringVar(&o.stunAltIP, "stun-alt-ip", "", "optional second local IP for STUN change-IP (full RFC 5780 behaviour discovery)")
	fs.StringVar(&o.stunAdvertise, "stun-advertise-ip", "", "IP advertised in RESPONSE-ORIGIN/OTHER-ADDRESS (default: the -stun-addr IP, or the outbound interface IP)")
	fs.StringVar(&o.stunAdvAltIP, "stun-advertise-alt-ip", "", "advertised form of -stun-alt-ip (behind a 1:1 NAT)")
	fs.IntVar(&o.stunSlack, "stun-reply-slack", 12, "bytes a STUN reply may exceed its request (12 serves plain 20-byte ICE requests; 0 = no amplification)")
	fs.Float64Var(&o.stunRate, "stun-rate", natprobe.DefaultRatePerSource, "STUN requests answered per second per source IP (negative: no limit)")
	fs.IntVar(&o.stunBurst, "stun-burst", natprobe.DefaultBurstPerSource, "STUN request burst per source IP")
	addTURNFlags(fs, &o.turn)
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	h := &o.hub
	fs.IntVar(&h.MaxConns, "max-conns", h.MaxConns, "total WebSocket connections")
	fs.IntVar(&h.MaxConnsPerIP, "max-conns-per-ip", h.MaxConnsPerIP, "connections per remote IP")
	fs.Int64Var(&h.MaxMessageSize, "max-msg-size", h.MaxMessageSize, "max frame size in bytes (larger closes the connection)")
	fs.Float64Var(&h.MsgRate, "msg-rate", h.MsgRate, "sustained frames per second per connection")
	fs.IntVar(&h.MsgBurst, "msg-burst", h.MsgBurst, "frame burst per connection")
	fs.DurationVar(&h.AuthTimeout, "auth-timeout", h.AuthTimeout, "time to answer the challenge")
	fs.DurationVar(&h.PairTimeout, "pair-timeout", h.PairTimeout, "time for a callee to accept a call")
	fs.DurationVar(&h.SessionLifetime, "session-lifetime", h.SessionLifetime, "maximum session duration")
	fs.IntVar(&h.MaxSessionBytes, "max-session-bytes", h.MaxSessionBytes, "relayed bytes per session")
	fs.IntVar(&h.MaxSessionsPerNode, "max-sessions-per-node", h.MaxSessionsPerNode, "concurrent sessions per node")
	fs.IntVar(&h.MaxSessions, "max-sessions", h.MaxSessions, "concurrent sessions in the hub")
	fs.DurationVar(&h.PingInterval, "ping-interval", h.PingInterval, "WebSocket ping period")
	fs.DurationVar(&h.IdleTimeout, "idle-timeout", h.IdleTimeout, "close connections silent for this long")
	fs.IntVar(&h.SendQueue, "send-queue", h.SendQueue, "frames queued per connection (must exceed msg-burst + 2*max-sessions-per-node + 8)")
	fs.IntVar(&h.MaxPending, "max-pending", h.MaxPending, "TCP connections not yet upgraded to WebSocket, total")
	fs.IntVar(&h.MaxPendingPerIP, "max-pending-per-ip", h.MaxPendingPerIP, "TCP connections not yet upgraded, per remote IP")
	fs.DurationVar(&h.HandshakeTimeout, "handshake-timeout", h.HandshakeTimeout, "time from TCP accept to WebSocket upgrade")
	fs.Float64Var(&h.CalleeCallRate, "callee-call-rate", h.CalleeCallRate, "calls per second rung through to one node")
	fs.IntVar(&h.CalleeCallBurst, "callee-call-burst", h.CalleeCallBurst, "call burst to one node")
	fs.Float64Var(&h.SourceCallRate, "source-call-rate", h.SourceCallRate, "calls per second to one node from one caller IP")
	fs.IntVar(&h.SourceCallBurst, "source-call-burst", h.SourceCallBurst, "call burst to one node from one caller IP")
	fs.IntVar(&h.MaxSessionsPerSource, "max-sessions-per-source", h.MaxSessionsPerSource, "concurrent sessions between one node and callers at one IP")
	fs.Float64Var(&h.ReplyRate, "reply-rate", h.ReplyRate, "frames per second a callee may send in sessions others opened")
	fs.IntVar(&h.ReplyBurst, "reply-burst", h.ReplyBurst, "burst of those frames")

	fs.VisitAll(func(f *flag.Flag) { f.Value = described{f.Value.(flag.Getter)} })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := "A2AL_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && envErr == nil && f.Name != "version" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = configErrorf("invalid value %q for %s (-%s): %v", v, name, f.Name, err)
			} else if err := checkNumber(f); err != nil {
				envErr = configErrorf("invalid value %q for %s (-%s): %v", v, name, f.Name, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(out, helpText)
			fs.SetOutput(out)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
			fmt.Fprint(out, helpExample)
			return nil, err
		}
		return nil, configErrorf("%v", err)
	}
	if o.version {
		return nil, errVersion
	}
	var bad error
	fs.Visit(func(f *flag.Flag) {
		if err := checkNumber(f); err != nil && bad == nil {
			bad = configErrorf("invalid value %q for -%s: %v", f.Value.String(), f.Name, err)
		}
	})
	if bad != nil {
		return nil, bad
	}
	if fs.NArg() > 0 {
		return nil, configErrorf("unexpected arguments %q: signal-hub takes only flags", fs.Args())
	}
	for _, u := range strings.Split(o.publicURLs, ",") {
		if u = strings.TrimSpace(u); u != "" {
			h.PublicURLs = append(h.PublicURLs, u)
		}
	}
	if err := checkOptions(o); err != nil {
		return nil, &configError{err}
	}
	return o, nil
}

// described replaces the flag package's "parse error" with what is accepted.
type described struct{ flag.Getter }

func (d described) Set(v string) error {
	if err := d.Getter.Set(v); err != nil {
		switch d.Get().(type) {
		case int, int64:
			return errors.New("want a whole number")
		case float64:
			return errors.New("want a number")
		case time.Duration:
			return errors.New("want a duration such as 30s or 2m")
		case bool:
			return errors.New("want true or false")
		}
		return err
	}
	return nil
}

func (d described) IsBoolFlag() bool {
	b, ok := d.Getter.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// checkNumber refuses a numeric flag value that is not positive (or
// negative, for the flags in zeroAllowed).
func checkNumber(f *flag.Flag) error {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return nil
	}
	var v float64
	switch x := g.Get().(type) {
	case int:
		v = float64(x)
	case int64:
		v = float64(x)
	case float64:
		v = x
	case time.Duration:
		v = float64(x)
	default:
		return nil
	}
	switch {
	case zeroAllowed[f.Name] && v < 0:
		return errors.New("want 0 or more")
	case !zeroAllowed[f.Name] && v <= 0:
		return errors.New("want a value above 0")
	}
	return nil
}

// checkOptions checks the values that are not plain numbers: addresses,
// URLs, TLS files (loaded here, so a bad file is refused before listening).
func checkOptions(o *options) error {
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return errors.New("-tls-cert and -tls-key go together")
	}
	if o.tlsCert != "" {
		if _, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey); err != nil {
			return fmt.Errorf("-tls-cert %q / -tls-key %q: %w", o.tlsCert, o.tlsKey, err)
		}
	}
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return fmt.Errorf("-listen %q: want host:port or :port", o.listen)
	}
	if o.stunAddr != "off" && o.stunAddr != "" {
		if _, _, err := net.SplitHostPort(o.stunAddr); err != nil {
			return fmt.Errorf(`-stun-addr %q: want host:port, :port or "off"`, o.stunAddr)
		}
	}
	if o.stunAltPort > 65535 {
		return fmt.Errorf("-stun-alt-port %d: want 0-65535", o.stunAltPort)
	}
	for name, ip := range map[string]string{"stun-alt-ip": o.stunAltIP, "stun-advertise-ip": o.stunAdvertise, "stun-advertise-alt-ip": o.stunAdvAltIP} {
		if ip != "" && net.ParseIP(ip) == nil {
			return fmt.Errorf("-%s %q: want an IP address", name, ip)
		}
	}
	for _, u := range o.hub.PublicURLs {
		if _, err := signal.CanonicalURL(u); err != nil {
			return fmt.Errorf("-public-url %q: %w", u, err)
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("-log-level %q: want debug, info, warn or error", o.logLevel)
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return fmt.Errorf("-log-format %q: want text or json", o.logFormat)
	}
	return nil
}

func newLogger(o *options, out io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("-log-level %q: %w", o.logLevel, err)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(out, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(out, hopts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want text or json", o.logFormat)
}

// outboundIP is the local address the kernel would use towards the public
// internet (no packet is sent); it is what a wildcard STUN socket should advertise.
func outboundIP() net.IP {
	c, err := net.Dial("udp4", "192.0.2.1:9")
	if err != nil {
		return nil
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP
}

func startSTUN(o *options, log *slog.Logger) (*natprobe.Server, error) {
	if o.stunAddr == "off" || o.stunAddr == "" {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(o.stunAddr)
	if err != nil {
		return nil, fmt.Errorf("-stun-addr %q: %w", o.stunAddr, err)
	}
	cfg := natprobe.ServerConfig{Addr: o.stunAddr, AltPort: o.stunAltPort, AltIP: o.stunAltIP, ReplySlack: o.stunSlack,
		RatePerSource: o.stunRate, BurstPerSource: o.stunBurst, DisableRateLimit: o.stunRate < 0, Logger: log}
	if o.stunAdvertise != "" {
		if cfg.AdvertiseIP = net.ParseIP(o.stunAdvertise); cfg.AdvertiseIP == nil {
			return nil, fmt.Errorf("-stun-advertise-ip %q is not an IP", o.stunAdvertise)
		}
	} else if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		cfg.AdvertiseIP = outboundIP()
	}
	if o.stunAdvAltIP != "" {
		if cfg.AdvertiseAltIP = net.ParseIP(o.stunAdvAltIP); cfg.AdvertiseAltIP == nil {
			return nil, fmt.Errorf("-stun-advertise-alt-ip %q is not an IP", o.stunAdvAltIP)
		}
	}
	s, err := natprobe.NewServer(cfg)
	if err != nil {
		return nil, fmt.Errorf("stun server: %w", err)
	}
	return s, nil
}

// stunCollector exports natprobe server counters.
func stunCollector(s *natprobe.Server) []prometheus.Collector {
	c := func(name, help string, f func(natprobe.ServerStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "a2al_stun_" + name, Help: help},
			func() float64 { return float64(f(s.Stats())) })
	}
	return []prometheus.Collector{
		c("requests_total", "Well-formed STUN Binding requests.", func(st natprobe.ServerStats) uint64 { return st.Requests }),
		c("responses_total", "STUN replies sent.", func(st natprobe.ServerStats) uint64 { return st.Responses }),
		c("malformed_total", "Undecodable packets dropped.", func(st natprobe.ServerStats) uint64 { return st.Malformed }),
		c("change_requests_total", "Requests with CHANGE-REQUEST flags.", func(st natprobe.ServerStats) uint64 { return st.ChangeRequests }),
		c("dropped_amplification_total", "Requests too small for a reply within the slack.", func(st natprobe.ServerStats) uint64 { return st.DroppedAmplify }),
		c("rate_limited_total", "Packets dropped by the per-source rate limit.", func(st natprobe.ServerStats) uint64 { return st.RateLimited }),
	}
}

// run starts everything and blocks until ctx ends; ready (tests) receives the
// bound HTTP address.
func run(ctx context.Context, args []string, logOut io.Writer, ready chan<- string) error {
	o, err := parseFlags(args, os.Stdout)
	if err != nil {
		return err
	}
	log, err := newLogger(o, logOut)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	o.hub.Registerer = reg
	o.hub.Logger = log
	turnSrv, err := startTURN(o, log, reg)
	if err != nil {
		return err
	}
	if turnSrv != nil {
		defer turnSrv.Close()
		o.hub.TURN = turnSrv.Auth()
	}
	hub, err := signal.NewHub(o.hub)
	if err != nil {
		return &configError{err} // limits that contradict each other
	}
	defer hub.Close()

	stun, err := startSTUN(o, log)
	if err != nil {
		return err
	}
	if stun != nil {
		defer stun.Close()
		reg.MustRegister(stunCollector(stun)...)
	}

	mux := http.NewServeMux()
	mux.Handle("/", hub.Handler())
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		st := hub.Stats()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"status": "ok", "connections": st.Connections, "registered": st.Registered, "sessions": st.Sessions})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", o.listen, err)
	}
	ln = hub.Listener(ln) // connection limits and handshake timeout from accept on
	scheme := "ws"
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			ln.Close()
			return &configError{fmt.Errorf("-tls-cert %q / -tls-key %q: %w", o.tlsCert, o.tlsKey, err)}
		}
		scheme = "wss"
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	attrs := []any{"signal", fmt.Sprintf("%s://%s%s", scheme, ln.Addr(), signal.SignalPath), "subprotocol", signal.Subprotocol,
		"health", "/healthz", "metrics", "/metrics"}
	if stun != nil {
		attrs = append(attrs, "stun", stun.Addr().String(), "stun_other", stun.AltAddr().String(), "stun_change_ip", stun.HasAltIP())
	} else {
		attrs = append(attrs, "stun", "off")
	}
	if turnSrv != nil {
		attrs = append(attrs, "turn", strings.Join(turnSrv.Auth().URLs(), " "))
	} else {
		attrs = append(attrs, "turn", "off")
	}
	log.Info("signal-hub listening", attrs...)
	if len(o.hub.PublicURLs) == 0 {
		log.Warn("no -public-url set: accepting signatures for the Host header form; set it in production so signatures made for another hub are refused")
	}
	if ready != nil {
		ready <- ln.Addr().String()
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("http server: %w", err)
	}
	log.Info("signal-hub shutting down")
	hub.Close() // closes WebSockets (hijacked, so Shutdown does not see them)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}
