package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// PacketClass is what a datagram on the shared socket is taken to be.
type PacketClass uint8

// Packet classes (docs/decisions.md D5).
const (
	ClassUnknown PacketClass = iota
	ClassDHT                 // CBOR map head 0xa0-0xbf
	ClassSTUN                // top two bits 00 and the RFC 5389 magic cookie
	ClassQUIC                // QUIC fixed bit 0x40
)

func (c PacketClass) String() string {
	switch c {
	case ClassDHT:
		return "dht"
	case ClassSTUN:
		return "stun"
	case ClassQUIC:
		return "quic"
	default:
		return "unknown"
	}
}

// stunMagicCookie is the fixed value at bytes 4..7 of every RFC 5389 message.
const stunMagicCookie = 0x2112A442

// stunHeaderLen is the size of a STUN message header.
const stunHeaderLen = 20

// Classify decides which consumer a datagram belongs to, from its first
// byte (and, for STUN, the magic cookie). The three ranges do not overlap:
// 0xa0-0xbf has bit 0x40 clear and a top bit set.
func Classify(pkt []byte) PacketClass {
	if len(pkt) == 0 {
		return ClassUnknown
	}
	b := pkt[0]
	switch {
	case b >= 0xa0 && b <= 0xbf:
		return ClassDHT
	case b&0xc0 == 0:
		if len(pkt) >= stunHeaderLen && binary.BigEndian.Uint32(pkt[4:8]) == stunMagicCookie {
			return ClassSTUN
		}
		return ClassUnknown
	case b&0x40 != 0:
		return ClassQUIC
	default:
		return ClassUnknown
	}
}

// Defaults of DemuxOptions (DefaultDemuxOptions holds them all). Queue
// depths are bounds, never waits.
const (
	DefaultDHTQueue  = 1024
	DefaultQUICQueue = 1024
	DefaultSTUNQueue = 256
	DefaultEchoRate  = 20
)

// maxDatagram is the read buffer of the demux (the largest UDP payload).
const maxDatagram = 64 * 1024

// DemuxOptions configures a Demux. Every field may be left zero, which
// means the default its comment states; a queue cannot be switched off, so
// a negative depth or rate means the default too. NewDemux fills a copy in
// one place (fill).
type DemuxOptions struct {
	// DHTQueue bounds the DHT datagrams waiting to be read; more are
	// dropped and counted. Zero: DefaultDHTQueue (1024).
	DHTQueue int
	// QUICQueue bounds the QUIC datagrams waiting. Zero: DefaultQUICQueue
	// (1024).
	QUICQueue int
	// STUNQueue bounds the STUN datagrams waiting. Zero: DefaultSTUNQueue
	// (256).
	STUNQueue int
	// Logger receives diagnostics. Nil: discarded.
	Logger *slog.Logger
	// EchoProbes answers upstream UDP echo probes (datagrams starting
	// 0x00 0xEC, docs/wire.md §4.2) by sending them back verbatim, at most
	// EchoRate per second, so the socket cannot be used as a reflector at
	// volume. Upstream's statistics packet is not sent. False (the
	// default): echo probes are dropped as unknown.
	EchoProbes bool
	// EchoRate is the echo budget per second. Zero: DefaultEchoRate (20).
	EchoRate int
}

// DefaultDemuxOptions returns every option at its default.
func DefaultDemuxOptions() DemuxOptions {
	return DemuxOptions{DHTQueue: DefaultDHTQueue, QUICQueue: DefaultQUICQueue, STUNQueue: DefaultSTUNQueue,
		EchoRate: DefaultEchoRate}
}

