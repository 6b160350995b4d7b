package dht

import (
	"context"
	"net"
	"sync"
)

// BootstrapAddrs pings seeds by address (concurrently), learns their
// identities, and runs a self-lookup as soon as the first one answers.
func (n *Node) BootstrapAddrs(ctx context.Context, addrs []net.Addr) error {
	if n == nil {
		return errNilNode
	}
	n.Start()
	if len(addrs) == 0 {
		return nil
	}
	first := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	var mu sync.Mutex
	okCount := 0
	for _, a := range addrs {
		if a == nil {
			continue
		}
		wg.Add(1)
		a := a
		if !n.spawn(func() {
			defer wg.Done()
			if _, err := n.PingIdentity(ctx, a); err == nil {
				mu.Lock()
				okCount++
				mu.Unlock()
				once.Do(func() { close(first) })
			} else {
				n.log.Debug("dht: bootstrap seed unreachable", "addr", a, "err", err)
			}
		}) {
			wg.Done()
		}
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	select {
	case <-first:
		n.joinLookup(ctx)
		<-allDone
		return nil
	case <-allDone:
		select {
		case <-first:
			n.joinLookup(ctx)
			return nil
		default:
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		return errSeedsUnreachable
	}
}

// Bootstrap adds seeds with known identities as trusted contacts and runs a
// self-lookup.
func (n *Node) Bootstrap(ctx context.Context, seeds []BootstrapSeed) error {
	if n == nil {
		return errNilNode
	}
	n.Start()
	added := 0
	for _, s := range seeds {
		if s.Addr == nil {
			continue
		}
		n.AddContact(s.Addr, s.Info)
		added++
	}
	if added == 0 {
		return nil
	}
	n.joinLookup(ctx)
	return nil
}

// selfLookup announces us to our neighbourhood: unlike FindNode it waits
// until all K closest live nodes answered, so each of them has seen a
// request from us and knows us first-hand (this keeps the nearest-K region
// of every table complete, which routing precision and the size estimate
// rely on).
func (n *Node) selfLookup(ctx context.Context) {
	r := n.newQueryRun(n.id, false, 0, 0)
	r.run(ctx)
}

// joinLookup is the self-lookup that ends a bootstrap. It just filled the
// table, so no bucket needs a refill lookup before one cooldown has passed
// and the deep buckets need no maintenance self-lookup before
// selfRefreshEvery; without this every joining node ran a lookup per bucket
// and a second self-lookup at its first maintenance tick, seconds after
// joining.
func (n *Node) joinLookup(ctx context.Context) {
	n.selfLookup(ctx)
	now := n.now()
	n.lastSelfRefresh.Store(now.UnixNano())
	n.tabMu.Lock()
	n.tab.MarkAllRefilled(now)
	n.tabMu.Unlock()
}

// StartWithBootstrap starts the node and bootstraps from raw addresses.
func (n *Node) StartWithBootstrap(ctx context.Context, addrs []net.Addr) error {
	if n == nil {
		return errNilNode
	}
	n.Start()
	return n.BootstrapAddrs(ctx, addrs)
}
