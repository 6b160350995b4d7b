package routing

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

func addrN(i int) a2al.Address {
	var s [32]byte
	binary.BigEndian.PutUint64(s[:], uint64(i))
	h := sha256.Sum256(s[:])
	return a2al.AddressFromEd25519(ed25519.NewKeyFromSeed(h[:]).Public().(ed25519.PublicKey))
}

func contact(i int, ip net.IP) Contact {
	a := addrN(i)
	return Contact{Info: protocol.NodeInfo{Address: a, NodeID: a.NodeID(), IP: ip.To4(), Port: 4000}, Subnet: SubnetKey(ip)}
}

// findInBucket returns n contacts that fall in bucket bi of self.
func findInBucket(self a2al.NodeID, bi, n, from int) []int {
	var out []int
	for i := from; len(out) < n && i < from+200000; i++ {
		if a2al.CommonPrefixLen(self, addrN(i).NodeID()) == bi {
			out = append(out, i)
		}
	}
	return out
}

func TestAddValidation(t *testing.T) {
	self := addrN(0).NodeID()
	tb := New(self, Limits{})
	now := time.Unix(1000, 0)
	c := contact(1, net.IPv4(10, 0, 0, 1))
	forged := c
	forged.Info.NodeID[0] ^= 1 // NodeID != SHA-256(Address)
	noIP := c
	noIP.Info.IP = nil
	selfC := contact(0, net.IPv4(10, 0, 0, 2))
	for name, cc := range map[string]Contact{"forged": forged, "noIP": noIP, "self": selfC} {
		if r, _ := tb.Add(cc, true, now); r != Rejected {
			t.Errorf("%s: got %v, want Rejected", name, r)
		}
	}
	if r, _ := tb.Add(c, true, now); r != Added || tb.Len() != 1 {
		t.Fatalf("valid contact: %v len %d", r, tb.Len())
	}
}

func TestHearsayCannotRedirectOrReorder(t *testing.T) {
	self := addrN(0).NodeID()
	tb := New(self, Limits{})
	now := time.Unix(1000, 0)
	ids := findInBucket(self, 0, 2, 1)
	a, b := contact(ids[0], net.IPv4(10, 0, 0, 1)), contact(ids[1], net.IPv4(10, 0, 1, 1))
	a.VerifiedAt, b.VerifiedAt = StampOf(now), StampOf(now)
	tb.Add(a, true, now)
	tb.Add(b, true, now)
	evil := a
	evil.Info.IP = net.IPv4(6, 6, 6, 6).To4()
	evil.Subnet = SubnetKey(evil.Info.IP)
	tb.Add(evil, false, now)
	got, _ := tb.Get(a.Info.NodeID)
	if !got.Info.IP.Equal(net.IPv4(10, 0, 0, 1)) {
		t.Fatalf("hearsay changed address to %v", got.Info.IP)
	}
	if all := tb.All(); all[0].Info.NodeID != a.Info.NodeID {
		t.Fatal("hearsay moved entry to MRU")
	}
	// Direct evidence does move it and update the address.
	tb.Add(evil, true, now)
	if all := tb.All(); all[1].Info.NodeID != a.Info.NodeID || !all[1].Info.IP.Equal(net.IPv4(6, 6, 6, 6)) {
		t.Fatal("direct refresh not applied")
	}
}

func TestSubnetLimits(t *testing.T) {
	self := addrN(0).NodeID()
	tb := New(self, Limits{BucketPerSubnet: 2, TablePerSubnet: 3})
	now := time.Unix(1000, 0)
	ids := findInBucket(self, 0, 3, 1)
	for i, id := range ids {
		r, _ := tb.Add(contact(id, net.IPv4(10, 0, 0, byte(i+1))), true, now)
		if want := i < 2; (r == Added) != want {
			t.Fatalf("bucket limit: contact %d got %v", i, r)
		}
	}
	ids1 := findInBucket(self, 1, 3, 1)
	added := 0
	for i, id := range ids1 {
		if r, _ := tb.Add(contact(id, net.IPv4(10, 0, 0, byte(10+i))), true, now); r == Added {
			added++
		}
	}
	if added != 1 {
		t.Fatalf("table limit: %d more added, want 1", added)
	}
	// A different /24 is fine.
	if r, _ := tb.Add(contact(ids[2], net.IPv4(10, 0, 9, 1)), true, now); r != Added {
		t.Fatalf("other subnet: %v", r)
	}
	// IPv6 /64 grouping.
	if SubnetKey(net.ParseIP("2001:db8::1")) != SubnetKey(net.ParseIP("2001:db8::ffff")) ||
		SubnetKey(net.ParseIP("2001:db8::1")) == SubnetKey(net.ParseIP("2001:db8:0:1::1")) {
		t.Fatal("IPv6 /64 keys wrong")
	}
}

