package sim

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/a2alnode/a2al/transport"
)

// NodeAddr returns the simulated address of node i: 127.A.B.1 with a
// distinct /24 per node and A varying fastest, so nodes spread over the
// /16s of 127.0.0.0/8 and the DHT's per-/24 and per-/16 diversity limits
// stay on (all of 127.0.0.0/8 is local on Linux; 127.0.x.x is left alone).
// Distinct for i < 255*256.
func NodeAddr(i int, port int) *net.UDPAddr {
	return &net.UDPAddr{IP: net.IPv4(127, byte(1+i%255), byte(i/255), 1).To4(), Port: port}
}

// MemUDP presents a transport.MemTransport with UDP addresses: the endpoint
// is registered under "ip:port" and datagrams carry *net.UDPAddr sources, so
// contacts learned from hearsay are dialable exactly as on a real network.
type MemUDP struct {
	mt    *transport.MemTransport
	local *net.UDPAddr
}

// NewMemUDP registers local on mn.
func NewMemUDP(mn *transport.MemNetwork, local *net.UDPAddr) (*MemUDP, error) {
	mt, err := mn.NewTransport(local.String())
	if err != nil {
		return nil, fmt.Errorf("sim: mem endpoint %v: %w", local, err)
	}
	return &MemUDP{mt: mt, local: local}, nil
}

// Send forwards to the endpoint named by addr.
func (m *MemUDP) Send(addr net.Addr, data []byte) error {
	u, ok := addr.(*net.UDPAddr)
	if !ok {
		return fmt.Errorf("sim: %w: %v is not a UDP address", transport.ErrUnknownPeer, addr)
	}
	return m.mt.Send(transport.Addr{Name: u.String()}, data)
}

// Receive returns the next datagram with a UDP source address.
func (m *MemUDP) Receive() ([]byte, net.Addr, error) {
	for {
		data, from, err := m.mt.Receive()
		if err != nil {
			return nil, nil, err
		}
		ap, perr := netip.ParseAddrPort(from.String())
		if perr != nil {
			continue // not one of ours; drop
		}
		return data, net.UDPAddrFromAddrPort(ap), nil
	}
}

// LocalAddr is the simulated UDP address.
func (m *MemUDP) LocalAddr() net.Addr { return m.local }

// Close closes the endpoint. Idempotent.
func (m *MemUDP) Close() error { return m.mt.Close() }

// Blackholes re-registers the addresses of killed nodes as sinks that
// discard everything, so peers of a crashed node see timeouts (as with a
// vanished host) rather than instant "unknown peer" send errors.
type Blackholes struct {
	mn *transport.MemNetwork
	wg sync.WaitGroup
}

// NewBlackholes returns a sink registry on mn.
func NewBlackholes(mn *transport.MemNetwork) *Blackholes { return &Blackholes{mn: mn} }

// Add registers a sink at addr (after the node there was closed). Its
// goroutine ends when the MemNetwork is closed.
func (b *Blackholes) Add(addr *net.UDPAddr) error {
	mt, err := b.mn.NewTransport(addr.String())
	if err != nil {
		return fmt.Errorf("sim: blackhole %v: %w", addr, err)
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			if _, _, err := mt.Receive(); err != nil {
				return
			}
		}
	}()
	return nil
}

// Wait waits for the sink goroutines (call after closing the MemNetwork).
func (b *Blackholes) Wait() { b.wg.Wait() }

// Counting wraps a Transport and counts datagrams and bytes in each direction.
type Counting struct {
	transport.Transport
	SentPackets, SentBytes, RecvPackets, RecvBytes atomic.Uint64
}

// Send counts successful sends.
func (c *Counting) Send(addr net.Addr, data []byte) error {
	err := c.Transport.Send(addr, data)
	if err == nil {
		c.SentPackets.Add(1)
		c.SentBytes.Add(uint64(len(data)))
	}
	return err
}

// Receive counts received datagrams.
func (c *Counting) Receive() ([]byte, net.Addr, error) {
	data, from, err := c.Transport.Receive()
	if err == nil {
		c.RecvPackets.Add(1)
		c.RecvBytes.Add(uint64(len(data)))
	}
	return data, from, err
}
