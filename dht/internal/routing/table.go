// Package routing is the Kademlia routing table of the DHT: 256 buckets of
// K contacts indexed by common prefix length, a small replacement cache per
// bucket, a "punched" zone for peers only reachable through hole punching,
// and IP-diversity limits (per /24 and /16 IPv4, /64 and /48 IPv6, per
// bucket and per table; see Limits) against Sybil take-over (docs/decisions.md D2). The table never reads the
// clock; callers pass times. It is not safe for concurrent use.
package routing

import (
	"bytes"
	"crypto/sha256"
	"hash/maphash"
	"net"
	"slices"
	"sort"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// Table parameters.
const (
	K          = 16
	PendingCap = 5
	PendingTTL = 2 * time.Hour
	NumBuckets = 256
)

// Limits bounds how many main entries may share one network prefix, at two
// widths: the subnet (IPv4 /24, IPv6 /64; see SubnetKey) and the wider
// block around it (IPv4 /16, IPv6 /48; see WideKey).
//
// Why two widths: the /24 (/64) limits stop one host or one small network
// from taking over a bucket, but an attacker renting many /24s of one /16
// (one provider, one data centre) still got 168 of 178 table entries in a
// Sybil run. Honest nodes are spread over many providers, so capping each
// /16 (/48) at a quarter of a bucket and at a small share of the table
// costs honest peers almost nothing, while an attacker now needs addresses
// in many unrelated /16s, which is far more expensive than more /24s in
// one. An IPv6 /48 is the usual allocation to one site, like an IPv4 /16
// is the usual unit of one provider's region.
type Limits struct {
	BucketPerSubnet int // per bucket and /24 (/64); <= 0 means unlimited
	TablePerSubnet  int // whole table and /24 (/64); <= 0 means unlimited
	BucketPerWide   int // per bucket and /16 (/48); <= 0 means unlimited
	TablePerWide    int // whole table and /16 (/48); <= 0 means unlimited
}

// DefaultLimits: two contacts of one /24 (/64) per bucket and ten per
// table; four of one /16 (/48) per bucket and twenty-four per table.
// Loopback simulations give every node its own 127.A.B.0/24 with A varying
// fastest, so they spread over the /16s of 127.0.0.0/8 (docs/decisions.md D2).
var DefaultLimits = Limits{BucketPerSubnet: 2, TablePerSubnet: 10, BucketPerWide: 4, TablePerWide: 24}

// Contact is one routing entry.
type Contact struct {
	Info       protocol.NodeInfo
	Subnet     string // diversity key computed by the caller; "" = exempt
	VerifiedAt Stamp  // zero: never verified first-hand (hearsay); a Stamp, not a time.Time: tables hold many
	addedAt    int64  // UnixNano when it entered the table (8 bytes, not a time.Time: tables hold many)
	Punched    bool   // reachable only through a punched connection
}

// Verified reports whether we ever had first-hand evidence for c.
func (c *Contact) Verified() bool { return !c.VerifiedAt.IsZero() }

// Stamp is an instant of the node's clock as UnixNano (8 bytes where a
// time.Time takes 24); 0 means never.
type Stamp int64

// StampOf converts t; the zero time is the zero Stamp.
func StampOf(t time.Time) Stamp {
	if t.IsZero() {
		return 0
	}
	return Stamp(t.UnixNano())
}

// Time converts back; the zero Stamp is the zero time.
func (s Stamp) Time() time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(s))
}

// IsZero reports whether s is "never".
func (s Stamp) IsZero() bool { return s == 0 }

type pendingEntry struct {
	c  Contact
	at time.Time
}

type bucket struct {
	nodes      []Contact // LRU first, MRU last
	pending    []pendingEntry
	lastRefill time.Time
	wasHealthy bool
	futile     int
}

// Table is the routing table of one node.
type Table struct {
	self    a2al.NodeID
	limits  Limits
	buckets []*bucket        // up to the deepest bucket used so far (see bucket)
	subnets map[uint64]int32 // entries per prefix, keyed by prefixKey
	n       int
}

// New returns an empty table for self.
func New(self a2al.NodeID, limits Limits) *Table {
	return &Table{self: self, limits: limits, subnets: make(map[uint64]int32)}
}

// bucket returns bucket i, nil when it was never created.
func (t *Table) bucket(i int) *bucket {
	if i < 0 || i >= len(t.buckets) {
		return nil
	}
	return t.buckets[i]
}

// Self returns the table owner's NodeID.
func (t *Table) Self() a2al.NodeID { return t.self }

