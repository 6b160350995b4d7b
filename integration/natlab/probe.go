package natlab

import (
	"fmt"
	"net"
	"time"
)

// Behaviour is a NAT's measured mapping and filtering, RFC 4787 style.
type Behaviour struct {
	UDPBlocked  bool         // nothing reached the outside
	TCPWorks    bool         // (only measured when UDP is blocked)
	Mapped1     *net.UDPAddr // as seen by X1
	Mapped2     *net.UDPAddr // as seen by X2
	EIM         bool         // Mapped1 == Mapped2
	OtherPortIn bool         // unsolicited packet from X1, other port, arrived
	OtherIPIn   bool         // unsolicited packet from never-contacted X3 arrived
	InboundFrom *net.UDPAddr // source the host saw for the X3 packet
}

// Expected is the behaviour each lab NAT type must show. PreservedPort is
// the external port expected for inner port ProbePort (0 = not checked).
type Expected struct {
	EIM           bool
	PreservedPort int
	OtherPortIn   bool
	OtherIPIn     bool
}

// ProbePort is the inner UDP port the behaviour probe sends from.
const ProbePort = 4000

// ExpectedBehaviour per NAT type.
var ExpectedBehaviour = map[NATType]Expected{
	FullCone:          {EIM: true, PreservedPort: ProbePort, OtherPortIn: true, OtherIPIn: true},
	AddressRestricted: {EIM: true, PreservedPort: ProbePort, OtherPortIn: true},
	PortRestricted:    {EIM: true, PreservedPort: ProbePort},
	Symmetric:         {EIM: false},
	PortShifted:       {EIM: true, PreservedPort: ProbePort + ShiftOffset},
	DoubleNAT:         {EIM: true, PreservedPort: ProbePort},
}

// Probe timing: how long a packet that must arrive may take, and how long
// we listen for one that must not (the lab has no loss and sub-ms latency).
const (
	posWait = 2 * time.Second
	negWait = 700 * time.Millisecond
)

// Prober is a WAN host with three addresses used to measure NATs.
type Prober struct {
	Host       *Host
	X1, X2, X3 net.IP
}

// AddProber adds a WAN host with addresses .50, .51 and .52.
func (l *Lab) AddProber() *Prober {
	p := &Prober{
		X1: net.ParseIP(WANNet + ".50").To4(),
		X2: net.ParseIP(WANNet + ".51").To4(),
		X3: net.ParseIP(WANNet + ".52").To4(),
	}
	p.Host = l.AddWANHost("probe", p.X1, p.X2, p.X3)
	return p
}

type datagram struct {
	payload string
	from    *net.UDPAddr
}

// collect reads datagrams from c into a bounded channel until c is closed.
func collect(c *net.UDPConn) <-chan datagram {
	ch := make(chan datagram, 64)
	go func() {
		defer close(ch)
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			select {
			case ch <- datagram{string(buf[:n]), from}:
			default:
			}
		}
	}()
	return ch
}

func await(ch <-chan datagram, payload string, d time.Duration) (datagram, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				return datagram{}, false
			}
			if r.payload == payload {
				return r, true
			}
		case <-timer.C:
			return datagram{}, false
		}
	}
}

func sendUDP(c *net.UDPConn, to *net.UDPAddr, payload string) error {
	for k := 0; k < 3; k++ {
		if _, err := c.WriteToUDP([]byte(payload), to); err != nil {
			return fmt.Errorf("send %q to %v: %w", payload, to, err)
		}
	}
	return nil
}

