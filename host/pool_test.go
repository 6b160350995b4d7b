package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/clock"
)

type recorder struct {
	mu   sync.Mutex
	msgs [][]byte
	ch   chan []byte
}

func newRecorder() *recorder { return &recorder{ch: make(chan []byte, 256)} }

func (r *recorder) InjectReceived(data []byte, _ net.Addr) {
	r.mu.Lock()
	r.msgs = append(r.msgs, append([]byte(nil), data...))
	r.mu.Unlock()
	select {
	case r.ch <- data:
	default:
	}
}

func (r *recorder) wait(t *testing.T) []byte {
	t.Helper()
	select {
	case m := <-r.ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for injected message")
		return nil
	}
}

type testPeer struct {
	id   *Identity
	udp  *net.UDPConn
	tr   *quic.Transport
	ln   *quic.Listener
	pool *Pool
	rec  *recorder
}

func newTestIdentity(t testing.TB) *Identity {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity(key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newTestPeer(t testing.TB, maxSize int) *testPeer {
	t.Helper()
	id := newTestIdentity(t)
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(id.ServerTLS(nil), quicConfig(DefaultHandshakeLimit))
	if err != nil {
		t.Fatal(err)
	}
	p := &testPeer{id: id, udp: udp, tr: tr, ln: ln, rec: newRecorder()}
	p.pool = mustPool(t, PoolConfig{Self: id.NodeID, MaxSize: maxSize})
	p.pool.SetInjector(p.rec)
	t.Cleanup(func() {
		p.pool.Close()
		ln.Close()
		tr.Close()
		udp.Close()
	})
	return p
}

// connect dials b from a (Mode B) and pools the connection on both sides.
func connect(t testing.TB, a, b *testPeer) {
	t.Helper()
	c, sc := dialModeB(t, a, b)
	got, err := b.id.PeerAddress(sc)
	if err != nil || got != a.id.Address {
		t.Fatalf("server saw %v err %v", got, err)
	}
	if sc.ConnectionState().TLS.NegotiatedProtocol != ALPNModeB {
		t.Fatalf("alpn %q", sc.ConnectionState().TLS.NegotiatedProtocol)
	}
	a.pool.Add(b.id.Address, c, a.id.NodeID, nil)
	b.pool.Add(a.id.Address, sc, a.id.NodeID, nil)
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPoolSendSmallAndLarge(t *testing.T) {
	a, b := newTestPeer(t, 4), newTestPeer(t, 4)
	connect(t, a, b)
	if !a.pool.HasConn(b.id.NodeID) || !b.pool.HasConn(a.id.NodeID) {
		t.Fatal("HasConn false after add")
	}
	small := []byte{0xa1, 1, 2, 3}
	if ok, err := a.pool.SendTo(context.Background(), b.id.NodeID, small); !ok || err != nil {
		t.Fatalf("SendTo: %v %v", ok, err)
	}
	if got := b.rec.wait(t); string(got) != string(small) {
		t.Fatalf("got %x", got)
	}
	large := make([]byte, 1200)
	large[0] = 0xa5
	large[1199] = 7
	if ok, _ := b.pool.SendTo(context.Background(), a.id.NodeID, large); !ok {
		t.Fatal("SendTo large not ok")
	}
	if got := a.rec.wait(t); len(got) != 1200 || got[1199] != 7 {
		t.Fatalf("large message mangled: %d bytes", len(got))
	}
	// Unknown peer: not pooled, caller falls back.
	if ok, _ := a.pool.SendTo(context.Background(), a2al.NodeID{1}, small); ok {
		t.Fatal("SendTo to unknown peer reported ok")
	}
}

// A send whose context has already ended queues nothing and says why.
func TestPoolSendHonoursContext(t *testing.T) {
	a, b := newTestPeer(t, 4), newTestPeer(t, 4)
	connect(t, a, b)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ok, err := a.pool.SendTo(ctx, b.id.NodeID, []byte{0xa1, 1}); ok || !errors.Is(err, context.Canceled) {
		t.Fatalf("SendTo with a cancelled context: ok %v err %v", ok, err)
	}
	if st := a.pool.Stats(); st.SentDatagrams.Load() != 0 || st.QueueDrops.Load() != 0 {
		t.Fatalf("cancelled send was queued: sent %d drops %d", st.SentDatagrams.Load(), st.QueueDrops.Load())
	}
}

func TestPoolEvictionClosesAndNoLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		hub := newTestPeer(t, 2)
		peers := []*testPeer{newTestPeer(t, 4), newTestPeer(t, 4), newTestPeer(t, 4)}
		for _, p := range peers {
			connect(t, hub, p)
		}
		if hub.pool.Len() != 2 {
			t.Fatalf("pool len %d, want 2 (LRU cap)", hub.pool.Len())
		}
		if hub.pool.HasConn(peers[0].id.NodeID) {
			t.Fatal("oldest peer still pooled after eviction")
		}
		// The evicted connection is really closed: the peer notices and drops it.
		waitFor(t, "peer 0 to notice eviction", func() bool { return !peers[0].pool.HasConn(hub.id.NodeID) })
		if hub.pool.Stats().Evicted.Load() != 1 {
			t.Fatalf("evicted=%d", hub.pool.Stats().Evicted.Load())
		}
		for _, p := range append(peers, hub) {
			p.pool.Close()
			p.ln.Close()
			p.tr.Close()
		}
	}()
	waitFor(t, "goroutines to return to baseline", func() bool { return runtime.NumGoroutine() <= base+2 })
}

func TestPoolDeadPeerDetected(t *testing.T) {
	a, b := newTestPeer(t, 4), newTestPeer(t, 4)
	connect(t, a, b)
	// Graceful death: b closes its connections.
	b.pool.Close()
	waitFor(t, "a to remove closed peer", func() bool { return !a.pool.HasConn(b.id.NodeID) })
	if ok, _ := a.pool.SendTo(context.Background(), b.id.NodeID, []byte{0xa0}); ok {
		t.Fatal("SendTo to dead peer reported ok")
	}
}

func TestPoolKilledPeerDetected(t *testing.T) {
	a, b := newTestPeer(t, 4), newTestPeer(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		if c, err := b.ln.Accept(ctx); err == nil {
			b.pool.Add(a.id.Address, c, a.id.NodeID, nil)
		}
	}()
	// A short idle timeout on the dialer (the effective value is the minimum
	// of both sides) so the silent death is noticed quickly.
	cfg := quicConfig(DefaultHandshakeLimit)
	cfg.MaxIdleTimeout, cfg.KeepAlivePeriod = 1500*time.Millisecond, 300*time.Millisecond
	c, err := a.tr.Dial(ctx, b.udp.LocalAddr(), a.id.ClientTLS(b.id.Address, ALPNModeB), cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.pool.Add(b.id.Address, c, a.id.NodeID, nil)
	waitFor(t, "b pooled", func() bool { return b.pool.HasConn(a.id.NodeID) })
	// Kill b without any goodbye: its socket just disappears.
	b.udp.Close()
	waitFor(t, "a to detect the silent death", func() bool { return !a.pool.HasConn(b.id.NodeID) })
	// HasConn turns false with the connection's context, a moment before the
	// read loops remove the entry and count it.
	waitFor(t, "dead counter", func() bool { return a.pool.Stats().Dead.Load() == 1 })
}

// silentPair pools a connection whose idle timeout (30 s) is far beyond the
// test, with a short silence timeout on a's side.
func silentPair(t *testing.T) (a, b *testPeer) {
	t.Helper()
	a, b = newTestPeer(t, 4), newTestPeer(t, 4)
	a.pool.Close()
	a.pool = mustPool(t, PoolConfig{Self: a.id.NodeID, MaxSize: 4, SilenceTimeout: 300 * time.Millisecond})
	a.pool.SetInjector(a.rec)
	t.Cleanup(func() { a.pool.Close() })
	connect(t, a, b)
	return a, b
}

// A peer that vanishes while the DHT keeps sending to it is noticed by the
// silence check (no ACK for what we sent), long before the QUIC idle timeout.
func TestPoolSilentPeerDetected(t *testing.T) {
	a, b := silentPair(t)
	b.udp.Close() // gone without a word
	waitFor(t, "silence detection", func() bool {
		_, _ = a.pool.SendTo(context.Background(), b.id.NodeID, []byte{0xa0})
		return !a.pool.HasConn(b.id.NodeID) && a.pool.Stats().Silent.Load() == 1
	})
	if got := a.pool.Stats().Dead.Load(); got != 1 {
		t.Fatalf("dead counter %d", got)
	}
}

// A live peer ACKs what we send, so steady sending over several silence
// periods keeps the connection.
func TestPoolLivePeerNotSilent(t *testing.T) {
	a, b := silentPair(t)
	deadline := time.Now().Add(5 * 300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if ok, err := a.pool.SendTo(context.Background(), b.id.NodeID, []byte{0xa0}); !ok {
			t.Fatalf("send failed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !a.pool.HasConn(b.id.NodeID) || a.pool.Stats().Silent.Load() != 0 {
		t.Fatalf("live connection dropped as silent (silent=%d)", a.pool.Stats().Silent.Load())
	}
}

func TestPoolGlareKeepsOne(t *testing.T) {
	a, b := newTestPeer(t, 4), newTestPeer(t, 4)
	// Both sides dial each other at once.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); connect(t, a, b) }()
	go func() { defer wg.Done(); connect(t, b, a) }()
	wg.Wait()
	low := a.id.NodeID
	if lessID(b.id.NodeID, low) {
		low = b.id.NodeID
	}
	waitFor(t, "one connection each side", func() bool { return a.pool.Len() == 1 && b.pool.Len() == 1 })
	for _, p := range []*testPeer{a, b} {
		snap := p.pool.Snapshot()
		if len(snap) != 1 {
			t.Fatalf("snapshot %d", len(snap))
		}
		if snap[0].WeDialed != (p.id.NodeID == low) {
			t.Fatalf("side %s kept the wrong connection", p.id.Address.String())
		}
	}
	// The surviving connection works both ways.
	a.pool.SendTo(context.Background(), b.id.NodeID, []byte{0xa1, 9})
	if got := b.rec.wait(t); got[1] != 9 {
		t.Fatal("bad message")
	}
}

func TestPoolIdleExpiry(t *testing.T) {
	fc := clock.NewFake(time.Now())
	a, b := newTestPeer(t, 4), newTestPeer(t, 4)
	a.pool = mustPool(t, PoolConfig{Self: a.id.NodeID, IdleTimeout: time.Minute, Clock: fc})
	a.pool.SetInjector(a.rec)
	t.Cleanup(func() { a.pool.Close() })
	connect(t, a, b)
	if n := a.pool.ExpireIdle(); n != 0 {
		t.Fatalf("expired %d fresh entries", n)
	}
	fc.Advance(2 * time.Minute)
	if n := a.pool.ExpireIdle(); n != 1 {
		t.Fatalf("expired %d, want 1", n)
	}
	if a.pool.HasConn(b.id.NodeID) {
		t.Fatal("idle entry still pooled")
	}
}

func TestIdentityMismatchRejected(t *testing.T) {
	a, b := newTestPeer(t, 4), newTestPeer(t, 4)
	other := newTestIdentity(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		if c, err := b.ln.Accept(ctx); err == nil {
			c.CloseWithError(0, "")
		}
	}()
	_, err := a.tr.Dial(ctx, b.udp.LocalAddr(), a.id.ClientTLS(other.Address, ALPNModeB), quicConfig(DefaultHandshakeLimit))
	if err == nil {
		t.Fatal("dial to wrong identity succeeded")
	}
}

func TestAddressText(t *testing.T) {
	var a a2al.Address
	copy(a[:], []byte{0xa0, 0x56, 0x47, 0x5a, 0xa7, 0x54, 0x63, 0x47, 0x4c, 0x02, 0x85, 0xdf, 0x5d, 0xbf, 0x2b, 0xca, 0xb7, 0x3d, 0xa6, 0x51, 0x35})
	s := a.String()
	if s != "A056475aa75463474C0285df5Dbf2bcAB73Da65135" { // identity.json alice
		t.Fatalf("text %s", s)
	}
	back, err := a2al.ParseAddress(s)
	if err != nil || back != a {
		t.Fatalf("roundtrip %s: %v", s, err)
	}
	if _, err := a2al.ParseAddress("zz"); err == nil {
		t.Fatal("bad text accepted")
	}
}

// Probe answers for a live connection (the peer ACKs the empty datagram,
// which it does not hand to the DHT) and, for a peer that went silent, closes
// the entry as silent within its own short wait — the pool's default 5 s
// silence timeout is not waited for.
func TestPoolProbe(t *testing.T) {
	a, b := newTestPeer(t, 4), newTestPeer(t, 4)
	connect(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if !a.pool.Probe(ctx, b.id.NodeID, 0, 10*time.Second) {
		t.Fatal("live connection failed the probe")
	}
	if got := b.pool.Stats().RecvDatagrams.Load(); got != 0 {
		t.Fatalf("probe counted as %d DHT datagram(s) at the peer", got)
	}
	select {
	case m := <-b.rec.ch:
		t.Fatalf("probe delivered to the DHT: %x", m)
	default:
	}
	if a.pool.Probe(ctx, nid(9), 0, time.Second) {
		t.Fatal("probe of an unknown peer succeeded")
	}
	b.udp.Close() // gone without a word
	if a.pool.Probe(ctx, b.id.NodeID, 0, 300*time.Millisecond) {
		t.Fatal("probe of a vanished peer succeeded")
	}
	if a.pool.HasConn(b.id.NodeID) || a.pool.Stats().Silent.Load() != 1 {
		t.Fatalf("silent entry kept (silent=%d)", a.pool.Stats().Silent.Load())
	}
}

// A side that dials again (its old connection died there) must get its new
// connection pooled at the peer even while the peer still holds the old one;
// otherwise the peer would close the only working path.
func TestPoolSameDialerReplaces(t *testing.T) {
	a, b := newTestPeer(t, 4), newTestPeer(t, 4)
	connect(t, a, b)
	first := b.pool.Snapshot()[0].Since
	a.pool.Remove(b.id.NodeID) // a gave up on it; b has not noticed
	time.Sleep(10 * time.Millisecond)
	connect(t, a, b)
	waitFor(t, "one connection each side", func() bool { return a.pool.Len() == 1 && b.pool.Len() == 1 })
	if snap := b.pool.Snapshot(); !snap[0].Since.After(first) {
		t.Fatal("peer kept the stale connection and dropped the dialer's new one")
	}
	a.pool.SendTo(context.Background(), b.id.NodeID, []byte{0xa1, 7})
	if got := b.rec.wait(t); got[1] != 7 {
		t.Fatal("bad message")
	}
}
