package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/a2alnode/a2al/signal"
)

// turnOptions configure the hub's TURN relay (docs/relay.md).
type turnOptions struct {
	addr, tlsAddr       string
	relayIP, publicHost string
	secretFile          string
	relayPorts          string
	allowLoopback       bool
	auth                signal.TURNAuthConfig
	limits              signal.TURNLimits
}

func addTURNFlags(fs *flag.FlagSet, t *turnOptions) {
	t.limits = signal.DefaultTURNLimits()
	t.auth.TTL = 10 * time.Minute
	l := &t.limits
	fs.StringVar(&t.addr, "turn-addr", ":3480", `TURN over UDP and TCP, same port ("off" disables TURN; STUN keeps 3478/3479)`)
	fs.StringVar(&t.tlsAddr, "turn-tls-addr", ":5349", `TURN over TLS, served only with -tls-cert ("off" disables)`)
	fs.StringVar(&t.relayIP, "turn-relay-ip", "", "public IP of relayed addresses (default: the -turn-addr IP, else -stun-advertise-ip, else the outbound interface IP)")
	fs.StringVar(&t.publicHost, "turn-public-host", "", "host name or IP put in the turn: URLs handed to nodes (default: the relay IP)")
	fs.StringVar(&t.secretFile, "turn-secret-file", "", "file whose content is the credential HMAC secret (share it with coturn's static-auth-secret); default: random per start")
	fs.DurationVar(&t.auth.TTL, "turn-cred-ttl", t.auth.TTL, "lifetime of issued TURN credentials")
	fs.StringVar(&t.relayPorts, "turn-relay-ports", "", `UDP port range of relayed addresses, "min-max" (e.g. 49152-65535; default: any ephemeral port)`)
	fs.BoolVar(&t.allowLoopback, "turn-allow-loopback", false, "let allocations reach loopback peers (single-machine tests only)")
	fs.IntVar(&l.MaxAllocsPerNode, "turn-max-allocs-per-node", l.MaxAllocsPerNode, "concurrent TURN allocations per NodeID")
	fs.IntVar(&l.MaxAllocs, "turn-max-allocs", l.MaxAllocs, "concurrent TURN allocations in the hub")
	fs.DurationVar(&l.AllocLifetime, "turn-alloc-lifetime", l.AllocLifetime, "maximum age of one allocation")
	fs.Int64Var(&l.AllocBandwidth, "turn-alloc-bw", l.AllocBandwidth, "relayed bytes/s per allocation")
	fs.Int64Var(&l.NodeBandwidth, "turn-node-bw", l.NodeBandwidth, "relayed bytes/s per NodeID")
	fs.Int64Var(&l.TotalBandwidth, "turn-total-bw", l.TotalBandwidth, "relayed bytes/s for the hub")
	fs.IntVar(&l.MaxStreamConns, "turn-max-stream-conns", l.MaxStreamConns, "concurrent TURN over TCP/TLS connections")
}

// startTURN binds the TURN sockets and returns the server, or nil when off.
// The advertised URLs name the bound ports.
func startTURN(o *options, log *slog.Logger, reg prometheus.Registerer) (*signal.TURNServer, error) {
	t := &o.turn
	if t.addr == "off" || t.addr == "" {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(t.addr)
	if err != nil {
		return nil, fmt.Errorf("-turn-addr %q: %w", t.addr, err)
	}
	relay := net.ParseIP(t.relayIP)
	switch {
	case t.relayIP != "" && relay == nil:
		return nil, fmt.Errorf("-turn-relay-ip %q is not an IP", t.relayIP)
	case relay != nil:
	case net.ParseIP(host) != nil && !net.ParseIP(host).IsUnspecified():
		relay = net.ParseIP(host)
	case net.ParseIP(o.stunAdvertise) != nil:
		relay = net.ParseIP(o.stunAdvertise)
	default:
		relay = outboundIP()
	}
	if relay == nil {
		return nil, errors.New("turn: cannot tell the relay IP; set -turn-relay-ip")
	}
	var pmin, pmax uint16
	if t.relayPorts != "" {
		lo, hi, ok := strings.Cut(t.relayPorts, "-")
		a, err1 := strconv.ParseUint(lo, 10, 16)
		b, err2 := strconv.ParseUint(hi, 10, 16)
		if !ok || err1 != nil || err2 != nil || a == 0 || a > b {
			return nil, fmt.Errorf("-turn-relay-ports %q: want min-max, 1-65535", t.relayPorts)
		}
		pmin, pmax = uint16(a), uint16(b)
	}
	if t.secretFile != "" {
		b, err := os.ReadFile(t.secretFile)
		if err != nil {
			return nil, fmt.Errorf("-turn-secret-file: %w", err)
		}
		t.auth.Secret = []byte(strings.TrimSpace(string(b)))
	}
	pc, ln, err := listenUDPTCP(host, t.addr)
	if err != nil {
		return nil, err
	}
	lns := []net.Listener{ln}
	pub := t.publicHost
	if pub == "" {
		pub = relay.String()
	}
	port := strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
	urls := []string{"turn:" + net.JoinHostPort(pub, port) + "?transport=udp", "turn:" + net.JoinHostPort(pub, port) + "?transport=tcp"}
	if o.tlsCert != "" && t.tlsAddr != "off" && t.tlsAddr != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			pc.Close()
			ln.Close()
			return nil, fmt.Errorf("turn tls: %w", err)
		}
		tln, err := tls.Listen("tcp", t.tlsAddr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		if err != nil {
			pc.Close()
			ln.Close()
			return nil, fmt.Errorf("turn tls %s: %w", t.tlsAddr, err)
		}
		lns = append(lns, tln)
		urls = append(urls, "turns:"+net.JoinHostPort(pub, strconv.Itoa(tln.Addr().(*net.TCPAddr).Port))+"?transport=tcp")
	}
	closeAll := func() {
		pc.Close()
		for _, l := range lns {
			l.Close()
		}
	}
	t.auth.URLs = urls
	auth, err := signal.NewTURNAuth(t.auth)
	if err != nil {
		closeAll()
		return nil, err
	}
	cfg := signal.TURNServerConfig{Auth: auth, PacketConn: pc, Listeners: lns, RelayIP: relay, Limits: t.limits,
		RelayPortMin: pmin, RelayPortMax: pmax, Logger: log, Registerer: reg}
	if t.allowLoopback {
		cfg.AllowPeer = func(net.IP) bool { return true }
	}
	s, err := signal.NewTURNServer(cfg)
	if err != nil {
		closeAll()
		return nil, err
	}
	return s, nil
}

// listenUDPTCP binds UDP at addr and TCP on the same port. With port 0 the
// kernel picks a UDP port whose TCP twin may be taken, so a few picks are
// tried before giving up.
func listenUDPTCP(host, addr string) (net.PacketConn, net.Listener, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("-turn-addr %q: %w", addr, err)
	}
	tries := 1
	if p == "0" {
		tries = 8
	}
	for i := 0; ; i++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("turn udp %s: %w", addr, err)
		}
		tcpAddr := net.JoinHostPort(host, strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
		ln, err := net.Listen("tcp", tcpAddr)
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if i+1 >= tries {
			return nil, nil, fmt.Errorf("turn tcp %s: %w", tcpAddr, err)
		}
	}
}
