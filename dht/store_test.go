package dht

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// T0 of the vectors (records.json "T0").
const testT0 = 1767225600

var (
	// Payloads from records.json (endpoint_minimal, topic).
	testEndpointPayload = mustHex("a2018177717569633a2f2f3230332e302e3131332e353a343132310200")
	testTopicPayload    = mustHex("a70101026964656d6f2f6563686f03684563686f20426f740482636d6370646874747005826464656d6f646563686f0678194563686f657320776861746576657220796f752073656e642e07a26176026375726c781868747470733a2f2f6563686f2e6578616d706c652e636f6d")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

type testKey struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	addr a2al.Address
	id   a2al.NodeID
}

func newTestKey(seed byte) testKey {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed + byte(i)
	}
	return keyFromSeed(s)
}

func keyFromSeed(seed []byte) testKey {
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	addr := a2al.AddressFromEd25519(pub)
	return testKey{priv: priv, pub: pub, addr: addr, id: a2al.NodeIDFromAddress(addr)}
}

// Vector identities (identity.json).
var (
	alice = newTestKey(0x00) // seed 00 01 .. 1f
	bob   = newTestKey(0x20) // seed 20 21 .. 3f
)

// mkRec signs a record for k's own address.
func mkRec(t testing.TB, k testKey, recType uint8, payload []byte, seq, ts uint64, ttl uint32) protocol.SignedRecord {
	t.Helper()
	return mkRecFor(t, k, k.addr, recType, payload, seq, ts, ttl)
}

// mkRecFor signs a record claiming addr with k's key.
func mkRecFor(t testing.TB, k testKey, addr a2al.Address, recType uint8, payload []byte, seq, ts uint64, ttl uint32) protocol.SignedRecord {
	t.Helper()
	rec := protocol.SignedRecord{Address: addr, RecType: recType, Payload: payload, Seq: seq, Timestamp: ts, TTL: ttl}
	if addr == k.addr {
		if err := protocol.SignRecord(&rec, k.pub, func(m []byte) ([]byte, error) { return ed25519.Sign(k.priv, m), nil }); err != nil {
			t.Fatalf("sign record: %v", err)
		}
		return rec
	}
	// SignRecord refuses foreign addresses; sign the input directly.
	in, err := protocol.RecordSigningInput(rec)
	if err != nil {
		t.Fatalf("record signing input: %v", err)
	}
	rec.Pubkey = append([]byte(nil), k.pub...)
	rec.Signature = ed25519.Sign(k.priv, in)
	return rec
}

func payloadFor(recType uint8) []byte {
	switch storeCategory(recType) {
	case protocol.CategoryTopic:
		return testTopicPayload
	case protocol.CategorySovereign:
		if recType == protocol.RecTypeEndpoint {
			return testEndpointPayload
		}
	}
	return []byte{0xa1, 0x01, 0x01}
}

func at(sec uint64) time.Time { return time.Unix(int64(sec), 0) }

// storeResp mirrors the STORE_RESP mapping of docs/wire.md §6.8.
func storeResp(err error) (stored, alreadyHad bool, reason uint8) {
	switch {
	case err == nil:
		return true, false, protocol.StoreReasonNone
	case errors.Is(err, ErrStaleRecord):
		return true, true, protocol.StoreReasonNone
	case errors.Is(err, ErrStorePolicy):
		return false, false, protocol.StoreReasonPolicy
	default:
		return false, false, protocol.StoreReasonRecordInvalid
	}
}