func TestFullBucketPendingPunchedAndReplace(t *testing.T) {
	self := addrN(0).NodeID()
	tb := New(self, Limits{})
	now := time.Unix(1000, 0)
	ids := findInBucket(self, 0, K+3, 1)
	for i := 0; i < K; i++ {
		c := contact(ids[i], net.IPv4(10, byte(i), 0, 1))
		c.VerifiedAt = StampOf(now)
		if i == 3 {
			if !tb.AddPunched(c, now) {
				t.Fatal("AddPunched refused with room")
			}
			continue
		}
		tb.Add(c, true, now)
	}
	// Hearsay into a full bucket goes to pending, capped.
	h := contact(ids[K], net.IPv4(10, 100, 0, 1))
	if r, _ := tb.Add(h, false, now); r != Pending {
		t.Fatalf("hearsay full bucket: %v", r)
	}
	// Direct newcomer replaces the punched entry without a ping.
	d := contact(ids[K+1], net.IPv4(10, 101, 0, 1))
	if r, _ := tb.Add(d, true, now); r != Added || tb.Contains(contact(ids[3], nil).Info.NodeID) {
		t.Fatalf("punched entry not displaced: %v", r)
	}
	// Next direct newcomer: bucket full of direct entries -> BucketFull + LRU.
	e := contact(ids[K+2], net.IPv4(10, 102, 0, 1))
	r, lru := tb.Add(e, true, now)
	if r != BucketFull || lru == nil || lru.Info.NodeID != contact(ids[0], nil).Info.NodeID {
		t.Fatalf("full bucket: %v %v", r, lru)
	}
	if !tb.Replace(lru.Info.NodeID, e, now) || tb.Contains(lru.Info.NodeID) || !tb.Contains(e.Info.NodeID) {
		t.Fatal("Replace failed")
	}
	if tb.Len() != K {
		t.Fatalf("len %d", tb.Len())
	}
	// Pending promotion needs room, and so does probing pending entries.
	if tb.PromotePending(h.Info.NodeID, now, now) {
		t.Fatal("promoted into full bucket")
	}
	if m := tb.CollectMaintenance(now, now.Add(-time.Hour), now.Add(-time.Hour), 0); len(m.PendingToProbe) != 0 {
		t.Fatalf("pending entries of a full bucket queued for probing: %d", len(m.PendingToProbe))
	}
	tb.Remove(e.Info.NodeID)
	if m := tb.CollectMaintenance(now, now.Add(-time.Hour), now.Add(-time.Hour), 0); len(m.PendingToProbe) != 1 {
		t.Fatalf("pending entry of a bucket with room not probed: %d", len(m.PendingToProbe))
	}
	if !tb.PromotePending(h.Info.NodeID, now, now) || !tb.Contains(h.Info.NodeID) {
		t.Fatal("promotion with room failed")
	}
	if tb.BucketDiscoveryCount(0) != K {
		t.Fatalf("discovery count %d", tb.BucketDiscoveryCount(0))
	}
}

func TestPunchDoesNotDemoteDirect(t *testing.T) {
	self := addrN(0).NodeID()
	tb := New(self, Limits{})
	now := time.Unix(1000, 0)
	c := contact(5, net.IPv4(10, 0, 0, 1))
	c.VerifiedAt = StampOf(now)
	tb.Add(c, true, now)
	tb.AddPunched(c, now.Add(time.Second))
	if tb.IsPunched(c.Info.NodeID) {
		t.Fatal("punch demoted a direct entry")
	}
	p := contact(6, net.IPv4(10, 0, 1, 1))
	tb.AddPunched(p, now)
	if !tb.IsPunched(p.Info.NodeID) {
		t.Fatal("punched flag not set")
	}
	// Direct evidence with an address clears the flag.
	tb.Add(p, true, now)
	if tb.IsPunched(p.Info.NodeID) {
		t.Fatal("direct refresh kept punched flag")
	}
}

