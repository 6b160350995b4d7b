package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
)

// ServiceConfig exposes a local TCP service on one of the host's addresses
// (docs/services.md). Every application stream of a connection made to that
// address is bridged to a fresh TCP connection to Target.
type ServiceConfig struct {
	// Name labels the service in logs and metrics. Required.
	Name string
	// Address is the identity the service answers on: the node's address or
	// a hosted agent's. Zero means the node's address.
	Address a2al.Address
	// Target is the local TCP address ("127.0.0.1:8080"). Required.
	Target string
	// Allow lists the caller addresses that may connect. Empty refuses every
	// caller unless Public is set.
	Allow []a2al.Address
	// Public admits every caller (Allow is then ignored).
	Public bool
	// MaxStreams caps concurrent bridged streams per connection; later
	// streams wait until one ends. Zero: 32.
	MaxStreams int
	// DialTimeout bounds the TCP dial to Target. Zero: 5 s.
	DialTimeout time.Duration
}

// ErrService is wrapped by service registration failures.
var ErrService = errors.New("host: service")

type service struct {
	cfg   ServiceConfig
	allow map[a2al.Address]bool
}

// Serve registers a service. Only one service can answer on an address (the
// dialled address is how a caller selects the service). The address must be
// the node's or a hosted agent's.
func (h *Host) Serve(cfg ServiceConfig) error {
	if cfg.Name == "" || cfg.Target == "" {
		return fmt.Errorf("%w: name and target are required", ErrService)
	}
	if _, _, err := net.SplitHostPort(cfg.Target); err != nil {
		return fmt.Errorf("%w %s: target %q: %w", ErrService, cfg.Name, cfg.Target, err)
	}
	if cfg.Address.IsZero() {
		cfg.Address = h.id.Address
	}
	if h.localIdentity(cfg.Address) == nil {
		return fmt.Errorf("%w %s: this host does not answer for %s (add the agent first)", ErrService, cfg.Name, cfg.Address.String())
	}
	if err := cfg.fill(); err != nil {
		return fmt.Errorf("%w %s: %w", ErrService, cfg.Name, err)
	}
	s := &service{cfg: cfg, allow: make(map[a2al.Address]bool, len(cfg.Allow))}
	for _, a := range cfg.Allow {
		s.allow[a] = true
	}
	h.svcMu.Lock()
	defer h.svcMu.Unlock()
	if old, ok := h.services[cfg.Address]; ok {
		return fmt.Errorf("%w %s: %s already serves %s", ErrService, cfg.Name, old.cfg.Name, cfg.Address.String())
	}
	h.services[cfg.Address] = s
	return nil
}

func (h *Host) serviceFor(local a2al.Address) *service {
	h.svcMu.RLock()
	defer h.svcMu.RUnlock()
	return h.services[local]
}

// admit is the allow-list check; the refusal reason reaches the caller as
// the connection's close reason.
func (s *service) admit(peer a2al.Address) error {
	if s.cfg.Public || s.allow[peer] {
		return nil
	}
	return &closeError{CodeNotAllowed, fmt.Sprintf("service %s: caller %s is not on the allow-list", s.cfg.Name, peer.String())}
}

// serve bridges every stream of c to a new TCP connection to the target,
// at most MaxStreams at once (later streams wait), until c closes.
func (s *service) serve(h *Host, c *Conn) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, s.cfg.MaxStreams)
	h.log.Info("service connection", "service", s.cfg.Name, "peer", c.Peer.String(), "remote", c.RemoteAddr())
	for {
		// Take a slot first: further streams wait in QUIC's accept queue,
		// and the peer cannot open more than the connection's stream limit.
		select {
		case sem <- struct{}{}:
		case <-c.Context().Done():
			return
		}
		st, err := c.AcceptStream(c.Context())
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d := net.Dialer{Timeout: s.cfg.DialTimeout}
			tc, err := d.DialContext(c.Context(), "tcp", s.cfg.Target)
			if err != nil {
				h.log.Warn("service target unreachable", "service", s.cfg.Name, "target", s.cfg.Target, "err", err)
				st.CancelRead(streamTargetDown)
				st.CancelWrite(streamTargetDown)
				return
			}
			h.m.serviceStreams.WithLabelValues(s.cfg.Name).Inc()
			bridge(c.Context(), st, tc.(*net.TCPConn))
		}()
	}
}

// streamTargetDown resets a stream whose TCP target could not be reached.
const streamTargetDown = 2

// halfCloser is a connection that can shut down its write side (TCP, Unix).
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// bridge copies both ways between an application stream and a TCP
// connection, respecting half-close: EOF from TCP becomes the stream's FIN
// and the stream's FIN becomes a TCP write shutdown. It returns when both
// directions are done or ctx ends, with both sides closed.
func bridge(ctx context.Context, st *Stream, tc halfCloser) {
	defer tc.Close()
	done := make(chan struct{}, 2)
	go func() {
		_, err := io.Copy(st, tc)
		if err != nil {
			st.CancelWrite(0)
		} else {
			_ = st.Close() // FIN
		}
		done <- struct{}{}
	}()
	go func() {
		_, err := io.Copy(tc, st)
		if err != nil {
			st.CancelRead(0)
			_ = tc.Close()
		} else {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	for remaining := 2; remaining > 0; remaining-- {
		select {
		case <-done:
		case <-ctx.Done():
			st.CancelRead(0)
			st.CancelWrite(0)
			_ = tc.Close()
			for ; remaining > 0; remaining-- {
				<-done
			}
			return
		}
	}
}