// SetLimits replaces the diversity limits (existing entries are kept).
func (t *Table) SetLimits(l Limits) { t.limits = l }

// BucketIndex returns CPL(self, id), or -1 for self.
func (t *Table) BucketIndex(id a2al.NodeID) int {
	c := a2al.CommonPrefixLen(t.self, id)
	if c >= NumBuckets {
		return -1
	}
	return c
}

// SubnetKey groups IPs for diversity limits: /24 for IPv4, /64 for IPv6.
// It returns "" for an unusable IP.
func SubnetKey(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		return string([]byte{4, v4[0], v4[1], v4[2]})
	}
	if len(ip) == net.IPv6len {
		return string(append([]byte{6}, ip[:8]...))
	}
	return ""
}

// WideKey is the /16 (IPv4) or /48 (IPv6) block of a SubnetKey, or "" for
// keys that are not IP subnets (exempt from the wide limits).
func WideKey(subnet string) string {
	switch {
	case len(subnet) == 4 && subnet[0] == 4:
		return subnet[:3]
	case len(subnet) == 9 && subnet[0] == 6:
		return subnet[:7]
	}
	return ""
}

// ValidInfo reports whether ni may enter a table or a FIND answer: a 0xA0
// style 21-byte address whose SHA-256 is the NodeID (docs/reference-defects.md W-4), and a 4- or
// 16-byte IP (docs/reference-defects.md W-3).
func ValidInfo(ni protocol.NodeInfo) bool {
	if ni.Address.IsZero() {
		return false
	}
	if sha256.Sum256(ni.Address[:]) != ni.NodeID {
		return false
	}
	return len(ni.IP) == net.IPv4len || len(ni.IP) == net.IPv6len
}

// AddResult says what Add did.
type AddResult int

// Add outcomes.
const (
	Rejected   AddResult = iota // invalid, self, or diversity limit
	Added                       // new main entry
	Refreshed                   // existing main entry updated
	Pending                     // hearsay parked in the replacement cache
	BucketFull                  // direct contact, bucket full of direct entries: caller may ping the LRU
)

func (t *Table) bucketFor(id a2al.NodeID, create bool) *bucket {
	bi := t.BucketIndex(id)
	if bi < 0 {
		return nil
	}
	b := t.bucket(bi)
	if b == nil && create {
		if bi >= len(t.buckets) {
			// Buckets deeper than log2(N)+a few stay empty, so the
			// array grows on demand instead of holding 256 pointers.
			t.buckets = append(t.buckets, make([]*bucket, bi+1-len(t.buckets))...)
		}
		b = &bucket{}
		t.buckets[bi] = b
	}
	return b
}

func (b *bucket) find(id a2al.NodeID) int {
	for i := range b.nodes {
		if b.nodes[i].Info.NodeID == id {
			return i
		}
	}
	return -1
}

// prefixCounts returns how many entries of b share s, and its wide block w.
func (b *bucket) prefixCounts(s, w string) (sub, wide int) {
	for i := range b.nodes {
		if b.nodes[i].Subnet == s {
			sub++
		}
		if w != "" && WideKey(b.nodes[i].Subnet) == w {
			wide++
		}
	}
	return sub, wide
}

// subnetAllowed reports whether one more entry of subnet s fits b and the
// table under both prefix widths.
func (t *Table) subnetAllowed(b *bucket, s string) bool {
	if s == "" {
		return true
	}
	w := WideKey(s)
	sub, wide := b.prefixCounts(s, w)
	l := t.limits
	if l.BucketPerSubnet > 0 && sub >= l.BucketPerSubnet || l.TablePerSubnet > 0 && int(t.subnets[prefixKey(s)]) >= l.TablePerSubnet {
		return false
	}
	if w != "" && (l.BucketPerWide > 0 && wide >= l.BucketPerWide || l.TablePerWide > 0 && int(t.subnets[prefixKey(w)]) >= l.TablePerWide) {
		return false
	}
	return true
}

// count adds d to the table counters of subnet s and of its wide block.
func (t *Table) count(s string, d int) {
	if s == "" {
		return
	}
	for _, p := range [2]string{s, WideKey(s)} {
		if p == "" {
			continue
		}
		k := prefixKey(p)
		if t.subnets[k] += int32(d); t.subnets[k] <= 0 {
			delete(t.subnets, k)
		}
	}
}

// prefixSeed keys the prefix counters of every table of the process.
var prefixSeed = maphash.MakeSeed()