func TestNearestAndMaintenance(t *testing.T) {
	self := addrN(0).NodeID()
	tb := New(self, Limits{})
	now := time.Unix(100000, 0)
	for i := 1; i <= 200; i++ {
		c := contact(i, net.IPv4(10, byte(i), 0, 1))
		if i%2 == 0 {
			c.VerifiedAt = StampOf(now)
			tb.Add(c, true, now.Add(-time.Hour))
		} else {
			tb.Add(c, false, now.Add(-time.Hour))
		}
	}
	target := addrN(777).NodeID()
	got := tb.Nearest(target, 10, nil)
	all := tb.All()
	SortByDistance(all, target)
	for i := range got {
		if got[i].Info.NodeID != all[i].Info.NodeID {
			t.Fatalf("Nearest[%d] wrong", i)
		}
	}
	ver := tb.Nearest(target, 5, func(c *Contact) bool { return c.Verified() })
	for _, c := range ver {
		if !c.Verified() {
			t.Fatal("filter ignored")
		}
	}
	m := tb.CollectMaintenance(now, now.Add(-30*time.Minute), now.Add(-30*time.Minute), 0)
	if len(m.StaleToProbe) == 0 || len(m.BucketsToRefill) == 0 {
		t.Fatalf("maintenance %d stale %d refill", len(m.StaleToProbe), len(m.BucketsToRefill))
	}
	for _, c := range m.StaleToProbe {
		if c.Verified() {
			t.Fatal("verified entry listed stale")
		}
	}
	bi := m.BucketsToRefill[0]
	tb.MarkRefilled(bi, now)
	m2 := tb.CollectMaintenance(now.Add(time.Second), now, now, 0)
	for _, b := range m2.BucketsToRefill {
		if b == bi {
			t.Fatal("refill cooldown ignored")
		}
	}
	est, conf := tb.EstimateSize(time.Time{})
	if est <= 0 || conf <= 0 || tb.EstimateSizeAny() <= 0 {
		t.Fatalf("estimate %d %v", est, conf)
	}
	id := tb.RandomIDInBucket(7, make([]byte, 32))
	if tb.BucketIndex(id) != 7 {
		t.Fatalf("random id bucket %d", tb.BucketIndex(id))
	}
}

func TestWideLimits(t *testing.T) {
	self := addrN(0).NodeID()
	tb := New(self, Limits{BucketPerSubnet: 2, TablePerSubnet: 10, BucketPerWide: 2, TablePerWide: 3})
	now := time.Unix(1000, 0)
	// Bucket 0: two of 10.1.0.0/16 (different /24s) fit, the third does not.
	ids := findInBucket(self, 0, 4, 1)
	for i, id := range ids[:3] {
		r, _ := tb.Add(contact(id, net.IPv4(10, 1, byte(i), 1)), true, now)
		if want := i < 2; (r == Added) != want {
			t.Fatalf("bucket /16 limit: contact %d got %v", i, r)
		}
	}
	// Table: one more of the /16 fits elsewhere, then no more.
	ids1 := findInBucket(self, 1, 2, 1)
	if r, _ := tb.Add(contact(ids1[0], net.IPv4(10, 1, 7, 1)), true, now); r != Added {
		t.Fatalf("third of the /16 in another bucket: %v", r)
	}
	if r, _ := tb.Add(contact(ids1[1], net.IPv4(10, 1, 8, 1)), true, now); r != Rejected {
		t.Fatalf("fourth of the /16: %v", r)
	}
	// Another /16 is fine; removing frees the count.
	if r, _ := tb.Add(contact(ids[3], net.IPv4(10, 2, 0, 1)), true, now); r != Added {
		t.Fatalf("other /16: %v", r)
	}
	tb.Remove(addrN(ids1[0]).NodeID())
	if r, _ := tb.Add(contact(ids1[1], net.IPv4(10, 1, 8, 1)), true, now); r != Added {
		t.Fatalf("after remove: %v", r)
	}
	// IPv6 /48 grouping.
	w := func(s string) string { return WideKey(SubnetKey(net.ParseIP(s))) }
	if w("2001:db8:1:2::1") != w("2001:db8:1:ffff::1") || w("2001:db8:1::1") == w("2001:db8:2::1") || w("2001:db8:1::1") == "" {
		t.Fatal("IPv6 /48 keys wrong")
	}
	if WideKey("a:mem:n1") != "" {
		t.Fatal("non-IP keys must be exempt")
	}
}