// fill replaces zero (or negative) fields by their defaults.
func (o *DemuxOptions) fill() {
	d := DefaultDemuxOptions()
	for _, f := range []struct{ v, def *int }{
		{&o.DHTQueue, &d.DHTQueue}, {&o.QUICQueue, &d.QUICQueue}, {&o.STUNQueue, &d.STUNQueue}, {&o.EchoRate, &d.EchoRate},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// ClassStats counts datagrams of one class.
type ClassStats struct {
	Received uint64 // classified into this class
	Dropped  uint64 // discarded because the queue was full (or, for DHT, oversized)
}

// DemuxStats are the demultiplexer's counters.
type DemuxStats struct {
	DHT, STUN, QUIC ClassStats
	STUNHooked      uint64 // STUN datagrams consumed by the hook
	Unknown         uint64 // datagrams of no known class, dropped
	ReadErrors      uint64 // non-fatal read errors
	Echoed          uint64 // echo probes answered
}

type packet struct {
	data []byte
	from net.Addr
}

type classCounters struct{ received, dropped atomic.Uint64 }

func (c *classCounters) snapshot() ClassStats {
	return ClassStats{Received: c.received.Load(), Dropped: c.dropped.Load()}
}

// STUNHook inspects a STUN datagram before it is queued; returning true
// consumes it. It runs on the read goroutine and must not block.
type STUNHook func(pkt []byte, from net.Addr) (consumed bool)

// MaxSTUNHooks bounds the hooks installed at once (one per concurrent NAT
// classification, each claiming only its own transactions).
const MaxSTUNHooks = 8

// ErrTooManyHooks is returned by AddSTUNHook when MaxSTUNHooks are installed.
var ErrTooManyHooks = errors.New("transport: too many STUN hooks installed")

// stunHook is one installed hook; its pointer identifies it for removal.
type stunHook struct{ fn STUNHook }

// Demux shares one packet socket between the DHT, STUN and QUIC (docs/decisions.md D5).
// One goroutine reads the socket and sorts datagrams into bounded per-class
// queues; a full queue drops the datagram and counts it, so a slow consumer
// never stalls the others.
type Demux struct {
	conn net.PacketConn
	log  *slog.Logger

	dhtQ, quicQ, stunQ chan packet

	hookMu sync.Mutex                  // serialises AddSTUNHook and removals
	hooks  atomic.Pointer[[]*stunHook] // copy-on-write; read lock-free per datagram

	quit      chan struct{} // closed by Close
	loopDone  chan struct{} // closed when the read loop has exited
	closeOnce sync.Once
	closeErr  error
	loopErr   error // fatal read error, valid after loopDone

	dhtC, quicC, stunC classCounters
	hooked, unknown    atomic.Uint64
	echoed             atomic.Uint64
	echo               bool
	echoRate           int
	echoWindow         time.Time // read loop only
	echoInWindow       int       // read loop only
	readErrs           atomic.Uint64
	dhtView            *demuxDHT
	quicView           *packetView
	stunMu             sync.Mutex
	stunView           *packetView
}

// NewDemux takes ownership of conn and starts the read loop.
func NewDemux(conn net.PacketConn, opts DemuxOptions) *Demux {
	opts.fill()
	d := &Demux{
		conn:     conn,
		log:      opts.Logger,
		dhtQ:     make(chan packet, opts.DHTQueue),
		quicQ:    make(chan packet, opts.QUICQueue),
		stunQ:    make(chan packet, opts.STUNQueue),
		quit:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	d.echo, d.echoRate = opts.EchoProbes, opts.EchoRate
	d.dhtView = &demuxDHT{d: d}
	d.quicView = newPacketView(d, d.quicQ, false)
	go d.readLoop()
	return d
}

// DHT returns the DHT view. Its Close is a no-op: the Demux owns the socket.
func (d *Demux) DHT() Transport { return d.dhtView }

// QUIC returns the view for quic-go (quic.Transport{Conn: d.QUIC()}). Its
// Close is a no-op; quic-go stops reading by setting a read deadline.
func (d *Demux) QUIC() net.PacketConn { return d.quicView }

// STUN returns the view carrying STUN datagrams not consumed by the hook,
// for pion ICE's UDPMux. Closing the view (as UDPMuxDefault.Close does)
// ends its reads without touching the socket; the next STUN call then
// returns a fresh view on the same queue.
func (d *Demux) STUN() net.PacketConn {
	d.stunMu.Lock()
	defer d.stunMu.Unlock()
	if d.stunView == nil || d.stunView.isDetached() {
		d.stunView = newPacketView(d, d.stunQ, true)
	}
	return d.stunView
}

// AddSTUNHook installs h in front of the STUN view: every STUN datagram is
// offered to the installed hooks in installation order until one consumes it.
// Several hooks may be installed at once (concurrent classifications each
// claim their own transactions); remove uninstalls exactly this hook and is
// safe to call more than once.
func (d *Demux) AddSTUNHook(h STUNHook) (remove func(), err error) {
	if h == nil {
		return nil, errors.New("transport: nil STUN hook")
	}
	d.hookMu.Lock()
	defer d.hookMu.Unlock()
	var cur []*stunHook
	if p := d.hooks.Load(); p != nil {
		cur = *p
	}
	if len(cur) >= MaxSTUNHooks {
		return nil, fmt.Errorf("%w (%d)", ErrTooManyHooks, MaxSTUNHooks)
	}
	me := &stunHook{fn: h}
	next := append(append(make([]*stunHook, 0, len(cur)+1), cur...), me)
	d.hooks.Store(&next)
	return func() { d.removeSTUNHook(me) }, nil
}

func (d *Demux) removeSTUNHook(me *stunHook) {
	d.hookMu.Lock()
	defer d.hookMu.Unlock()
	p := d.hooks.Load()
	if p == nil {
		return
	}
	next := make([]*stunHook, 0, len(*p))
	for _, h := range *p {
		if h != me {
			next = append(next, h)
		}
	}
	d.hooks.Store(&next)
}

// offerSTUN gives a STUN datagram to the installed hooks; true if one consumed it.
func (d *Demux) offerSTUN(pkt []byte, from net.Addr) bool {
	p := d.hooks.Load()
	if p == nil {
		return false
	}
	for _, h := range *p {
		if h.fn(pkt, from) {
			return true
		}
	}
	return false
}

// LocalAddr is the shared socket's address.
func (d *Demux) LocalAddr() net.Addr { return d.conn.LocalAddr() }

// Stats returns the counters.
func (d *Demux) Stats() DemuxStats {
	return DemuxStats{
		DHT:        d.dhtC.snapshot(),
		STUN:       d.stunC.snapshot(),
		QUIC:       d.quicC.snapshot(),
		STUNHooked: d.hooked.Load(),
		Unknown:    d.unknown.Load(),
		ReadErrors: d.readErrs.Load(),
		Echoed:     d.echoed.Load(),
	}
}

// Close closes the socket and waits for the read loop. It returns the close
// error, or the read error that had already stopped the loop. Idempotent.
func (d *Demux) Close() error {
	d.closeOnce.Do(func() {
		close(d.quit)
		err := d.conn.Close()
		<-d.loopDone
		d.quicView.rd.stop()
		d.stunMu.Lock()
		if d.stunView != nil {
			d.stunView.rd.stop()
		}
		d.stunMu.Unlock()
		switch {
		case d.loopErr != nil:
			d.closeErr = fmt.Errorf("transport: demux read loop: %w", d.loopErr)
		case err != nil && !errors.Is(err, net.ErrClosed):
			d.closeErr = fmt.Errorf("transport: demux close socket: %w", err)
		}
	})
	return d.closeErr
}

func (d *Demux) closing() bool {
	select {
	case <-d.quit:
		return true
	default:
		return false
	}
}

func (d *Demux) readLoop() {
	defer close(d.loopDone)
	buf := make([]byte, maxDatagram)
	backoff := time.Duration(0)
	for {
		n, from, err := d.conn.ReadFrom(buf)
		if err != nil {
			if d.closing() {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				d.loopErr = err
				d.log.Warn("demux socket closed underneath", "err", err)
				return
			}
			// Transient (e.g. ICMP-induced errors on some platforms): count,
			// back off briefly so a persistent error cannot spin, retry.
			d.readErrs.Add(1)
			backoff = min(max(2*backoff, time.Millisecond), 100*time.Millisecond)
			d.log.Debug("demux read error", "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-d.quit:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		d.dispatch(buf[:n], from)
	}
}

func (d *Demux) dispatch(b []byte, from net.Addr) {
	class := Classify(b)
	if class == ClassUnknown {
		if d.echo && len(b) >= 2 && b[0] == 0x00 && b[1] == 0xEC && d.echoAllowed() {
			if _, err := d.conn.WriteTo(b, from); err == nil {
				d.echoed.Add(1)
				return
			}
		}
		d.unknown.Add(1)
		return
	}
	p := packet{data: append([]byte(nil), b...), from: normalizeAddr(from)}
	var q chan packet
	var c *classCounters
	switch class {
	case ClassDHT:
		q, c = d.dhtQ, &d.dhtC
		c.received.Add(1)
		if len(b) > MaxPacketSize {
			c.dropped.Add(1)
			return
		}
	case ClassQUIC:
		q, c = d.quicQ, &d.quicC
		c.received.Add(1)
	case ClassSTUN:
		q, c = d.stunQ, &d.stunC
		c.received.Add(1)
		if d.offerSTUN(p.data, p.from) {
			d.hooked.Add(1)
			return
		}
	}
	select {
	case q <- p:
	default:
		c.dropped.Add(1)
	}
}

// echoAllowed applies the per-second echo budget; read-loop only.
func (d *Demux) echoAllowed() bool {
	now := time.Now()
	if now.Sub(d.echoWindow) >= time.Second {
		d.echoWindow, d.echoInWindow = now, 0
	}
	if d.echoInWindow >= d.echoRate {
		return false
	}
	d.echoInWindow++
	return true
}
