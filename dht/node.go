package dht

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/clock"
	"github.com/a2alnode/a2al/crypto"
	"github.com/a2alnode/a2al/dht/internal/routing"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

// Clock is the time source of a Node (docs/decisions.md D10). Timer is what it returns.
type (
	Clock = clock.Clock
	Timer = clock.Timer
)

// Query compatibility constants (the engine has its own adaptive pacing).
const (
	// DefaultAlpha is exported for callers that inspect it; the engine keeps
	// its own adaptive number of RPCs in flight.
	DefaultAlpha = 5
	// DefaultStagger is retained for API compatibility; the engine never
	// waits on a fixed stagger.
	DefaultStagger = 200 * time.Millisecond
)

// DebugHTTPAddr is a suggested address for StartDebugHTTP.
const DebugHTTPAddr = "127.0.0.1:2634"

// Punch priority levels for PunchTransport.Punch (docs/dht.md §13.4).
const (
	// PunchPriorityHigh: a replica of one of our records is in danger.
	PunchPriorityHigh = 2
	// PunchPriorityLow: a replica probe failed repeatedly.
	PunchPriorityLow = 1
	// PunchPriorityLowest: speculative, from the query engine.
	PunchPriorityLowest = 0
)

// Errors returned by the node.
var (
	ErrNoEndpoint        = errors.New("dht: no endpoint record")
	ErrNoMatchingRecords = errors.New("dht: no matching records")
	// ErrNotStarted: an RPC was asked of a node whose Start was not called
	// (nothing would read its answer).
	ErrNotStarted = errors.New("dht: node not started (call Start first)")

	errNilNode          = errors.New("dht: nil node")
	errConfig           = errors.New("dht: invalid config")
	errIdentity         = errors.New("dht: keystore must hold exactly one identity")
	errSeedsUnreachable = errors.New("dht: all bootstrap seeds unreachable")
	errNotMailbox       = errors.New("dht: not a mailbox record")
	errNotTopic         = errors.New("dht: not a topic record")
	errExpectedPong     = errors.New("dht: expected PONG")
	errClosed           = errors.New("dht: node closed")
	errTooManyRPCs      = errors.New("dht: too many outstanding RPCs")
)

// BootstrapSeed is a known dial address plus wire NodeInfo (legacy seed form).
type BootstrapSeed struct {
	Addr net.Addr
	Info protocol.NodeInfo
}

// PeerIdentity holds the identity extracted from a PONG response.
type PeerIdentity struct {
	Address      a2al.Address
	NodeID       a2al.NodeID
	ObservedWire []byte // how the responder sees us; may be nil
}

type counters struct {
	rx, tx, rpcOK                    atomic.Uint64
	dropDecode, dropUnknown, dropSig atomic.Uint64
	dropRate, dropWrongPeer          atomic.Uint64
	dropEvictQueue, dropTaskQueue    atomic.Uint64
	dropSelf, punches                atomic.Uint64
	dropReplay, dropChallenge        atomic.Uint64
	challenges, addrMoves            atomic.Uint64
	dropUnproven, dropPunchedQueue   atomic.Uint64
	punchFallback                    atomic.Uint64 // punched sends refused, sent over UDP instead
}

// Node is a single DHT participant (routing + local store + wire handler).
type Node struct {
	tr    transport.Transport
	ks    crypto.KeyStore
	pub   []byte
	addr  a2al.Address
	id    a2al.NodeID
	log   *slog.Logger
	clk   Clock
	store *Store
	auth  RecordAuthFunc
	punch PunchTransport
	onObs func(a2al.NodeID, net.Addr, []byte)

	ctx    context.Context
	cancel context.CancelFunc

	tickMu sync.Mutex // guards tick
	tick   Timer      // the armed maintenance tick

	spawnMu  sync.Mutex
	closing  bool
	wg       sync.WaitGroup
	live     atomic.Int32 // goroutines started by spawn and still running
	started  atomic.Bool
	closeErr error
	closeMu  sync.Mutex
	closed   bool

	tabMu sync.RWMutex
	tab   *routing.Table

	rpc     rpcEngine
	book    addrBook
	health  healthTable
	limiter rateLimiter
	nat     natState
	seen    seenPeers
	repl    replState
	subs    subTable // replica side of push subscriptions
	own     ownSubs  // subscriptions we hold at replicas
	cnt     counters
	size    sizeEstimator
	replay  replayCache
	chal    challenges

	verify workPool[inPacket] // verify stage: punched lane, UDP lane (inbound.go)
	tasks  workPool[func()]   // background network work (submit)
	evicts workPool[evictJob] // LRU checks of full buckets (inbound.go)

	debugMu    sync.Mutex
	debugStops []func()
	passive    atomic.Bool
	extIP      atomic.Pointer[net.IP]
	maintStart int
	// lastSelfRefresh: node-clock UnixNano of the last maintenance
	// self-lookup (it stands in for refills of the deep buckets).
	lastSelfRefresh atomic.Int64
	lastDecodeLog   atomic.Int64
}

