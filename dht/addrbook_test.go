package dht

import (
	"net"
	"testing"

	"github.com/a2alnode/a2al"
)

func bookID(i int) a2al.NodeID {
	var id a2al.NodeID
	id[0], id[1] = byte(i), byte(i>>8)
	return id
}

func bookAddr(i int) net.Addr {
	return &net.UDPAddr{IP: net.IPv4(10, 0, byte(i>>8), byte(i)), Port: 4121}
}

// Hearsay lives in a ring of hearsayCap entries: it never replaces earlier
// hearsay nor a first-hand binding, first-hand evidence supersedes it, and
// however many contacts lookups report, the book holds no more of them.
func TestAddrBookHearsayRing(t *testing.T) {
	var b addrBook
	b.init()
	id := bookID(1)
	if !b.bind(id, bookAddr(1), rankHearsay) {
		t.Fatal("first hearsay not taken")
	}
	if b.bind(id, bookAddr(2), rankHearsay) {
		t.Fatal("hearsay replaced hearsay")
	}
	if a, r := b.get(id); !sameAddr(a, bookAddr(1)) || r != rankHearsay {
		t.Fatalf("get = %v rank %d", a, r)
	}
	// An answer from the hearsay address confirms it: no move.
	if b.bind(id, bookAddr(1), rankAnswered) {
		t.Fatal("confirming the hearsay address reported a move")
	}
	if _, r := b.get(id); r != rankAnswered {
		t.Fatalf("rank %d after the answer", r)
	}
	if b.bind(id, bookAddr(3), rankHearsay) {
		t.Fatal("hearsay redirected a first-hand binding")
	}
	if got, ok := b.idOf(bookAddr(1)); !ok || got != id {
		t.Fatalf("idOf = %x %v", got[:2], ok)
	}
	for i := 100; i < 100+4*hearsayCap; i++ {
		b.bind(bookID(i), bookAddr(i), rankHearsay)
	}
	heard := 0
	for i := 100; i < 100+4*hearsayCap; i++ {
		if a, _ := b.get(bookID(i)); a != nil {
			heard++
		}
	}
	if heard != hearsayCap || b.len() != 1 {
		t.Fatalf("%d hearsay addresses kept (want %d), %d bindings", heard, hearsayCap, b.len())
	}
	// A hearsay address that did not answer is forgotten.
	last := bookID(100 + 4*hearsayCap - 1)
	b.dropIfRank(last, rankHearsay)
	if a, _ := b.get(last); a != nil {
		t.Fatal("dropIfRank kept the hearsay address")
	}
}
