package dht

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// fakePunchCloseTimeout bounds how long Close waits for pending callbacks.
const fakePunchCloseTimeout = 10 * time.Second

var errFakePunchClose = errors.New("dht: fake punch network: callbacks still running at close")

// FakePunchNetwork is an in-memory stand-in for the host's ICE/QUIC punch
// layer (docs/dht.md §13.10), shared by all nodes of a test or simulation that
// should be able to "punch" each other.
//
// Each registered node gets a distinct synthetic UDP address
// (127.0.(i>>8).(i&0xFF):10000+i for the i-th registration) so that
// OnPunchComplete can build a contact that encodes on the wire; delivery
// itself goes through InjectReceived with the node's transport address.
//
// Punch callbacks run on goroutines owned by the network: concurrent punches
// for the same pair are coalesced (bounding them by the number of pairs) and
// Close waits for them.
type FakePunchNetwork struct {
	mu      sync.Mutex
	peers   map[a2al.NodeID]*fakePunchPeer
	next    uint32
	pending map[[2]a2al.NodeID]struct{} // (self, peer) punches not yet reported
	closed  bool
	wg      sync.WaitGroup
}

// fakePunchPeer is one registration; a re-registration replaces the pointer,
// so a stale transport's Bind cannot affect the new one.
type fakePunchPeer struct {
	memAddr  net.Addr
	fakeAddr *net.UDPAddr
	logical  a2al.Address
	node     *Node
}

// FakePunchTransport implements PunchTransport for one node of a
// FakePunchNetwork. Obtain it with NewTransport and call Bind once the Node exists.
type FakePunchTransport struct {
	net  *FakePunchNetwork
	id   a2al.NodeID
	self *fakePunchPeer
}

var _ PunchTransport = (*FakePunchTransport)(nil)

// NewFakePunchNetwork returns an empty network.
func NewFakePunchNetwork() *FakePunchNetwork {
	return &FakePunchNetwork{
		peers:   make(map[a2al.NodeID]*fakePunchPeer),
		pending: make(map[[2]a2al.NodeID]struct{}),
	}
}

// NewTransport registers nodeID, reachable in-process at addr (its
// transport's address), and returns its punch transport. Registering an ID
// again replaces the previous registration; it is unbound until Bind.
func (fn *FakePunchNetwork) NewTransport(nodeID a2al.NodeID, addr net.Addr) *FakePunchTransport {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	fn.next++
	i := fn.next
	p := &fakePunchPeer{
		memAddr: addr,
		fakeAddr: &net.UDPAddr{
			IP:   net.IPv4(127, byte(i>>16), byte(i>>8), byte(i)).To4(),
			Port: 10000 + int(i%55536),
		},
	}
	fn.peers[nodeID] = p
	return &FakePunchTransport{net: fn, id: nodeID, self: p}
}

// Close stops accepting punches and waits (bounded) for pending
// OnPunchComplete callbacks. Afterwards Punch does nothing; SendTo still works.
func (fn *FakePunchNetwork) Close() error {
	fn.mu.Lock()
	fn.closed = true
	fn.mu.Unlock()
	done := make(chan struct{})
	go func() {
		fn.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(fakePunchCloseTimeout):
		return fmt.Errorf("%w after %v", errFakePunchClose, fakePunchCloseTimeout)
	}
}

// Bind attaches the transport to its node, records the node's Address for
// contacts built by peers, and makes the node reachable. Idempotent.
func (t *FakePunchTransport) Bind(node *Node) {
	if node == nil {
		return
	}
	t.net.mu.Lock()
	defer t.net.mu.Unlock()
	t.self.node = node
	t.self.logical = node.Address()
}

// SendTo delivers msg synchronously to the bound node registered as nodeID
// (as if received on a punched connection from this node's address).
// ok=false when the peer is unknown or unbound.
func (t *FakePunchTransport) SendTo(_ context.Context, nodeID a2al.NodeID, msg []byte) (bool, error) {
	t.net.mu.Lock()
	p := t.net.peers[nodeID]
	var dst *Node
	if p != nil {
		dst = p.node
	}
	from := t.self.memAddr
	t.net.mu.Unlock()
	if dst == nil {
		return false, nil
	}
	dst.InjectReceived(msg, from)
	return true, nil
}

// HasConn reports whether nodeID is registered and bound: the fake network
// treats every such peer as already connected.
func (t *FakePunchTransport) HasConn(nodeID a2al.NodeID) bool {
	t.net.mu.Lock()
	defer t.net.mu.Unlock()
	p := t.net.peers[nodeID]
	return p != nil && p.node != nil
}

// Punch simulates an ICE attempt towards nodeID and reports it
// asynchronously: success on both sides (not direct) when the peer is
// registered and bound, PunchFailOther otherwise. An unbound transport
// cannot report and does nothing. The record and priority are ignored.
func (t *FakePunchTransport) Punch(nodeID a2al.NodeID, _ *protocol.EndpointRecord, _ int) {
	fn := t.net
	fn.mu.Lock()
	self := t.self.node
	selfLogical, selfFake := t.self.logical, t.self.fakeAddr
	pair := [2]a2al.NodeID{t.id, nodeID}
	if fn.closed || self == nil {
		fn.mu.Unlock()
		return
	}
	if _, dup := fn.pending[pair]; dup {
		fn.mu.Unlock()
		return // the pending report covers this request
	}
	var peer *Node
	var peerLogical a2al.Address
	var peerFake *net.UDPAddr
	if p := fn.peers[nodeID]; p != nil && p.node != nil {
		peer, peerLogical, peerFake = p.node, p.logical, p.fakeAddr
	}
	fn.pending[pair] = struct{}{}
	fn.wg.Add(1)
	fn.mu.Unlock()

	selfID := t.id
	go func() {
		defer fn.wg.Done()
		if peer == nil {
			fn.done(pair)
			self.OnPunchComplete(nodeID, a2al.Address{}, nil, false, false, PunchFailOther)
			return
		}
		var inner sync.WaitGroup
		inner.Add(1)
		go func() {
			defer inner.Done()
			peer.OnPunchComplete(selfID, selfLogical, selfFake, true, false, PunchFailNone)
		}()
		fn.done(pair)
		self.OnPunchComplete(nodeID, peerLogical, peerFake, true, false, PunchFailNone)
		inner.Wait()
	}()
}

// done clears a pair's pending mark before its report, so a punch requested
// in reaction to the report is not coalesced away.
func (fn *FakePunchNetwork) done(pair [2]a2al.NodeID) {
	fn.mu.Lock()
	delete(fn.pending, pair)
	fn.mu.Unlock()
}