// prefixKey is a 64-bit key for a subnet or wide-block string: a table
// counts a prefix for each of its ~K·log2(N) entries, and 8-byte keys halve
// that map. Two prefixes sharing a key would only share one limit (stricter,
// never looser); with a per-process random seed nobody can aim for that.
func prefixKey(p string) uint64 { return maphash.String(prefixSeed, p) }

func (t *Table) insert(b *bucket, c Contact, now time.Time) {
	c.addedAt = now.UnixNano()
	b.nodes = append(b.nodes, c)
	t.count(c.Subnet, 1)
	t.n++
	b.dropPending(c.Info.NodeID)
}

func (t *Table) removeAt(b *bucket, i int) {
	t.count(b.nodes[i].Subnet, -1)
	b.nodes = append(b.nodes[:i], b.nodes[i+1:]...)
	t.n--
}

func (b *bucket) dropPending(id a2al.NodeID) {
	for i := range b.pending {
		if b.pending[i].c.Info.NodeID == id {
			b.pending = append(b.pending[:i], b.pending[i+1:]...)
			return
		}
	}
}

// Add inserts or refreshes c. direct=true means first-hand evidence for c's
// address: the contact answered our own request there, or it is the first
// address we hear from it (callers challenge a request from a new address
// before calling Add, since requests can be replayed). Only direct evidence
// changes a stored address, clears the punched flag or reorders the bucket
// (hearsay can neither redirect a peer nor keep a dead entry young).
// On BucketFull the LRU entry is returned so the caller can ping it off the
// receive path and call Replace if it is dead.
func (t *Table) Add(c Contact, direct bool, now time.Time) (AddResult, *Contact) {
	if !ValidInfo(c.Info) {
		return Rejected, nil
	}
	b := t.bucketFor(c.Info.NodeID, true)
	if b == nil {
		return Rejected, nil
	}
	if i := b.find(c.Info.NodeID); i >= 0 {
		if !direct {
			return Refreshed, nil
		}
		e := b.nodes[i]
		if c.VerifiedAt > e.VerifiedAt {
			e.VerifiedAt = c.VerifiedAt
		}
		if c.Info.Port != 0 || !c.Info.IP.Equal(e.Info.IP) {
			if c.Subnet == e.Subnet || t.subnetAllowedExcluding(b, c.Subnet) {
				t.retag(&e, c.Subnet)
				e.Info.IP = c.Info.IP
				e.Info.Port = c.Info.Port
				e.Punched = false
			}
		}
		b.nodes = append(append(b.nodes[:i], b.nodes[i+1:]...), e)
		return Refreshed, nil
	}
	if !t.subnetAllowed(b, c.Subnet) {
		return Rejected, nil
	}
	c.Punched = false
	if !direct {
		c.VerifiedAt = 0
	}
	if len(b.nodes) < K {
		t.insert(b, c, now)
		return Added, nil
	}
	if !direct {
		for i := range b.pending {
			if b.pending[i].c.Info.NodeID == c.Info.NodeID {
				return Pending, nil
			}
		}
		if len(b.pending) >= PendingCap {
			// Drop the oldest in place: re-slicing past it would let
			// the array creep forward and be reallocated again and again.
			copy(b.pending, b.pending[1:])
			b.pending = b.pending[:len(b.pending)-1]
		}
		b.pending = append(b.pending, pendingEntry{c: c, at: now})
		return Pending, nil
	}
	for i := range b.nodes {
		if b.nodes[i].Punched {
			t.removeAt(b, i)
			t.insert(b, c, now)
			return Added, nil
		}
	}
	lru := b.nodes[0]
	return BucketFull, &lru
}

func (t *Table) subnetAllowedExcluding(b *bucket, s string) bool { return t.subnetAllowed(b, s) }

func (t *Table) retag(e *Contact, s string) {
	if e.Subnet == s {
		return
	}
	t.count(e.Subnet, -1)
	t.count(s, 1)
	e.Subnet = s
}

// Replace evicts oldID (the LRU that failed its ping) and admits c, provided
// oldID is still in c's bucket and there is no room otherwise.
func (t *Table) Replace(oldID a2al.NodeID, c Contact, now time.Time) bool {
	if !ValidInfo(c.Info) {
		return false
	}
	b := t.bucketFor(c.Info.NodeID, true)
	if b == nil || b.find(c.Info.NodeID) >= 0 {
		return false
	}
	if i := b.find(oldID); i >= 0 {
		t.removeAt(b, i)
	}
	if len(b.nodes) >= K || !t.subnetAllowed(b, c.Subnet) {
		return false
	}
	c.Punched = false
	t.insert(b, c, now)
	return true
}