// checkInvariants verifies the store's internal indexes against its records.
func checkInvariants(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var total int64
	addrKeys := map[a2al.Address]map[a2al.NodeID]int{}
	for k, e := range s.keys {
		if e.key != k || len(e.recs) == 0 {
			t.Fatalf("entry %x: key %x, %d records", k[:4], e.key[:4], len(e.recs))
		}
		counts := map[protocol.Category]int{}
		perPub := map[string]int{}
		var b int64
		minExp := ^uint64(0)
		for i := range e.recs {
			r := &e.recs[i]
			c := storeCategory(r.RecType)
			counts[c]++
			if c == protocol.CategoryMailbox {
				perPub[string(r.Pubkey)]++
			}
			for j := i + 1; j < len(e.recs); j++ {
				if storeCategory(e.recs[j].RecType) == c && sameSlot(r, &e.recs[j], c) {
					t.Fatalf("key %x holds two records of one slot", k[:4])
				}
			}
			b += recordSize(r)
			minExp = min(minExp, expiresAt(r))
			if addrKeys[r.Address] == nil {
				addrKeys[r.Address] = map[a2al.NodeID]int{}
			}
			addrKeys[r.Address][k]++
		}
		if counts[protocol.CategorySovereign] > MaxSovereignPerKey || counts[protocol.CategoryTopic] > MaxTopicPerKey || counts[protocol.CategoryMailbox] > MaxMailboxPerKey {
			t.Fatalf("key %x over cap: %v", k[:4], counts)
		}
		for _, n := range perPub {
			if n > MaxMailboxPerPubkey {
				t.Fatalf("key %x: %d mailbox records of one pubkey", k[:4], n)
			}
		}
		if b != e.bytes || minExp != e.expiresAt {
			t.Fatalf("key %x: bytes %d/%d expiry %d/%d", k[:4], e.bytes, b, e.expiresAt, minExp)
		}
		if e.heapIndex < 0 || e.heapIndex >= len(s.expiry) || s.expiry[e.heapIndex] != e {
			t.Fatalf("key %x not in expiry heap", k[:4])
		}
		total += b
	}
	if total != s.bytes {
		t.Fatalf("byte total %d, want %d", s.bytes, total)
	}
	if len(s.expiry) != len(s.keys) {
		t.Fatalf("heap has %d entries for %d keys", len(s.expiry), len(s.keys))
	}
	for i := 1; i < len(s.expiry); i++ {
		if s.expiry.Less(i, (i-1)/2) {
			t.Fatalf("expiry heap order broken at %d", i)
		}
	}
	checkFairness(t, s)
	if len(addrKeys) != len(s.byAddr) {
		t.Fatalf("address index has %d addresses, want %d", len(s.byAddr), len(addrKeys))
	}
	for a, m := range addrKeys {
		if len(m) != len(s.byAddr[a]) {
			t.Fatalf("address index for %x: %v, want %v", a[:4], s.byAddr[a], m)
		}
		for k, c := range m {
			if s.byAddr[a][k] != c {
				t.Fatalf("address index for %x at %x: %d, want %d", a[:4], k[:4], s.byAddr[a][k], c)
			}
		}
	}
	if len(s.keys) > s.maxKeys {
		t.Fatalf("%d keys above limit %d", len(s.keys), s.maxKeys)
	}
}

// --- vectors ---

type vecHeld struct {
	AddressHex string `json:"address_hex"`
	RecType    uint8  `json:"rec_type"`
	Seq        uint64 `json:"seq"`
	Timestamp  uint64 `json:"timestamp"`
}

type vecStep struct {
	Step             string    `json:"step"`
	KeyHex           string    `json:"key_hex"`
	RecordAddressHex string    `json:"record_address_hex"`
	RecType          uint8     `json:"rec_type"`
	Seq              uint64    `json:"seq"`
	Timestamp        uint64    `json:"timestamp"`
	Result           string    `json:"result"`
	Detail           string    `json:"detail"`
	HeldAfter        []vecHeld `json:"held_at_key_after"`
	StoreResp        struct {
		Stored     bool  `json:"stored"`
		AlreadyHad bool  `json:"already_had"`
		Reason     uint8 `json:"reason"`
	} `json:"store_resp"`
}

func readVectors(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/vectors/" + name)
	if err != nil {
		t.Fatalf("vector file: %v", err)
	}
	return b
}

func TestStoreSequenceVectors(t *testing.T) {
	var doc struct {
		StoreSequences []struct {
			Name  string    `json:"name"`
			Now   uint64    `json:"now"`
			Steps []vecStep `json:"steps"`
		} `json:"store_sequences"`
	}
	if err := json.Unmarshal(readVectors(t, "records.json"), &doc); err != nil {
		t.Fatalf("parse records.json: %v", err)
	}
	if len(doc.StoreSequences) == 0 {
		t.Fatal("no store_sequences in records.json")
	}
	signers := map[string]testKey{hex.EncodeToString(alice.addr[:]): alice, hex.EncodeToString(bob.addr[:]): bob}
	for _, seq := range doc.StoreSequences {
		t.Run(seq.Name, func(t *testing.T) {
			s := NewStore(SecureRecordAuth, 0)
			now := at(seq.Now)
			for _, st := range seq.Steps {
				k, ok := signers[st.RecordAddressHex]
				if !ok {
					t.Fatalf("%s: unknown signer %s", st.Step, st.RecordAddressHex)
				}
				var key a2al.NodeID
				copy(key[:], mustHex(st.KeyHex))
				rec := mkRec(t, k, st.RecType, payloadFor(st.RecType), st.Seq, st.Timestamp, 3600)
				err := s.Put(key, rec, now)
				stored, had, reason := storeResp(err)
				if stored != st.StoreResp.Stored || had != st.StoreResp.AlreadyHad || reason != st.StoreResp.Reason {
					t.Fatalf("%s: Put err=%v → (%v,%v,%d), want %+v", st.Step, err, stored, had, reason, st.StoreResp)
				}
				if st.Detail != "" && (err == nil || err.Error() != st.Detail) {
					t.Fatalf("%s: error %v, want %q", st.Step, err, st.Detail)
				}
				if st.Result == "rejected" {
					continue
				}
				if key.IsZero() {
					key = k.id
				}
				got := s.GetAll(key, 0, now)
				if len(got) != len(st.HeldAfter) {
					t.Fatalf("%s: holds %d records, want %d", st.Step, len(got), len(st.HeldAfter))
				}
				for i, h := range st.HeldAfter {
					g := got[i]
					if hex.EncodeToString(g.Address[:]) != h.AddressHex || g.RecType != h.RecType || g.Seq != h.Seq || g.Timestamp != h.Timestamp {
						t.Fatalf("%s: record %d = %x/%d/%d/%d, want %+v", st.Step, i, g.Address[:], g.RecType, g.Seq, g.Timestamp, h)
					}
				}
				checkInvariants(t, s)
			}
		})
	}
}

