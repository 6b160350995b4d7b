package natlab

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// delayLine is a userspace stand-in for netem: an L2 forwarder between two
// interfaces of one namespace that delays every frame and drops a fraction.
// It exists because many kernels (including minimal CI VMs) ship without
// sch_netem. Frames travel with their virtio-net header (PACKET_VNET_HDR) so
// GSO super-frames and checksum offload survive the trip unchanged.
type delayLine struct {
	delay atomic.Int64  // one-way, nanoseconds
	loss  atomic.Uint64 // probability * 1e9
	stop  atomic.Bool
	wg    sync.WaitGroup
	fds   []int
}

const (
	vnetHdrLen   = 10
	maxFrame     = 65536 + vnetHdrLen
	delayQueue   = 4096 // frames in flight per direction (bounded; overflow drops)
	pollInterval = 200 * time.Millisecond
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openPacketSocket binds a raw packet socket to ifName in ns.
func openPacketSocket(ns NetNS, ifName string) (int, int, error) {
	fd, idx := -1, 0
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		idx = ifc.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		return err
	})
	if err != nil {
		return -1, 0, fmt.Errorf("natlab: packet socket on %s/%s: %w", ns.Name, ifName, err)
	}
	fail := func(what string, err error) (int, int, error) {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("natlab: packet socket on %s/%s: %s: %w", ns.Name, ifName, what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fail("vnet header", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx}); err != nil {
		return fail("bind", err)
	}
	mreq := &unix.PacketMreq{Ifindex: int32(idx), Type: unix.PACKET_MR_PROMISC}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, mreq); err != nil {
		return fail("promisc", err)
	}
	tv := unix.NsecToTimeval(pollInterval.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail("receive timeout", err)
	}
	return fd, idx, nil
}

// startDelayLine forwards frames between interfaces a and b of ns.
func startDelayLine(ns NetNS, a, b string) (*delayLine, error) {
	fa, _, err := openPacketSocket(ns, a)
	if err != nil {
		return nil, err
	}
	fb, _, err := openPacketSocket(ns, b)
	if err != nil {
		unix.Close(fa)
		return nil, err
	}
	d := &delayLine{fds: []int{fa, fb}}
	d.pump(fa, fb)
	d.pump(fb, fa)
	return d, nil
}

type frame struct {
	due  time.Time
	data []byte
}

// pump moves frames received on in to out after the current delay.
func (d *delayLine) pump(in, out int) {
	q := make(chan frame, delayQueue)
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		defer close(q)
		buf := make([]byte, maxFrame)
		for !d.stop.Load() {
			n, from, err := unix.Recvfrom(in, buf, 0)
			if err != nil || n <= vnetHdrLen {
				continue // timeout (poll stop flag), EINTR, runt
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue // our own transmission on this interface
			}
			if p := d.loss.Load(); p > 0 && rand.Uint64N(1e9) < p {
				continue
			}
			f := frame{due: time.Now().Add(time.Duration(d.delay.Load())), data: append([]byte(nil), buf[:n]...)}
			select {
			case q <- f:
			default: // queue full: drop, like a real bottleneck
			}
		}
	}()
	go func() {
		defer d.wg.Done()
		for f := range q {
			if wait := time.Until(f.due); wait > 0 {
				time.Sleep(wait)
			}
			if d.stop.Load() {
				continue
			}
			_, _ = unix.Write(out, f.data)
		}
	}()
}

// set changes the one-way delay and loss (0..1) for new frames.
func (d *delayLine) set(delay time.Duration, loss float64) {
	d.delay.Store(int64(delay))
	if loss < 0 {
		loss = 0
	}
	if loss > 1 {
		loss = 1
	}
	d.loss.Store(uint64(loss * 1e9))
}

// close stops the pumps (within one poll interval) and closes the sockets.
func (d *delayLine) close() {
	if d.stop.Swap(true) {
		return
	}
	d.wg.Wait()
	for _, fd := range d.fds {
		unix.Close(fd)
	}
}
