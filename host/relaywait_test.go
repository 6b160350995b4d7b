package host

import (
	"fmt"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
)

// An unpunchable IPv4 NAT pair still waits for a direct path when both sides
// publish IPv6: behind IPv6 firewalls they punch (docs/relay.md).
func TestRelayWaitKeepsIPv6PairsDirect(t *testing.T) {
	const wait = 1500 * time.Millisecond
	h := &Host{cfg: Config{RelayWait: wait}}
	h.nat, h.natKnown = natprobe.Result{Type: natprobe.TypeSymmetric}, true
	v4 := "quic://198.51.100.7:4121"
	v6 := "quic://[2001:db8::7]:4121"
	peer := func(eps ...string) *protocol.EndpointRecord {
		return &protocol.EndpointRecord{Endpoints: eps, NatType: protocol.NATSymmetric}
	}
	cases := []struct {
		name      string
		own, peer []string
		want      time.Duration
	}{
		{"v4 only", []string{v4}, []string{v4}, 0},
		{"peer without v6", []string{v6, v4}, []string{v4}, 0},
		{"we without v6", []string{v4}, []string{v6, v4}, 0},
		{"both v6", []string{v6, v4}, []string{v6, v4}, wait},
		{"link-local is no path", []string{"quic://[fe80::1]:4121"}, []string{v6}, 0},
	}
	for _, c := range cases {
		h.pub.last.Endpoints = c.own
		if got := h.relayWait(peer(c.peer...)); got != c.want {
			t.Errorf("%s: relayWait = %v, want %v", c.name, got, c.want)
		}
	}
	h.nat.Type = natprobe.TypePortRestricted
	h.pub.last.Endpoints = []string{v4}
	if got := h.relayWait(peer(v4)); got != 0 {
		t.Errorf("port-restricted × symmetric without v6: relayWait = %v, want 0", got)
	}
}

// A failed upgrade leaves the peer connected over the relay: the DHT hears
// nothing (a no-agent failure would mark the peer Bad), a failed punch the
// DHT asked for still reports.
func TestFailedUpgradeNotReportedToDHT(t *testing.T) {
	h := loopbackHost(t)
	id := a2al.NodeIDFromAddress(randomAddress(t))
	noAgent := fmt.Errorf("call: %w", signal.ErrNoAgent)
	h.finish(punchEnd{rec: PunchRecord{Role: "caller", Upgrade: true}, id: id, err: noAgent, report: true})
	if got := h.node.PeerHealthOf(id); got == dht.PeerHealthBad {
		t.Fatalf("a failed upgrade marked the peer %v", got)
	}
	h.finish(punchEnd{rec: PunchRecord{Role: "caller"}, id: id, err: noAgent, report: true})
	if got := h.node.PeerHealthOf(id); got != dht.PeerHealthBad {
		t.Fatalf("a failed punch with no agent left the peer %v, want Bad", got)
	}
}
