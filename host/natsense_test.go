package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
)

func TestPeerNATType(t *testing.T) {
	const (
		eim  = natprobe.BehaviorEndpointIndependent
		adm  = natprobe.BehaviorAddressDependent
		apdm = natprobe.BehaviorAddressPortDep
		unk  = natprobe.BehaviorUnknown
	)
	for _, c := range []struct {
		open               bool
		mapping, filtering natprobe.Behavior
		want               natprobe.NATType
	}{
		{true, eim, eim, natprobe.TypeOpen},
		{false, eim, eim, natprobe.TypeFullCone},
		{false, eim, adm, natprobe.TypeAddressRestricted},
		{false, eim, apdm, natprobe.TypePortRestricted},
		{false, eim, unk, natprobe.TypePortRestricted}, // untestable filtering: the strictest cone
		{false, apdm, unk, natprobe.TypeSymmetric},
		{false, adm, eim, natprobe.TypeSymmetric},
		{false, unk, eim, natprobe.TypeUnknown},
	} {
		if got := peerNATType(c.open, c.mapping, c.filtering); got != c.want {
			t.Errorf("peerNATType(open=%v, mapping %s, filtering %s) = %s, want %s", c.open, c.mapping, c.filtering, got, c.want)
		}
	}
}

// vote is one observed_addr report: reporter IP saw us as addr.
type vote struct{ reporter, addr string }

func TestVotesMapping(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, c := range []struct {
		name   string
		votes  []vote
		want   natprobe.Behavior
		wantIP string
	}{
		{"cone: one port from three networks", []vote{
			{"203.0.113.1", "198.51.100.7:4121"}, {"192.0.2.1", "198.51.100.7:4121"}, {"8.8.4.1", "198.51.100.7:4121"},
		}, natprobe.BehaviorEndpointIndependent, "198.51.100.7"},
		{"symmetric: another port per network", []vote{
			{"203.0.113.1", "198.51.100.7:40001"}, {"192.0.2.1", "198.51.100.7:40002"}, {"8.8.4.1", "198.51.100.7:40003"},
		}, natprobe.BehaviorAddressPortDep, "198.51.100.7"},
		{"two networks are no quorum", []vote{
			{"203.0.113.1", "198.51.100.7:4121"}, {"192.0.2.1", "198.51.100.7:4121"},
		}, natprobe.BehaviorUnknown, ""},
		{"one network is one voice", []vote{
			{"203.0.113.1", "198.51.100.7:40001"}, {"203.0.113.2", "198.51.100.7:40002"}, {"203.0.113.3", "198.51.100.7:40003"},
			{"192.0.2.1", "198.51.100.7:40004"},
		}, natprobe.BehaviorUnknown, ""},
		{"a mapping that moved is unknown until it settles", []vote{
			{"203.0.113.1", "198.51.100.7:4121"}, {"192.0.2.1", "198.51.100.7:4121"}, {"8.8.4.1", "198.51.100.7:5000"},
		}, natprobe.BehaviorUnknown, "198.51.100.7"},
		{"private reporters do not count", []vote{
			{"10.0.0.1", "198.51.100.7:4121"}, {"192.168.1.1", "198.51.100.7:4121"}, {"8.8.4.1", "198.51.100.7:4121"},
		}, natprobe.BehaviorUnknown, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var v addrVotes
			for _, x := range c.votes {
				v.add(net.ParseIP(x.reporter), udp(x.addr), now)
			}
			b, ip, _ := v.mapping(now)
			if b != c.want || (ip == nil) != (c.wantIP == "") || (ip != nil && ip.String() != c.wantIP) {
				t.Fatalf("mapping = %s, %v; want %s, %q", b, ip, c.want, c.wantIP)
			}
			if b, ip, _ := v.mapping(now.Add(voteTTL)); b != natprobe.BehaviorUnknown || ip != nil {
				t.Fatalf("expired votes still judged: %s %v", b, ip)
			}
		})
	}
}

// TestVotesFollowWANChange: when the router gets a new outside address,
// each reporter's new report replaces its old one, so the new address wins
// at once instead of after the old votes expire.
func TestVotesFollowWANChange(t *testing.T) {
	var v addrVotes
	now := time.Unix(1000, 0)
	reporters := []string{"203.0.113.1", "192.0.2.1", "8.8.4.1"}
	for _, r := range reporters {
		v.add(net.ParseIP(r), udp("198.51.100.7:4121"), now)
	}
	if a := v.trusted(now); a == nil || a.String() != "198.51.100.7:4121" {
		t.Fatalf("trusted %v", a)
	}
	now = now.Add(time.Minute)
	v.add(net.ParseIP(reporters[0]), udp("198.51.100.99:4121"), now)
	v.add(net.ParseIP(reporters[1]), udp("198.51.100.99:4121"), now)
	if ip := v.trustedIP(now); ip != nil {
		t.Fatalf("trusted IP %v while the networks are split 1:2", ip)
	}
	v.add(net.ParseIP(reporters[2]), udp("198.51.100.99:4121"), now)
	b, ip, sample := v.mapping(now)
	if b != natprobe.BehaviorEndpointIndependent || !ip.Equal(net.ParseIP("198.51.100.99")) || sample.String() != "198.51.100.99:4121" {
		t.Fatalf("after the change: %s %v %v", b, ip, sample)
	}
}

