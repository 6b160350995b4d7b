package dht

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

// testKeys is a minimal single-identity KeyStore for tests.
type testKeys struct {
	priv ed25519.PrivateKey
	addr a2al.Address
}

func newTestKeys(seed uint64) *testKeys {
	var s [32]byte
	binary.BigEndian.PutUint64(s[:], seed)
	h := sha256.Sum256(s[:])
	priv := ed25519.NewKeyFromSeed(h[:])
	return &testKeys{priv: priv, addr: a2al.AddressFromEd25519(priv.Public().(ed25519.PublicKey))}
}

func (k *testKeys) Generate() (a2al.Address, error) {
	return a2al.Address{}, fmt.Errorf("not supported")
}
func (k *testKeys) Sign(a a2al.Address, data []byte) ([]byte, error) {
	if a != k.addr {
		return nil, fmt.Errorf("unknown address")
	}
	return ed25519.Sign(k.priv, data), nil
}
func (k *testKeys) PublicKey(a a2al.Address) ([]byte, error) {
	return append([]byte(nil), k.priv.Public().(ed25519.PublicKey)...), nil
}
func (k *testKeys) List() []a2al.Address { return []a2al.Address{k.addr} }
func (k *testKeys) pub() []byte          { return k.priv.Public().(ed25519.PublicKey) }
func (k *testKeys) sign(m []byte) ([]byte, error) {
	return ed25519.Sign(k.priv, m), nil
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type memCluster struct {
	t     testing.TB
	net   *transport.MemNetwork
	nodes []*Node
	keys  []*testKeys
}

// newMemNode creates one node on the mem network (not started).
func (c *memCluster) newNode(seed uint64, mod func(*Config)) *Node {
	c.t.Helper()
	tr, err := c.net.NewTransport(fmt.Sprintf("n%d", seed))
	if err != nil {
		c.t.Fatalf("mem transport: %v", err)
	}
	k := newTestKeys(seed)
	cfg := Config{Transport: tr, Keystore: k, Logger: quietLogger()}
	if mod != nil {
		mod(&cfg)
	}
	n, err := NewNode(cfg)
	if err != nil {
		c.t.Fatalf("NewNode: %v", err)
	}
	c.nodes = append(c.nodes, n)
	c.keys = append(c.keys, k)
	return n
}

func newMemCluster(t testing.TB) *memCluster {
	c := &memCluster{t: t, net: transport.NewMemNetwork()}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			_ = n.Close()
		}
		_ = c.net.Close()
	})
	return c
}

// build creates count started nodes; each bootstraps from node 0.
func (c *memCluster) build(count int, mod func(*Config)) {
	c.t.Helper()
	base := len(c.nodes)
	for i := 0; i < count; i++ {
		n := c.newNode(uint64(base+i+1), mod)
		n.Start()
	}
	// In-memory contacts travel as 127.0.0.1:0 placeholders, so every node
	// learns every dial address up front (as the reference tests do).
	for _, a := range c.nodes {
		for _, b := range c.nodes {
			if a != b {
				a.BindPeerAddr(b.NodeID(), b.LocalAddr())
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seed := c.nodes[0].LocalAddr()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, n := range c.nodes[base:] {
		if n == c.nodes[0] {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(n *Node) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := n.BootstrapAddrs(ctx, []net.Addr{seed}); err != nil {
				c.t.Errorf("bootstrap: %v", err)
			}
		}(n)
	}
	wg.Wait()
}

// endpointRecord builds a signed endpoint record for k.
func endpointRecord(t testing.TB, k *testKeys, seq uint64, ts time.Time, ttl uint32, signal string) protocol.SignedRecord {
	t.Helper()
	rec, err := protocol.NewEndpointRecord(k.addr, protocol.EndpointPayload{Endpoints: []string{"quic://203.0.113.1:4121"}, Signal: signal}, seq, uint64(ts.Unix()), ttl, k.pub(), k.sign)
	if err != nil {
		t.Fatalf("NewEndpointRecord: %v", err)
	}
	return rec
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// checkGoroutines fails if the goroutine count does not return to base.
func checkGoroutines(t testing.TB, base int) {
	t.Helper()
	end := time.Now().Add(5 * time.Second)
	var n int
	for time.Now().Before(end) {
		n = runtime.NumGoroutine()
		if n <= base {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	buf = buf[:runtime.Stack(buf, true)]
	t.Fatalf("goroutines: %d > baseline %d\n%s", n, base, buf)
}

func runtimeGoroutines() int { return runtime.NumGoroutine() }

// replace sets id's health entry to e, dropping its history (tests only).
func (h *healthTable) replace(id a2al.NodeID, e peerHealth) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.m[id] = &e
}