// AddPunched admits a peer reachable only through a punched connection into
// a spare slot. An existing entry only gets its VerifiedAt refreshed: a
// punch never demotes a direct entry (docs/reference-defects.md W-18).
func (t *Table) AddPunched(c Contact, now time.Time) bool {
	if !ValidInfo(c.Info) {
		return false
	}
	b := t.bucketFor(c.Info.NodeID, true)
	if b == nil {
		return false
	}
	if i := b.find(c.Info.NodeID); i >= 0 {
		if c.VerifiedAt > b.nodes[i].VerifiedAt {
			b.nodes[i].VerifiedAt = c.VerifiedAt
		}
		return true
	}
	if len(b.nodes) >= K || !t.subnetAllowed(b, c.Subnet) {
		return false
	}
	c.Punched = true
	t.insert(b, c, now)
	return true
}

// Remove drops id from its bucket (main and pending).
func (t *Table) Remove(id a2al.NodeID) bool {
	b := t.bucketFor(id, false)
	if b == nil {
		return false
	}
	b.dropPending(id)
	if i := b.find(id); i >= 0 {
		t.removeAt(b, i)
		return true
	}
	return false
}

// Get returns a copy of the main entry for id.
func (t *Table) Get(id a2al.NodeID) (Contact, bool) {
	b := t.bucketFor(id, false)
	if b == nil {
		return Contact{}, false
	}
	if i := b.find(id); i >= 0 {
		return b.nodes[i], true
	}
	return Contact{}, false
}

// Contains reports whether id is a main entry.
func (t *Table) Contains(id a2al.NodeID) bool {
	_, ok := t.Get(id)
	return ok
}

// IsPunched reports whether id is a main entry in the punched zone.
func (t *Table) IsPunched(id a2al.NodeID) bool {
	c, ok := t.Get(id)
	return ok && c.Punched
}

// UpdateVerifiedAt sets VerifiedAt of a main entry when at is later.
func (t *Table) UpdateVerifiedAt(id a2al.NodeID, at time.Time) {
	b := t.bucketFor(id, false)
	if b == nil {
		return
	}
	if i := b.find(id); i >= 0 && StampOf(at) > b.nodes[i].VerifiedAt {
		b.nodes[i].VerifiedAt = StampOf(at)
	}
}

// Len returns the number of main entries.
func (t *Table) Len() int { return t.n }

// BucketLen returns the number of main entries in bucket bi.
func (t *Table) BucketLen(bi int) int {
	if t.bucket(bi) == nil {
		return 0
	}
	return len(t.bucket(bi).nodes)
}

// BucketDiscoveryCount returns main + pending entries of bucket bi.
func (t *Table) BucketDiscoveryCount(bi int) int {
	if t.bucket(bi) == nil {
		return 0
	}
	return len(t.bucket(bi).nodes) + len(t.bucket(bi).pending)
}

// All returns copies of all main entries, bucket 0..255, LRU to MRU.
func (t *Table) All() []Contact {
	out := make([]Contact, 0, t.n)
	for _, b := range t.buckets {
		if b != nil {
			out = append(out, b.nodes...)
		}
	}
	return out
}

// Nearest returns up to n main entries closest to target for which keep
// returns true (nil keep = all), ordered by XOR distance. It runs on every
// FIND_* answer, so it walks the buckets in distance order instead of
// sorting the whole table: with c = CPL(self, target), entries of bucket c
// are closer to target than those of any deeper bucket (which all share
// exactly c bits with it), and each shallower bucket i < c is one distance
// class farther out (CPL(entry, target) = i).
func (t *Table) Nearest(target a2al.NodeID, n int, keep func(*Contact) bool) []Contact {
	if n <= 0 {
		return nil
	}
	type ranked struct {
		d a2al.NodeID
		c *Contact
	}
	rs := make([]ranked, 0, min(n+K, t.n))
	collect := func(b *bucket) {
		if b == nil {
			return
		}
		for i := range b.nodes {
			if keep == nil || keep(&b.nodes[i]) {
				rs = append(rs, ranked{d: a2al.Distance(b.nodes[i].Info.NodeID, target), c: &b.nodes[i]})
			}
		}
	}
	byDist := func(a, b ranked) int { return bytes.Compare(a.d[:], b.d[:]) }
	c := a2al.CommonPrefixLen(t.self, target)
	if c >= NumBuckets {
		c = NumBuckets - 1 // target == self: every bucket is "shallower"
		collect(t.bucket(c))
	} else {
		collect(t.bucket(c))
		for i := c + 1; i < NumBuckets; i++ {
			collect(t.bucket(i))
		}
	}
	slices.SortFunc(rs, byDist)
	for i := c - 1; i >= 0 && len(rs) < n; i-- {
		from := len(rs)
		collect(t.bucket(i))
		slices.SortFunc(rs[from:], byDist)
	}
	if len(rs) > n {
		rs = rs[:n]
	}
	out := make([]Contact, len(rs))
	for i := range rs {
		out[i] = *rs[i].c
	}
	return out
}

