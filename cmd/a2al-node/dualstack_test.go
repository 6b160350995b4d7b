package main

import (
	"context"
	"net"
	"testing"
	"time"
)

// --listen takes an IPv6 loopback address (it failed with "listen udp4"
// before), and a node on "[::]" (both families) joins through an IPv6 seed.
func TestRunListensIPv6(t *testing.T) {
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	seed := c.LocalAddr().String()
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	startAPINode(t, ctx, seed)
	n := startAPINode(t, ctx, "[::]:0", "--bootstrap", seed)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st struct {
			RoutingPeers int `json:"routing_peers"`
		}
		if code := n.call(t, "GET", "/api/status", nil, &st); code == 200 && st.RoutingPeers > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the dual-stack node never got the IPv6 seed into its routing table")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
