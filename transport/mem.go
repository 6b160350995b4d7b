package transport

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// MemInboxSize is the number of packets an in-memory endpoint buffers.
// The inbox grows with what is waiting and shrinks back when drained, so an
// idle endpoint holds no buffer (simulations run 100,000 of them).
const MemInboxSize = 256

// memInboxKeep is the backing capacity a drained inbox keeps.
const memInboxKeep = 4

// maxDelayedPackets bounds the packets waiting out a simulated latency,
// across the whole network.
const maxDelayedPackets = 256 * 1024

// Addr is the address of an in-memory endpoint.
type Addr struct{ Name string }

// Network returns "mem".
func (a Addr) Network() string { return "mem" }

// String returns the endpoint name.
func (a Addr) String() string { return a.Name }

// MemStats counts what happened to packets on a MemNetwork.
type MemStats struct {
	Sent          uint64 // accepted by Send
	Delivered     uint64 // placed in an inbox
	Lost          uint64 // dropped by the simulated loss probability
	DroppedFull   uint64 // dropped because the inbox (or delay queue) was full
	DroppedClosed uint64 // dropped because the receiver closed before delivery
	Blackholed    uint64 // sent to a sink (NewUDPSink) and discarded
}

// MemNetwork is a process-local packet network for tests and simulations.
// Endpoints are registered by name; sends never block. Optional latency is
// applied by a single delivery goroutine per network (started on first use,
// stopped by Close), and optional loss drops packets at random.
type MemNetwork struct {
	mu       sync.RWMutex
	peers    map[string]*MemTransport
	udpPeers map[netip.AddrPort]*MemTransport // endpoints made by NewUDPTransport
	closed   bool

	latency  atomic.Int64  // nanoseconds
	lossBits atomic.Uint64 // float64 bits of the loss probability

	rngMu sync.Mutex
	rng   *rand.Rand

	sched memScheduler

	sent, delivered, lost, droppedFull, droppedClosed, blackholed atomic.Uint64
}

// NewMemNetwork returns an empty network without latency or loss.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{
		peers:    make(map[string]*MemTransport),
		udpPeers: make(map[netip.AddrPort]*MemTransport),
		rng:      rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
}

// SetLatency delays every packet sent from now on by d (0 = immediate).
func (n *MemNetwork) SetLatency(d time.Duration) {
	if d < 0 {
		d = 0
	}
	n.latency.Store(int64(d))
}

// SetLoss sets the probability in [0,1] that a packet is silently dropped.
func (n *MemNetwork) SetLoss(p float64) {
	if math.IsNaN(p) || p < 0 {
		p = 0
	}
	if p > 1 {
		p = 1
	}
	n.lossBits.Store(math.Float64bits(p))
}

// SetSeed makes the loss decisions deterministic.
func (n *MemNetwork) SetSeed(seed uint64) {
	n.rngMu.Lock()
	n.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	n.rngMu.Unlock()
}

// Stats returns the packet counters.
func (n *MemNetwork) Stats() MemStats {
	return MemStats{
		Sent:          n.sent.Load(),
		Delivered:     n.delivered.Load(),
		Lost:          n.lost.Load(),
		DroppedFull:   n.droppedFull.Load(),
		DroppedClosed: n.droppedClosed.Load(),
		Blackholed:    n.blackholed.Load(),
	}
}

// NewTransport registers an endpoint called name.
func (n *MemNetwork) NewTransport(name string) (*MemTransport, error) {
	return n.register(name, netip.AddrPort{})
}

// NewUDPTransport registers an endpoint that looks like a UDP socket at addr:
// it is named addr.String(), its LocalAddr and the source of its packets are
// *net.UDPAddr, and its Send accepts *net.UDPAddr destinations of other such
// endpoints. Simulations use it so that contacts learned from the wire
// (IP and port) are dialable without any address translation.
func (n *MemNetwork) NewUDPTransport(addr *net.UDPAddr) (*MemTransport, error) {
	if addr == nil {
		return nil, fmt.Errorf("transport: mem udp endpoint: nil address")
	}
	ap := addr.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if !ap.IsValid() {
		return nil, fmt.Errorf("transport: mem udp endpoint: invalid address %v", addr)
	}
	return n.register(ap.String(), ap)
}