// SortByDistance orders contacts by XOR distance to target.
func SortByDistance(cs []Contact, target a2al.NodeID) {
	sort.Slice(cs, func(i, j int) bool {
		return a2al.Closer(cs[i].Info.NodeID, cs[j].Info.NodeID, target)
	})
}

// Maintenance is the work CollectMaintenance found.
type Maintenance struct {
	PendingToProbe  []Contact // replacement-cache entries to ping
	StaleToProbe    []Contact // never-verified main entries older than staleCutoff
	BucketsToRefill []int
}

// CollectMaintenance walks the buckets, expires old pending entries and
// returns probe and refill work. Work is collected starting from a rotating
// bucket so far buckets cannot starve near ones (docs/reference-defects.md W-16); the caller bounds
// how much it executes.
func (t *Table) CollectMaintenance(now, freshCutoff, staleCutoff time.Time, start int) Maintenance {
	var m Maintenance
	for k := 0; k < NumBuckets; k++ {
		bi := (start + k) % NumBuckets
		b := t.bucket(bi)
		if b == nil {
			continue
		}
		// Pending entries are probed only when their bucket has room to
		// promote them; in a full bucket they wait for an eviction (a
		// probe there would cost a ping per entry per tick for nothing).
		kept := b.pending[:0]
		for _, p := range b.pending {
			if now.Sub(p.at) < PendingTTL {
				kept = append(kept, p)
				if len(b.nodes) < K {
					m.PendingToProbe = append(m.PendingToProbe, p.c)
				}
			}
		}
		clear(b.pending[len(kept):])
		b.pending = kept
		fresh := 0
		for i := range b.nodes {
			e := &b.nodes[i]
			if e.VerifiedAt.IsZero() && !staleCutoff.IsZero() && e.addedAt < staleCutoff.UnixNano() {
				m.StaleToProbe = append(m.StaleToProbe, *e)
			}
			if e.VerifiedAt.Time().After(freshCutoff) {
				fresh++
			}
		}
		if len(b.nodes) == 0 {
			continue
		}
		if fresh >= K/2 {
			b.wasHealthy = true
			continue
		}
		if b.wasHealthy {
			b.futile = 0
			b.wasHealthy = false
		}
		cool := refillCooldown(b.futile)
		if b.lastRefill.IsZero() || now.Sub(b.lastRefill) >= cool {
			m.BucketsToRefill = append(m.BucketsToRefill, bi)
		}
	}
	return m
}

// MarkRefilled records that a refill lookup was started for bucket bi.
func (t *Table) MarkRefilled(bi int, now time.Time) {
	if t.bucket(bi) != nil {
		t.bucket(bi).lastRefill = now
	}
}

// MarkAllRefilled records a refresh of every existing bucket, e.g. by the
// bootstrap self-lookup, so their first refill waits one cooldown.
func (t *Table) MarkAllRefilled(now time.Time) {
	for _, b := range t.buckets {
		if b != nil {
			b.lastRefill = now
		}
	}
}

// refillCooldown grows with consecutive futile refills. The ladder starts
// higher than the reference's (30 s, 2, 10, 15 min): buckets deeper than
// log2(network size) can never fill, and refilling them every 30 s costs a
// whole lookup each time for nothing.
func refillCooldown(futile int) time.Duration {
	switch futile {
	case 0:
		return 2 * time.Minute
	case 1:
		return 10 * time.Minute
	case 2:
		return 30 * time.Minute
	default:
		return time.Hour
	}
}

// RecordRefillOutcome updates the futile-refill counter of bucket bi.
func (t *Table) RecordRefillOutcome(bi int, improved bool) {
	if t.bucket(bi) == nil {
		return
	}
	if improved {
		t.bucket(bi).futile = 0
	} else {
		t.bucket(bi).futile++
	}
}

