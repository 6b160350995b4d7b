package dht

import (
	"bytes"
	"container/heap"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// Store limits (docs/dht.md §10, docs/dht.md §16). The per-key caps are wire-visible behaviour
// (which records a node keeps and serves) and match the reference; the TTL,
// size, byte and per-address limits are our additions against store flooding
// (docs/reference-defects.md W-11, W-12).
const (
	// DefaultMaxTotalKeys is the default number of distinct keys a Store keeps.
	DefaultMaxTotalKeys = 100_000

	// MaxSovereignPerKey caps sovereign (and unknown-category) records per key.
	MaxSovereignPerKey = 8
	// MaxTopicPerKey caps topic records per key.
	MaxTopicPerKey = 100
	// MaxMailboxPerKey caps mailbox records per key.
	MaxMailboxPerKey = 50
	// MaxMailboxPerPubkey caps mailbox records from one signing key per key.
	MaxMailboxPerPubkey = 4

	// MaxRecordTTL is the longest lifetime a stored record may claim. Reference
	// publishers use 1 h (endpoint) and ≤ 2 h (topic); without a cap a record
	// could pin a slot for ~136 years (docs/reference-defects.md W-12). Longer TTLs are refused as a
	// policy decision (STORE_RESP reason 1), so publishers learn it is stable.
	MaxRecordTTL = 24 * time.Hour

	// MaxStoredRecordBytes bounds payload+delegation of one record. A STORE
	// must fit a datagram, but records also arrive over punched streams and
	// local calls, so the bound is the Mode B stream message limit (docs/wire.md §8.8).
	MaxStoredRecordBytes = 64 << 10

	// DefaultMaxStoreBytes bounds the approximate memory held by a Store;
	// records are evicted fairly per source prefix beyond it (store_fair.go).
	DefaultMaxStoreBytes = 256 << 20

	// MaxKeysPerAddress bounds the number of keys at which records of one
	// Address may be held. Topic and mailbox records may be stored under any
	// key, so without it one identity could occupy the whole store (docs/reference-defects.md W-11).
	MaxKeysPerAddress = 256

	// recordOverhead approximates the fixed memory cost of one stored record
	// (struct, address, pubkey, signature, slice headers).
	recordOverhead = 256
)

// Store errors. Tests and the STORE handler match them with errors.Is:
// ErrStaleRecord maps to STORE_RESP {stored, already_had}, anything wrapping
// ErrStorePolicy to reason 1 (Policy), every other error to reason 2.
var (
	ErrStaleRecord          = errors.New("dht: stale record")
	ErrStorePolicy          = errors.New("dht: policy rejected")
	ErrSovereignKeyMismatch = errors.New("dht: sovereign key mismatch")
	ErrRecordTTLTooLong     = fmt.Errorf("%w: record ttl above %v", ErrStorePolicy, MaxRecordTTL)
	ErrRecordTooLarge       = fmt.Errorf("%w: record larger than %d bytes", ErrStorePolicy, MaxStoredRecordBytes)
	ErrKeyFull              = fmt.Errorf("%w: per-key record cap reached and the new record is the oldest", ErrStorePolicy)
	ErrAddressQuota         = fmt.Errorf("%w: address holds records at too many keys", ErrStorePolicy)
	ErrStoreFull            = fmt.Errorf("%w: store full of records this source may not evict", ErrStorePolicy)
)

// RecordAuthFunc decides whether rec may be stored at key. It runs after the
// signature, time window and sovereign key binding were checked. Wrap
// ErrStorePolicy to signal a stable node-side refusal rather than a bad record.
type RecordAuthFunc func(key a2al.NodeID, rec protocol.SignedRecord, now time.Time) error

// StoreRecordDebug is one row of /debug/store (docs/dht.md §15.3).
type StoreRecordDebug struct {
	KeyNodeIDHex string `json:"key_node_id_hex"`
	AddressHex   string `json:"address_hex"`
	RecType      uint8  `json:"rec_type"`
	Seq          uint64 `json:"seq"`
	Timestamp    uint64 `json:"timestamp"`
	TTL          uint32 `json:"ttl_seconds"`
	PayloadLen   int    `json:"payload_cbor_len"`
}

// Store is the local record store: records per DHT key, merged by slot
// (docs/dht.md §10, docs/wire.md §8.7). Stored slices are never modified in place
// (readers get copies), expired records are really removed (fixing the
// reference's in-place filter, docs/reference-defects.md W-2), records are evicted fairly per source
// prefix in O(log n) (store_fair.go), and an expiry heap frees expired data
// without scanning. Safe for concurrent use.
type Store struct {
	auth RecordAuthFunc

	mu       sync.Mutex
	maxKeys  int
	maxBytes int64
	bytes    int64
	keys     map[a2al.NodeID]*storeEntry
	byAddr   map[a2al.Address]map[a2al.NodeID]int // records of an address per key
	fair     fairness
	expiry   expiryHeap
}

// storeEntry holds one key's records. recs is replaced, never mutated.
type storeEntry struct {
	key       a2al.NodeID
	recs      []protocol.SignedRecord
	bytes     int64
	expiresAt uint64 // earliest Timestamp+TTL of recs
	heapIndex int
}

// NewStore returns an empty Store. auth may be nil (no authority check, for
// tests; nodes should use SecureRecordAuth). maxKeys ≤ 0 means DefaultMaxTotalKeys.
func NewStore(auth RecordAuthFunc, maxKeys int) *Store {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxTotalKeys
	}
	s := &Store{
		auth:     auth,
		maxKeys:  maxKeys,
		maxBytes: DefaultMaxStoreBytes,
		keys:     make(map[a2al.NodeID]*storeEntry),
		byAddr:   make(map[a2al.Address]map[a2al.NodeID]int),
	}
	s.fair.init()
	return s
}

