package host

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
)

// Mode B framing (documented in doc.go): a DHT message that fits into a QUIC
// DATAGRAM frame is sent as one datagram (DHT is datagram-oriented and tolerates
// loss, so no retransmission or stream state is needed); a message too large for
// the current path MTU goes on its own unidirectional stream, ended by FIN.
const (
	maxStreamMessage   = 64 << 10
	streamReadTimeout  = 5 * time.Second
	streamWriteTimeout = 5 * time.Second
)

// Pool errors.
var (
	ErrPoolClosed    = errors.New("host: pool closed")
	ErrSendQueueFull = errors.New("host: mode B send queue full")
)

// Injector receives DHT messages that arrived over a pooled connection;
// *dht.Node satisfies it.
type Injector interface {
	InjectReceived(data []byte, from net.Addr)
}

// Pool holds authenticated Mode B QUIC connections keyed by NodeID. It never
// blocks the DHT: SendTo only enqueues, every entry has its own sender.
//
// Locks (docs/architecture.md "Lock order"): mu guards entries, lru, closed
// and each entry's elem. It is a leaf: connections are closed, OnRemove,
// OnReceive and the injector are called, and queues are written only after
// it is released. An entry's own fields are set before it is published in
// entries and read-only afterwards, except the atomics.
type Pool struct {
	cfg    PoolConfig
	inject atomic.Pointer[injectorBox]
	wg     sync.WaitGroup
	stats  PoolStats     // atomics
	stop   chan struct{} // closed by Close: ends the replaced entries' grace

	mu      sync.Mutex
	entries map[a2al.NodeID]*poolEntry
	lru     *list.List // front = most recently used
	closed  bool
}

type injectorBox struct{ Injector }

// PoolStats are cumulative counters (read with atomic loads via Stats).
type PoolStats struct {
	SentDatagrams, SentStreams, RecvDatagrams, RecvStreams atomic.Uint64
	QueueDrops, SendErrors, Added, Evicted, Dead, Replaced atomic.Uint64
	// Silent counts the Dead entries found by the silence check (a subset).
	Silent atomic.Uint64
	// Upgraded counts relayed entries replaced by a direct or punched
	// connection, whichever side's punch produced it.
	Upgraded atomic.Uint64
}

type poolEntry struct {
	id     a2al.NodeID
	peer   a2al.Address
	conn   *quic.Conn
	remote net.Addr
	dialer a2al.NodeID // NodeID of the side that dialed the QUIC connection
	sendq  chan []byte // handed on to the entry that replaces this one
	// prev is the entry this one replaced: its sender must stop before ours
	// starts on the queue they share. Read only by sendLoop.
	prev     *poolEntry
	sendStop context.CancelFunc // stops the sender only (the entry was replaced)
	sendDone chan struct{}      // closed when the sender has stopped
	lastUsed atomic.Int64
	lastRx   atomic.Int64 // unix ns of the last DHT message received
	elem     *list.Element
	cancel   context.CancelFunc
	release  func() // tears down ICE state attached to this connection
	closeOne sync.Once
	since    time.Time
	path     PathType        // guarded by Pool.mu
	tr       *quic.Transport // the relay transport of a relayed path; nil: the shared socket
}

// PoolPath says how a pooled connection reaches its peer.
type PoolPath struct {
	Type      PathType
	Transport *quic.Transport // relayed: the transport new connections to the peer use (Mode A)
	Release   func()          // called once when the entry is closed (may be nil)
}

// NewPool creates an empty pool. Call SetInjector before adding connections.
func NewPool(cfg PoolConfig) (*Pool, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	return &Pool{cfg: cfg, entries: make(map[a2al.NodeID]*poolEntry), lru: list.New(), stop: make(chan struct{})}, nil
}

// SetInjector sets where received DHT messages go (two-phase init: the pool is
// created before the DHT node that consumes it).
func (p *Pool) SetInjector(in Injector) { p.inject.Store(&injectorBox{in}) }

// Add pools an authenticated connection to peer. dialer is the NodeID of the
// side that opened the QUIC connection. If an entry for the peer already exists,
// the glare rule keeps exactly one: the connection dialed by the smaller NodeID
// wins, so both ends converge on the same connection; a new connection from
// the same dialer replaces that dialer's old one. release (may be nil) is
// called when the entry is closed. Add reports whether conn was kept; if not,
// the caller's conn has been closed.
func (p *Pool) Add(peer a2al.Address, conn *quic.Conn, dialer a2al.NodeID, release func()) bool {
	return p.AddOn(peer, conn, dialer, PoolPath{Type: PathPunched, Release: release})
}