// --- rules ---

func TestStorePutRejectsInvalidRecords(t *testing.T) {
	now := at(testT0 + 10)
	good := mkRec(t, alice, protocol.RecTypeEndpoint, testEndpointPayload, 1, testT0, 3600)
	badSig := good
	badSig.Signature = append([]byte(nil), good.Signature...)
	badSig.Signature[0] ^= 1
	tests := []struct {
		name   string
		key    a2al.NodeID
		rec    protocol.SignedRecord
		want   error
		policy bool
	}{
		{"bad signature", a2al.NodeID{}, badSig, protocol.ErrRecordSignature, false},
		{"expired", a2al.NodeID{}, mkRec(t, alice, protocol.RecTypeEndpoint, testEndpointPayload, 1, testT0-100, 50), protocol.ErrRecordExpired, false},
		{"future", a2al.NodeID{}, mkRec(t, alice, protocol.RecTypeEndpoint, testEndpointPayload, 1, testT0+3600, 50), protocol.ErrRecordFuture, false},
		{"sovereign key mismatch", bob.id, good, ErrSovereignKeyMismatch, false},
		{"ttl above cap", a2al.NodeID{}, mkRec(t, alice, 0x05, []byte{1}, 1, testT0, uint32(MaxRecordTTL/time.Second)+1), ErrRecordTTLTooLong, true},
		{"too large", a2al.NodeID{}, mkRec(t, alice, 0x05, make([]byte, MaxStoredRecordBytes+1), 1, testT0, 60), ErrRecordTooLarge, true},
		{"unauthorised signer", a2al.NodeID{}, mkRecFor(t, bob, alice.addr, protocol.RecTypeEndpoint, testEndpointPayload, 1, testT0, 3600), protocol.ErrAuthority, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore(SecureRecordAuth, 0)
			err := s.Put(tc.key, tc.rec, now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Put = %v, want %v", err, tc.want)
			}
			if errors.Is(err, ErrStorePolicy) != tc.policy {
				t.Fatalf("Put = %v: policy=%v, want %v", err, !tc.policy, tc.policy)
			}
			if s.Len() != 0 {
				t.Fatalf("rejected record left %d keys", s.Len())
			}
		})
	}
	// The TTL cap itself is accepted.
	s := NewStore(SecureRecordAuth, 0)
	if err := s.Put(a2al.NodeID{}, mkRec(t, alice, 0x05, []byte{1}, 1, testT0, uint32(MaxRecordTTL/time.Second)), now); err != nil {
		t.Fatalf("Put with TTL = MaxRecordTTL: %v", err)
	}
}

func TestStoreNilAuthAcceptsForeignSigner(t *testing.T) {
	s := NewStore(nil, 0)
	rec := mkRecFor(t, bob, alice.addr, protocol.RecTypeEndpoint, testEndpointPayload, 1, testT0, 3600)
	if err := s.Put(a2al.NodeID{}, rec, at(testT0)); err != nil {
		t.Fatalf("nil auth refused a validly signed record: %v", err)
	}
	// Key binding holds even without an authority policy.
	if err := s.Put(bob.id, rec, at(testT0)); !errors.Is(err, ErrSovereignKeyMismatch) {
		t.Fatalf("Put at wrong key = %v", err)
	}
}