// NewUDPSink registers a UDP-addressed endpoint that discards everything
// sent to it without a reader (counted as Blackholed): a vanished host whose
// peers see timeouts rather than "unknown peer" send errors. Close it like
// any endpoint.
func (n *MemNetwork) NewUDPSink(addr *net.UDPAddr) (*MemTransport, error) {
	t, err := n.NewUDPTransport(addr)
	if err == nil {
		t.sink.Store(true)
	}
	return t, err
}

func (n *MemNetwork) register(name string, ap netip.AddrPort) (*MemTransport, error) {
	t := &MemTransport{
		net:   n,
		addr:  Addr{Name: name},
		udp:   ap,
		ready: make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	if ap.IsValid() {
		t.netAddr = net.UDPAddrFromAddrPort(ap)
	} else {
		t.netAddr = t.addr
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("transport: mem network: %w", ErrClosed)
	}
	if _, ok := n.peers[name]; ok {
		return nil, fmt.Errorf("%w: %q", ErrDuplicatePeer, name)
	}
	n.peers[name] = t
	if ap.IsValid() {
		n.udpPeers[ap] = t
	}
	return t, nil
}

// Close closes every endpoint and stops the delivery goroutine. Idempotent.
func (n *MemNetwork) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	peers := make([]*MemTransport, 0, len(n.peers))
	for _, t := range n.peers {
		peers = append(peers, t)
	}
	n.mu.Unlock()
	for _, t := range peers {
		_ = t.Close()
	}
	n.sched.stop()
	return nil
}

func (n *MemNetwork) lookup(name string) *MemTransport {
	n.mu.RLock()
	t := n.peers[name]
	n.mu.RUnlock()
	return t
}

func (n *MemNetwork) lookupUDP(ap netip.AddrPort) *MemTransport {
	n.mu.RLock()
	t := n.udpPeers[ap]
	n.mu.RUnlock()
	return t
}

func (n *MemNetwork) unregister(t *MemTransport) {
	n.mu.Lock()
	if n.peers[t.addr.Name] == t {
		delete(n.peers, t.addr.Name)
	}
	if t.udp.IsValid() && n.udpPeers[t.udp] == t {
		delete(n.udpPeers, t.udp)
	}
	n.mu.Unlock()
}

func (n *MemNetwork) dropByLoss() bool {
	p := math.Float64frombits(n.lossBits.Load())
	if p <= 0 {
		return false
	}
	n.rngMu.Lock()
	r := n.rng.Float64()
	n.rngMu.Unlock()
	return r < p
}

// deliver places p in its destination's inbox without blocking.
func (n *MemNetwork) deliver(p memPacket) error {
	select {
	case <-p.dst.done:
		n.droppedClosed.Add(1)
		return fmt.Errorf("%w: %q closed", ErrUnknownPeer, p.dst.addr.Name)
	default:
	}
	if p.dst.sink.Load() {
		n.blackholed.Add(1)
		return nil
	}
	if !p.dst.enqueue(p) {
		n.droppedFull.Add(1)
		return fmt.Errorf("%w: %q", ErrMemBufferFull, p.dst.addr.Name)
	}
	n.delivered.Add(1)
	return nil
}

type memPacket struct {
	data []byte
	from net.Addr
	dst  *MemTransport
}

// MemTransport is one endpoint of a MemNetwork.
type MemTransport struct {
	net     *MemNetwork
	addr    Addr
	udp     netip.AddrPort // valid for endpoints made by NewUDPTransport
	netAddr net.Addr       // source address of our packets, boxed once
	// inbox holds up to MemInboxSize packets, oldest first from head on;
	// ready carries one wake-up for a blocked Receive.
	inboxMu sync.Mutex
	inbox   []memPacket
	head    int
	ready   chan struct{}
	sink    atomic.Bool // NewUDPSink: discard instead of queueing
	// done is closed by Close.
	done      chan struct{}
	closeOnce sync.Once
}

