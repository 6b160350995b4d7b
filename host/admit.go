package host

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
)

// admission counts live inbound Mode A connections per IP, per identity and
// in total. Its maps hold only keys with live connections, so they are
// bounded by MaxConns.
type admission struct {
	mu     sync.Mutex
	total  int
	byIP   map[string]int
	byPeer map[a2al.Address]int
}

var errLimit = errors.New("connection limit")

// take reserves a slot for a connection from ip by peer, or says which cap
// refused it; release gives the slot back.
func (a *admission) take(cfg ModeAConfig, ip string, peer a2al.Address) (release func(), err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.total >= cfg.MaxConns:
		return nil, fmt.Errorf("%w: node has %d application connections", errLimit, a.total)
	case a.byIP[ip] >= cfg.MaxPerIP:
		return nil, fmt.Errorf("%w: %d connections from your IP", errLimit, a.byIP[ip])
	case a.byPeer[peer] >= cfg.MaxPerPeer:
		return nil, fmt.Errorf("%w: %d connections from your identity", errLimit, a.byPeer[peer])
	}
	a.total++
	a.byIP[ip]++
	a.byPeer[peer]++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.total--
			if a.byIP[ip]--; a.byIP[ip] <= 0 {
				delete(a.byIP, ip)
			}
			if a.byPeer[peer]--; a.byPeer[peer] <= 0 {
				delete(a.byPeer, peer)
			}
		})
	}, nil
}

// remoteIP is the per-IP cap's key: the IPv4 address, or the IPv6 /64 (an
// IPv6 subscriber usually holds a whole /64, so single addresses are free).
func remoteIP(a net.Addr) string {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return a.String()
	}
	if v4 := u.IP.To4(); v4 != nil {
		return v4.String()
	}
	return u.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// acceptModeA admits an inbound application connection under the caps and
// runs it: agent-route exchange, then a local service or the Accept queue,
// and the idle timeout until it closes.
func (h *Host) acceptModeA(qc *quic.Conn, peer a2al.Address) {
	release, err := h.admit.take(h.cfg.ModeA, remoteIP(qc.RemoteAddr()), peer)
	if err != nil {
		h.m.modeARefused.WithLabelValues("limit").Inc()
		_ = qc.CloseWithError(CodeLimit, err.Error())
		return
	}
	c := newConn(h, qc, peer, h.id.Address, "")
	close(c.routeDone)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer release()
		h.runModeA(c)
	}()
}

func (h *Host) runModeA(c *Conn) {
	var svc *service
	local, err := h.answerRoute(c, func(local a2al.Address) error {
		svc = h.serviceFor(local)
		if svc == nil {
			return nil
		}
		return svc.admit(c.Peer)
	})
	if err != nil {
		var ce *closeError
		if !errors.As(err, &ce) {
			ce = &closeError{CodeRoute, err.Error()}
		}
		h.m.modeARefused.WithLabelValues(refusalLabel(ce.code)).Inc()
		lvl := slog.LevelDebug // malformed route streams are the caller's problem
		if ce.code == CodeNotAllowed {
			lvl = slog.LevelInfo // the operator wants to see who was turned away
		}
		h.log.Log(h.ctx, lvl, "application connection refused", "peer", c.Peer.String(), "remote", c.RemoteAddr(), "reason", ce.msg)
		_ = c.CloseWithReason(ce.code, ce.msg)
		return
	}
	c.Local = local
	var done chan struct{}
	if svc != nil {
		done = make(chan struct{})
		go func() { defer close(done); svc.serve(h, c) }()
	} else {
		select {
		case h.acceptA <- c:
		default:
			_ = c.CloseWithReason(CodeBusy, "accept queue full")
			return
		}
	}
	h.watchIdle(c)
	if done != nil {
		<-done // serve returns once the connection is closed
	}
}

// watchIdle returns when c closes; it closes c when the host closes or when
// c has had no application activity for IdleTimeout (unless
// DisableIdleTimeout).
func (h *Host) watchIdle(c *Conn) {
	idle := h.cfg.ModeA.IdleTimeout
	t := h.cfg.Clock.NewTimer(idle)
	defer t.Stop()
	if h.cfg.ModeA.DisableIdleTimeout {
		t.Stop()
	}
	for {
		select {
		case <-c.Context().Done():
			return
		case <-h.ctx.Done():
			_ = c.Close()
			return
		case <-t.C():
			if d := c.idleFor(); d >= idle {
				h.m.modeARefused.WithLabelValues("idle").Inc()
				_ = c.CloseWithReason(CodeIdle, fmt.Sprintf("idle for %s", idle))
			} else {
				t.Reset(idle - d)
			}
		}
	}
}

func refusalLabel(code quic.ApplicationErrorCode) string {
	switch code {
	case CodeNotAllowed:
		return "not_allowed"
	case CodeRoute:
		return "route"
	default:
		return "other"
	}
}
