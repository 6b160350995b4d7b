package transport

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// UDPTransport is a Transport over one UDP socket (IPv4, IPv6 or dual-stack).
//
// Receive drops datagrams larger than MaxPacketSize instead of handing out a
// truncated prefix that could only fail to decode later, and reports IPv4
// peers on a dual-stack socket as plain IPv4 so that rate limits and
// observed addresses see one form per peer.
type UDPTransport struct {
	conn      *net.UDPConn
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	oversized atomic.Uint64
	// rbuf is the one read buffer, allocated by the first Receive and held
	// under rmu while it reads: a node keeps a single reader blocked in
	// Receive, so a pool (which kept a buffer per P besides the one in use)
	// only multiplied the idle memory of every socket.
	rmu  sync.Mutex
	rbuf []byte
}

// ListenUDP opens a UDP socket; network is "udp4", "udp6", or "udp" for the
// family rule of Listen (dual stack on an empty host or "::").
func ListenUDP(network, laddr string) (*UDPTransport, error) {
	if network == "udp" {
		c, _, err := Listen(laddr)
		if err != nil {
			return nil, err
		}
		return NewUDPTransport(c), nil
	}
	addr, err := net.ResolveUDPAddr(network, laddr)
	if err != nil {
		return nil, fmt.Errorf("transport: resolve %s address %q: %w", network, laddr, err)
	}
	c, err := net.ListenUDP(network, addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s %q: %w", network, laddr, err)
	}
	return NewUDPTransport(c), nil
}

// NewUDPTransport wraps c; the transport takes ownership and closes c on Close.
func NewUDPTransport(c *net.UDPConn) *UDPTransport {
	return &UDPTransport{conn: c}
}

// Send writes data as one datagram to addr, which must be a *net.UDPAddr.
func (t *UDPTransport) Send(addr net.Addr, data []byte) error {
	if len(data) > MaxPacketSize {
		return fmt.Errorf("%w: %d bytes > %d", ErrPacketTooLarge, len(data), MaxPacketSize)
	}
	if t.closed.Load() {
		return ErrClosed
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok || ua == nil {
		return fmt.Errorf("transport: udp send: destination %v (%T) is not a *net.UDPAddr", addr, addr)
	}
	if _, err := t.conn.WriteToUDP(data, ua); err != nil {
		if t.closed.Load() || errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return fmt.Errorf("transport: udp send to %v: %w", ua, err)
	}
	return nil
}

// Receive blocks for the next datagram of at most MaxPacketSize bytes and
// returns a freshly allocated copy of it. Concurrent calls take turns.
func (t *UDPTransport) Receive() ([]byte, net.Addr, error) {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	if t.rbuf == nil {
		// One byte of headroom tells a full-size datagram from a truncated one.
		t.rbuf = make([]byte, MaxPacketSize+1)
	}
	buf := t.rbuf
	for {
		n, ap, err := t.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if t.closed.Load() || errors.Is(err, net.ErrClosed) {
				return nil, nil, ErrClosed
			}
			return nil, nil, fmt.Errorf("transport: udp receive: %w", err)
		}
		if n > MaxPacketSize {
			t.oversized.Add(1)
			continue
		}
		out := make([]byte, n)
		copy(out, buf[:n])
		return out, udpAddrFromAddrPort(ap), nil
	}
}

// Oversized reports how many datagrams larger than MaxPacketSize were dropped.
func (t *UDPTransport) Oversized() uint64 { return t.oversized.Load() }

// LocalAddr returns the socket's bound address.
func (t *UDPTransport) LocalAddr() net.Addr { return t.conn.LocalAddr() }

// Close closes the socket; blocked Receive calls return ErrClosed. Idempotent.
func (t *UDPTransport) Close() error {
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		t.closeErr = t.conn.Close()
	})
	return t.closeErr
}

// udpAddrFromAddrPort converts ap to a *net.UDPAddr with IPv4-mapped IPv6
// addresses reduced to IPv4.
func udpAddrFromAddrPort(ap netip.AddrPort) *net.UDPAddr {
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
}

// normalizeAddr reduces an IPv4-mapped IPv6 *net.UDPAddr to IPv4; other
// addresses are returned unchanged.
func normalizeAddr(a net.Addr) net.Addr {
	ua, ok := a.(*net.UDPAddr)
	if !ok || ua == nil {
		return a
	}
	if ip4 := ua.IP.To4(); ip4 != nil && len(ua.IP) == net.IPv6len {
		return &net.UDPAddr{IP: ip4, Port: ua.Port}
	}
	return a
}
