package host

import (
	"testing"
	"time"

	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
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