// NewNode validates cfg, derives the identity and builds the node's state.
// It starts no goroutines (see Start).
func NewNode(cfg Config) (*Node, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	ids := cfg.Keystore.List()
	if len(ids) != 1 {
		return nil, errIdentity
	}
	addr := ids[0]
	pub, err := cfg.Keystore.PublicKey(addr)
	if err != nil {
		return nil, fmt.Errorf("dht: read public key of %x: %w", addr[:], err)
	}
	if len(pub) != 32 || a2al.AddressFromEd25519(pub) != addr {
		return nil, fmt.Errorf("%w: identity must be an Ed25519 (0xA0) key", errIdentity)
	}
	log, clk := cfg.Logger, cfg.Clock
	if cfg.RecordAuth == nil {
		log.Warn("dht: node created without a RecordAuth policy; any key may publish for any address (use SecureRecordAuth)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		tr:     cfg.Transport,
		ks:     cfg.Keystore,
		pub:    append([]byte(nil), pub...),
		addr:   addr,
		id:     a2al.NodeIDFromAddress(addr),
		log:    log,
		clk:    clk,
		store:  NewStore(cfg.RecordAuth, cfg.MaxStoreKeys),
		auth:   cfg.RecordAuth,
		punch:  cfg.PunchTransport,
		onObs:  cfg.OnObservedAddr,
		ctx:    ctx,
		cancel: cancel,
	}
	n.verify.init(verifyWorkers, func(p inPacket) { n.handlePacket(p.data, p.path()) }, punchedQueueCap, udpQueueCap)
	n.verify.space = make(chan struct{}, 1)
	n.tasks.init(taskWorkers, func(f func()) { f() }, taskQueueCap)
	n.evicts.init(1, n.checkEviction, evictQueueCap)
	n.tab = routing.New(n.id, routing.DefaultLimits)
	n.rpc.init()
	n.book.init()
	n.health.init()
	limits := defaultRateLimits
	limits[classAmplifyUnproven] = rateSpec{rate: cfg.UnprovenAnswerRate, burst: 2 * cfg.UnprovenAnswerRate}
	n.limiter.init(limits)
	n.replay.init(cfg.ReplayWindow, cfg.ReplayCacheSize)
	n.chal.init(cfg.MaxAddrChallenges, rateSpec{rate: cfg.AddrChallengeRate, burst: 2 * cfg.AddrChallengeRate})
	n.nat.init()
	n.repl.init()
	n.subs.init()
	n.own.init()
	n.store.SetMaxBytes(cfg.MaxStoreBytes)
	n.passive.Store(cfg.PassiveRouting)
	n.seen.init(cfg.SeenPeersPath, n.id)
	n.seen.load(clk.Now(), log)
	return n, nil
}

// Start launches the receive loop, the node's only long-lived goroutine, and
// arms the maintenance tick (maintenance.go); verification, background
// tasks, evictions and the tick itself run on goroutines that exist only
// while they have work (workPool). Work queued before Start runs now.
// Idempotent. RPCs of a node not started fail with ErrNotStarted.
func (n *Node) Start() {
	if n == nil || !n.started.CompareAndSwap(false, true) {
		return
	}
	n.spawn(n.recvLoop)
	n.startMaintenance()
	n.verify.kick(n, verifyWorkers)
	n.tasks.kick(n, taskWorkers)
	n.evicts.kick(n, 1)
}

// spawn runs f on a goroutine tracked by Close; it refuses once closing.
func (n *Node) spawn(f func()) bool {
	n.spawnMu.Lock()
	if n.closing {
		n.spawnMu.Unlock()
		return false
	}
	n.wg.Add(1)
	n.live.Add(1)
	n.spawnMu.Unlock()
	go func() {
		defer n.wg.Done()
		defer n.live.Add(-1)
		f()
	}()
	return true
}

// submit queues background work for the bounded worker pool; it drops (and
// counts) the task when the queue is full.
func (n *Node) submit(f func()) bool {
	select {
	case <-n.ctx.Done():
		return false
	default:
	}
	if !n.tasks.push(n, 0, f) {
		n.cnt.dropTaskQueue.Add(1)
		return false
	}
	return true
}

// Close stops the node: cancels work, closes the transport, waits for every
// goroutine it started and flushes the seen-peers file. Not restartable.
func (n *Node) Close() error {
	if n == nil {
		return errNilNode
	}
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	if n.closed {
		return n.closeErr
	}
	n.closed = true
	n.spawnMu.Lock()
	n.closing = true
	n.spawnMu.Unlock()
	n.cancel()
	n.stopMaintenance()
	n.debugMu.Lock()
	stops := n.debugStops
	n.debugStops = nil
	n.debugMu.Unlock()
	for _, stop := range stops {
		stop()
	}
	n.closeErr = n.tr.Close()
	n.wg.Wait()
	if n.seen.path != "" && n.started.Load() {
		if err := n.seen.flush(n.clk.Now()); err != nil {
			n.log.Debug("dht: seen-peers flush at close failed", "err", err)
		}
	}
	return n.closeErr
}

// Address returns our identity address.
func (n *Node) Address() a2al.Address { return n.addr }

// NodeID returns our routing key.
func (n *Node) NodeID() a2al.NodeID { return n.id }

// LocalAddr returns the transport's local address.
func (n *Node) LocalAddr() net.Addr { return n.tr.LocalAddr() }

func (n *Node) now() time.Time { return n.clk.Now() }

func (n *Node) sign(msg []byte) ([]byte, error) { return n.ks.Sign(n.addr, msg) }

// SetPassiveRouting changes Config.PassiveRouting on a running node.
func (n *Node) SetPassiveRouting(passive bool) { n.passive.Store(passive) }

// SetSelfExtIP records our public IP (hairpin detection).
func (n *Node) SetSelfExtIP(ip net.IP) {
	if ip == nil {
		n.extIP.Store(nil)
		return
	}
	c := append(net.IP(nil), ip...)
	if v4 := c.To4(); v4 != nil {
		c = v4
	}
	n.extIP.Store(&c)
}

// SelfExtIP returns our public IP or nil when unknown.
func (n *Node) SelfExtIP() net.IP {
	p := n.extIP.Load()
	if p == nil {
		return nil
	}
	return append(net.IP(nil), (*p)...)
}

// isHairpin: a UDP address at our public IP but another port than our local
// one is a peer behind the same NAT (reachable only by hairpinning).
func (n *Node) isHairpin(a net.Addr) bool {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return false
	}
	ext := n.SelfExtIP()
	if ext == nil || !ext.Equal(u.IP) {
		return false
	}
	if l, ok := n.tr.LocalAddr().(*net.UDPAddr); ok && l.Port == u.Port {
		return false
	}
	return true
}

