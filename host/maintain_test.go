package host

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
)

// TestMaintenanceAutoPublish: with the background loop on, a node bootstraps,
// classifies its NAT and publishes a record naming its hub and NAT type, which
// another node then resolves through the DHT.
func TestMaintenanceAutoPublish(t *testing.T) {
	s := newSim(t, 0)
	nh, err := s.w.AddNAT(natprobe.TypePortRestricted)
	if err != nil {
		t.Fatal(err)
	}
	h := s.startHostCfg(nh, true, func(c *Config) {
		c.DisableMaintenance = false
		c.Bootstrap = []string{s.bootAt}
	})
	waitFor(t, "automatic publish", func() bool {
		st := h.Status()
		return st.Seq != 0 && st.NAT == string(natprobe.TypePortRestricted)
	})
	other, _ := s.addNode(natprobe.TypeFullCone)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	er, err := dht.NewQuery(other.Node()).Resolve(ctx, h.NodeID())
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	if er.NatType != protocol.NATPortRestricted || len(er.Signals) != 1 || er.Signals[0] != s.hubURL {
		t.Fatalf("record %+v", er)
	}
	if len(er.Endpoints) == 0 || !strings.HasPrefix(er.Endpoints[0], "quic://"+nh.PublicIP.String()+":") {
		t.Fatalf("first endpoint %v is not the public mapping", er.Endpoints)
	}
	// Republish on change: the next publish carries a higher seq.
	seq := er.Seq
	if _, err := h.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	if st := h.Status(); st.Seq <= seq {
		t.Fatalf("seq did not grow: %d <= %d", st.Seq, seq)
	}
}
