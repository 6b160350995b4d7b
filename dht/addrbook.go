package dht

import (
	"net"
	"sync"
	"time"

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

type dialEntry struct {
	addr net.Addr
	rank uint8
	at   time.Time
}

// addrBook maps NodeID -> dial address and address -> NodeID, both bounded.
type addrBook struct {
	mu     sync.RWMutex
	byID   map[a2al.NodeID]dialEntry
	byAddr map[string]a2al.NodeID
}

func (b *addrBook) init() {
	b.byID = make(map[a2al.NodeID]dialEntry)
	b.byAddr = make(map[string]a2al.NodeID)
}

// bind sets id's dial address per the rank rule above. It reports whether
// the binding changed. The same address is refreshed at the higher of
// the two ranks.
func (b *addrBook) bind(id a2al.NodeID, addr net.Addr, rank uint8, now time.Time) bool {
	if addr == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old, ok := b.byID[id]
	if ok && old.addr.String() == addr.String() {
		old.rank = max(old.rank, rank)
		old.at = now
		b.byID[id] = old
		return false
	}
	if ok && (old.rank > rank || old.rank == rank && rank == rankInbound) {
		return false
	}
	if !ok && len(b.byID) >= maxAddrBook {
		b.evictLocked()
	}
	key := addr.String()
	moved := !ok
	if ok {
		if oldKey := old.addr.String(); oldKey != key {
			moved = true
			if b.byAddr[oldKey] == id {
				delete(b.byAddr, oldKey)
			}
		}
	}
	b.byID[id] = dialEntry{addr: addr, rank: rank, at: now}
	if len(b.byAddr) >= 2*maxAddrBook {
		clear(b.byAddr)
		for k, e := range b.byID {
			b.byAddr[e.addr.String()] = k
		}
	}
	b.byAddr[key] = id
	return moved
}

// evictLocked drops one entry, preferring hearsay (map order is random).
func (b *addrBook) evictLocked() {
	var victim a2al.NodeID
	found := false
	i := 0
	for id, e := range b.byID {
		if !found || e.rank == rankHearsay {
			victim, found = id, true
			if e.rank == rankHearsay {
				break
			}
		}
		if i++; i > 32 {
			break
		}
	}
	if found {
		b.dropLocked(victim)
	}
}

func (b *addrBook) dropLocked(id a2al.NodeID) {
	if e, ok := b.byID[id]; ok {
		if b.byAddr[e.addr.String()] == id {
			delete(b.byAddr, e.addr.String())
		}
		delete(b.byID, id)
	}
}

// dropIfRank removes id's binding when it is at most rank (used to forget a
// hearsay address that did not answer, so a correct one can be learned).
func (b *addrBook) dropIfRank(id a2al.NodeID, rank uint8) {
	b.mu.Lock()
	if e, ok := b.byID[id]; ok && e.rank <= rank {
		b.dropLocked(id)
	}
	b.mu.Unlock()
}

func (b *addrBook) get(id a2al.NodeID) (net.Addr, uint8) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	e, ok := b.byID[id]
	if !ok {
		return nil, 0
	}
	return e.addr, e.rank
}

func (b *addrBook) idOf(addr net.Addr) (a2al.NodeID, bool) {
	if addr == nil {
		return a2al.NodeID{}, false
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	id, ok := b.byAddr[addr.String()]
	return id, ok
}

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
	n.book.bind(id, addr, rankPinned, n.now())
}
