package dht

import (
	"context"
	"net"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht/internal/routing"
	"github.com/a2alnode/a2al/protocol"
)

// PunchFailReason enumerates why an ICE punch attempt failed.
type PunchFailReason int

// Punch failure reasons.
const (
	PunchFailNone       PunchFailReason = 0 // success
	PunchFailNoAgent    PunchFailReason = 1 // hub: callee not registered (offline)
	PunchFailICETimeout PunchFailReason = 2 // connectivity checks timed out
	PunchFailOther      PunchFailReason = 3 // TLS, I/O, dial errors
)

// PunchTransport is the optional hole-punch layer (implemented by the host).
// The DHT only asks it to send bytes to a NodeID over an existing punched
// connection, and to start punches; outcomes come back via OnPunchComplete.
// Everything about the attempt itself (queueing, the attempt in flight, its
// waiters, back-off after failed punches, the path) is the punch layer's;
// the DHT keeps only the mark IsPunching reports (a request of its own still
// unanswered) and gates speculative punches with its RPC back-off
// (docs/architecture.md "Peer paths").
type PunchTransport interface {
	// SendTo delivers msg over an existing punched connection; ok=false
	// means none exists and the caller falls back to UDP. Must not block.
	SendTo(ctx context.Context, nodeID a2al.NodeID, msg []byte) (ok bool, err error)
	// Punch enqueues an asynchronous attempt and returns at once; the
	// implementation must eventually call Node.OnPunchComplete.
	Punch(nodeID a2al.NodeID, er *protocol.EndpointRecord, priority int)
	// HasConn reports whether a punched connection exists for nodeID.
	HasConn(nodeID a2al.NodeID) bool
}

const (
	punchMinBackoff  = 5 * time.Minute // anti-jitter gate for speculative punches
	postPunchTimeout = 10 * time.Second
)

// namesHub: a record a punch can use names a signalling hub.
func namesHub(er *protocol.EndpointRecord) bool { return len(er.SignalURLs()) > 0 }

// triggerPunch asks the punch layer to punch id. Speculative (Lowest)
// punches are subject to the anti-jitter gate; replica paths (High/Low)
// bypass it so they actually fire (docs/reference-defects.md W-17).
func (n *Node) triggerPunch(id a2al.NodeID, priority int) bool {
	if n.punch == nil || id == n.id || n.ctx.Err() != nil {
		return false
	}
	er := n.LocalEndpointRecord(id, namesHub)
	if er == nil || n.punch.HasConn(id) {
		return false
	}
	if !n.health.beginPunch(id, priority == PunchPriorityLowest, n.now()) {
		return false
	}
	n.cnt.punches.Add(1)
	n.punch.Punch(id, er, priority)
	return true
}

// OnPunchComplete is called by the punch layer when an attempt for nodeID
// ends. On success the peer enters the table: through the normal direct path
// when isDirect (the peer is plainly UDP-reachable), else into the punched
// zone (spare slots only, never overriding a verified dial address). A
// NoAgent failure marks the peer Bad until its next success.
func (n *Node) OnPunchComplete(nodeID a2al.NodeID, peerLogicalAddr a2al.Address, peerNetAddr net.Addr, success bool, isDirect bool, failReason PunchFailReason) {
	if n == nil || nodeID == n.id {
		return
	}
	now := n.now()
	n.health.endPunch(nodeID, !success && failReason == PunchFailNoAgent, now)
	if !success || peerNetAddr == nil {
		return
	}
	if l := n.tr.LocalAddr(); l != nil && l.String() == peerNetAddr.String() {
		return // our own reflection
	}
	n.recordSuccess(nodeID, 0)
	if peerLogicalAddr.IsZero() || a2al.NodeIDFromAddress(peerLogicalAddr) != nodeID {
		n.book.bind(nodeID, peerNetAddr, rankPunch)
		return
	}
	ni := contactFor(peerLogicalAddr, nodeID, peerNetAddr)
	if isDirect {
		n.book.bind(nodeID, peerNetAddr, rankAnswered)
		n.tabAddDirect(ni, peerNetAddr, true)
	} else {
		n.book.bind(nodeID, peerNetAddr, rankPunch)
		dial, _ := n.book.get(nodeID)
		n.seen.record(nodeID, now)
		c := routingContact(ni, dial)
		c.VerifiedAt = routing.StampOf(now)
		n.tabMu.Lock()
		n.tab.AddPunched(c, now)
		n.tabMu.Unlock()
	}
	n.submit(func() { n.postPunch(nodeID) })
}

// postPunch asks the newly reachable peer for our neighbourhood and lets
// short replication sets use it.
func (n *Node) postPunch(id a2al.NodeID) {
	addr, _ := n.book.get(id)
	if addr == nil {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, postPunchTimeout)
	defer cancel()
	r, err := n.roundTripTo(ctx, addr, id, true, true, protocol.BodyFindNode{Target: n.id})
	if err != nil {
		return
	}
	n.onRPCSuccess(r)
	if b, ok := r.msg.Body.(protocol.BodyFindNodeResp); ok {
		n.observed(id, addr, b.ObservedAddr)
		for _, ni := range b.Nodes {
			if n.PeerHealthOf(ni.NodeID) != PeerHealthBad {
				n.absorbHearsay(ni)
			}
		}
	}
	n.refillShortSets()
}