// AddOn is Add for a connection whose path type (and relay transport) is known.
func (p *Pool) AddOn(peer a2al.Address, conn *quic.Conn, dialer a2al.NodeID, via PoolPath) bool {
	id := a2al.NodeIDFromAddress(peer)
	if via.Type != PathRelayed && p.cfg.Relayed != nil && p.cfg.Relayed(id, conn.RemoteAddr()) {
		via.Type = PathRelayed
	}
	ctx, cancel := context.WithCancel(conn.Context())
	sendCtx, sendStop := context.WithCancel(ctx)
	e := &poolEntry{
		id: id, peer: peer, conn: conn, remote: conn.RemoteAddr(), dialer: dialer,
		sendq: make(chan []byte, p.cfg.SendQueueLen), cancel: cancel, release: via.Release,
		since: p.cfg.Clock.Now(), path: via.Type, tr: via.Transport,
		sendStop: sendStop, sendDone: make(chan struct{}),
	}
	e.lastUsed.Store(p.cfg.Clock.Now().UnixNano())

	var victims []*poolEntry
	var reasons []string
	var replaced *poolEntry
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		cancel()
		p.closeEntry(e, "pool closed")
		return false
	}
	if old, ok := p.entries[id]; ok {
		// A side that dials again has given up on its earlier connection
		// (dead, silent or evicted there), so the same dialer's newcomer
		// replaces it even if it still looks alive here: keeping the stale
		// one would close the only path the dialer now has. Between the two
		// sides' connections (glare), the smaller NodeID's dial wins.
		if old.conn.Context().Err() == nil && dialer != old.dialer && lessID(old.dialer, dialer) {
			p.mu.Unlock()
			cancel()
			p.stats.Replaced.Add(1)
			p.closeEntry(e, "glare: existing connection kept")
			return false
		}
		p.removeLocked(old)
		// The new connection takes over the old one's queue: what the DHT
		// queued there is sent on the new one (docs/architecture.md
		// "Peer paths").
		replaced, e.prev, e.sendq = old, old, old.sendq
		p.stats.Replaced.Add(1)
		if old.path == PathRelayed && e.path != PathRelayed {
			p.stats.Upgraded.Add(1)
		}
	}
	for len(p.entries) >= p.cfg.MaxSize {
		back := p.lru.Back()
		if back == nil {
			break
		}
		old := back.Value.(*poolEntry)
		p.removeLocked(old)
		victims, reasons = append(victims, old), append(reasons, "lru eviction")
		p.stats.Evicted.Add(1)
	}
	e.elem = p.lru.PushFront(e)
	p.entries[id] = e
	p.stats.Added.Add(1)
	if replaced != nil {
		p.wg.Add(4) // the retiring entry's goroutine too, counted before Close can wait
	} else {
		p.wg.Add(3)
	}
	p.mu.Unlock()

	go p.sendLoop(sendCtx, e)
	go p.datagramLoop(ctx, e)
	go p.streamLoop(ctx, e)
	if replaced != nil {
		p.retire(replaced)
	}
	for i, v := range victims {
		p.closeEntry(v, reasons[i])
	}
	p.cfg.Logger.Debug("mode B connection pooled", "peer", peer.String(), "remote", e.remote, "path", e.path)
	return true
}

func lessID(a, b a2al.NodeID) bool { return bytes.Compare(a[:], b[:]) < 0 }

// removeLocked unlinks e from the maps; the caller closes it outside the lock.
func (p *Pool) removeLocked(e *poolEntry) {
	if cur, ok := p.entries[e.id]; ok && cur == e {
		delete(p.entries, e.id)
		p.lru.Remove(e.elem)
	}
}

// closeEntry really tears the connection down (QUIC and ICE), once.
func (p *Pool) closeEntry(e *poolEntry, reason string) {
	e.closeOne.Do(func() {
		if e.cancel != nil {
			e.cancel()
		}
		_ = e.conn.CloseWithError(0, reason)
		if e.release != nil {
			e.release()
		}
		if p.cfg.OnRemove != nil && e.elem != nil {
			p.cfg.OnRemove(e.id, reason)
		}
	})
}

// drop removes e (if it is still the current entry for its peer) and closes it.
func (p *Pool) drop(e *poolEntry, reason string) {
	p.mu.Lock()
	p.removeLocked(e)
	p.mu.Unlock()
	p.closeEntry(e, reason)
}

// migrateGrace is how long a replaced connection still delivers what the
// peer sends on it: the two sides pool a new connection one after the
// other, and until the peer has it too, the peer answers on the old one.
const migrateGrace = 5 * time.Second

