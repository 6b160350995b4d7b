// Package portmap asks the home router for an inbound UDP port: PCP, NAT-PMP
// or UPnP IGD (v1/v2). A Mapper finds the gateway with short deadlines, keeps
// one mapping for one internal port alive (renewal before expiry, periodic
// checks that notice a router restart or another LAN host taking the port),
// and deletes it on Close. What the node does with a mapping (publish it only
// after a peer proved it works) lives in package host; docs/port-mapping.md
// describes the whole behaviour.
package portmap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Protocol names a port-mapping protocol.
type Protocol string

// The protocols, and the two modes that are not a single protocol.
const (
	PCP    Protocol = "pcp"
	NATPMP Protocol = "natpmp"
	UPnP   Protocol = "upnp"

	ModeAuto = "auto"
	ModeOff  = "off"
)

// Modes lists the accepted Config.Mode values (for flag help and validation).
var Modes = []string{ModeAuto, string(UPnP), string(NATPMP), string(PCP), ModeOff}

// ParseMode validates a mode string ("" is auto).
func ParseMode(s string) (string, error) {
	if s == "" {
		return ModeAuto, nil
	}
	for _, m := range Modes {
		if s == m {
			return s, nil
		}
	}
	return "", fmt.Errorf("portmap: unknown mode %q (want one of %s)", s, strings.Join(Modes, ", "))
}

// errNoGateway marks "nothing on the LAN offers port mapping" (as opposed to
// a gateway that answered and refused).
var errNoGateway = errors.New("no gateway offers port mapping")

// Config configures a Mapper. Only InternalPort is required.
type Config struct {
	// Mode is "auto" (PCP, then NAT-PMP, then UPnP), "pcp", "natpmp", "upnp"
	// or "off". Default (""): auto.
	Mode string
	// InternalPort is the local UDP port to map. Required (1..65535).
	InternalPort int
	// Gateway is the router asked by PCP/NAT-PMP (on its UDP port 5351). nil:
	// the gateway of the IPv4 default route (Linux /proc/net/route), read at
	// every discovery.
	Gateway net.IP
	// LocalIP is our LAN address, the mapping's internal client. nil: the
	// source address the kernel picks towards the gateway.
	LocalIP net.IP
	// Lease is the lifetime we ask for. Default (0): 2 h. The router may grant
	// less; we renew at half of what it granted.
	Lease time.Duration
	// CheckInterval is how often we ask the gateway whether our mapping still
	// stands (router restart, another LAN host took the port, external IP
	// change). Default (0): 1 min.
	CheckInterval time.Duration
	// Timeout bounds each protocol's discovery and each request. Default (0):
	// 2 s.
	Timeout time.Duration
	// Retry is the wait before looking for a gateway again after none offered
	// a mapping. Default (0): 5 min.
	Retry time.Duration
	// Description labels UPnP mappings. Default (""): "a2al".
	Description string
	// OnChange is called from the Mapper's goroutine whenever the mapping
	// appears, moves or is lost (ok=false). It must not block for long.
	// nil: nobody is told (poll Current).
	OnChange func(m Mapping, ok bool)
	// Logger receives the log lines of docs/port-mapping.md. nil: slog.Default().
	Logger *slog.Logger
	// Now is the clock. nil: time.Now.
	Now func() time.Time
	// SSDPAddr is where UPnP searches are sent. nil: the SSDP multicast
	// group 239.255.255.250:1900 (tests send unicast to a fake gateway).
	SSDPAddr *net.UDPAddr
}

// Validate checks cfg as New would, without building anything.
func Validate(cfg Config) error { return cfg.fill() }