// PromotePending moves a verified pending entry into its bucket if there is
// room; it reports whether it did.
func (t *Table) PromotePending(id a2al.NodeID, verifiedAt, now time.Time) bool {
	b := t.bucketFor(id, false)
	if b == nil {
		return false
	}
	for i := range b.pending {
		if b.pending[i].c.Info.NodeID != id {
			continue
		}
		c := b.pending[i].c
		if len(b.nodes) >= K || !t.subnetAllowed(b, c.Subnet) {
			return false
		}
		c.VerifiedAt = StampOf(verifiedAt)
		t.insert(b, c, now)
		return true
	}
	return false
}

// DropPending removes id from its bucket's replacement cache.
func (t *Table) DropPending(id a2al.NodeID) {
	if b := t.bucketFor(id, false); b != nil {
		b.dropPending(id)
	}
}

// EstimateSize is the bucket-density network-size estimate (docs/dht.md §15.1):
// scanning from the deepest bucket, up to 5 samples m*2^(c+1) where m counts
// entries verified after cutoff (zero cutoff: all verified); the upper
// median and confidence samples/5 are returned.
func (t *Table) EstimateSize(cutoff time.Time) (int, float64) {
	var samples []uint64
	for c := NumBuckets - 1; c >= 0 && len(samples) < 5; c-- {
		b := t.bucket(c)
		if b == nil {
			continue
		}
		m := 0
		for i := range b.nodes {
			v := b.nodes[i].VerifiedAt
			if !v.IsZero() && (cutoff.IsZero() || v.Time().After(cutoff)) {
				m++
			}
		}
		if m == 0 {
			continue
		}
		samples = append(samples, uint64(m)<<min(c+1, 62))
	}
	if len(samples) == 0 {
		return 0, 0
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	v := samples[len(samples)/2]
	if v > 1<<31 {
		v = 1 << 31
	}
	return int(v), float64(len(samples)) / 5
}

// EstimateSizeAny is the fallback estimate from the deepest non-empty bucket
// counting all entries.
func (t *Table) EstimateSizeAny() int {
	for c := NumBuckets - 1; c >= 0; c-- {
		if b := t.bucket(c); b != nil && len(b.nodes) > 0 {
			v := uint64(len(b.nodes)) << min(c+1, 62)
			if v > 1<<31 {
				v = 1 << 31
			}
			return int(v)
		}
	}
	return 0
}

// RandomIDInBucket returns an ID with CPL(self, id) == bi, using rnd for the
// free bits.
func (t *Table) RandomIDInBucket(bi int, rnd []byte) a2al.NodeID {
	id := t.self
	if bi < 0 || bi >= NumBuckets {
		return id
	}
	byteI, bit := bi/8, uint(7-bi%8)
	id[byteI] ^= 1 << bit
	for i := bi + 1; i < NumBuckets; i++ {
		bj, bb := i/8, uint(7-i%8)
		if rnd[(i)%len(rnd)]&(1<<(uint(i)%8)) != 0 {
			id[bj] ^= 1 << bb
		}
	}
	return id
}

// SizeFromNearest estimates how many nodes share the ID space from ids, the
// nodes nearest to some point in increasing distance order: with k of them,
// the k-th lies at fraction d of the space and (k-1)/d is the unbiased
// density estimate for uniformly random IDs (relative error about
// 1/sqrt(k-2)). It returns 0 with fewer than 3 ids.
func SizeFromNearest(point a2al.NodeID, ids []a2al.NodeID) float64 {
	k := len(ids)
	if k < 3 {
		return 0
	}
	d := a2al.Distance(ids[k-1], point)
	var top uint64
	for i := 0; i < 8; i++ {
		top = top<<8 | uint64(d[i])
	}
	frac := (float64(top) + 1) / (1 << 64) // never 0
	return float64(k-1) / frac
}

// EstimateSizeNearest estimates the network size (including self) from the
// K verified entries nearest to self. Those are the entries a self-lookup
// and the newcomers' own lookups keep complete, so unlike the bucket-density
// estimate it has no power-of-two granularity and no bias from the deepest
// non-empty bucket. 0 with fewer than 3 verified entries.
func (t *Table) EstimateSizeNearest() int {
	cs := t.Nearest(t.self, K, func(c *Contact) bool { return c.Verified() })
	ids := make([]a2al.NodeID, len(cs))
	for i := range cs {
		ids[i] = cs[i].Info.NodeID
	}
	v := SizeFromNearest(t.self, ids)
	if v == 0 {
		return 0
	}
	return int(min(v+1.5, 1<<31))
}
