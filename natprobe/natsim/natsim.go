// Package natsim builds simulated networks with NATs on pion's vnet, for
// tests and demos that need real NAT behaviour without root.
//
// Topology: one WAN router (1.2.3.0/24) carries an RFC 5780 STUN server with
// two IPs (1.2.3.4 and 1.2.3.5, ports 3478 and 3479). Every NAT is a child
// router with its own LAN (192.168.<n>.0/24) and public IP 1.2.3.<100+n>;
// every "open" host sits directly on the WAN at 1.2.3.<200+n>.
//
//	w, err := natsim.NewWorld()
//	defer w.Close()
//	h, err := w.AddNAT(natprobe.TypePortRestricted)
//	conn, err := h.Net.ListenPacket("udp4", h.Bind(0)) // bind the host's LAN IP
//	res, err := natprobe.Classify(ctx, natprobe.ClassifyConfig{Conn: conn, Servers: w.STUNServers()})
//
// vnet facts this package relies on (pion/transport/v2 v2.2.x):
//   - NATs are NATModeNormal NAPTs; mapped ports count up from 49152 and are
//     never port-preserving, so "open" is only produced by hosts on the WAN.
//   - Filtering EndpointIndependent means any source may use a mapping,
//     EndpointAddrDependent keys permissions by remote IP,
//     EndpointAddrPortDependent by remote IP:port.
//   - Mappings and permissions expire after MappingLifeTime (30 s default)
//     of outbound silence.
//   - IPs are static: vnet's automatic assignment does not avoid static
//     addresses, so this package never mixes the two.
//   - Routers must be started; AddNAT starts each new LAN router.
//   - Sockets must bind a concrete IP (Host.Bind) to get a predictable
//     source address; "0.0.0.0" picks the first eth0 address.
package natsim

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v2/vnet"

	"github.com/a2alnode/a2al/natprobe"
)

// Fixed addresses of the simulated WAN.
const (
	WANCIDR      = "1.2.3.0/24"
	STUNIP       = "1.2.3.4"
	STUNAltIP    = "1.2.3.5"
	STUNPort     = 3478
	STUNAltPort  = 3479
	maxNATs      = 99 // public IPs 1.2.3.100..198
	maxOpenHosts = 54 // public IPs 1.2.3.200..253
	maxLANHosts  = 200
	// SimReplySlack is the simulated server's ReplySlack unless StrictSTUN.
	SimReplySlack = 64
)

// Options tune NewWorld; the zero value is the standard world.
type Options struct {
	// NoSTUN leaves the WAN without the STUN server.
	NoSTUN bool
	// SingleIPSTUN gives the STUN server only one IP (no change-IP), which
	// forces the classifier onto its EchoProbe path.
	SingleIPSTUN bool
	// StrictSTUN runs the STUN server with ReplySlack 0 (the production
	// default). By default the simulated server allows 64 bytes of slack so
	// that pion ICE's 20-byte srflx requests get answers.
	StrictSTUN bool
	// MinDelay is the per-router latency (0 = none).
	MinDelay time.Duration
	// LoggerFactory for vnet; nil means pion's default (errors only).
	LoggerFactory logging.LoggerFactory
}

// vnetMu serialises vnet.NewNet and vnet.NewRouter: both draw a MAC address
// from an unguarded package-level counter in pion's vnet, so creating Nets or
// Routers from several goroutines at once is a data race. Every creation in
// this package goes through newNet/newRouter, so callers may build worlds and
// add hosts concurrently.
var vnetMu sync.Mutex

func newNet(cfg *vnet.NetConfig) (*vnet.Net, error) {
	vnetMu.Lock()
	defer vnetMu.Unlock()
	return vnet.NewNet(cfg)
}

func newRouter(cfg *vnet.RouterConfig) (*vnet.Router, error) {
	vnetMu.Lock()
	defer vnetMu.Unlock()
	return vnet.NewRouter(cfg)
}

// World is a simulated Internet. Close stops everything it started.
type World struct {
	WAN  *vnet.Router
	STUN *natprobe.Server // nil with Options.NoSTUN
	// STUNNet is the server's network stack (both STUN IPs live on it).
	STUNNet *vnet.Net

	opts     Options
	lf       logging.LoggerFactory
	mu       sync.Mutex
	nats     int
	open     int
	closed   bool
	closeErr error
}