// enqueue appends p to the inbox; false when it is full.
func (t *MemTransport) enqueue(p memPacket) bool {
	t.inboxMu.Lock()
	if len(t.inbox)-t.head >= MemInboxSize {
		t.inboxMu.Unlock()
		return false
	}
	if t.head > 0 && len(t.inbox) == cap(t.inbox) {
		k := copy(t.inbox, t.inbox[t.head:])
		clear(t.inbox[k:])
		t.inbox, t.head = t.inbox[:k], 0
	}
	t.inbox = append(t.inbox, p)
	t.inboxMu.Unlock()
	t.wake()
	return true
}

// dequeue takes the oldest packet, releasing a large drained buffer.
func (t *MemTransport) dequeue() (memPacket, bool) {
	t.inboxMu.Lock()
	defer t.inboxMu.Unlock()
	if t.head == len(t.inbox) {
		return memPacket{}, false
	}
	p := t.inbox[t.head]
	t.inbox[t.head] = memPacket{}
	t.head++
	if t.head == len(t.inbox) {
		if cap(t.inbox) > memInboxKeep {
			t.inbox = nil
		} else {
			t.inbox = t.inbox[:0]
		}
		t.head = 0
	} else {
		t.wake() // more waiting: another blocked Receive may take it
	}
	return p, true
}

func (t *MemTransport) wake() {
	select {
	case t.ready <- struct{}{}:
	default:
	}
}

// Send copies data and queues it for the endpoint named by addr: any
// net.Addr whose Network is "mem", or a *net.UDPAddr of an endpoint made by
// NewUDPTransport. It never blocks: a full inbox yields
// ErrMemBufferFull. With latency configured, a full inbox at delivery time
// drops the packet silently (counted in Stats).
func (t *MemTransport) Send(addr net.Addr, data []byte) error {
	if len(data) > MaxPacketSize {
		return fmt.Errorf("%w: %d bytes > %d", ErrPacketTooLarge, len(data), MaxPacketSize)
	}
	select {
	case <-t.done:
		return ErrClosed
	default:
	}
	var dst *MemTransport
	switch a := addr.(type) {
	case *net.UDPAddr:
		if a == nil {
			return fmt.Errorf("%w: nil address", ErrUnknownPeer)
		}
		ap := a.AddrPort()
		if dst = t.net.lookupUDP(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())); dst == nil {
			return fmt.Errorf("%w: %v", ErrUnknownPeer, a)
		}
	default:
		if addr == nil || addr.Network() != "mem" {
			return fmt.Errorf("%w: %v is not a mem or UDP address", ErrUnknownPeer, addr)
		}
		if dst = t.net.lookup(addr.String()); dst == nil {
			return fmt.Errorf("%w: %q", ErrUnknownPeer, addr.String())
		}
	}
	t.net.sent.Add(1)
	if t.net.dropByLoss() {
		t.net.lost.Add(1)
		return nil
	}
	p := memPacket{data: append([]byte(nil), data...), from: t.netAddr, dst: dst}
	if d := time.Duration(t.net.latency.Load()); d > 0 {
		if !t.net.sched.push(t.net, p, time.Now().Add(d)) {
			t.net.droppedFull.Add(1)
			return fmt.Errorf("%w: delay queue full", ErrMemBufferFull)
		}
		return nil
	}
	return t.net.deliver(p)
}

// Receive blocks for the next packet; it returns ErrClosed after Close. The
// source address is shared between packets of one sender: do not modify it.
func (t *MemTransport) Receive() ([]byte, net.Addr, error) {
	for {
		select {
		case <-t.done:
			return nil, nil, ErrClosed
		default:
		}
		if p, ok := t.dequeue(); ok {
			return p.data, p.from, nil
		}
		select {
		case <-t.ready:
		case <-t.done:
			return nil, nil, ErrClosed
		}
	}
}

// LocalAddr returns the endpoint's Addr, or its *net.UDPAddr for endpoints
// made by NewUDPTransport.
func (t *MemTransport) LocalAddr() net.Addr { return t.netAddr }

// Close unregisters the endpoint and wakes blocked receivers. Idempotent.
func (t *MemTransport) Close() error {
	t.closeOnce.Do(func() {
		t.net.unregister(t)
		close(t.done)
	})
	return nil
}