func (c *Config) fill() error {
	mode, err := ParseMode(c.Mode)
	if err != nil {
		return err
	}
	c.Mode = mode
	if c.InternalPort < 1 || c.InternalPort > 65535 {
		return fmt.Errorf("portmap: internal port %d out of range", c.InternalPort)
	}
	if c.Gateway != nil && c.Gateway.To4() == nil {
		return fmt.Errorf("portmap: gateway %v is not IPv4", c.Gateway)
	}
	if c.LocalIP != nil && c.LocalIP.To4() == nil {
		return fmt.Errorf("portmap: local IP %v is not IPv4", c.LocalIP)
	}
	if c.Lease <= 0 {
		c.Lease = 2 * time.Hour
	}
	if c.Lease < 2*time.Second {
		return fmt.Errorf("portmap: lease %v is shorter than 2 s", c.Lease)
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = time.Minute
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Second
	}
	if c.Retry <= 0 {
		c.Retry = 5 * time.Minute
	}
	if c.Description == "" {
		c.Description = "a2al"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.SSDPAddr == nil {
		c.SSDPAddr = &net.UDPAddr{IP: net.IPv4(239, 255, 255, 250), Port: 1900}
	}
	return nil
}

// Mapping is one granted port mapping.
type Mapping struct {
	Protocol Protocol
	External *net.UDPAddr // the router's public side
	Internal *net.UDPAddr // our LAN address and port
	Lease    time.Duration
	Obtained time.Time // when it was granted or last renewed
}

func newMapping(p Protocol, extIP net.IP, extPort int, local net.IP, intPort int, lease time.Duration, now time.Time) Mapping {
	return Mapping{Protocol: p, External: &net.UDPAddr{IP: extIP, Port: extPort},
		Internal: &net.UDPAddr{IP: local, Port: intPort}, Lease: lease, Obtained: now}
}

// LeaseLeft is how long the router keeps the mapping without a renewal.
func (m Mapping) LeaseLeft(now time.Time) time.Duration {
	return max(0, m.Obtained.Add(m.Lease).Sub(now))
}

func (m Mapping) String() string {
	if m.External == nil {
		return "none"
	}
	return fmt.Sprintf("%s %s -> %s (lease %s)", m.Protocol, m.External, m.Internal, m.Lease)
}

// leaseSeconds is a lease in whole seconds as the protocols carry it
// (at least 1, at most what an int32 holds).
func leaseSeconds(d time.Duration) uint32 {
	return uint32(min(max(d/time.Second, 1), math.MaxInt32))
}

// client is one protocol's conversation with one gateway.
type client interface {
	protocol() Protocol
	// mapUDP maps the internal port, preferring external port want.
	mapUDP(ctx context.Context, want int, lease time.Duration) (Mapping, error)
	// check reports whether m still stands as granted.
	check(ctx context.Context, m Mapping) (bool, error)
	unmap(ctx context.Context, m Mapping) error
}

// Mapper keeps one mapping alive. Its goroutine owns cl; mu guards the
// published state (cur, has) that Current reads.
type Mapper struct {
	cfg   Config
	log   *slog.Logger
	reset chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	first  chan struct{} // closed when the first attempt ended (or never will)
	start  sync.Once
	close  sync.Once
	once1  sync.Once

	mu  sync.Mutex
	cur Mapping
	has bool
	cl  client
}

// New validates cfg. Nothing is sent before Start.
func New(cfg Config) (*Mapper, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	m := &Mapper{cfg: cfg, log: cfg.Logger, reset: make(chan struct{}, 1), done: make(chan struct{}), first: make(chan struct{})}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

// Start runs the mapping loop (once; no-op in mode "off").
func (m *Mapper) Start() {
	m.start.Do(func() {
		if m.cfg.Mode == ModeOff {
			close(m.done)
			m.firstDone()
			return
		}
		go m.run()
	})
}

// FirstAttempt is closed once the first search for a mapping ended, with or
// without one (so a caller can publish its first record with the mapping).
func (m *Mapper) FirstAttempt() <-chan struct{} { return m.first }

func (m *Mapper) firstDone() { m.once1.Do(func() { close(m.first) }) }

// Current returns the mapping in force (ok=false when there is none).
func (m *Mapper) Current() (Mapping, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur, m.has
}

// Reset forgets the gateway and the mapping and looks again now (the network
// changed: another LAN, a new DHCP lease).
func (m *Mapper) Reset() {
	select {
	case m.reset <- struct{}{}:
	default:
	}
}

// Close stops the loop and deletes the mapping from the router (bounded by
// Timeout).
func (m *Mapper) Close() error {
	var err error
	m.close.Do(func() {
		m.start.Do(func() { close(m.done); m.firstDone() }) // never started: nothing runs
		m.cancel()
		<-m.done
		m.mu.Lock()
		cur, has, cl := m.cur, m.has, m.cl
		m.has, m.cl = false, nil
		m.mu.Unlock()
		if !has || cl == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
		defer cancel()
		if err = cl.unmap(ctx, cur); err != nil {
			m.log.Warn("port mapping: could not remove the mapping from the router; it expires by itself",
				"protocol", cur.Protocol, "external", cur.External, "lease_left", cur.LeaseLeft(m.cfg.Now()).Round(time.Second), "err", err)
			return
		}
		m.log.Info("port mapping: removed from the router", "protocol", cur.Protocol, "external", cur.External)
	})
	return err
}

func (m *Mapper) set(cl client, mp Mapping, ok bool) {
	m.mu.Lock()
	m.cur, m.has, m.cl = mp, ok, cl
	m.mu.Unlock()
	if m.cfg.OnChange != nil {
		m.cfg.OnChange(mp, ok)
	}
}

// sleep waits d; false when the Mapper is closing or a reset came.
func (m *Mapper) sleep(d time.Duration) (ok, reset bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-m.ctx.Done():
		return false, false
	case <-m.reset:
		return false, true
	case <-t.C:
		return true, false
	}
}

func (m *Mapper) run() {
	defer close(m.done)
	defer m.firstDone()
	var (
		cl       client
		cur      Mapping
		has      bool
		renewAt  time.Time
		reported bool // the "no port mapping" line was logged
	)
	drop := func() {
		if has {
			has = false
			m.set(nil, Mapping{}, false)
		}
		cl = nil
	}
	for m.ctx.Err() == nil {
		if !has {
			c, mp, err := m.acquire()
			if err != nil {
				m.firstDone()
				if m.ctx.Err() != nil {
					return
				}
				if !reported {
					reported = true
					m.log.Info("port mapping: the router offers none; relying on NAT traversal", "mode", m.cfg.Mode, "reason", err,
						"next_try", m.cfg.Retry)
				} else {
					m.log.Debug("port mapping: still none", "reason", err)
				}
				if _, reset := m.sleep(m.cfg.Retry); reset {
					reported = false
				}
				continue
			}
			cl, cur, has, reported = c, mp, true, false
			renewAt = mp.Obtained.Add(mp.Lease / 2)
			m.log.Info("port mapping: router granted a mapping", "protocol", mp.Protocol, "external", mp.External,
				"internal", mp.Internal, "lease", mp.Lease)
			m.set(cl, cur, true)
			m.firstDone()
		}
		now := m.cfg.Now()
		wait := min(renewAt.Sub(now), m.cfg.CheckInterval)
		if ok, reset := m.sleep(max(wait, 0)); !ok {
			if reset {
				m.log.Info("port mapping: network changed; looking for the gateway again")
				drop()
				reported = false
			}
			continue
		}
		now = m.cfg.Now()
		if now.Before(renewAt) {
			ctx, cancel := context.WithTimeout(m.ctx, m.cfg.Timeout)
			ok, err := cl.check(ctx, cur)
			cancel()
			if err != nil {
				m.log.Debug("port mapping: gateway check failed", "err", err)
				if cur.LeaseLeft(now) == 0 {
					m.log.Warn("port mapping: gateway unreachable and the lease ran out", "protocol", cur.Protocol, "external", cur.External)
					drop()
				}
				continue
			}
			if ok {
				continue
			}
			m.log.Info("port mapping: router lost our mapping (restart?) or gave the port to another host; mapping again",
				"protocol", cur.Protocol, "external", cur.External)
		}
		ctx, cancel := context.WithTimeout(m.ctx, m.cfg.Timeout)
		mp, err := cl.mapUDP(ctx, cur.External.Port, m.cfg.Lease)
		cancel()
		if err != nil {
			if m.ctx.Err() != nil {
				return
			}
			if cur.LeaseLeft(m.cfg.Now()) == 0 {
				m.log.Warn("port mapping: renewal failed and the lease ran out", "protocol", cur.Protocol, "external", cur.External, "err", err)
				drop()
				continue
			}
			m.log.Warn("port mapping: renewal failed; will retry", "protocol", cur.Protocol, "external", cur.External, "err", err)
			// Retry soon; the old lease still holds meanwhile.
			renewAt = m.cfg.Now().Add(min(m.cfg.CheckInterval, cur.LeaseLeft(m.cfg.Now())/2))
			continue
		}
		moved := !mp.External.IP.Equal(cur.External.IP) || mp.External.Port != cur.External.Port
		if moved {
			m.log.Info("port mapping: external address changed", "protocol", mp.Protocol, "old", cur.External, "new", mp.External)
		} else {
			m.log.Debug("port mapping: renewed", "protocol", mp.Protocol, "external", mp.External, "lease", mp.Lease)
		}
		cur = mp
		renewAt = mp.Obtained.Add(mp.Lease / 2)
		m.set(cl, cur, true)
	}
}

// acquire finds a gateway and maps the port with the first protocol that
// works, in the order the mode allows.
func (m *Mapper) acquire() (client, Mapping, error) {
	order := []Protocol{PCP, NATPMP, UPnP}
	if m.cfg.Mode != ModeAuto {
		order = []Protocol{Protocol(m.cfg.Mode)}
	}
	gw, local, err := m.gateway()
	if err != nil {
		return nil, Mapping{}, err
	}
	var errs []string
	for _, p := range order {
		ctx, cancel := context.WithTimeout(m.ctx, m.cfg.Timeout)
		cl, mp, err := m.try(ctx, p, gw, local)
		cancel()
		if err == nil {
			return cl, mp, nil
		}
		if m.ctx.Err() != nil {
			return nil, Mapping{}, m.ctx.Err()
		}
		errs = append(errs, fmt.Sprintf("%s: %v", p, err))
	}
	return nil, Mapping{}, fmt.Errorf("%w (%s)", errNoGateway, strings.Join(errs, "; "))
}

func (m *Mapper) try(ctx context.Context, p Protocol, gw, local net.IP) (client, Mapping, error) {
	var cl client
	switch p {
	case PCP:
		cl = newPCPClient(gw, local, m.cfg.InternalPort, m.cfg.Now)
	case NATPMP:
		cl = &natpmpClient{gw: gw, local: local, intPort: m.cfg.InternalPort, now: m.cfg.Now}
	case UPnP:
		svc, kind, err := discoverUPnP(ctx, m.cfg.SSDPAddr, local)
		if err != nil {
			return nil, Mapping{}, err
		}
		m.log.Debug("port mapping: UPnP gateway found", "service", kind)
		cl = &upnpClient{svc: svc, local: local, intPort: m.cfg.InternalPort, desc: m.cfg.Description, now: m.cfg.Now}
	}
	mp, err := cl.mapUDP(ctx, m.cfg.InternalPort, m.cfg.Lease)
	if err != nil {
		return nil, Mapping{}, err
	}
	return cl, mp, nil
}

// gateway returns the router to ask and our address towards it.
func (m *Mapper) gateway() (gw, local net.IP, err error) {
	gw = m.cfg.Gateway
	if gw == nil {
		if gw, err = defaultGateway(); err != nil {
			return nil, nil, fmt.Errorf("%w: %v", errNoGateway, err)
		}
	}
	local = m.cfg.LocalIP
	if local == nil {
		// Connecting a UDP socket sends nothing; it only asks the kernel
		// which source address it would use.
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: gw, Port: pmpPort})
		if err != nil {
			return nil, nil, fmt.Errorf("%w: no route to gateway %v: %v", errNoGateway, gw, err)
		}
		local = c.LocalAddr().(*net.UDPAddr).IP
		_ = c.Close()
	}
	return gw.To4(), local.To4(), nil
}

// defaultGateway reads the IPv4 default route's gateway (Linux).
func defaultGateway() (net.IP, error) {
	b, err := readFileLimited("/proc/net/route", 64<<10)
	if err != nil {
		return nil, fmt.Errorf("read routes (set the gateway by hand on this system): %w", err)
	}
	return parseRouteTable(b)
}

// parseRouteTable picks the lowest-metric default route's gateway from the
// /proc/net/route format (hex, little-endian addresses).
func parseRouteTable(b []byte) (net.IP, error) {
	var best net.IP
	bestMetric := -1
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		g, err := strconv.ParseUint(f[2], 16, 32)
		if err != nil || g == 0 {
			continue
		}
		metric, _ := strconv.Atoi(f[6])
		if bestMetric < 0 || metric < bestMetric {
			best = net.IPv4(byte(g), byte(g>>8), byte(g>>16), byte(g>>24)).To4()
			bestMetric = metric
		}
	}
	if best == nil {
		return nil, errors.New("no IPv4 default route with a gateway")
	}
	return best, nil
}

func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}