// Put verifies rec and merges it into the records at key (zero key =
// NodeID(rec.Address)). It returns ErrStaleRecord when the slot already holds
// an equal or newer record (nothing changes; on the wire this is "already
// had"), an error wrapping ErrStorePolicy for node-local refusals, and any
// other error for an invalid or unauthorised record. The record is an
// anonymous local write for eviction purposes (see putFrom).
func (s *Store) Put(key a2al.NodeID, rec protocol.SignedRecord, now time.Time) error {
	return s.putFrom(key, rec, now, storeOrigin{})
}

// putFrom is Put for a record of the given origin (store_fair.go).
func (s *Store) putFrom(key a2al.NodeID, rec protocol.SignedRecord, now time.Time, origin storeOrigin) error {
	if err := protocol.VerifySignedRecord(rec, now); err != nil {
		return fmt.Errorf("dht: store: %w", err)
	}
	if key.IsZero() {
		key = a2al.NodeIDFromAddress(rec.Address)
	}
	cat := storeCategory(rec.RecType)
	if cat == protocol.CategorySovereign && key != a2al.NodeIDFromAddress(rec.Address) {
		return ErrSovereignKeyMismatch
	}
	if time.Duration(rec.TTL)*time.Second > MaxRecordTTL {
		return fmt.Errorf("dht: store: ttl %d s: %w", rec.TTL, ErrRecordTTLTooLong)
	}
	if len(rec.Payload)+len(rec.Delegation) > MaxStoredRecordBytes {
		return fmt.Errorf("dht: store: %d bytes: %w", len(rec.Payload)+len(rec.Delegation), ErrRecordTooLarge)
	}
	if s.auth != nil {
		if err := s.auth(key, rec, now); err != nil {
			return err
		}
	}
	rec = cloneRecord(rec)

	s.mu.Lock()
	defer s.mu.Unlock()
	nowSec := unixSeconds(now)
	s.sweep(nowSec)

	e := s.keys[key]
	var old []protocol.SignedRecord
	if e != nil {
		old = e.recs
	}
	merged, err := mergeRecord(old, rec, cat)
	if err != nil {
		return err
	}
	if (e == nil || s.byAddr[rec.Address][key] == 0) && len(s.byAddr[rec.Address]) >= MaxKeysPerAddress {
		return ErrAddressQuota
	}
	if e == nil {
		e = &storeEntry{key: key, heapIndex: -1}
		s.keys[key] = e
	}
	// A newer version of a record keeps the protection of the one it
	// replaces (it has the same publisher).
	for i := range old {
		if storeCategory(old[i].RecType) == cat && sameSlot(&old[i], &rec, cat) {
			if t := s.fair.tierOf(&old[i]); t == tierOwn {
				origin = ownOrigin
			} else {
				origin.tier = max(origin.tier, t)
			}
		}
	}
	s.fair.pending = origin
	s.setRecords(e, merged)
	s.fair.pending = storeOrigin{}
	if !s.evict(origin.tier, sigID(&rec)) {
		return ErrStoreFull
	}
	return nil
}

