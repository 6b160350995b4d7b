package dht

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/a2alnode/a2al/protocol"
)

// NAT probe parameters (docs/dht.md §8).
const (
	natEchoBudget   = 3
	natEchoWindow   = 10 * time.Second
	maxNATWaiters   = 256
	maxNATBudgetIPs = 4096
)

type natBudget struct {
	until time.Time
	count int
}

type natState struct {
	mu           sync.Mutex
	waiters      map[[8]byte]chan struct{}
	budget       map[string]*natBudget
	allowPrivate atomic.Bool // tests on loopback only
}

func (s *natState) init() {
	s.waiters = make(map[[8]byte]chan struct{})
	s.budget = make(map[string]*natBudget)
}

func (s *natState) wake(tok [8]byte) {
	s.mu.Lock()
	ch := s.waiters[tok]
	s.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// SendNATProbeReq asks probeAddr to send a NAT_PROBE_ECHO to claimedAddr
// (6- or 18-byte wire form). It reports whether the echo arrived before ctx
// ended; a timeout is (false, nil). Probe traffic always uses raw UDP.
func (n *Node) SendNATProbeReq(ctx context.Context, probeAddr net.Addr, claimedAddr []byte) (bool, error) {
	tok, wait, err := n.ExpectNATEcho()
	if err != nil {
		return false, err
	}
	if err := n.SendNATProbeToken(probeAddr, claimedAddr, tok); err != nil {
		wait(nil)
		return false, err
	}
	return wait(ctx)
}

// ExpectNATEcho registers a waiter for a NAT_PROBE_ECHO carrying a fresh
// token. wait blocks until that echo reaches this node (true), ctx ends
// (false, nil) or the node closes; it must be called once, and wait(nil)
// just removes the waiter. The request itself may be sent by another node
// (SendNATProbeToken), so an echo can be awaited on a socket that never
// talked to the peer that echoes (docs/public-address.md).
func (n *Node) ExpectNATEcho() (tok [8]byte, wait func(ctx context.Context) (bool, error), err error) {
	if n == nil {
		return tok, nil, errNilNode
	}
	if !n.started.Load() {
		n.Start()
	}
	_, _ = crand.Read(tok[:])
	ch := make(chan struct{}, 1)
	s := &n.nat
	s.mu.Lock()
	if len(s.waiters) >= maxNATWaiters {
		s.mu.Unlock()
		return tok, nil, fmt.Errorf("dht: too many NAT probes in flight")
	}
	s.waiters[tok] = ch
	s.mu.Unlock()
	wait = func(ctx context.Context) (bool, error) {
		defer func() {
			s.mu.Lock()
			delete(s.waiters, tok)
			s.mu.Unlock()
		}()
		if ctx == nil {
			return false, nil
		}
		select {
		case <-ch:
			return true, nil
		case <-ctx.Done():
			return false, nil
		case <-n.ctx.Done():
			return false, errClosed
		}
	}
	return tok, wait, nil
}

// SendNATProbeToken sends one NAT_PROBE_REQ{tok, claimedAddr} to probeAddr
// (no retries, no waiter: see ExpectNATEcho).
func (n *Node) SendNATProbeToken(probeAddr net.Addr, claimedAddr []byte, tok [8]byte) error {
	if n == nil {
		return errNilNode
	}
	if _, err := protocol.DecodeUDPAddr(claimedAddr); err != nil {
		return fmt.Errorf("dht: NAT probe claimed address: %w", err)
	}
	if !n.started.Load() {
		n.Start()
	}
	raw, err := n.encode(newTxID(), protocol.BodyNATProbeReq{Token: tok, ClaimedAddr: append([]byte(nil), claimedAddr...)})
	if err != nil {
		return err
	}
	if err := n.tr.Send(probeAddr, raw); err != nil {
		return fmt.Errorf("dht: send NAT probe to %v: %w", probeAddr, err)
	}
	n.cnt.tx.Add(1)
	return nil
}

// handleNATProbeReq echoes to the claimed address only when it is public,
// has the requester's IP (only the port may differ, so the node cannot be
// used to hit third parties) and the per-IP budget allows it.
func (n *Node) handleNATProbeReq(b protocol.BodyNATProbeReq, from net.Addr) {
	claimed, err := protocol.DecodeUDPAddr(b.ClaimedAddr)
	if err != nil {
		return
	}
	s := &n.nat
	if !s.allowPrivate.Load() && !protocol.IsPublicIP(claimed.IP) {
		return
	}
	u, ok := from.(*net.UDPAddr)
	if !ok || !u.IP.Equal(claimed.IP) {
		return
	}
	now := n.now()
	key := string(claimed.IP.To16())
	s.mu.Lock()
	bud := s.budget[key]
	if bud == nil || !now.Before(bud.until) {
		if bud == nil && len(s.budget) >= maxNATBudgetIPs {
			for k, v := range s.budget {
				if !now.Before(v.until) {
					delete(s.budget, k)
				}
			}
			if len(s.budget) >= maxNATBudgetIPs {
				s.mu.Unlock()
				return
			}
		}
		bud = &natBudget{until: now.Add(natEchoWindow)}
		s.budget[key] = bud
	}
	if bud.count >= natEchoBudget {
		s.mu.Unlock()
		return
	}
	bud.count++
	s.mu.Unlock()
	raw, err := n.encode(newTxID(), protocol.BodyNATProbeEcho{Token: b.Token})
	if err != nil {
		return
	}
	if err := n.tr.Send(claimed, raw); err == nil {
		n.cnt.tx.Add(1)
	}
}
