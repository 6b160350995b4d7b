package host

import (
	"context"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// sentBy returns a2al_dht_messages_sent_total{transport=tr} from h's registry.
func sentBy(t *testing.T, h *Host, tr string) float64 {
	t.Helper()
	mfs, err := h.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "a2al_dht_messages_sent_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelIs(m, "transport", tr) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no a2al_dht_messages_sent_total{transport=%q}", tr)
	return 0
}

func labelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

func TestMetricsSplitDHTMessagesByTransport(t *testing.T) {
	a, b := loopbackHost(t), loopbackHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Bootstrap teaches a the peer's identity (the pool is keyed by NodeID).
	if err := a.Bootstrap(ctx, b.LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	// Plain UDP first: only the udp series moves.
	if _, err := a.node.FindNode(ctx, b.LocalAddr(), a.NodeID()); err != nil {
		t.Fatalf("FIND_NODE over UDP: %v", err)
	}
	if got := sentBy(t, a, "modeB"); got != 0 {
		t.Fatalf("modeB = %v before any pooled connection", got)
	}
	udp := sentBy(t, a, "udp")
	if udp == 0 {
		t.Fatal("udp series did not count the FIND_NODE")
	}

	// Pooled: the request now rides Mode B.
	poolDirect(t, a, b)
	if _, err := a.node.FindNode(ctx, b.LocalAddr(), a.NodeID()); err != nil {
		t.Fatalf("FIND_NODE over Mode B: %v", err)
	}
	if got := sentBy(t, a, "modeB"); got < 1 {
		t.Fatalf("modeB = %v after a pooled FIND_NODE", got)
	}
	if got := sentBy(t, a, "udp"); got != udp {
		t.Fatalf("udp moved from %v to %v although the peer is pooled", udp, got)
	}
}