// Get returns the newest visible endpoint record at key, or nil.
func (s *Store) Get(key a2al.NodeID, now time.Time) *protocol.SignedRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	nowSec := unixSeconds(now)
	e := s.readLocked(key, nowSec)
	if e == nil {
		return nil
	}
	var best *protocol.SignedRecord
	for i := range e.recs {
		r := &e.recs[i]
		if r.RecType != protocol.RecTypeEndpoint || !visible(r, nowSec) {
			continue
		}
		if best == nil || protocol.RecordIsNewer(*r, *best) {
			best = r
		}
	}
	if best == nil {
		return nil
	}
	c := cloneRecord(*best)
	return &c
}

// GetAll returns copies of the visible records at key of recType
// (0 = all) in storage order.
func (s *Store) GetAll(key a2al.NodeID, recType uint8, now time.Time) []protocol.SignedRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	nowSec := unixSeconds(now)
	e := s.readLocked(key, nowSec)
	if e == nil {
		return nil
	}
	return appendVisible(nil, e.recs, nil, recType, nowSec)
}

// readLocked drops expired records, then returns key's entry or nil.
// s.mu must be held.
func (s *Store) readLocked(key a2al.NodeID, nowSec uint64) *storeEntry {
	s.sweep(nowSec)
	return s.keys[key]
}

// GetAllByAddress returns copies of the visible records signed for addr at
// any key, optionally filtered by recType (0 = all). It uses an address index,
// so it costs O(records of addr).
func (s *Store) GetAllByAddress(addr a2al.Address, recType uint8, now time.Time) []protocol.SignedRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	nowSec := unixSeconds(now)
	s.sweep(nowSec)
	idx := s.byAddr[addr]
	if len(idx) == 0 {
		return nil
	}
	keys := make([]a2al.NodeID, 0, len(idx))
	for k := range idx {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return bytes.Compare(keys[i][:], keys[j][:]) < 0 })
	var out []protocol.SignedRecord
	for _, k := range keys {
		out = appendVisible(out, s.keys[k].recs, &addr, recType, nowSec)
	}
	return out
}

// Invalidate drops the records at key of recType (0 = all) and the key when
// nothing is left. Local only.
func (s *Store) Invalidate(key a2al.NodeID, recType uint8) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.keys[key]
	if e == nil {
		return
	}
	if recType == 0 {
		s.removeEntry(e)
		return
	}
	kept := make([]protocol.SignedRecord, 0, len(e.recs))
	for _, r := range e.recs {
		if r.RecType != recType {
			kept = append(kept, r)
		}
	}
	if len(kept) == len(e.recs) {
		return
	}
	if len(kept) == 0 {
		s.removeEntry(e)
		return
	}
	s.setRecords(e, kept)
}

// Len returns the number of keys held.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys)
}