// NewWorld builds and starts the WAN and the STUN server.
func NewWorld(opts ...Options) (*World, error) {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	lf := o.LoggerFactory
	if lf == nil {
		lf = logging.NewDefaultLoggerFactory()
	}
	wan, err := newRouter(&vnet.RouterConfig{Name: "wan", CIDR: WANCIDR, MinDelay: o.MinDelay, LoggerFactory: lf})
	if err != nil {
		return nil, fmt.Errorf("natsim: WAN router: %w", err)
	}
	w := &World{WAN: wan, opts: o, lf: lf}
	if !o.NoSTUN {
		ips := []string{STUNIP}
		if !o.SingleIPSTUN {
			ips = append(ips, STUNAltIP)
		}
		if w.STUNNet, err = w.attach(ips...); err != nil {
			return nil, err
		}
	}
	if err := wan.Start(); err != nil {
		return nil, fmt.Errorf("natsim: start WAN: %w", err)
	}
	if !o.NoSTUN {
		cfg := natprobe.ServerConfig{
			Addr:    net.JoinHostPort(STUNIP, strconv.Itoa(STUNPort)),
			AltPort: STUNAltPort,
			Net:     w.STUNNet,
		}
		if !o.StrictSTUN {
			cfg.ReplySlack = SimReplySlack
		}
		if !o.SingleIPSTUN {
			cfg.AltIP = STUNAltIP
		}
		if w.STUN, err = natprobe.NewServer(cfg); err != nil {
			_ = wan.Stop()
			return nil, fmt.Errorf("natsim: STUN server: %w", err)
		}
	}
	return w, nil
}

// attach creates a Net with the given WAN IPs and adds it to the WAN.
func (w *World) attach(ips ...string) (*vnet.Net, error) {
	n, err := newNet(&vnet.NetConfig{StaticIPs: ips})
	if err != nil {
		return nil, fmt.Errorf("natsim: new net %v: %w", ips, err)
	}
	if err := w.WAN.AddNet(n); err != nil {
		return nil, fmt.Errorf("natsim: attach %v to WAN: %w", ips, err)
	}
	return n, nil
}

// STUNServers returns the server list for natprobe.ClassifyConfig.Servers.
func (w *World) STUNServers() []string {
	return []string{net.JoinHostPort(STUNIP, strconv.Itoa(STUNPort))}
}

// STUNURL returns the server as an ICE URL ("stun:1.2.3.4:3478").
func (w *World) STUNURL() string { return "stun:" + w.STUNServers()[0] }

// Host is one machine in the world.
type Host struct {
	Net      *vnet.Net
	IP       net.IP           // the host's own address (LAN IP behind a NAT)
	PublicIP net.IP           // the NAT's public IP, or IP for open hosts
	Kind     natprobe.NATType // behaviour it was built with
	NAT      *NAT             // nil for open hosts
}

// Bind returns "ip:port" for ListenPacket on this host's address.
func (h *Host) Bind(port int) string { return net.JoinHostPort(h.IP.String(), strconv.Itoa(port)) }

// NAT is a LAN behind one simulated NAT device.
type NAT struct {
	Router   *vnet.Router
	Kind     natprobe.NATType
	PublicIP net.IP

	mu    sync.Mutex
	lan   int
	hosts int
}

// NATTypeFor returns the vnet behaviour for a classification; ok is false
// for TypeOpen (no NAT) and TypeUnknown.
func NATTypeFor(kind natprobe.NATType) (vnet.NATType, bool) {
	t := vnet.NATType{Mode: vnet.NATModeNormal, MappingLifeTime: 30 * time.Second}
	switch kind {
	case natprobe.TypeFullCone:
		t.MappingBehavior, t.FilteringBehavior = vnet.EndpointIndependent, vnet.EndpointIndependent
	case natprobe.TypeAddressRestricted:
		t.MappingBehavior, t.FilteringBehavior = vnet.EndpointIndependent, vnet.EndpointAddrDependent
	case natprobe.TypePortRestricted, natprobe.TypeUDPBlocked:
		t.MappingBehavior, t.FilteringBehavior = vnet.EndpointIndependent, vnet.EndpointAddrPortDependent
	case natprobe.TypeSymmetric:
		t.MappingBehavior, t.FilteringBehavior = vnet.EndpointAddrPortDependent, vnet.EndpointAddrPortDependent
	default:
		return t, false
	}
	return t, true
}

// AddNAT adds a host of the given kind: TypeOpen puts it directly on the
// WAN; TypeUDPBlocked puts it behind a NAT that drops all outbound traffic;
// the other kinds put it alone behind a new NAT of that behaviour.
func (w *World) AddNAT(kind natprobe.NATType) (*Host, error) {
	if kind == natprobe.TypeOpen {
		return w.AddOpenHost()
	}
	n, err := w.NewNAT(kind)
	if err != nil {
		return nil, err
	}
	return n.AddHost()
}

