package transport

import (
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// demuxDHT is the Transport view of a Demux.
type demuxDHT struct{ d *Demux }

func (v *demuxDHT) Send(addr net.Addr, data []byte) error {
	if len(data) > MaxPacketSize {
		return fmt.Errorf("%w: %d bytes > %d", ErrPacketTooLarge, len(data), MaxPacketSize)
	}
	if v.d.closing() {
		return ErrClosed
	}
	if _, err := v.d.conn.WriteTo(data, addr); err != nil {
		if v.d.closing() {
			return fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return fmt.Errorf("transport: demux send to %v: %w", addr, err)
	}
	return nil
}

func (v *demuxDHT) Receive() ([]byte, net.Addr, error) {
	select {
	case <-v.d.loopDone:
		return nil, nil, ErrClosed
	default:
	}
	select {
	case p := <-v.d.dhtQ:
		return p.data, p.from, nil
	case <-v.d.loopDone:
		return nil, nil, ErrClosed
	}
}

func (v *demuxDHT) LocalAddr() net.Addr { return v.d.conn.LocalAddr() }

// Close is a no-op: the Demux owns the socket.
func (v *demuxDHT) Close() error { return nil }

// packetView is a net.PacketConn reading one class queue of a Demux and
// writing to the shared socket. It deliberately offers no SyscallConn or
// ReadMsgUDP, so quic-go treats it as a plain PacketConn and never reads
// the shared socket behind the demux's back.
type packetView struct {
	d          *Demux
	q          chan packet
	rd         *readDeadline
	detachable bool
	detachOnce sync.Once
	detached   chan struct{}
}

func newPacketView(d *Demux, q chan packet, detachable bool) *packetView {
	return &packetView{d: d, q: q, rd: newReadDeadline(), detachable: detachable, detached: make(chan struct{})}
}

func (v *packetView) isDetached() bool {
	select {
	case <-v.detached:
		return true
	default:
		return false
	}
}

func (v *packetView) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Addr: v.d.conn.LocalAddr(), Err: err}
}

// ReadFrom returns the next queued datagram, a timeout error (net.Error with
// Timeout() true) once the read deadline passes, or net.ErrClosed once the
// demux or this view is closed.
func (v *packetView) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		expired := v.rd.done()
		select {
		case <-v.d.loopDone:
			return 0, nil, v.opError("read", net.ErrClosed)
		case <-v.detached:
			return 0, nil, v.opError("read", net.ErrClosed)
		case <-expired:
			return 0, nil, v.opError("read", os.ErrDeadlineExceeded)
		default:
		}
		select {
		case pkt := <-v.q:
			return copy(p, pkt.data), pkt.from, nil
		case <-v.d.loopDone:
			return 0, nil, v.opError("read", net.ErrClosed)
		case <-v.detached:
			return 0, nil, v.opError("read", net.ErrClosed)
		case <-expired:
			// Loop: the first select reports the timeout.
		}
	}
}

// WriteTo sends p on the shared socket.
func (v *packetView) WriteTo(p []byte, addr net.Addr) (int, error) {
	if v.isDetached() {
		return 0, v.opError("write", net.ErrClosed)
	}
	return v.d.conn.WriteTo(p, addr)
}

// Close detaches a STUN view (its reads end); on the QUIC view it is a no-op.
func (v *packetView) Close() error {
	if v.detachable {
		v.detachOnce.Do(func() {
			close(v.detached)
			v.rd.stop()
		})
	}
	return nil
}

func (v *packetView) LocalAddr() net.Addr { return v.d.conn.LocalAddr() }

func (v *packetView) SetDeadline(t time.Time) error {
	v.rd.set(t)
	return nil
}

func (v *packetView) SetReadDeadline(t time.Time) error {
	v.rd.set(t)
	return nil
}

// SetWriteDeadline is accepted and ignored: writes go straight to the
// shared socket, whose deadline must not be changed by one consumer.
func (v *packetView) SetWriteDeadline(time.Time) error { return nil }

// SetReadBuffer passes through to the shared socket when it supports it.
func (v *packetView) SetReadBuffer(n int) error {
	if c, ok := v.d.conn.(interface{ SetReadBuffer(int) error }); ok {
		return c.SetReadBuffer(n)
	}
	return nil
}

// SetWriteBuffer passes through to the shared socket when it supports it.
func (v *packetView) SetWriteBuffer(n int) error {
	if c, ok := v.d.conn.(interface{ SetWriteBuffer(int) error }); ok {
		return c.SetWriteBuffer(n)
	}
	return nil
}