// SetMaxKeys changes the key limit and evicts records (fairly, never the
// node's own) down to it at once. n ≤ 0 restores DefaultMaxTotalKeys
// (rather than evicting everything, docs/reference-defects.md W-30).
func (s *Store) SetMaxKeys(n int) {
	if n <= 0 {
		n = DefaultMaxTotalKeys
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxKeys = n
	s.evict(tierOwn, nil)
}

// SetMaxBytes changes the approximate memory budget (≤ 0 restores
// DefaultMaxStoreBytes) and evicts records down to it as SetMaxKeys does.
func (s *Store) SetMaxBytes(n int64) {
	if n <= 0 {
		n = DefaultMaxStoreBytes
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxBytes = n
	s.evict(tierOwn, nil)
}

// DebugRecords returns one row per visible record, ordered by key then
// storage order.
func (s *Store) DebugRecords(now time.Time) []StoreRecordDebug {
	s.mu.Lock()
	defer s.mu.Unlock()
	nowSec := unixSeconds(now)
	s.sweep(nowSec)
	entries := make([]*storeEntry, 0, len(s.keys))
	for _, e := range s.keys {
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool { return bytes.Compare(entries[i].key[:], entries[j].key[:]) < 0 })
	var out []StoreRecordDebug
	for _, e := range entries {
		kh := fmt.Sprintf("%x", e.key[:])
		for i := range e.recs {
			r := &e.recs[i]
			if !visible(r, nowSec) {
				continue
			}
			out = append(out, StoreRecordDebug{
				KeyNodeIDHex: kh,
				AddressHex:   fmt.Sprintf("%x", r.Address[:]),
				RecType:      r.RecType,
				Seq:          r.Seq,
				Timestamp:    r.Timestamp,
				TTL:          r.TTL,
				PayloadLen:   len(r.Payload),
			})
		}
	}
	return out
}

// --- merge rules (docs/dht.md §10.3) ---

// storeCategory maps unknown record types to sovereign, as the reference does.
func storeCategory(recType uint8) protocol.Category {
	c := protocol.RecordCategory(recType)
	if c == protocol.CategoryUnknown {
		return protocol.CategorySovereign
	}
	return c
}

// sameSlot reports whether a and b (same category cat) compete for one slot.
func sameSlot(a, b *protocol.SignedRecord, cat protocol.Category) bool {
	switch cat {
	case protocol.CategoryTopic:
		return bytes.Equal(a.Pubkey, b.Pubkey)
	case protocol.CategoryMailbox:
		return a.RecType == b.RecType && bytes.Equal(a.Pubkey, b.Pubkey) && bytes.Equal(a.Payload, b.Payload)
	default:
		return a.Address == b.Address && a.RecType == b.RecType
	}
}

// mergeRecord returns the new list for a key after adding rec, or
// ErrStaleRecord / ErrKeyFull. old is not modified. The result is
// (records of other categories) ‖ (records of rec's category, rec last),
// which is the reference order.
func mergeRecord(old []protocol.SignedRecord, rec protocol.SignedRecord, cat protocol.Category) ([]protocol.SignedRecord, error) {
	out := make([]protocol.SignedRecord, 0, len(old)+1)
	var same []protocol.SignedRecord
	for i := range old {
		r := &old[i]
		if storeCategory(r.RecType) != cat {
			out = append(out, *r)
			continue
		}
		if sameSlot(r, &rec, cat) {
			if !protocol.RecordIsNewer(rec, *r) {
				return nil, ErrStaleRecord
			}
			continue // replaced by rec
		}
		same = append(same, *r)
	}
	same = append(same, rec)
	same, err := enforceCaps(same, cat)
	if err != nil {
		return nil, err
	}
	return append(out, same...), nil
}

// enforceCaps evicts per the category's victim rule; rec is the last element.
// If rec itself would be evicted the merge is refused (the reference silently
// dropped it yet acknowledged the STORE, docs/reference-defects.md W-11).
func enforceCaps(list []protocol.SignedRecord, cat protocol.Category) ([]protocol.SignedRecord, error) {
	newIdx := len(list) - 1
	drop := func(i int) ([]protocol.SignedRecord, error) {
		if i == newIdx {
			return nil, ErrKeyFull
		}
		out := make([]protocol.SignedRecord, 0, len(list)-1)
		out = append(out, list[:i]...)
		out = append(out, list[i+1:]...)
		list = out
		newIdx--
		return list, nil
	}
	var err error
	switch cat {
	case protocol.CategoryTopic:
		for len(list) > MaxTopicPerKey {
			if list, err = drop(oldestIndex(list, nil)); err != nil {
				return nil, err
			}
		}
	case protocol.CategoryMailbox:
		pub := list[newIdx].Pubkey
		samePub := func(r *protocol.SignedRecord) bool { return bytes.Equal(r.Pubkey, pub) }
		for countWhere(list, samePub) > MaxMailboxPerPubkey {
			if list, err = drop(oldestIndex(list, samePub)); err != nil {
				return nil, err
			}
		}
		for len(list) > MaxMailboxPerKey {
			if list, err = drop(oldestIndex(list, nil)); err != nil {
				return nil, err
			}
		}
	default:
		for len(list) > MaxSovereignPerKey {
			victim := -1
			for i := range list {
				if list[i].RecType != protocol.RecTypeEndpoint {
					victim = i
					break
				}
			}
			if victim < 0 {
				victim = oldestIndex(list, nil)
			}
			if list, err = drop(victim); err != nil {
				return nil, err
			}
		}
	}
	return list, nil
}

// oldestIndex returns the first record with the smallest Timestamp among
// those matching pred (all when nil), or -1.
func oldestIndex(list []protocol.SignedRecord, pred func(*protocol.SignedRecord) bool) int {
	best := -1
	for i := range list {
		if pred != nil && !pred(&list[i]) {
			continue
		}
		if best < 0 || list[i].Timestamp < list[best].Timestamp {
			best = i
		}
	}
	return best
}

func countWhere(list []protocol.SignedRecord, pred func(*protocol.SignedRecord) bool) int {
	n := 0
	for i := range list {
		if pred(&list[i]) {
			n++
		}
	}
	return n
}

// --- bookkeeping (callers hold s.mu) ---

// setRecords installs recs (non-empty) on e and updates indexes, budgets
// and the eviction bookkeeping.
func (s *Store) setRecords(e *storeEntry, recs []protocol.SignedRecord) {
	s.fair.update(e.key, e.recs, recs)
	s.unindex(e)
	e.recs = recs
	e.bytes = 0
	e.expiresAt = ^uint64(0)
	for i := range recs {
		r := &recs[i]
		e.bytes += recordSize(r)
		if x := expiresAt(r); x < e.expiresAt {
			e.expiresAt = x
		}
		m := s.byAddr[r.Address]
		if m == nil {
			m = make(map[a2al.NodeID]int)
			s.byAddr[r.Address] = m
		}
		m[e.key]++
	}
	s.bytes += e.bytes
	if e.heapIndex < 0 {
		heap.Push(&s.expiry, e)
	} else {
		heap.Fix(&s.expiry, e.heapIndex)
	}
}

// unindex removes e's records from the address index and byte budget.
func (s *Store) unindex(e *storeEntry) {
	for i := range e.recs {
		a := e.recs[i].Address
		m := s.byAddr[a]
		if m[e.key]--; m[e.key] <= 0 {
			delete(m, e.key)
			if len(m) == 0 {
				delete(s.byAddr, a)
			}
		}
	}
	s.bytes -= e.bytes
	e.bytes = 0
}

func (s *Store) removeEntry(e *storeEntry) {
	s.fair.update(e.key, e.recs, nil)
	s.unindex(e)
	e.recs = nil
	if e.heapIndex >= 0 {
		heap.Remove(&s.expiry, e.heapIndex)
	}
	delete(s.keys, e.key)
}

// evict drops records while over the key or byte limit, each chosen by
// fairness.victim for an incoming record of tier in. When nothing may be
// evicted, the record identified by incoming (just stored, nil for none)
// is taken out again unless it is the node's own; evict then reports false.
func (s *Store) evict(in int, incoming *byte) bool {
	for len(s.keys) > s.maxKeys || s.bytes > s.maxBytes {
		v := s.fair.victim(in)
		if v == nil {
			if n := s.fair.nodes[incoming]; n != nil && in != tierOwn {
				s.dropRecord(n)
				return false
			}
			return true
		}
		s.dropRecord(v)
		if v.sig == incoming {
			return false
		}
	}
	return true
}

// dropRecord removes the record of n from its key.
func (s *Store) dropRecord(n *recNode) {
	e := s.keys[n.key]
	kept := make([]protocol.SignedRecord, 0, len(e.recs))
	for i := range e.recs {
		if sigID(&e.recs[i]) != n.sig {
			kept = append(kept, e.recs[i])
		}
	}
	if len(kept) == 0 {
		s.removeEntry(e)
		return
	}
	s.setRecords(e, kept)
}

// sweep removes records that expired before nowSec, key by key in order of
// earliest expiry; each record is dropped once, so the cost is amortised
// O(log n) per stored record.
func (s *Store) sweep(nowSec uint64) {
	for len(s.expiry) > 0 && s.expiry[0].expiresAt < nowSec {
		e := s.expiry[0]
		kept := make([]protocol.SignedRecord, 0, len(e.recs))
		for i := range e.recs {
			if expiresAt(&e.recs[i]) >= nowSec {
				kept = append(kept, e.recs[i])
			}
		}
		if len(kept) == 0 {
			s.removeEntry(e)
			continue
		}
		s.setRecords(e, kept)
	}
}

// expiryHeap orders entries by earliest record expiry.
type expiryHeap []*storeEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expiresAt < h[j].expiresAt }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex = i
	h[j].heapIndex = j
}
func (h *expiryHeap) Push(x any) {
	e := x.(*storeEntry)
	e.heapIndex = len(*h)
	*h = append(*h, e)
}
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.heapIndex = -1
	return e
}

