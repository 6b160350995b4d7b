package dht

import (
	"container/heap"
	"net"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// Fair eviction (docs/dht-security.md, "Store flooding"). Every stored
// record has an origin: the node itself (records it publishes), or the
// network prefix of the peer whose STORE brought it, with a flag saying
// whether this node was among the K closest to the key at that time. When
// the store is over its key or byte limit, the victim is chosen:
//
//   - never among the node's own records;
//   - among records the node is responsible for only when the incoming
//     record is one too (a flood of other keys never displaces them);
//   - from the wide prefix (IPv4 /16, IPv6 /48) holding the most bytes,
//     then its subnet (/24, /64) holding the most, then that subnet's
//     oldest record. Ties go against the group that stored last, so a
//     newcomer cannot push out incumbents of equal weight.
//
// A flood from many addresses thus only competes with itself, prefix by
// prefix, and an attacker must hold more bytes per prefix than an honest
// source to evict it at all.

// Eviction tiers.
const (
	tierOther       = iota // stored by a peer for a key we are not close to
	tierResponsible        // stored by a peer for a key we are among the K closest to
	tierOwn                // published by this node; never evicted by others
	numTiers
)

// storeOrigin says where a record came from. The zero value is an
// anonymous local write (tests, lookup cache, LocalStorePut): tier other,
// one group of its own.
type storeOrigin struct {
	tier      int
	sub, wide string // prefix keys; "" for the anonymous group
}

// originOf is the origin of a record received in a STORE from src.
func originOf(src net.Addr, responsible bool) storeOrigin {
	o := storeOrigin{tier: tierOther}
	if responsible {
		o.tier = tierResponsible
	}
	if u, ok := src.(*net.UDPAddr); ok && u != nil {
		if v4 := u.IP.To4(); v4 != nil {
			o.wide, o.sub = string(v4[:2]), string(v4[:3])
			return o
		}
		if len(u.IP) == net.IPv6len {
			o.wide, o.sub = string(u.IP[:6]), string(u.IP[:8])
			return o
		}
	}
	if src != nil { // non-IP transports: one group per endpoint
		o.wide = "a:" + src.Network() + ":" + src.String()
		o.sub = o.wide
	}
	return o
}

var ownOrigin = storeOrigin{tier: tierOwn, sub: "own", wide: "own"}

// recNode is the eviction bookkeeping of one stored record. It is found
// by the record's signature buffer: Put clones every record it stores and
// stored records are copied by value but never modified, so the buffer
// identifies the record across the list copies of merges and sweeps.
type recNode struct {
	key        a2al.NodeID
	sig        *byte
	size       int64
	gen        uint64
	sub        *subGroup
	prev, next *recNode // FIFO within sub, oldest first
}

type subGroup struct {
	key        string
	bytes      int64
	last       uint64 // sequence of the latest record added
	head, tail *recNode
	wide       *wideGroup
	idx        int // in wide.subs
}

type wideGroup struct {
	key   string
	tier  int
	bytes int64
	last  uint64
	subs  groupHeap[*subGroup]
	byKey map[string]*subGroup
	idx   int // in fairness.tiers[tier]
}

// fairness holds the groups of every tier. Guarded by Store.mu.
type fairness struct {
	nodes   map[*byte]*recNode
	tiers   [numTiers]groupHeap[*wideGroup]
	wides   [numTiers]map[string]*wideGroup
	pending storeOrigin // origin of the records the current Put adds
	gen     uint64
	seq     uint64
}

func (f *fairness) init() {
	f.nodes = make(map[*byte]*recNode)
	for i := range f.wides {
		f.wides[i] = make(map[string]*wideGroup)
	}
}

func sigID(r *protocol.SignedRecord) *byte {
	if len(r.Signature) == 0 {
		return nil
	}
	return &r.Signature[0]
}

// update moves key's bookkeeping from the records old to recs: records new
// to the key get f.pending as origin, records gone are forgotten.
func (f *fairness) update(key a2al.NodeID, old, recs []protocol.SignedRecord) {
	f.gen++
	for i := range recs {
		id := sigID(&recs[i])
		if id == nil {
			continue
		}
		if n := f.nodes[id]; n != nil {
			n.gen = f.gen
			continue
		}
		n := &recNode{key: key, sig: id, size: recordSize(&recs[i]), gen: f.gen}
		f.nodes[id] = n
		f.add(n, f.pending)
	}
	for i := range old {
		if n := f.nodes[sigID(&old[i])]; n != nil && n.gen != f.gen {
			f.remove(n)
		}
	}
}

func (f *fairness) add(n *recNode, o storeOrigin) {
	f.seq++
	w := f.wides[o.tier][o.wide]
	if w == nil {
		w = &wideGroup{key: o.wide, tier: o.tier, byKey: make(map[string]*subGroup), idx: -1}
		f.wides[o.tier][o.wide] = w
		heap.Push(&f.tiers[o.tier], w)
	}
	s := w.byKey[o.sub]
	if s == nil {
		s = &subGroup{key: o.sub, wide: w, idx: -1}
		w.byKey[o.sub] = s
		heap.Push(&w.subs, s)
	}
	n.sub = s
	n.prev = s.tail
	if s.tail != nil {
		s.tail.next = n
	} else {
		s.head = n
	}
	s.tail = n
	s.bytes += n.size
	s.last = f.seq
	w.bytes += n.size
	w.last = f.seq
	heap.Fix(&w.subs, s.idx)
	heap.Fix(&f.tiers[w.tier], w.idx)
}

func (f *fairness) remove(n *recNode) {
	delete(f.nodes, n.sig)
	s := n.sub
	w := s.wide
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		s.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		s.tail = n.prev
	}
	n.prev, n.next, n.sub = nil, nil, nil
	s.bytes -= n.size
	w.bytes -= n.size
	if s.head == nil {
		heap.Remove(&w.subs, s.idx)
		delete(w.byKey, s.key)
	} else {
		heap.Fix(&w.subs, s.idx)
	}
	if len(w.subs) == 0 {
		heap.Remove(&f.tiers[w.tier], w.idx)
		delete(f.wides[w.tier], w.key)
	} else {
		heap.Fix(&f.tiers[w.tier], w.idx)
	}
}

