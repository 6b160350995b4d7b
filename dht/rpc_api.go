package dht

import (
	"context"
	"fmt"
	"net"
	"sort"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// Ping sends PING and waits for PONG.
func (n *Node) Ping(ctx context.Context, peer net.Addr) error {
	_, err := n.PingIdentity(ctx, peer)
	return err
}

// PingIdentity sends PING, waits for PONG and returns the responder's
// identity. The responder is bound to peer and added to the routing table.
func (n *Node) PingIdentity(ctx context.Context, peer net.Addr) (*PeerIdentity, error) {
	if n == nil {
		return nil, errNilNode
	}
	r, err := n.roundTrip(ctx, peer, false, protocol.BodyPing{Address: n.addr})
	if err != nil {
		return nil, err
	}
	pong, ok := r.msg.Body.(protocol.BodyPong)
	if !ok {
		return nil, errExpectedPong
	}
	id := n.onRPCSuccess(r)
	if id == n.id {
		return nil, fmt.Errorf("dht: ping %v reached ourselves", peer)
	}
	if !r.path.punched() {
		n.book.bind(id, peer, rankAnswered)
		n.tabAddDirect(contactFor(r.msg.SenderAddr, id, peer), peer, true)
	}
	n.observed(id, peer, pong.ObservedAddr)
	return &PeerIdentity{Address: r.msg.SenderAddr, NodeID: id, ObservedWire: append([]byte(nil), pong.ObservedAddr...)}, nil
}

func (n *Node) observed(id a2al.NodeID, from net.Addr, wire []byte) {
	if n.onObs != nil && len(wire) > 0 {
		n.onObs(id, from, append([]byte(nil), wire...))
	}
}

// StoreAt sends one STORE; a zero storeKey omits the key field. It returns
// the peer's Stored flag (true also when the peer already had the record).
func (n *Node) StoreAt(ctx context.Context, peer net.Addr, storeKey a2al.NodeID, rec protocol.SignedRecord) (bool, error) {
	resp, _, err := n.storeAt(ctx, peer, storeKey, rec)
	if err != nil {
		return false, err
	}
	return resp.Stored, nil
}

func (n *Node) storeAt(ctx context.Context, peer net.Addr, storeKey a2al.NodeID, rec protocol.SignedRecord) (protocol.BodyStoreResp, a2al.NodeID, error) {
	if n == nil {
		return protocol.BodyStoreResp{}, a2al.NodeID{}, errNilNode
	}
	body := protocol.BodyStore{Record: rec}
	if !storeKey.IsZero() {
		k := storeKey
		body.Key = &k
	}
	r, err := n.roundTrip(ctx, peer, true, body)
	if err != nil {
		return protocol.BodyStoreResp{}, a2al.NodeID{}, err
	}
	resp, ok := r.msg.Body.(protocol.BodyStoreResp)
	if !ok {
		return protocol.BodyStoreResp{}, a2al.NodeID{}, fmt.Errorf("dht: unexpected STORE answer %T", r.msg.Body)
	}
	id := n.onRPCSuccess(r)
	if !r.path.punched() {
		n.book.bind(id, peer, rankAnswered)
		n.tabAddDirect(contactFor(r.msg.SenderAddr, id, peer), peer, false)
	}
	return resp, id, nil
}

// FindNode asks one peer for its closest contacts to target. Contacts are
// returned as received (hearsay) but only valid ones
// (NodeID == SHA-256(Address)) are absorbed.
func (n *Node) FindNode(ctx context.Context, peer net.Addr, target a2al.NodeID) ([]protocol.NodeInfo, error) {
	if n == nil {
		return nil, errNilNode
	}
	r, err := n.roundTrip(ctx, peer, true, protocol.BodyFindNode{Target: target})
	if err != nil {
		return nil, err
	}
	resp, ok := r.msg.Body.(protocol.BodyFindNodeResp)
	if !ok {
		return nil, fmt.Errorf("dht: unexpected FIND_NODE answer %T", r.msg.Body)
	}
	id := n.onRPCSuccess(r)
	n.observed(id, peer, resp.ObservedAddr)
	for _, ni := range resp.Nodes {
		n.absorbHearsay(ni)
	}
	return resp.Nodes, nil
}

// FindValueWithNodes asks one peer for records at key (recType 0 = all).
func (n *Node) FindValueWithNodes(ctx context.Context, peer net.Addr, key a2al.NodeID, recType uint8) ([]protocol.SignedRecord, []protocol.NodeInfo, error) {
	if n == nil {
		return nil, nil, errNilNode
	}
	return n.findValue(ctx, peer, key, recType, false)
}

// findValue runs one FIND_VALUE; subscribe sets the HEAD one-shot flag and
// records the subscription so the peer's push is accepted.
func (n *Node) findValue(ctx context.Context, peer net.Addr, key a2al.NodeID, recType uint8, subscribe bool) ([]protocol.SignedRecord, []protocol.NodeInfo, error) {
	if peer == nil {
		return nil, nil, fmt.Errorf("dht: nil peer address")
	}
	if id, ok := n.book.idOf(peer); ok && subscribe {
		n.own.add(ownSubKey{key: key, peer: id}, n.now())
	}
	r, err := n.roundTrip(ctx, peer, true, protocol.BodyFindValue{Target: key, RecType: recType, OneShotSubscribe: subscribe})
	if err != nil {
		return nil, nil, err
	}
	resp, ok := r.msg.Body.(protocol.BodyFindValueResp)
	if !ok {
		return nil, nil, fmt.Errorf("dht: unexpected FIND_VALUE answer %T", r.msg.Body)
	}
	id := n.onRPCSuccess(r)
	if subscribe {
		n.own.add(ownSubKey{key: key, peer: id}, n.now())
	}
	n.observed(id, peer, resp.ObservedAddr)
	for _, ni := range resp.Nodes {
		n.absorbHearsay(ni)
	}
	recs := resp.Records
	if len(recs) == 0 && resp.Record != nil {
		recs = []protocol.SignedRecord{*resp.Record}
	}
	return recs, resp.Nodes, nil
}

// FindValue returns the newest valid endpoint record one peer holds at key
// (legacy helper); nil when none.
func (n *Node) FindValue(ctx context.Context, peer net.Addr, key a2al.NodeID) (*protocol.SignedRecord, error) {
	recs, _, err := n.FindValueWithNodes(ctx, peer, key, 0)
	if err != nil {
		return nil, err
	}
	var best *protocol.SignedRecord
	now := n.now()
	for i := range recs {
		r := recs[i]
		if r.RecType != protocol.RecTypeEndpoint || protocol.VerifySignedRecord(r, now) != nil {
			continue
		}
		if best == nil || protocol.RecordIsNewer(r, *best) {
			best = &r
		}
	}
	return best, nil
}

// AddContact pins a trusted peer's dial address and inserts it as a direct
// contact.
func (n *Node) AddContact(addr net.Addr, ni protocol.NodeInfo) {
	if n == nil || addr == nil || ni.NodeID == n.id || a2al.NodeIDFromAddress(ni.Address) != ni.NodeID {
		return
	}
	n.book.bind(ni.NodeID, addr, rankPinned)
	if len(ni.IP) != 4 && len(ni.IP) != 16 {
		ni = contactFor(ni.Address, ni.NodeID, addr)
	}
	n.tabAddDirect(ni, addr, true)
}

// absorbHearsay learns a contact from someone else's answer: validated
// (NodeID == SHA-256(Address), usable IP), never overriding a better dial
// address, never evicting or reordering table entries. It returns the dial
// address to use, or nil when the contact is unusable.
func (n *Node) absorbHearsay(ni protocol.NodeInfo) net.Addr {
	if ni.NodeID == n.id || a2al.NodeIDFromAddress(ni.Address) != ni.NodeID {
		return nil
	}
	if len(ni.IP) != 4 && len(ni.IP) != 16 {
		return nil
	}
	now := n.now()
	dial, _ := n.book.get(ni.NodeID)
	if dial == nil {
		if ni.Port == 0 || ni.IP.IsUnspecified() || ni.IP.IsMulticast() {
			return nil // placeholder contact and no binding: undialable
		}
		dial = &net.UDPAddr{IP: append(net.IP(nil), ni.IP...), Port: int(ni.Port)}
		n.book.bind(ni.NodeID, dial, rankHearsay)
	}
	c := routingContact(ni, dial)
	n.tabMu.Lock()
	n.tab.Add(c, false, now)
	n.tabMu.Unlock()
	return dial
}

// BootstrapCandidateAddrs returns up to max UDP dial addresses from the
// routing table, Good before Unknown before Bad, stable within a class.
// Only addresses where the peer answered our own request (or pinned ones)
// qualify: a request's source may be a replay or spoofed, and hearsay is
// someone else's word, so neither ends up in peers.cache.
func (n *Node) BootstrapCandidateAddrs(max int) []net.Addr {
	if n == nil || max <= 0 {
		return nil
	}
	n.tabMu.RLock()
	all := n.tab.All()
	n.tabMu.RUnlock()
	type cand struct {
		a  net.Addr
		st PeerHealthState
	}
	seen := map[string]bool{}
	var cs []cand
	for _, c := range all {
		var a net.Addr
		if b, rank := n.book.get(c.Info.NodeID); b != nil && rank >= rankAnswered {
			if u, ok := b.(*net.UDPAddr); ok && u.Port != 0 {
				a = u
			}
		}
		if a == nil || seen[a.String()] {
			continue
		}
		seen[a.String()] = true
		cs = append(cs, cand{a: a, st: n.PeerHealthOf(c.Info.NodeID)})
	}
	rank := func(s PeerHealthState) int {
		switch s {
		case PeerHealthGood:
			return 0
		case PeerHealthUnknown:
			return 1
		}
		return 2
	}
	sort.SliceStable(cs, func(i, j int) bool { return rank(cs[i].st) < rank(cs[j].st) })
	out := make([]net.Addr, 0, min(max, len(cs)))
	for i := 0; i < len(cs) && len(out) < max; i++ {
		out = append(out, cs[i].a)
	}
	return out
}