// Measure probes the NAT(s) in front of h with raw UDP: mapping towards X1
// and X2, then whether unsolicited packets from X1 (other port) and from X3
// reach the mapping. basePort must be unique among concurrent measurements
// with the same prober. expectIn tunes the waits: a packet expected to
// arrive gets the long deadline, one expected to be dropped the short one.
func (p *Prober) Measure(h *Host, basePort int, expectIn Expected) (Behaviour, error) {
	var b Behaviour
	hc, err := h.ListenUDP(nil, ProbePort)
	if err != nil {
		return b, err
	}
	defer hc.Close()
	hin := collect(hc)

	var closers []*net.UDPConn
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	open := func(ip net.IP, port int) (*net.UDPConn, <-chan datagram, error) {
		c, err := p.Host.ListenUDP(ip, port)
		if err != nil {
			return nil, nil, err
		}
		closers = append(closers, c)
		return c, collect(c), nil
	}
	a, ain, err := open(p.X1, basePort)
	if err != nil {
		return b, err
	}
	pb, _, err := open(p.X1, basePort+1)
	if err != nil {
		return b, err
	}
	c2, cin, err := open(p.X2, basePort)
	if err != nil {
		return b, err
	}
	d, _, err := open(p.X3, basePort)
	if err != nil {
		return b, err
	}

	if err := sendUDP(hc, a.LocalAddr().(*net.UDPAddr), "m1"); err != nil {
		return b, err
	}
	r1, ok := await(ain, "m1", posWait)
	if !ok {
		b.UDPBlocked = true
		ln, err := p.Host.ListenTCP(p.X1, basePort)
		if err != nil {
			return b, err
		}
		defer ln.Close()
		if conn, err := h.DialTCP(ln.Addr().String(), posWait); err == nil {
			b.TCPWorks = true
			conn.Close()
		}
		return b, nil
	}
	if err := sendUDP(hc, c2.LocalAddr().(*net.UDPAddr), "m2"); err != nil {
		return b, err
	}
	r2, ok := await(cin, "m2", posWait)
	if !ok {
		return b, fmt.Errorf("outbound UDP reached X1 but not X2")
	}
	b.Mapped1, b.Mapped2 = r1.from, r2.from
	b.EIM = r1.from.String() == r2.from.String()

	// Sanity first: the contacted endpoint's reply must get in, otherwise
	// the negative checks below prove nothing.
	if err := sendUDP(a, b.Mapped1, "r1"); err != nil {
		return b, err
	}
	if _, ok := await(hin, "r1", posWait); !ok {
		return b, fmt.Errorf("reply from the contacted endpoint %v to %v was dropped", a.LocalAddr(), b.Mapped1)
	}
	if err := sendUDP(pb, b.Mapped1, "r2"); err != nil {
		return b, err
	}
	_, b.OtherPortIn = await(hin, "r2", wait(expectIn.OtherPortIn))
	if err := sendUDP(d, b.Mapped1, "r3"); err != nil {
		return b, err
	}
	var r3 datagram
	r3, b.OtherIPIn = await(hin, "r3", wait(expectIn.OtherIPIn))
	if b.OtherIPIn {
		b.InboundFrom = r3.from
	}
	return b, nil
}

func wait(positive bool) time.Duration {
	if positive {
		return posWait
	}
	return negWait
}

// Check compares a measurement with what typ must do; it returns one error
// string per mismatch.
func (b Behaviour) Check(typ NATType, h *Host, p *Prober) []string {
	var errs []string
	if typ == UDPBlocked {
		if !b.UDPBlocked {
			errs = append(errs, "UDP was forwarded")
		}
		if !b.TCPWorks {
			errs = append(errs, "TCP was not forwarded")
		}
		return errs
	}
	if b.UDPBlocked {
		return []string{"UDP did not get through"}
	}
	want := ExpectedBehaviour[typ]
	if !b.Mapped1.IP.Equal(h.PublicIP()) || !b.Mapped2.IP.Equal(h.PublicIP()) {
		errs = append(errs, fmt.Sprintf("mapped IPs %v, %v; want the WAN IP %v", b.Mapped1.IP, b.Mapped2.IP, h.PublicIP()))
	}
	if b.EIM != want.EIM {
		errs = append(errs, fmt.Sprintf("endpoint-independent mapping=%v (%v, %v), want %v", b.EIM, b.Mapped1, b.Mapped2, want.EIM))
	}
	if want.PreservedPort != 0 && b.Mapped1.Port != want.PreservedPort {
		errs = append(errs, fmt.Sprintf("external port %d, want %d", b.Mapped1.Port, want.PreservedPort))
	}
	if b.OtherPortIn != want.OtherPortIn {
		errs = append(errs, fmt.Sprintf("packet from contacted IP, other port admitted=%v, want %v", b.OtherPortIn, want.OtherPortIn))
	}
	if b.OtherIPIn != want.OtherIPIn {
		errs = append(errs, fmt.Sprintf("packet from never-contacted IP admitted=%v, want %v", b.OtherIPIn, want.OtherIPIn))
	}
	if b.OtherIPIn && !b.InboundFrom.IP.Equal(p.X3) {
		errs = append(errs, fmt.Sprintf("inbound source rewritten to %v, want %v", b.InboundFrom, p.X3))
	}
	return errs
}

// Row formats the measurement for a table.
func (b Behaviour) Row(typ NATType) string {
	if b.UDPBlocked {
		return fmt.Sprintf("%-20s %-22s %-22s %-5s %-10s %-8s", typ, "udp dropped", fmt.Sprintf("(tcp ok=%v)", b.TCPWorks), "-", "-", "-")
	}
	return fmt.Sprintf("%-20s %-22s %-22s %-5v %-10v %-8v", typ, b.Mapped1, b.Mapped2, b.EIM, b.OtherPortIn, b.OtherIPIn)
}

// RowHeader is the header matching Row.
const RowHeader = "type                 mapped->X1             mapped->X2             EIM   otherPort  otherIP"
