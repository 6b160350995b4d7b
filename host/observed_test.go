package host

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

func udp(s string) *net.UDPAddr {
	a, err := net.ResolveUDPAddr("udp4", s)
	if err != nil {
		panic(err)
	}
	return a
}

func TestVotesNeedDistinctNetworks(t *testing.T) {
	var v addrVotes
	now := time.Unix(1000, 0)
	me := udp("198.51.100.7:5000")
	for i := 1; i <= 5; i++ { // five peers in one /24 are one voice
		v.add(net.IPv4(203, 0, 113, byte(i)), me, now)
	}
	v.add(net.IPv4(192, 0, 2, 1), me, now)
	if a := v.trusted(now); a != nil {
		t.Fatalf("trusted %v with two reporter networks", a)
	}
	v.add(net.IPv4(10, 0, 0, 1), me, now) // a LAN peer does not count
	if a := v.trusted(now); a != nil {
		t.Fatalf("a private reporter counted: %v", a)
	}
	v.add(net.IPv4(8, 8, 4, 1), me, now)
	if a := v.trusted(now); a == nil || a.String() != me.String() {
		t.Fatalf("trusted %v, want %v", a, me)
	}
	if ip := v.trustedIP(now); !ip.Equal(me.IP) {
		t.Fatalf("trusted IP %v", ip)
	}
	// Votes expire.
	if a := v.trusted(now.Add(voteTTL)); a != nil {
		t.Fatalf("expired votes still trusted: %v", a)
	}
}

func TestVotesSymmetricAgreeOnIPOnly(t *testing.T) {
	var v addrVotes
	now := time.Unix(1000, 0)
	for i := 1; i <= 4; i++ { // every peer sees another port
		v.add(net.IPv4(byte(20+i), 1, 1, 1), udp(fmt.Sprintf("198.51.100.7:%d", 40000+i)), now)
	}
	if a := v.trusted(now); a != nil {
		t.Fatalf("trusted an address no quorum saw: %v", a)
	}
	if ip := v.trustedIP(now); !ip.Equal(net.IPv4(198, 51, 100, 7)) {
		t.Fatalf("trusted IP %v", ip)
	}
	v.reset()
	if v.trustedIP(now) != nil {
		t.Fatal("reset kept votes")
	}
}

func TestVotesBounded(t *testing.T) {
	var v addrVotes
	now := time.Unix(1000, 0)
	for i := 0; i < 500; i++ {
		v.add(net.IPv4(byte(20+i%200), byte(i/200), 1, 1), udp(fmt.Sprintf("198.51.100.%d:%d", 1+i%250, 1000+i)), now)
	}
	for i := 0; i < 500; i++ {
		v.add(net.IPv4(byte(20+i%200), byte(i/200), 1, 1), udp("198.51.100.1:1000"), now)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.by) > maxVoteAddrs {
		t.Fatalf("%d addresses kept", len(v.by))
	}
	for _, tl := range v.by {
		if len(tl.nets) > maxVotesPerAddr {
			t.Fatalf("%d reporter networks kept", len(tl.nets))
		}
	}
}

func TestObservedAddrFeedsRecordAndExtIP(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	h, err := New(Config{Key: key, ListenAddr: "127.0.0.1:0", Logger: testLogger(), DisableMaintenance: true, DisableNAT: true})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	report := func(obs string, reporters ...string) {
		for _, r := range reporters {
			h.onObserved(a2al.NodeID{}, udp(r), protocol.EncodeUDPAddr(udp(obs).IP, uint16(udp(obs).Port)))
		}
	}
	report("198.51.100.7:5000", "203.0.113.1:4121", "192.0.2.1:4121")
	if slices.Contains(h.Payload().Endpoints, "quic://198.51.100.7:5000") || h.Node().SelfExtIP() != nil {
		t.Fatal("two reporter networks were enough")
	}
	report("198.51.100.7:5000", "8.8.4.1:4121")
	if !slices.Contains(h.Payload().Endpoints, "quic://198.51.100.7:5000") {
		t.Fatalf("voted address not published: %v", h.Payload().Endpoints)
	}
	if ip := h.Node().SelfExtIP(); !ip.Equal(net.IPv4(198, 51, 100, 7)) {
		t.Fatalf("SelfExtIP %v", ip)
	}
	if st := h.Status(); st.Public != "198.51.100.7:5000" {
		t.Fatalf("status public %q", st.Public)
	}
	// The router gets a new outside address: once a quorum sees it, it wins.
	report("198.51.100.99:5000", "203.0.113.1:4121", "192.0.2.1:4121", "8.8.4.1:4121", "9.9.9.1:4121")
	if ip := h.Node().SelfExtIP(); !ip.Equal(net.IPv4(198, 51, 100, 99)) {
		t.Fatalf("SelfExtIP after the change %v", ip)
	}
}
