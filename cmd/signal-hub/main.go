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
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "signal-hub:", err)
		os.Exit(1)
	}
}

type options struct {
	listen, tlsCert, tlsKey     string
	publicURLs                  string
	stunAddr, stunAltIP         string
	stunAltPort, stunSlack      int
	stunAdvertise, stunAdvAltIP string
	logLevel, logFormat         string
	hub                         signal.HubConfig
}

func parseFlags(args []string, out io.Writer) (*options, error) {
	o := &options{hub: signal.DefaultHubConfig()}
	fs := flag.NewFlagSet("signal-hub", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.listen, "listen", ":4122", "TCP address for WebSocket signaling, /healthz and /metrics")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "TLS certificate file (PEM); with -tls-key serves wss:// and https://")
	fs.StringVar(&o.tlsKey, "tls-key", "", "TLS private key file (PEM)")
	fs.StringVar(&o.publicURLs, "public-url", "", "comma-separated URLs nodes dial (e.g. wss://hub.example.org/v2/signal); signatures must name one. Empty: accept the Host header form")
	fs.StringVar(&o.stunAddr, "stun-addr", ":3478", `STUN primary UDP address ("off" disables STUN)`)
	fs.IntVar(&o.stunAltPort, "stun-alt-port", 3479, "STUN alternate port (CHANGE-REQUEST change-port)")
	fs.StringVar(&o.stunAltIP, "stun-alt-ip", "", "optional second local IP for STUN change-IP (full RFC 5780 behaviour discovery)")
	fs.StringVar(&o.stunAdvertise, "stun-advertise-ip", "", "IP advertised in RESPONSE-ORIGIN/OTHER-ADDRESS (default: the -stun-addr IP, or the outbound interface IP)")
	fs.StringVar(&o.stunAdvAltIP, "stun-advertise-alt-ip", "", "advertised form of -stun-alt-ip (behind a 1:1 NAT)")
	fs.IntVar(&o.stunSlack, "stun-reply-slack", 12, "bytes a STUN reply may exceed its request (12 serves plain 20-byte ICE requests; 0 = no amplification)")
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
	fs.IntVar(&h.SendQueue, "send-queue", h.SendQueue, "frames queued per connection before it is dropped")

	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := "A2AL_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("environment %s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return nil, errors.New("-tls-cert and -tls-key go together")
	}
	for _, u := range strings.Split(o.publicURLs, ",") {
		if u = strings.TrimSpace(u); u != "" {
			h.PublicURLs = append(h.PublicURLs, u)
		}
	}
	return o, nil
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
	cfg := natprobe.ServerConfig{Addr: o.stunAddr, AltPort: o.stunAltPort, AltIP: o.stunAltIP, ReplySlack: o.stunSlack, Logger: log}
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
	}
}

// run starts everything and blocks until ctx ends; ready (tests) receives the
// bound HTTP address.
func run(ctx context.Context, args []string, logOut io.Writer, ready chan<- string) error {
	o, err := parseFlags(args, logOut)
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
	hub, err := signal.NewHub(o.hub)
	if err != nil {
		return err
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
	scheme := "ws"
	if o.tlsCert != "" {
		scheme = "wss"
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	serveErr := make(chan error, 1)
	go func() {
		if o.tlsCert != "" {
			serveErr <- srv.ServeTLS(ln, o.tlsCert, o.tlsKey)
		} else {
			serveErr <- srv.Serve(ln)
		}
	}()

	attrs := []any{"signal", fmt.Sprintf("%s://%s%s", scheme, ln.Addr(), signal.SignalPath), "subprotocol", signal.Subprotocol,
		"health", "/healthz", "metrics", "/metrics"}
	if stun != nil {
		attrs = append(attrs, "stun", stun.Addr().String(), "stun_other", stun.AltAddr().String(), "stun_change_ip", stun.HasAltIP())
	} else {
		attrs = append(attrs, "stun", "off")
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
