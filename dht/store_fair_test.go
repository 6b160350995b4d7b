package dht

import (
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

func udpSrc(a, b, c, d byte) net.Addr {
	return &net.UDPAddr{IP: net.IPv4(a, b, c, d), Port: 4121}
}

// fairFixture signs mailbox records cheaply: few keys, many payloads.
type fairFixture struct {
	t    *testing.T
	s    *Store
	keys []testKey
	n    int
}

func newFairFixture(t *testing.T, maxKeys int) *fairFixture {
	f := &fairFixture{t: t, s: NewStore(nil, maxKeys)}
	for i := 0; i < 8; i++ {
		f.keys = append(f.keys, newTestKey(byte(0x40+i)))
	}
	return f
}

// put stores a fresh mailbox record at a fresh key from origin.
func (f *fairFixture) put(o storeOrigin) (a2al.NodeID, error) {
	f.t.Helper()
	f.n++
	k := f.keys[f.n%len(f.keys)]
	key := a2al.NodeID{byte(f.n >> 16), byte(f.n >> 8), byte(f.n), 0x77}
	rec := mkRec(f.t, k, protocol.RecTypeMailbox, []byte(fmt.Sprintf("m%d", f.n)), 1, testT0, 3600)
	return key, f.s.putFrom(key, rec, at(testT0), o)
}

func (f *fairFixture) alive(keys []a2al.NodeID) int {
	n := 0
	for _, k := range keys {
		if len(f.s.GetAll(k, 0, at(testT0))) > 0 {
			n++
		}
	}
	return n
}

// TestStoreFairEvictionPrefixes: a flood from many /24s of one /16 only
// displaces its own records, not those of honest sources elsewhere.
func TestStoreFairEvictionPrefixes(t *testing.T) {
	f := newFairFixture(t, 100)
	var honest []a2al.NodeID
	for src := 0; src < 10; src++ {
		for i := 0; i < 3; i++ {
			k, err := f.put(originOf(udpSrc(10, byte(src), 1, 1), false))
			if err != nil {
				t.Fatal(err)
			}
			honest = append(honest, k)
		}
	}
	for i := 0; i < 1000; i++ {
		if _, err := f.put(originOf(udpSrc(66, 6, byte(i), byte(i>>8)), false)); err != nil && !errors.Is(err, ErrStoreFull) {
			t.Fatal(err)
		}
	}
	if got := f.alive(honest); got != len(honest) {
		t.Fatalf("%d of %d honest records survived a one-/16 flood", got, len(honest))
	}
	if f.s.Len() != 100 {
		t.Fatalf("store holds %d keys, limit 100", f.s.Len())
	}
	checkInvariants(t, f.s)

	// Many /16s: honest sources hold three records each, within their
	// fair share (100 keys / 31 groups), so only flood records go.
	for i := 0; i < 3000; i++ {
		if _, err := f.put(originOf(udpSrc(70+byte(i%20), 1, byte(i), 1), false)); err != nil && !errors.Is(err, ErrStoreFull) {
			t.Fatal(err)
		}
	}
	if got := f.alive(honest); got != len(honest) {
		t.Fatalf("%d of %d honest records survived a 20-/16 flood", got, len(honest))
	}
	checkInvariants(t, f.s)
}

// TestStoreProtectsOwnAndResponsible: records for keys the node is
// responsible for are never evicted for other keys, however heavy their
// source; the node's own records are never evicted at all; when nothing
// may go, a stranger's record is refused.
func TestStoreProtectsOwnAndResponsible(t *testing.T) {
	f := newFairFixture(t, 50)
	heavy := originOf(udpSrc(10, 0, 0, 1), true)
	var resp []a2al.NodeID
	for i := 0; i < 30; i++ {
		k, err := f.put(heavy)
		if err != nil {
			t.Fatal(err)
		}
		resp = append(resp, k)
	}
	var own []a2al.NodeID
	for i := 0; i < 10; i++ {
		k, err := f.put(ownOrigin)
		if err != nil {
			t.Fatal(err)
		}
		own = append(own, k)
	}
	for i := 0; i < 500; i++ {
		if _, err := f.put(originOf(udpSrc(66, byte(i), 1, 1), false)); err != nil && !errors.Is(err, ErrStoreFull) {
			t.Fatal(err)
		}
	}
	if got := f.alive(resp); got != len(resp) {
		t.Fatalf("%d of %d responsible records survived", got, len(resp))
	}
	if got := f.alive(own); got != len(own) {
		t.Fatalf("%d of %d own records survived", got, len(own))
	}
	// Fill the rest with responsible records, then a stranger is refused.
	for f.s.Len() < 50 || f.alive(resp) == len(resp) && len(f.s.fair.tiers[tierOther]) > 0 {
		if _, err := f.put(originOf(udpSrc(20, 0, 0, 1), true)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.put(originOf(udpSrc(66, 1, 1, 1), false)); !errors.Is(err, ErrStoreFull) {
		t.Fatalf("stranger's record in a store full of protected ones: %v", err)
	}
	// Responsible records compete fairly among themselves: the heavy
	// source loses, own records stay.
	if got := f.alive(own); got != len(own) {
		t.Fatalf("%d of %d own records survived", got, len(own))
	}
	if f.s.Len() != 50 {
		t.Fatalf("store holds %d keys, limit 50", f.s.Len())
	}
	checkInvariants(t, f.s)
}