func TestStoreExpiredRecordsAreDropped(t *testing.T) {
	s := NewStore(nil, 0)
	short := mkRec(t, alice, 0x02, []byte{1}, 1, testT0, 10)
	long := mkRec(t, alice, 0x03, []byte{2}, 1, testT0, 100)
	for _, r := range []protocol.SignedRecord{short, long} {
		if err := s.Put(a2al.NodeID{}, r, at(testT0)); err != nil {
			t.Fatal(err)
		}
	}
	// Read repeatedly after the first expired: never duplicates (docs/reference-defects.md W-2).
	for i := 0; i < 3; i++ {
		got := s.GetAll(alice.id, 0, at(testT0+50))
		if len(got) != 1 || got[0].RecType != 0x03 {
			t.Fatalf("read %d: got %d records %v", i, len(got), got)
		}
	}
	if rows := s.DebugRecords(at(testT0 + 50)); len(rows) != 1 || rows[0].RecType != 0x03 {
		t.Fatalf("DebugRecords = %+v", rows)
	}
	checkInvariants(t, s)
	s.mu.Lock()
	held := len(s.keys[alice.id].recs)
	s.mu.Unlock()
	if held != 1 {
		t.Fatalf("expired record still held: %d records", held)
	}
	// The record is valid in its last second, gone after it.
	if got := s.GetAll(alice.id, 0, at(testT0+100)); len(got) != 1 {
		t.Fatalf("record invisible in its last valid second")
	}
	if got := s.GetAll(alice.id, 0, at(testT0+101)); got != nil {
		t.Fatalf("expired records returned: %v", got)
	}
	if s.Len() != 0 {
		t.Fatalf("key of expired records kept: Len = %d", s.Len())
	}
	checkInvariants(t, s)
}

func TestStoreHidesFutureRecordsOnRead(t *testing.T) {
	s := NewStore(nil, 0)
	rec := mkRec(t, alice, protocol.RecTypeEndpoint, testEndpointPayload, 1, testT0+30, 3600)
	if err := s.Put(a2al.NodeID{}, rec, at(testT0)); err != nil {
		t.Fatalf("record within clock skew refused: %v", err)
	}
	if got := s.Get(alice.id, at(testT0-protocol.RecordFutureSkew-31)); got != nil {
		t.Fatal("record far in the future of the reader returned")
	}
	if got := s.Get(alice.id, at(testT0)); got == nil || got.Seq != 1 {
		t.Fatalf("Get = %v", got)
	}
}

func TestStoreSovereignCap(t *testing.T) {
	s := NewStore(nil, 0)
	now := at(testT0)
	put := func(rt uint8, ts uint64) {
		t.Helper()
		if err := s.Put(a2al.NodeID{}, mkRec(t, alice, rt, payloadFor(rt), 1, ts, 3600), now); err != nil {
			t.Fatalf("Put type 0x%02x: %v", rt, err)
		}
	}
	put(protocol.RecTypeEndpoint, testT0-5)
	for rt := uint8(0x02); rt <= 0x08; rt++ { // 7 custom types: 8 records
		put(rt, testT0)
	}
	put(0x20, testT0) // unknown category counts as sovereign: evicts the first non-endpoint (0x02)
	got := s.GetAll(alice.id, 0, now)
	if len(got) != MaxSovereignPerKey {
		t.Fatalf("holds %d records, want %d", len(got), MaxSovereignPerKey)
	}
	types := map[uint8]bool{}
	for _, r := range got {
		types[r.RecType] = true
	}
	if types[0x02] || !types[protocol.RecTypeEndpoint] || !types[0x20] {
		t.Fatalf("wrong victim: types held %v", types)
	}
	checkInvariants(t, s)
}

func TestStoreTopicCapAndVictim(t *testing.T) {
	s := NewStore(SecureRecordAuth, 0)
	now := at(testT0 + 1000)
	key := a2al.NodeID{1}
	oldest := newTestKey(200)
	if err := s.Put(key, mkRec(t, oldest, protocol.RecTypeTopic, testTopicPayload, 1, testT0+1, 3600), now); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < MaxTopicPerKey; i++ {
		k := keyFromSeed(bytes.Repeat([]byte{byte(i), 7}, 16))
		if err := s.Put(key, mkRec(t, k, protocol.RecTypeTopic, testTopicPayload, 1, testT0+10, 3600), now); err != nil {
			t.Fatal(err)
		}
	}
	// A record older than everything held is refused, nothing changes (docs/reference-defects.md W-11).
	older := newTestKey(201)
	err := s.Put(key, mkRec(t, older, protocol.RecTypeTopic, testTopicPayload, 1, testT0, 3600), now)
	if !errors.Is(err, ErrKeyFull) || !errors.Is(err, ErrStorePolicy) {
		t.Fatalf("Put of the oldest record into a full key = %v", err)
	}
	if n := len(s.GetAll(key, 0, now)); n != MaxTopicPerKey {
		t.Fatalf("refused Put changed the key: %d records", n)
	}
	// A newer one evicts the oldest.
	newer := newTestKey(202)
	if err := s.Put(key, mkRec(t, newer, protocol.RecTypeTopic, testTopicPayload, 1, testT0+20, 3600), now); err != nil {
		t.Fatal(err)
	}
	got := s.GetAll(key, protocol.RecTypeTopic, now)
	if len(got) != MaxTopicPerKey {
		t.Fatalf("holds %d records", len(got))
	}
	for _, r := range got {
		if r.Address == oldest.addr {
			t.Fatal("oldest topic record not evicted")
		}
	}
	if got[len(got)-1].Address != newer.addr {
		t.Fatal("new record is not last in storage order")
	}
	checkInvariants(t, s)
}

