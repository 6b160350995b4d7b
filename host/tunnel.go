package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
)

// TunnelConfig forwards a local TCP listener to a remote service
// (docs/services.md): each accepted TCP connection becomes one stream on a
// Mode A connection to Remote.
type TunnelConfig struct {
	// Remote is the address the service answers on. Required.
	Remote a2al.Address
	// At, if set, is the remote's UDP address: dial it directly instead of
	// resolving Remote's endpoint record.
	At net.Addr
	// Listener is the local TCP listener; Tunnel closes it when it returns.
	// Required.
	Listener net.Listener
	// MaxConns caps concurrent forwarded TCP connections; further ones wait
	// in the listener's backlog. Zero: 64.
	MaxConns int
	// DialTimeout bounds each (re)connection to Remote, route exchange
	// included. Zero: 30 s.
	DialTimeout time.Duration
	// OnConnect, if set, is told about every new Mode A connection.
	OnConnect func(*Conn)
}

// Tunnel connects to cfg.Remote (failing fast with the peer's reason if it
// refuses us) and then forwards connections from cfg.Listener until ctx ends
// or the listener fails. A lost connection is re-established on the next
// TCP connection. On return every forwarded connection is closed.
func (h *Host) Tunnel(ctx context.Context, cfg TunnelConfig) error {
	if cfg.Listener == nil || cfg.Remote.IsZero() {
		return errors.New("host: tunnel: remote and listener are required")
	}
	if err := cfg.fill(); err != nil {
		return fmt.Errorf("host: tunnel: %w", err)
	}
	t := &tunnel{h: h, cfg: cfg}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer func() {
		_ = cfg.Listener.Close()
		cancel()
		wg.Wait()
		t.close()
	}()
	if _, err := t.conn(ctx); err != nil {
		return err
	}
	go func() { <-ctx.Done(); _ = cfg.Listener.Close() }()
	sem := make(chan struct{}, cfg.MaxConns)
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		nc, err := cfg.Listener.Accept()
		if err != nil {
			<-sem
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("host: tunnel: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t.forward(ctx, nc)
		}()
	}
}

type tunnel struct {
	h   *Host
	cfg TunnelConfig
	mu  sync.Mutex // guards c; held while (re)dialling so dials are not duplicated
	c   *Conn
}

// conn returns the live connection to the remote, dialling a new one if the
// last one closed.
func (t *tunnel) conn(ctx context.Context) (*Conn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.c != nil && t.c.Context().Err() == nil {
		return t.c, nil
	}
	dctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	defer cancel()
	var c *Conn
	var err error
	if t.cfg.At != nil {
		c, err = t.h.DialEndpoint(dctx, t.cfg.At, t.cfg.Remote)
	} else {
		c, err = t.h.Dial(dctx, t.cfg.Remote)
	}
	if err != nil {
		return nil, fmt.Errorf("host: tunnel to %s: %w", t.cfg.Remote.String(), err)
	}
	if err := c.WaitRoute(dctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("host: tunnel to %s: %w", t.cfg.Remote.String(), err)
	}
	if t.cfg.OnConnect != nil {
		t.cfg.OnConnect(c)
	}
	t.c = c
	return c, nil
}

func (t *tunnel) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.c != nil {
		_ = t.c.Close()
	}
}

func (t *tunnel) forward(ctx context.Context, nc net.Conn) {
	tc, ok := nc.(halfCloser)
	if !ok {
		_ = nc.Close()
		return
	}
	c, err := t.conn(ctx)
	if err != nil {
		t.h.log.Warn("tunnel: no connection to the remote service", "err", err)
		_ = nc.Close()
		return
	}
	octx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	st, err := c.OpenStream(octx)
	cancel()
	if err != nil {
		t.h.log.Warn("tunnel: open stream", "err", err)
		_ = nc.Close()
		return
	}
	bridge(ctx, st, tc)
}
