package dht

import (
	"cmp"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// AnswerRecords picks the records of key (recType 0 = all) that a
// FIND_VALUE answer carries within budget bytes of canonical CBOR
// (docs/dht-security.md, "FIND_VALUE answers"). When everything fits, all
// visible records are returned in storage order (what the reference
// sends). Otherwise sovereign records (the key owner's endpoint) come first
// and the rest is chosen fairly: publishers in random order, one record
// per publisher per round, so no publisher, however recent its timestamps,
// decides what every lookup sees, and successive answers cover different
// publishers. The cost is O(r log r) in the r records held at the key, with
// no encoding and no deep copy: the returned records share their byte
// slices with the store, which never modifies stored records in place, so
// callers must treat them as read-only.
func (s *Store) AnswerRecords(key a2al.NodeID, recType uint8, budget int, now time.Time) []protocol.SignedRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	nowSec := unixSeconds(now)
	e := s.readLocked(key, nowSec)
	if e == nil {
		return nil
	}
	type cand struct {
		idx   int    // storage index
		size  int    // canonical CBOR size
		pub   uint64 // publisher: first 8 bytes of the signing key
		round int    // position among its publisher's records (sovereign: -1)
		order uint32 // random rank of the publisher
	}
	cs := make([]cand, 0, len(e.recs))
	total := 0
	for i := range e.recs {
		r := &e.recs[i]
		if (recType != 0 && r.RecType != recType) || !visible(r, nowSec) {
			continue
		}
		sz := protocol.RecordWireLen(*r)
		total += sz
		cs = append(cs, cand{idx: i, size: sz, pub: pubPrefix(r.Pubkey)})
	}
	if total <= budget {
		out := make([]protocol.SignedRecord, len(cs))
		for i, c := range cs {
			out[i] = e.recs[c.idx]
		}
		return out
	}
	// Random order of publishers, and of records within a publisher. Keys
	// sharing a 64-bit prefix count as one publisher: sharing it with
	// someone else's key takes about 2^64 work, with one's own keys it only
	// lowers one's own share.
	rand.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] })
	slices.SortFunc(cs, func(a, b cand) int { return cmp.Compare(a.pub, b.pub) })
	var groupOrder uint32
	for i := range cs {
		if i == 0 || cs[i].pub != cs[i-1].pub {
			groupOrder = rand.Uint32()
		} else {
			cs[i].round = cs[i-1].round + 1
		}
		cs[i].order = groupOrder
	}
	for i := range cs {
		if storeCategory(e.recs[cs[i].idx].RecType) == protocol.CategorySovereign {
			cs[i].round = -1
		}
	}
	slices.SortFunc(cs, func(a, b cand) int {
		if a.round != b.round {
			return cmp.Compare(a.round, b.round)
		}
		return cmp.Compare(a.order, b.order)
	})
	picked := cs[:0]
	used := 0
	for _, c := range cs {
		if used+c.size <= budget {
			used += c.size
			picked = append(picked, c)
		}
	}
	slices.SortFunc(picked, func(a, b cand) int { return a.idx - b.idx })
	out := make([]protocol.SignedRecord, len(picked))
	for i, c := range picked {
		out[i] = e.recs[c.idx]
	}
	return out
}

// pubPrefix is the first 8 bytes of a signing key (zero-padded).
func pubPrefix(pub []byte) uint64 {
	var b [8]byte
	copy(b[:], pub)
	return binary.BigEndian.Uint64(b[:])
}