func newSenseHost(t *testing.T) *Host {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	h, err := New(Config{Key: key, ListenAddr: "127.0.0.1:0", Logger: testLogger(), DisableMaintenance: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func report(h *Host, obs string, reporters ...string) {
	for _, r := range reporters {
		o := udp(obs)
		h.onObserved(a2al.NodeID{}, udp(r), protocol.EncodeUDPAddr(o.IP, uint16(o.Port)))
	}
}

// TestClassifyByPeers: without STUN the record's NAT type comes from the
// votes (and the DHT NAT probe, which has no public peers here, so
// filtering is untested and a cone is published as port-restricted).
func TestClassifyByPeers(t *testing.T) {
	ctx := context.Background()
	t.Run("symmetric", func(t *testing.T) {
		h := newSenseHost(t)
		for i, r := range []string{"203.0.113.1:4121", "192.0.2.1:4121", "8.8.4.1:4121"} {
			report(h, fmt.Sprintf("198.51.100.7:%d", 40000+i), r)
		}
		h.classifyByPeers(ctx, false)
		nr, known := h.NATResult()
		if !known || nr.Type != natprobe.TypeSymmetric || !nr.PublicIP.Equal(net.ParseIP("198.51.100.7")) {
			t.Fatalf("NAT %v known=%v", nr, known)
		}
		if p := h.Payload(); p.NatType != protocol.NATSymmetric {
			t.Fatalf("record NAT type %d", p.NatType)
		}
		if ip := h.Node().SelfExtIP(); !ip.Equal(net.ParseIP("198.51.100.7")) {
			t.Fatalf("SelfExtIP %v", ip)
		}
	})
	t.Run("cone, then the WAN IP changes", func(t *testing.T) {
		h := newSenseHost(t)
		reporters := []string{"203.0.113.1:4121", "192.0.2.1:4121", "8.8.4.1:4121"}
		report(h, "198.51.100.7:4121", reporters...)
		h.classifyByPeers(ctx, false)
		nr, _ := h.NATResult()
		if nr.Type != natprobe.TypePortRestricted || nr.Mapping != natprobe.BehaviorEndpointIndependent ||
			nr.Filtering != natprobe.BehaviorUnknown {
			t.Fatalf("NAT %v", nr)
		}
		p := h.Payload()
		if p.NatType != protocol.NATPortRestricted || len(p.Endpoints) == 0 || p.Endpoints[0] != "quic://198.51.100.7:4121" {
			t.Fatalf("record %+v", p)
		}
		report(h, "198.51.100.99:4121", reporters...)
		select {
		case <-h.sense.kick:
		default:
			t.Fatal("a new public IP did not ask for a re-classification")
		}
		h.classifyByPeers(ctx, false)
		nr, _ = h.NATResult()
		if !nr.PublicIP.Equal(net.ParseIP("198.51.100.99")) || !h.Node().SelfExtIP().Equal(nr.PublicIP) {
			t.Fatalf("after the WAN change: NAT %v, SelfExtIP %v", nr, h.Node().SelfExtIP())
		}
		if p := h.Payload(); !slices.Contains(p.Endpoints, "quic://198.51.100.99:4121") || slices.Contains(p.Endpoints, "quic://198.51.100.7:4121") {
			t.Fatalf("record after the WAN change %v", p.Endpoints)
		}
	})
	t.Run("STUN wins", func(t *testing.T) {
		h := newSenseHost(t)
		stun := natprobe.Result{Type: natprobe.TypeFullCone, PublicIP: net.ParseIP("198.51.100.7"), MappedAddr: udp("198.51.100.7:6000")}
		h.mu.Lock()
		h.nat, h.natKnown = stun, true
		h.mu.Unlock()
		for i, r := range []string{"203.0.113.1:4121", "192.0.2.1:4121", "8.8.4.1:4121"} {
			report(h, fmt.Sprintf("198.51.100.7:%d", 40000+i), r)
		}
		h.classifyByPeers(ctx, false)
		if nr, _ := h.NATResult(); nr.Type != natprobe.TypeFullCone {
			t.Fatalf("peers overrode STUN: %v", nr)
		}
	})
}
