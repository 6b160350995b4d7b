package dht

import (
	"net"
	"sync"

	"github.com/a2alnode/a2al"
)

// Dial-address ranks. A binding is only replaced by evidence of higher
// rank, or of equal rank when that evidence is an answer to our own fresh
// tx_id (rankAnswered, rankPinned). Signed requests carry no timestamp and
// can be replayed from anywhere, so a request (rankInbound) never moves an
// existing binding: the node challenges the new address instead
// (docs/dht-security.md, "Address moves"). Hearsay can never redirect a
// peer we heard from first-hand (docs/reference-defects.md W-6), and a punch-derived address never
// overrides a verified one (docs/dht.md §17.4).
const (
	rankHearsay  uint8 = 1 // from someone's FIND_* answer
	rankPunch    uint8 = 2 // ICE-selected remote of a punched connection
	rankInbound  uint8 = 3 // peer's signed request arrived from this address (replayable)
	rankAnswered uint8 = 4 // peer answered our fresh tx_id sent to this address
	rankPinned   uint8 = 5 // AddContact / BindPeerAddr by the embedder
)

const maxAddrBook = 8192

// hearsayCap bounds the hearsay cache. Hearsay addresses are only needed
// while the lookups that learned them run (a routing-table entry keeps its
// own copy of the address), so a small ring independent of the network
// size serves them (docs/dht-benchmarks.md, "Growth and memory").
const hearsayCap = 32

type dialEntry struct {
	addr net.Addr
	rank uint8
}

type heardAddr struct {
	id   a2al.NodeID
	addr net.Addr // nil: free slot
}

// addrBook maps NodeID -> dial address for peers we have first-hand
// evidence of (byID, bounded), plus a ring of the latest hearsay addresses.
// There is no reverse map: idOf, for the few public calls that name a peer
// by address only, scans byID (a map from address to NodeID cost more
// memory per peer than the binding itself).
type addrBook struct {
	mu      sync.RWMutex
	byID    map[a2al.NodeID]dialEntry
	hear    []heardAddr // ring of hearsayCap, allocated on first use
	hearPos int
}

func (b *addrBook) init() {
	b.byID = make(map[a2al.NodeID]dialEntry)
}

// bind sets id's dial address per the rank rule above. It reports whether
// the binding changed. The same address is refreshed at the higher of
// the two ranks. Hearsay goes to the hearsay ring and never replaces a
// binding or earlier hearsay. The time is not kept (nothing reads it).
func (b *addrBook) bind(id a2al.NodeID, addr net.Addr, rank uint8) bool {
	if addr == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old, ok := b.byID[id]
	wasHeard := false // id's hearsay address is addr
	if !ok {
		i := b.hearsayLocked(id)
		if rank == rankHearsay {
			if i >= 0 {
				return false // hearsay never replaces hearsay
			}
			b.addHearsayLocked(id, addr)
			return true
		}
		if i >= 0 {
			// First-hand evidence supersedes hearsay; at the same
			// address the dial address does not move.
			wasHeard = sameAddr(b.hear[i].addr, addr)
			b.hear[i] = heardAddr{}
		}
	}
	if ok && sameAddr(old.addr, addr) {
		old.rank = max(old.rank, rank)
		b.byID[id] = old
		return false
	}
	if ok && (old.rank > rank || old.rank == rank && rank == rankInbound) {
		return false
	}
	if !ok && len(b.byID) >= maxAddrBook {
		for victim := range b.byID { // map order is random
			delete(b.byID, victim)
			break
		}
	}
	b.byID[id] = dialEntry{addr: addr, rank: rank}
	return !wasHeard
}

// hearsayLocked is id's slot in the hearsay ring, or -1.
func (b *addrBook) hearsayLocked(id a2al.NodeID) int {
	for i := range b.hear {
		if b.hear[i].addr != nil && b.hear[i].id == id {
			return i
		}
	}
	return -1
}

func (b *addrBook) addHearsayLocked(id a2al.NodeID, addr net.Addr) {
	if b.hear == nil {
		b.hear = make([]heardAddr, hearsayCap)
	}
	b.hear[b.hearPos] = heardAddr{id: id, addr: addr}
	b.hearPos = (b.hearPos + 1) % len(b.hear)
}

// dropIfRank removes id's binding when it is at most rank (used to forget a
// hearsay address that did not answer, so a correct one can be learned).
func (b *addrBook) dropIfRank(id a2al.NodeID, rank uint8) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i := b.hearsayLocked(id); i >= 0 {
		b.hear[i] = heardAddr{}
	}
	if e, ok := b.byID[id]; ok && e.rank <= rank {
		delete(b.byID, id)
	}
}

func (b *addrBook) get(id a2al.NodeID) (net.Addr, uint8) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if e, ok := b.byID[id]; ok {
		return e.addr, e.rank
	}
	if i := b.hearsayLocked(id); i >= 0 {
		return b.hear[i].addr, rankHearsay
	}
	return nil, 0
}

// idOf finds the peer bound to addr (first-hand bindings only). It scans
// the book: only calls that name a peer by address alone use it.
func (b *addrBook) idOf(addr net.Addr) (a2al.NodeID, bool) {
	if addr == nil {
		return a2al.NodeID{}, false
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	for id, e := range b.byID {
		if sameAddr(e.addr, addr) {
			return id, true
		}
	}
	return a2al.NodeID{}, false
}

// len counts the first-hand bindings.
func (b *addrBook) len() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.byID)
}

// BindPeerAddr pins the dial address for a NodeID (e.g. an in-memory
// transport name in tests) and the reverse mapping.
func (n *Node) BindPeerAddr(id a2al.NodeID, addr net.Addr) {
	if n == nil || addr == nil || id == n.id {
		return
	}
	n.book.bind(id, addr, rankPinned)
}