func TestStoreMailboxCaps(t *testing.T) {
	s := NewStore(SecureRecordAuth, 0)
	now := at(testT0 + 1000)
	key := bob.id
	// Five distinct messages from alice: the oldest is dropped.
	for i := 0; i < 5; i++ {
		r := mkRec(t, alice, protocol.RecTypeMailbox, []byte{byte(i)}, 1, testT0+uint64(i), 3600)
		if err := s.Put(key, r, now); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	got := s.GetAll(key, 0, now)
	if len(got) != MaxMailboxPerPubkey {
		t.Fatalf("holds %d messages from one sender", len(got))
	}
	for _, r := range got {
		if r.Timestamp == testT0 {
			t.Fatal("oldest message of the sender kept")
		}
	}
	// The same message again is "already had".
	dup := mkRec(t, alice, protocol.RecTypeMailbox, []byte{4}, 1, testT0+4, 3600)
	if err := s.Put(key, dup, now); !errors.Is(err, ErrStaleRecord) {
		t.Fatalf("duplicate message: %v", err)
	}
	// Many senders: total capped at 50, oldest first.
	for i := 0; i < 12; i++ {
		k := keyFromSeed(bytes.Repeat([]byte{byte(i + 1), 9}, 16))
		for j := 0; j < 4; j++ {
			r := mkRec(t, k, protocol.RecTypeMailbox, []byte{byte(j)}, 1, testT0+100+uint64(i*4+j), 3600)
			if err := s.Put(key, r, now); err != nil {
				t.Fatalf("sender %d message %d: %v", i, j, err)
			}
		}
	}
	got = s.GetAll(key, protocol.RecTypeMailbox, now)
	if len(got) != MaxMailboxPerKey {
		t.Fatalf("holds %d messages, want %d", len(got), MaxMailboxPerKey)
	}
	aliceLeft := 0
	for _, r := range got {
		if r.Address == alice.addr {
			aliceLeft++
		}
	}
	if aliceLeft != 2 { // 4 + 48 = 52 → alice's two oldest go
		t.Fatalf("%d of alice's messages left, want 2", aliceLeft)
	}
	checkInvariants(t, s)
}

// checkFairness verifies the eviction bookkeeping against the records.
func checkFairness(t *testing.T, s *Store) {
	t.Helper()
	recs := 0
	for k, e := range s.keys {
		for i := range e.recs {
			n := s.fair.nodes[sigID(&e.recs[i])]
			if n == nil || n.key != k {
				t.Fatalf("key %x record %d untracked", k[:4], i)
			}
			recs++
		}
	}
	if recs != len(s.fair.nodes) {
		t.Fatalf("%d tracked records for %d stored", len(s.fair.nodes), recs)
	}
	seen := 0
	for tier := range s.fair.tiers {
		h := s.fair.tiers[tier]
		for i, w := range h {
			if w.idx != i || w.tier != tier || i > 0 && h.Less(i, (i-1)/2) {
				t.Fatalf("tier %d heap broken at %d", tier, i)
			}
			var wb int64
			for j, sg := range w.subs {
				if sg.idx != j || sg.wide != w || j > 0 && w.subs.Less(j, (j-1)/2) {
					t.Fatalf("sub heap broken at %d", j)
				}
				var sb int64
				for n := sg.head; n != nil; n = n.next {
					if n.sub != sg || s.fair.nodes[n.sig] != n {
						t.Fatal("FIFO list corrupt")
					}
					sb += n.size
					seen++
				}
				if sb != sg.bytes || sb == 0 {
					t.Fatalf("sub bytes %d, want %d", sg.bytes, sb)
				}
				wb += sb
			}
			if wb != w.bytes {
				t.Fatalf("wide bytes %d, want %d", w.bytes, wb)
			}
		}
	}
	if seen != recs {
		t.Fatalf("groups hold %d records, store %d", seen, recs)
	}
}

func TestStoreFIFOEviction(t *testing.T) {
	s := NewStore(nil, 3)
	now := at(testT0)
	ks := []testKey{newTestKey(1), newTestKey(2), newTestKey(3), newTestKey(4)}
	put := func(k testKey) {
		t.Helper()
		if err := s.Put(a2al.NodeID{}, mkRec(t, k, protocol.RecTypeEndpoint, testEndpointPayload, 1, testT0, 3600), now); err != nil {
			t.Fatal(err)
		}
	}
	put(ks[0])
	put(ks[1])
	put(ks[2])
	put(ks[3]) // one source: evicts ks[0], its oldest record
	if s.Len() != 3 || s.Get(ks[0].id, now) != nil || s.Get(ks[1].id, now) == nil || s.Get(ks[3].id, now) == nil {
		t.Fatalf("wrong key evicted (Len %d)", s.Len())
	}
	checkInvariants(t, s)
	s.SetMaxKeys(1) // immediate, keeps the newest (ks[3])
	if s.Len() != 1 || s.Get(ks[3].id, now) == nil {
		t.Fatalf("SetMaxKeys(1): Len %d", s.Len())
	}
	s.SetMaxKeys(0) // docs/reference-defects.md W-30: restores the default instead of evicting all
	put(ks[2])
	if s.Len() != 2 {
		t.Fatalf("after SetMaxKeys(0): Len %d", s.Len())
	}
	checkInvariants(t, s)
}

func TestStoreByteBudget(t *testing.T) {
	s := NewStore(nil, 0)
	now := at(testT0)
	a, b := newTestKey(1), newTestKey(2)
	for _, k := range []testKey{a, b} {
		if err := s.Put(a2al.NodeID{}, mkRec(t, k, 0x05, make([]byte, 1000), 1, testT0, 3600), now); err != nil {
			t.Fatal(err)
		}
	}
	s.SetMaxBytes(1500) // only one key fits; the older goes
	if s.Len() != 1 || s.GetAll(b.id, 0, now) == nil {
		t.Fatalf("byte budget: Len %d", s.Len())
	}
	checkInvariants(t, s)
}

func TestStoreInvalidate(t *testing.T) {
	s := NewStore(nil, 0)
	now := at(testT0)
	for _, rt := range []uint8{protocol.RecTypeEndpoint, 0x05} {
		if err := s.Put(a2al.NodeID{}, mkRec(t, alice, rt, payloadFor(rt), 1, testT0, 3600), now); err != nil {
			t.Fatal(err)
		}
	}
	s.Invalidate(alice.id, protocol.RecTypeEndpoint)
	if got := s.GetAll(alice.id, 0, now); len(got) != 1 || got[0].RecType != 0x05 {
		t.Fatalf("after Invalidate(endpoint): %v", got)
	}
	s.Invalidate(alice.id, 0x05)
	if s.Len() != 0 {
		t.Fatalf("empty key kept: Len %d", s.Len())
	}
	if err := s.Put(a2al.NodeID{}, mkRec(t, alice, 0x05, []byte{1}, 1, testT0, 3600), now); err != nil {
		t.Fatal(err)
	}
	s.Invalidate(alice.id, 0)
	s.Invalidate(bob.id, 0) // unknown key: no-op
	if s.Len() != 0 || len(s.GetAllByAddress(alice.addr, 0, now)) != 0 {
		t.Fatal("Invalidate(0) left records")
	}
	checkInvariants(t, s)
}

func TestStoreGetAndGetAllByAddress(t *testing.T) {
	s := NewStore(SecureRecordAuth, 0)
	now := at(testT0 + 100)
	topicA, topicB := a2al.NodeID{0xaa}, a2al.NodeID{0xbb}
	recs := []struct {
		key a2al.NodeID
		rec protocol.SignedRecord
	}{
		{a2al.NodeID{}, mkRec(t, alice, protocol.RecTypeEndpoint, testEndpointPayload, 3, testT0, 3600)},
		{topicB, mkRec(t, alice, protocol.RecTypeTopic, testTopicPayload, 1, testT0, 3600)},
		{topicA, mkRec(t, alice, protocol.RecTypeTopic, testTopicPayload, 1, testT0, 3600)},
		{topicA, mkRec(t, bob, protocol.RecTypeTopic, testTopicPayload, 1, testT0, 3600)},
		{bob.id, mkRec(t, alice, protocol.RecTypeMailbox, []byte{1, 2}, 1, testT0, 3600)},
	}
	for _, r := range recs {
		if err := s.Put(r.key, r.rec, now); err != nil {
			t.Fatal(err)
		}
	}
	if g := s.Get(alice.id, now); g == nil || g.Seq != 3 {
		t.Fatalf("Get = %v", g)
	}
	if g := s.Get(topicA, now); g != nil {
		t.Fatal("Get returned a non-endpoint record")
	}
	all := s.GetAllByAddress(alice.addr, 0, now)
	if len(all) != 4 {
		t.Fatalf("GetAllByAddress(alice) = %d records, want 4", len(all))
	}
	for _, r := range all {
		if r.Address != alice.addr {
			t.Fatal("foreign record returned")
		}
	}
	if n := len(s.GetAllByAddress(alice.addr, protocol.RecTypeTopic, now)); n != 2 {
		t.Fatalf("topic filter: %d", n)
	}
	if n := len(s.GetAllByAddress(bob.addr, 0, now)); n != 1 {
		t.Fatalf("bob: %d", n)
	}
	if n := len(s.GetAllByAddress(a2al.Address{0xa0, 1}, 0, now)); n != 0 {
		t.Fatalf("unknown address: %d", n)
	}
}

func TestStoreAddressQuota(t *testing.T) {
	if testing.Short() {
		t.Skip("signs many records")
	}
	s := NewStore(nil, 0)
	now := at(testT0)
	rec := mkRec(t, alice, protocol.RecTypeTopic, testTopicPayload, 1, testT0, 3600)
	for i := 0; i < MaxKeysPerAddress; i++ {
		if err := s.Put(a2al.NodeID{byte(i), byte(i >> 8), 1}, rec, now); err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
	}
	err := s.Put(a2al.NodeID{0xff, 0xff, 0xff}, rec, now)
	if !errors.Is(err, ErrAddressQuota) || !errors.Is(err, ErrStorePolicy) {
		t.Fatalf("Put beyond quota = %v", err)
	}
	// Updating at a key it already holds is still allowed.
	newer := mkRec(t, alice, protocol.RecTypeTopic, testTopicPayload, 2, testT0, 3600)
	if err := s.Put(a2al.NodeID{0, 0, 1}, newer, now); err != nil {
		t.Fatalf("update within quota: %v", err)
	}
	checkInvariants(t, s)
}

func TestStoreReturnsCopies(t *testing.T) {
	s := NewStore(nil, 0)
	now := at(testT0)
	rec := mkRec(t, alice, 0x05, []byte{1, 2, 3}, 1, testT0, 3600)
	if err := s.Put(a2al.NodeID{}, rec, now); err != nil {
		t.Fatal(err)
	}
	rec.Payload[0] = 9 // caller mutates its input
	got := s.GetAll(alice.id, 0, now)
	got[0].Payload[1] = 9 // and a result
	again := s.GetAll(alice.id, 0, now)
	if !bytes.Equal(again[0].Payload, []byte{1, 2, 3}) {
		t.Fatalf("store data aliased: %x", again[0].Payload)
	}
	if err := protocol.VerifySignedRecord(again[0], now); err != nil {
		t.Fatalf("stored record no longer verifies: %v", err)
	}
}

// TestStoreRandomOperations drives random operations and checks the
// invariants (caps, slot uniqueness, indexes, budgets) after each.
func TestStoreRandomOperations(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	ks := make([]testKey, 6)
	for i := range ks {
		ks[i] = newTestKey(byte(40 + i))
	}
	// Pre-sign a pool of records to keep the test fast.
	types := []uint8{0x01, 0x02, 0x05, 0x10, 0x11, 0x80, 0x81, 0x20}
	var pool []protocol.SignedRecord
	for i := 0; i < 300; i++ {
		k := ks[rng.Intn(len(ks))]
		rt := types[rng.Intn(len(types))]
		p := payloadFor(rt)
		if storeCategory(rt) == protocol.CategoryMailbox {
			p = []byte{byte(rng.Intn(8))}
		}
		pool = append(pool, mkRec(t, k, rt, p, uint64(rng.Intn(4)), testT0+uint64(rng.Intn(50)), uint32(10+rng.Intn(300))))
	}
	keys := []a2al.NodeID{{1}, {2}, {3}}
	for _, k := range ks {
		keys = append(keys, k.id)
	}
	s := NewStore(nil, 5)
	now := uint64(testT0 + 50)
	for i := 0; i < 3000; i++ {
		switch op := rng.Intn(10); {
		case op < 6:
			r := pool[rng.Intn(len(pool))]
			key := keys[rng.Intn(len(keys))]
			if rng.Intn(2) == 0 {
				key = a2al.NodeID{}
			}
			err := s.Put(key, r, at(now))
			if err == nil {
				if key.IsZero() {
					key = a2al.NodeIDFromAddress(r.Address)
				}
				found := false
				for _, g := range s.GetAll(key, r.RecType, at(now)) {
					found = found || bytes.Equal(g.Signature, r.Signature)
				}
				if !found {
					t.Fatalf("op %d: accepted record not readable", i)
				}
			}
		case op < 8:
			for _, g := range s.GetAll(keys[rng.Intn(len(keys))], 0, at(now)) {
				if expiresAt(&g) < now {
					t.Fatalf("op %d: expired record returned", i)
				}
			}
		case op < 9:
			s.Invalidate(keys[rng.Intn(len(keys))], types[rng.Intn(len(types))])
		default:
			now += uint64(rng.Intn(30))
		}
		checkInvariants(t, s)
	}
}

func TestStoreConcurrentUse(t *testing.T) {
	s := NewStore(SecureRecordAuth, 50)
	ks := make([]testKey, 8)
	recs := make([]protocol.SignedRecord, len(ks))
	for i := range ks {
		ks[i] = newTestKey(byte(100 + i))
		recs[i] = mkRec(t, ks[i], protocol.RecTypeEndpoint, testEndpointPayload, 1, testT0, 3600)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				j := (g + i) % len(ks)
				now := at(testT0 + uint64(i))
				_ = s.Put(a2al.NodeID{}, recs[j], now)
				s.Get(ks[j].id, now)
				s.GetAllByAddress(ks[j].addr, 0, now)
				if i%50 == 0 {
					s.Invalidate(ks[j].id, 0)
					s.DebugRecords(now)
					s.Len()
				}
			}
		}(g)
	}
	wg.Wait()
	checkInvariants(t, s)
}

