package sim

import (
	"fmt"
	"net"
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

// NewMemUDP registers an endpoint of mn that looks like a UDP socket at
// local: datagrams carry *net.UDPAddr sources and Send takes *net.UDPAddr
// destinations, so contacts learned from hearsay are dialable exactly as on
// a real network.
func NewMemUDP(mn *transport.MemNetwork, local *net.UDPAddr) (*transport.MemTransport, error) {
	mt, err := mn.NewUDPTransport(local)
	if err != nil {
		return nil, fmt.Errorf("sim: mem endpoint %v: %w", local, err)
	}
	return mt, nil
}

// Blackholes re-registers the addresses of killed nodes as sinks that
// discard everything (transport.MemNetwork.NewUDPSink), so peers of a
// crashed node see timeouts (as with a vanished host) rather than instant
// "unknown peer" send errors. Sinks need no goroutine; closing the
// MemNetwork closes them.
type Blackholes struct {
	mn *transport.MemNetwork
}

// NewBlackholes returns a sink registry on mn.
func NewBlackholes(mn *transport.MemNetwork) *Blackholes { return &Blackholes{mn: mn} }

// Add registers a sink at addr (after the node there was closed).
func (b *Blackholes) Add(addr *net.UDPAddr) error {
	if _, err := b.mn.NewUDPSink(addr); err != nil {
		return fmt.Errorf("sim: blackhole %v: %w", addr, err)
	}
	return nil
}

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