// tierOf returns the tier of the stored record r (tierOther if unknown).
func (f *fairness) tierOf(r *protocol.SignedRecord) int {
	if n := f.nodes[sigID(r)]; n != nil {
		return n.sub.wide.tier
	}
	return tierOther
}

// victim returns the record to evict for an incoming record of tier in,
// or nil when no record may go.
func (f *fairness) victim(in int) *recNode {
	for t := tierOther; t <= min(in, tierResponsible); t++ {
		if len(f.tiers[t]) == 0 {
			continue
		}
		w := f.tiers[t][0]
		return w.subs[0].head
	}
	return nil
}

// weighted is a group ordered heaviest first; ties go against the group
// that stored last.
type weighted interface {
	weight() (bytes int64, last uint64)
	setIndex(int)
}

func (s *subGroup) weight() (int64, uint64)  { return s.bytes, s.last }
func (s *subGroup) setIndex(i int)           { s.idx = i }
func (w *wideGroup) weight() (int64, uint64) { return w.bytes, w.last }
func (w *wideGroup) setIndex(i int)          { w.idx = i }

type groupHeap[T weighted] []T

func (h groupHeap[T]) Len() int { return len(h) }
func (h groupHeap[T]) Less(i, j int) bool {
	bi, li := h[i].weight()
	bj, lj := h[j].weight()
	if bi != bj {
		return bi > bj
	}
	return li > lj
}
func (h groupHeap[T]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].setIndex(i)
	h[j].setIndex(j)
}
func (h *groupHeap[T]) Push(x any) {
	g := x.(T)
	g.setIndex(len(*h))
	*h = append(*h, g)
}
func (h *groupHeap[T]) Pop() any {
	old := *h
	g := old[len(old)-1]
	var zero T
	old[len(old)-1] = zero
	*h = old[:len(old)-1]
	g.setIndex(-1)
	return g
}
