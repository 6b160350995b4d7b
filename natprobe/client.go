package natprobe

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/a2alnode/a2al/clock"
	"github.com/pion/stun"
)

// maxPending bounds concurrent transactions of one classifier run.
const maxPending = 16

var (
	errTimeout     = errors.New("no STUN response")
	errTooManyTxns = errors.New("too many concurrent STUN transactions")
)

// reply is a parsed response plus the address it really came from.
type reply struct {
	resp bindingResponse
	from netip.AddrPort
	err  error // non-nil for an error response
}

// prober runs STUN client transactions over a socket it does not own.
// Responses reach it either through handle (a demultiplexer hook) or through
// its own reader goroutine (readLoop).
type prober struct {
	conn    net.PacketConn
	timeout time.Duration
	clk     clock.Clock

	mu      sync.Mutex
	pending map[[stun.TransactionIDSize]byte]chan reply
	// finished remembers recent completed transactions so that late answers
	// to retransmissions are consumed instead of leaking to other readers.
	finished [maxPending][stun.TransactionIDSize]byte
	nextFin  int

	malformed atomic.Uint64 // responses to our transactions that failed to parse
}

func newProber(conn net.PacketConn, timeout time.Duration, clk clock.Clock) *prober {
	return &prober{conn: conn, timeout: timeout, clk: clk, pending: make(map[[stun.TransactionIDSize]byte]chan reply)}
}

// handle consumes pkt if it answers one of our pending transactions. It is
// safe to call from any goroutine and copies what it keeps.
func (p *prober) handle(pkt []byte, from net.Addr) (consumed bool) {
	id, ok := headerTxID(pkt)
	if !ok {
		return false
	}
	p.mu.Lock()
	ch, ok := p.pending[id]
	late := !ok && slices.Contains(p.finished[:], id) && id != ([stun.TransactionIDSize]byte{})
	p.mu.Unlock()
	if late {
		return true
	}
	if !ok {
		return false
	}
	src, _ := addrPortOf(from)
	_, resp, err := parseResponse(pkt)
	var r reply
	switch {
	case err == nil:
		r = reply{resp: resp, from: src}
	case errors.Is(err, errErrorResponse):
		r = reply{from: src, err: err}
	default:
		p.malformed.Add(1)
		return true // ours, but garbage: keep waiting for a good one
	}
	select {
	case ch <- r:
	default: // a retransmission's answer already queued
	}
	return true
}

// readLoop reads the socket until stop is set, feeding handle. Packets that
// are not ours are discarded, which is why direct reading is only for
// sockets that carry nothing else meanwhile.
func (p *prober) readLoop(stop *atomic.Bool, done chan<- struct{}) {
	defer close(done)
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if stop.Load() {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				_ = p.conn.SetReadDeadline(time.Time{})
				if stop.Load() { // stop's deadline may just have been cleared
					return
				}
				continue
			}
			return // closed or broken: pending transactions will time out
		}
		p.handle(buf[:n], from)
	}
}

// do runs one Binding transaction towards dst with CHANGE-REQUEST flags,
// retransmitting with exponential back-off: sends at 0, T/7 and 3T/7, gives
// up at T (the per-transaction Timeout).
func (p *prober) do(ctx context.Context, dst netip.AddrPort, change uint32) (reply, error) {
	var id [stun.TransactionIDSize]byte
	if _, err := rand.Read(id[:]); err != nil {
		return reply{}, fmt.Errorf("transaction id: %w", err)
	}
	req, err := buildRequest(id, change)
	if err != nil {
		return reply{}, err
	}
	ch := make(chan reply, 1)
	p.mu.Lock()
	if len(p.pending) >= maxPending {
		p.mu.Unlock()
		return reply{}, errTooManyTxns
	}
	p.pending[id] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pending, id)
		p.finished[p.nextFin] = id
		p.nextFin = (p.nextFin + 1) % len(p.finished)
		p.mu.Unlock()
	}()

	overall := p.clk.NewTimer(p.timeout)
	defer overall.Stop()
	rto := p.timeout / 7
	to := udpAddr(dst)
	var lastWriteErr error
	sent := 0
	for attempt := 0; ; attempt++ {
		if attempt < 3 {
			if _, err := p.conn.WriteTo(req, to); err != nil {
				lastWriteErr = err
			} else {
				sent++
			}
		}
		t := p.clk.NewTimer(time.Duration(1<<attempt) * rto)
		select {
		case r := <-ch:
			t.Stop()
			if r.err != nil {
				return r, fmt.Errorf("binding %s: %w", dst, r.err)
			}
			return r, nil
		case <-ctx.Done():
			t.Stop()
			return reply{}, fmt.Errorf("binding %s: %w", dst, ctx.Err())
		case <-overall.C():
			t.Stop()
			if sent == 0 && lastWriteErr != nil {
				return reply{}, fmt.Errorf("send binding request to %s: %w", dst, lastWriteErr)
			}
			return reply{}, fmt.Errorf("binding %s after %v: %w", dst, p.timeout, errTimeout)
		case <-t.C():
		}
	}
}