// AddOpenHost adds a host with a public IP directly on the WAN.
func (w *World) AddOpenHost() (*Host, error) {
	idx, err := w.reserve(&w.open, maxOpenHosts, "open hosts")
	if err != nil {
		return nil, err
	}
	ip := fmt.Sprintf("1.2.3.%d", 199+idx)
	n, err := w.attach(ip)
	if err != nil {
		return nil, err
	}
	pub := net.ParseIP(ip).To4()
	return &Host{Net: n, IP: pub, PublicIP: pub, Kind: natprobe.TypeOpen}, nil
}

// reserve takes the next 1-based index from counter (nats or open), which
// numbers the addresses, unless the world is closed or limit is reached.
func (w *World) reserve(counter *int, limit int, what string) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, errors.New("natsim: world closed")
	}
	if *counter >= limit {
		return 0, fmt.Errorf("natsim: too many %s (limit %d)", what, limit)
	}
	*counter++
	return *counter, nil
}

// NewNAT adds an empty LAN behind a NAT of the given kind; add hosts with
// NAT.AddHost. Use NewCustomNAT for other vnet behaviours.
func (w *World) NewNAT(kind natprobe.NATType) (*NAT, error) {
	t, ok := NATTypeFor(kind)
	if !ok {
		return nil, fmt.Errorf("natsim: no NAT behaviour for %q", kind)
	}
	n, err := w.NewCustomNAT(t)
	if err != nil {
		return nil, err
	}
	n.Kind = kind
	if kind == natprobe.TypeUDPBlocked {
		lan := n.lanNet()
		n.Router.AddChunkFilter(func(c vnet.Chunk) bool {
			// Only LAN-internal traffic passes; everything to or from the WAN is dropped.
			return lan.Contains(ipOf(c.DestinationAddr())) && lan.Contains(ipOf(c.SourceAddr()))
		})
	}
	return n, nil
}

// NewCustomNAT adds an empty LAN behind a NAT with an arbitrary vnet behaviour.
func (w *World) NewCustomNAT(t vnet.NATType) (*NAT, error) {
	idx, err := w.reserve(&w.nats, maxNATs, "NATs")
	if err != nil {
		return nil, err
	}

	pub := fmt.Sprintf("1.2.3.%d", 99+idx)
	nt := t
	r, err := newRouter(&vnet.RouterConfig{
		Name:          fmt.Sprintf("nat%d", idx),
		CIDR:          fmt.Sprintf("192.168.%d.0/24", idx),
		StaticIPs:     []string{pub},
		NATType:       &nt,
		MinDelay:      w.opts.MinDelay,
		LoggerFactory: w.lf,
	})
	if err != nil {
		return nil, fmt.Errorf("natsim: NAT router: %w", err)
	}
	if err := w.WAN.AddRouter(r); err != nil {
		return nil, fmt.Errorf("natsim: attach NAT router: %w", err)
	}
	if err := r.Start(); err != nil {
		return nil, fmt.Errorf("natsim: start NAT router: %w", err)
	}
	return &NAT{Router: r, Kind: natprobe.TypeUnknown, PublicIP: net.ParseIP(pub).To4(), lan: idx}, nil
}

func ipOf(a net.Addr) net.IP {
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.IP
	case *net.TCPAddr:
		return v.IP
	default:
		return nil
	}
}

func (n *NAT) lanNet() *net.IPNet {
	_, ipn, _ := net.ParseCIDR(fmt.Sprintf("192.168.%d.0/24", n.lan))
	return ipn
}

// AddHost adds a host to the NAT's LAN (192.168.<n>.2, .3, ...).
func (n *NAT) AddHost() (*Host, error) {
	n.mu.Lock()
	if n.hosts >= maxLANHosts {
		n.mu.Unlock()
		return nil, errors.New("natsim: too many hosts on this LAN")
	}
	n.hosts++
	ip := fmt.Sprintf("192.168.%d.%d", n.lan, 1+n.hosts)
	n.mu.Unlock()
	v, err := newNet(&vnet.NetConfig{StaticIPs: []string{ip}})
	if err != nil {
		return nil, fmt.Errorf("natsim: new LAN net: %w", err)
	}
	if err := n.Router.AddNet(v); err != nil {
		return nil, fmt.Errorf("natsim: attach host %s: %w", ip, err)
	}
	return &Host{Net: v, IP: net.ParseIP(ip).To4(), PublicIP: n.PublicIP, Kind: n.Kind, NAT: n}, nil
}

// Close stops the STUN server and all routers. It is idempotent.
func (w *World) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.closeErr
	}
	w.closed = true
	var errs []error
	if w.STUN != nil {
		errs = append(errs, w.STUN.Close())
	}
	errs = append(errs, w.WAN.Stop())
	w.closeErr = errors.Join(errs...)
	return w.closeErr
}