// retire ends a replaced entry without losing DHT traffic: its sender stops
// (its queue is the new entry's now), its receivers run on for
// migrateGrace or until the peer closes it, then it is closed. The caller
// has counted the goroutine in p.wg.
func (p *Pool) retire(old *poolEntry) {
	old.sendStop()
	go func() {
		defer p.wg.Done()
		t := p.cfg.Clock.NewTimer(migrateGrace)
		defer t.Stop()
		select {
		case <-t.C():
		case <-old.conn.Context().Done():
		case <-p.stop:
		}
		p.closeEntry(old, "replaced")
	}()
}

// SendTo implements the hot path of dht.PunchTransport: it never blocks, so
// ctx matters only when it has already ended (nothing is queued then). A
// full queue refuses the message with ErrSendQueueFull and ok=false: the DHT
// sends it over UDP instead.
func (p *Pool) SendTo(ctx context.Context, id a2al.NodeID, msg []byte) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("host: mode B send: %w", err)
	}
	p.mu.Lock()
	e, ok := p.entries[id]
	if ok {
		p.lru.MoveToFront(e.elem)
	}
	p.mu.Unlock()
	if !ok || e.conn.Context().Err() != nil {
		return false, nil
	}
	buf := append([]byte(nil), msg...)
	select {
	case e.sendq <- buf:
		e.lastUsed.Store(p.cfg.Clock.Now().UnixNano())
		return true, nil
	default:
		p.stats.QueueDrops.Add(1)
		return false, fmt.Errorf("%w (peer %s)", ErrSendQueueFull, e.peer.String())
	}
}

// HasConn reports whether a live pooled connection exists for id.
func (p *Pool) HasConn(id a2al.NodeID) bool {
	p.mu.Lock()
	e, ok := p.entries[id]
	p.mu.Unlock()
	return ok && e.conn.Context().Err() == nil
}

// Remove closes and forgets the connection to id (e.g. after an RPC timeout).
func (p *Pool) Remove(id a2al.NodeID) bool {
	p.mu.Lock()
	e, ok := p.entries[id]
	if ok {
		p.removeLocked(e)
	}
	p.mu.Unlock()
	if ok {
		p.closeEntry(e, "removed")
	}
	return ok
}

// EvictAll closes every pooled connection (network change).
func (p *Pool) EvictAll(reason string) int {
	p.mu.Lock()
	all := make([]*poolEntry, 0, len(p.entries))
	for _, e := range p.entries {
		all = append(all, e)
		p.removeLocked(e)
	}
	p.mu.Unlock()
	for _, e := range all {
		p.closeEntry(e, reason)
	}
	return len(all)
}

// ExpireIdle closes entries that carried no DHT message for IdleTimeout
// (none with DisableIdleExpiry).
func (p *Pool) ExpireIdle() int {
	if p.cfg.DisableIdleExpiry {
		return 0
	}
	cut := p.cfg.Clock.Now().Add(-p.cfg.IdleTimeout).UnixNano()
	p.mu.Lock()
	var idle []*poolEntry
	for _, e := range p.entries {
		if e.lastUsed.Load() < cut {
			idle = append(idle, e)
			p.removeLocked(e)
		}
	}
	p.mu.Unlock()
	for _, e := range idle {
		p.closeEntry(e, "idle")
	}
	return len(idle)
}

// Len is the number of pooled connections.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.entries)
}

// PoolEntryInfo describes one pooled connection (debug output).
type PoolEntryInfo struct {
	Peer     string    `json:"peer"`
	Remote   string    `json:"remote"`
	Since    time.Time `json:"since"`
	LastUsed time.Time `json:"last_used"`
	WeDialed bool      `json:"we_dialed"`
	Path     PathType  `json:"path"`
}

// Snapshot lists pooled connections, most recently used first.
func (p *Pool) Snapshot() []PoolEntryInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]PoolEntryInfo, 0, len(p.entries))
	for el := p.lru.Front(); el != nil; el = el.Next() {
		e := el.Value.(*poolEntry)
		out = append(out, PoolEntryInfo{
			Peer: e.peer.String(), Remote: e.remote.String(), Since: e.since,
			LastUsed: time.Unix(0, e.lastUsed.Load()), WeDialed: e.dialer == p.cfg.Self, Path: e.path,
		})
	}
	return out
}