// --- record helpers ---

// appendVisible appends copies of the records of recs that match addr (nil =
// any) and recType (0 = any) and are inside their time window at nowSec.
func appendVisible(out, recs []protocol.SignedRecord, addr *a2al.Address, recType uint8, nowSec uint64) []protocol.SignedRecord {
	for i := range recs {
		r := &recs[i]
		if (recType != 0 && r.RecType != recType) || (addr != nil && r.Address != *addr) || !visible(r, nowSec) {
			continue
		}
		out = append(out, cloneRecord(*r))
	}
	return out
}

// visible applies the time window of record verification (the signature was
// checked when the record was stored, so reads need not repeat it).
func visible(r *protocol.SignedRecord, nowSec uint64) bool {
	return expiresAt(r) >= nowSec && r.Timestamp <= nowSec+protocol.RecordFutureSkew
}

// expiresAt is the last second in which r is valid (saturating).
func expiresAt(r *protocol.SignedRecord) uint64 {
	x := r.Timestamp + uint64(r.TTL)
	if x < r.Timestamp {
		return ^uint64(0)
	}
	return x
}

func recordSize(r *protocol.SignedRecord) int64 {
	return int64(recordOverhead + len(r.Payload) + len(r.Pubkey) + len(r.Signature) + len(r.Delegation))
}

func unixSeconds(t time.Time) uint64 {
	if u := t.Unix(); u > 0 {
		return uint64(u)
	}
	return 0
}

// cloneRecord deep-copies the byte slices so callers cannot alias store data.
func cloneRecord(r protocol.SignedRecord) protocol.SignedRecord {
	r.Payload = cloneBytes(r.Payload)
	r.Pubkey = cloneBytes(r.Pubkey)
	r.Signature = cloneBytes(r.Signature)
	r.Delegation = cloneBytes(r.Delegation)
	return r
}

// cloneBytes copies b, keeping nil distinct from empty (they sign differently).
func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}
