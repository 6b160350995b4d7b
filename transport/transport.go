// Package transport carries DHT datagrams: the Transport interface, UDP,
// an in-memory network for simulations, and the socket demultiplexer that
// shares one UDP socket between DHT, STUN and QUIC (docs/decisions.md D5).
package transport

import (
	"errors"
	"net"
)

// MaxPacketSize is the largest DHT datagram any transport will send.
const MaxPacketSize = 1200

// Errors returned by transports.
var (
	ErrPacketTooLarge = errors.New("transport: packet too large")
	ErrClosed         = errors.New("transport: closed")
	ErrUnknownPeer    = errors.New("transport: unknown peer")
	ErrDuplicatePeer  = errors.New("transport: duplicate peer")
	ErrMemBufferFull  = errors.New("transport: mem buffer full")
)

// Transport sends and receives whole DHT datagrams.
type Transport interface {
	// Send writes one datagram to addr; it fails with ErrPacketTooLarge above MaxPacketSize.
	Send(addr net.Addr, data []byte) error
	// Receive blocks for the next datagram; it returns ErrClosed after Close.
	Receive() ([]byte, net.Addr, error)
	// LocalAddr is the address peers reach us at on this transport.
	LocalAddr() net.Addr
	// Close releases the transport; it is idempotent.
	Close() error
}