// Lookup returns the identity and network address of the pooled peer id.
func (p *Pool) Lookup(id a2al.NodeID) (a2al.Address, net.Addr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[id]
	if !ok || e.conn.Context().Err() != nil {
		return a2al.Address{}, nil, false
	}
	return e.peer, e.remote, true
}

// Path returns how the pooled connection to id runs, and the transport a new
// connection to the peer must use (nil: the shared socket).
func (p *Pool) Path(id a2al.NodeID) (PathType, *quic.Transport, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[id]
	if !ok {
		return "", nil, false
	}
	return e.path, e.tr, true
}

// holds reports whether conn is the pooled connection to id.
func (p *Pool) holds(id a2al.NodeID, conn *quic.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[id]
	return ok && e.conn == conn
}

// setPath records evidence about the path of conn (nil: the current entry)
// that arrived after pooling (direct: the peer's published address answered).
func (p *Pool) setPath(id a2al.NodeID, conn *quic.Conn, t PathType) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.entries[id]; ok && (conn == nil || e.conn == conn) && e.path != PathRelayed {
		e.path = t
	}
}

// RemoteAddr returns the network address of the pooled connection to id.
func (p *Pool) RemoteAddr(id a2al.NodeID) (net.Addr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[id]
	if !ok {
		return nil, false
	}
	return e.remote, true
}

// Probe tells whether the pooled connection to id still carries packets both
// ways, without waiting for the silence check's full SilenceTimeout. A DHT
// message received within fresh is proof enough. Otherwise an empty DATAGRAM
// (ack-eliciting; the receiver ignores it) is queued like any send, and the
// silence check's verdict is taken early: if no packet at all arrives within
// wait, the entry is closed and removed as silent (PoolStats.Silent), so a
// new punch can replace it. It returns false if there is no live entry.
func (p *Pool) Probe(ctx context.Context, id a2al.NodeID, fresh, wait time.Duration) bool {
	p.mu.Lock()
	e, ok := p.entries[id]
	p.mu.Unlock()
	if !ok || e.conn.Context().Err() != nil {
		return false
	}
	if time.Duration(p.cfg.Clock.Now().UnixNano()-e.lastRx.Load()) < fresh {
		return true
	}
	mark := e.conn.ConnectionStats().PacketsReceived
	select {
	case e.sendq <- []byte{}:
	default:
		// Queue full: the sender is busy, and the silence check is armed.
	}
	t := p.cfg.Clock.NewTimer(wait)
	defer t.Stop()
	tick := time.NewTicker(5 * time.Millisecond) // polls QUIC's counters; wall clock
	defer tick.Stop()
	for {
		select {
		case <-t.C():
			p.stats.Silent.Add(1)
			p.cfg.Logger.Debug("mode B connection did not answer a probe, closing", "peer", e.peer.String(), "after", wait)
			p.dead(e, "silent")
			return false
		case <-ctx.Done():
			return false
		case <-e.conn.Context().Done():
			return false
		case <-tick.C:
			if e.conn.ConnectionStats().PacketsReceived != mark {
				return true
			}
		}
	}
}

// probeWait is how long Probe should wait on the connection to id: a few
// smoothed RTTs, at least min and at most the silence timeout.
func (p *Pool) probeWait(id a2al.NodeID, floor time.Duration) time.Duration {
	p.mu.Lock()
	e, ok := p.entries[id]
	p.mu.Unlock()
	w := floor
	if ok {
		w = max(w, 4*e.conn.ConnectionStats().SmoothedRTT)
	}
	return min(w, p.cfg.SilenceTimeout)
}

// Stats returns the pool counters.
func (p *Pool) Stats() *PoolStats { return &p.stats }

// Close closes every connection and waits for the per-connection goroutines.
func (p *Pool) Close() error {
	p.mu.Lock()
	if !p.closed {
		close(p.stop)
	}
	p.closed = true
	p.mu.Unlock()
	p.EvictAll("pool closed")
	p.wg.Wait()
	return nil
}

func (p *Pool) deliver(e *poolEntry, data []byte) {
	if len(data) == 0 {
		return // a liveness probe (see Probe)
	}
	now := p.cfg.Clock.Now().UnixNano()
	e.lastUsed.Store(now)
	e.lastRx.Store(now)
	if p.cfg.OnReceive != nil {
		p.cfg.OnReceive(e.id)
	}
	if b := p.inject.Load(); b != nil && b.Injector != nil {
		b.InjectReceived(data, e.remote)
	}
}