func TestStoreDebugRecords(t *testing.T) {
	s := NewStore(nil, 0)
	now := at(testT0)
	rec := mkRec(t, alice, protocol.RecTypeEndpoint, testEndpointPayload, 7, testT0, 3600)
	if err := s.Put(a2al.NodeID{}, rec, now); err != nil {
		t.Fatal(err)
	}
	rows := s.DebugRecords(now)
	if len(rows) != 1 {
		t.Fatalf("%d rows", len(rows))
	}
	b, err := json.Marshal(rows[0])
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"key_node_id_hex":"%x","address_hex":"%x","rec_type":1,"seq":7,"timestamp":%d,"ttl_seconds":3600,"payload_cbor_len":%d}`,
		alice.id[:], alice.addr[:], testT0, len(testEndpointPayload))
	if string(b) != want {
		t.Fatalf("row JSON\n got %s\nwant %s", b, want)
	}
	if rows := NewStore(nil, 0).DebugRecords(now); rows != nil {
		t.Fatalf("empty store rows = %v", rows)
	}
}

// FuzzStorePut feeds arbitrary records (optionally validly signed, so the
// merge paths run) and checks that nothing panics and invariants hold.
func FuzzStorePut(f *testing.F) {
	f.Add(uint8(1), []byte{0xa1, 1, 1}, uint64(1), uint64(0), uint32(3600), true, uint8(0), uint16(0))
	f.Add(uint8(0x10), testTopicPayload, uint64(2), uint64(5), uint32(10), true, uint8(1), uint16(3))
	f.Add(uint8(0x80), []byte{1, 2}, uint64(0), uint64(1<<63), uint32(1<<31), true, uint8(2), uint16(9))
	f.Add(uint8(0x05), []byte(nil), uint64(9), uint64(0), uint32(0), false, uint8(3), uint16(1))
	ks := []testKey{alice, bob, newTestKey(77)}
	s := NewStore(SecureRecordAuth, 8)
	f.Fuzz(func(t *testing.T, recType uint8, payload []byte, seq, tsOff uint64, ttl uint32, sign bool, keySel uint8, nowOff uint16) {
		k := ks[int(keySel)%len(ks)]
		now := uint64(testT0) + uint64(nowOff)
		rec := protocol.SignedRecord{Address: k.addr, RecType: recType, Payload: payload, Seq: seq, Timestamp: testT0 + tsOff%4096, TTL: ttl}
		if sign {
			// Sign the input directly: SignRecord refuses some inputs (ttl 0)
			// that receivers must still handle.
			in, err := protocol.RecordSigningInput(rec)
			if err != nil {
				t.Skip()
			}
			rec.Pubkey, rec.Signature = k.pub, ed25519.Sign(k.priv, in)
		} else {
			rec.Pubkey, rec.Signature = payload, payload
		}
		var key a2al.NodeID
		if keySel&4 != 0 {
			key = ks[int(keySel>>3)%len(ks)].id
		}
		err := s.Put(key, rec, at(now))
		if err == nil && !sign {
			t.Fatal("unsigned record accepted")
		}
		for _, r := range s.GetAll(k.id, 0, at(now)) {
			if err := protocol.VerifySignedRecord(r, at(now)); err != nil {
				t.Fatalf("store returned a record that does not verify: %v", err)
			}
		}
		s.GetAllByAddress(k.addr, recType, at(now))
		checkInvariants(t, s)
	})
}