// SetMaxStoreKeys changes Config.MaxStoreKeys on a running node (values
// <= 0 are ignored).
func (n *Node) SetMaxStoreKeys(max int) {
	if max <= 0 {
		return
	}
	n.store.SetMaxKeys(max)
}

// EstimatedNetworkSize estimates the network size from the density of the
// verified entries nearest to us (routing.EstimateSizeNearest) averaged
// with the densities seen by our recent lookups (netsize.go), falling back
// to the bucket-density estimate of docs/dht.md §15.1 (which has power-of-two
// granularity and a bias from the deepest non-empty bucket) on a table too
// small for either.
func (n *Node) EstimatedNetworkSize() int {
	n.tabMu.RLock()
	defer n.tabMu.RUnlock()
	if v := n.size.combine(n.tab.EstimateSizeNearest(), n.now()); v > 0 {
		return v
	}
	if v, _ := n.tab.EstimateSize(time.Time{}); v > 0 {
		return v
	}
	return n.tab.EstimateSizeAny()
}

// EstimatedNetworkSizeFiltered restricts the estimate to entries verified
// after cutoff and returns a confidence in [0,1].
func (n *Node) EstimatedNetworkSizeFiltered(cutoff time.Time) (int, float64) {
	n.tabMu.RLock()
	defer n.tabMu.RUnlock()
	return n.tab.EstimateSize(cutoff)
}

// ObservedAddr encodes a UDP source for PONG / FIND_*_RESP; other address
// types encode 127.0.0.1:0 (compat).
func ObservedAddr(from net.Addr) []byte {
	if u, ok := from.(*net.UDPAddr); ok && u != nil && (len(u.IP) == 4 || len(u.IP) == 16) && u.Port >= 0 && u.Port <= 65535 {
		return protocol.EncodeUDPAddr(u.IP, uint16(u.Port))
	}
	return protocol.EncodeUDPAddr(net.IPv4(127, 0, 0, 1), 0)
}

// LivePeers counts routing-table entries we heard from first-hand within the
// last window (the table also holds entries learned second-hand or gone
// quiet; operators want the ones that answer).
func (n *Node) LivePeers(window time.Duration) int {
	cutoff := n.now().Add(-window)
	n.tabMu.RLock()
	defer n.tabMu.RUnlock()
	live := 0
	for _, c := range n.tab.All() {
		if c.VerifiedAt.Time().After(cutoff) {
			live++
		}
	}
	return live
}