// sendLoop drains the entry's queue and runs the silence check: every packet
// we send (a DATAGRAM or STREAM frame) makes the peer's QUIC send an ACK
// within about one RTT, so when nothing at all has been received
// SilenceTimeout after a send, the path is dead. That notices a peer that
// vanished while the DHT keeps sending to it in seconds, instead of after the
// 30 s QUIC idle timeout; a connection nobody sends on is left to the idle
// timeout and the keepalives.
func (p *Pool) sendLoop(ctx context.Context, e *poolEntry) {
	defer p.wg.Done()
	defer close(e.sendDone)
	if prev := e.prev; prev != nil {
		e.prev = nil
		select { // the replaced sender was stopped by retire; it ends at once or after its current write
		case <-prev.sendDone:
		case <-ctx.Done():
			return
		}
	}
	silence := p.cfg.Clock.NewTimer(time.Hour)
	silence.Stop()
	defer silence.Stop()
	armed := false
	var rxMark uint64
	for {
		if ctx.Err() != nil { // stopped: leave the queue to the successor
			return
		}
		select {
		case <-ctx.Done():
			return
		case msg := <-e.sendq:
			if !armed {
				rxMark = e.conn.ConnectionStats().PacketsReceived
				silence.Reset(p.cfg.SilenceTimeout)
				armed = true
			}
			if err := p.sendOne(e, msg); err != nil {
				p.stats.SendErrors.Add(1)
				if e.conn.Context().Err() != nil {
					p.drop(e, "connection closed")
					return
				}
				p.cfg.Logger.Debug("mode B send failed", "peer", e.peer.String(), "err", err)
			}
		case <-silence.C():
			armed = false
			if e.conn.ConnectionStats().PacketsReceived == rxMark {
				p.stats.Silent.Add(1)
				p.cfg.Logger.Debug("mode B connection silent, closing", "peer", e.peer.String(),
					"after", p.cfg.SilenceTimeout)
				p.dead(e, "silent")
				return
			}
		}
	}
}

func (p *Pool) sendOne(e *poolEntry, msg []byte) error {
	err := e.conn.SendDatagram(msg)
	if err == nil {
		if len(msg) > 0 { // empty: a Probe, not a DHT message
			p.stats.SentDatagrams.Add(1)
		}
		return nil
	}
	var tooLarge *quic.DatagramTooLargeError
	if !errors.As(err, &tooLarge) {
		return fmt.Errorf("send datagram: %w", err)
	}
	s, err := e.conn.OpenUniStream()
	if err != nil {
		return fmt.Errorf("open uni stream: %w", err)
	}
	_ = s.SetWriteDeadline(time.Now().Add(streamWriteTimeout)) // socket deadlines: wall clock
	if _, err := s.Write(msg); err != nil {
		s.CancelWrite(1)
		return fmt.Errorf("write uni stream: %w", err)
	}
	p.stats.SentStreams.Add(1)
	return s.Close()
}

func (p *Pool) datagramLoop(ctx context.Context, e *poolEntry) {
	defer p.wg.Done()
	for {
		data, err := e.conn.ReceiveDatagram(ctx)
		if err != nil {
			p.loopEnded(ctx, e)
			return
		}
		if len(data) > 0 {
			p.stats.RecvDatagrams.Add(1)
		}
		p.deliver(e, data)
	}
}

func (p *Pool) streamLoop(ctx context.Context, e *poolEntry) {
	defer p.wg.Done()
	for {
		s, err := e.conn.AcceptUniStream(ctx)
		if err != nil {
			p.loopEnded(ctx, e)
			return
		}
		_ = s.SetReadDeadline(time.Now().Add(streamReadTimeout))
		data, err := io.ReadAll(io.LimitReader(s, maxStreamMessage+1))
		if err != nil || len(data) > maxStreamMessage {
			s.CancelRead(1)
			continue
		}
		p.stats.RecvStreams.Add(1)
		p.deliver(e, data)
	}
}

// loopEnded is called when a receive loop stops: nothing to do if the entry
// was closed locally, else the connection died underneath us.
func (p *Pool) loopEnded(ctx context.Context, e *poolEntry) {
	if ctx.Err() != nil && e.conn.Context().Err() == nil {
		return
	}
	p.dead(e, "connection lost")
}

// dead handles a connection that ended underneath us (peer gone, idle timeout,
// path broken, silence): the entry is removed so the DHT falls back to UDP and
// may punch again.
func (p *Pool) dead(e *poolEntry, reason string) {
	p.mu.Lock()
	_, cur := p.entries[e.id]
	cur = cur && p.entries[e.id] == e
	p.removeLocked(e)
	p.mu.Unlock()
	if cur {
		p.stats.Dead.Add(1)
	}
	p.closeEntry(e, reason)
}
