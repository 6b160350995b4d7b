package host

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/a2alnode/a2al/natprobe"
)

// TestPunchHubDownFailsFastAndRecovers: with the hub gone, a punch fails at
// once with the "no-hub" reason naming the hub and its connection error
// (not after the whole punch deadline), the peer gets no back-off for it, and
// as soon as the hub is back and the nodes have re-registered the same punch
// succeeds.
func TestPunchHubDownFailsFastAndRecovers(t *testing.T) {
	s := newSim(t, 0)
	a, _ := s.addNode(natprobe.TypePortRestricted)
	b, erB := s.addNode(natprobe.TypePortRestricted)

	s.stopHub()
	waitFor(t, "nodes to notice the hub is gone", func() bool {
		return a.HubsRegistered() == 0 && b.HubsRegistered() == 0
	})
	a.sched.Enqueue(b.NodeID(), erB, PrioHigh)
	waitFor(t, "punch outcome", func() bool { return len(a.Punches()) > 0 })
	p := a.Punches()[0]
	if p.OK || p.Reason != "no-hub" {
		t.Fatalf("punch with the hub down: ok=%v reason %q, want no-hub", p.OK, p.Reason)
	}
	err := a.hubs[0].LastError()
	if err == nil {
		t.Fatal("client reports no connection error")
	}
	if got := noHub(a.hubs[0]).Error(); !strings.Contains(got, s.hubAt) || !strings.Contains(got, err.Error()) {
		t.Fatalf("reason %q does not name the hub and its error", got)
	}
	if a.pool.HasConn(b.NodeID()) {
		t.Fatal("pooled without a hub")
	}
	// A user-requested punch reports the typed cause.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	perr := a.punchAndWait(ctx, b.NodeID(), erB)
	var pe *PunchError
	if !errors.Is(perr, ErrNoHub) || !errors.Is(perr, ErrPunchFailed) || !errors.As(perr, &pe) || pe.Code != "no-hub" {
		t.Fatalf("user punch with the hub down: %v, want a no-hub PunchError", perr)
	}
	if strings.Count(perr.Error(), "no-hub") != 1 {
		t.Fatalf("error names no-hub more than once: %v", perr)
	}

	s.startHub()
	waitFor(t, "nodes to re-register", func() bool {
		return a.HubsRegistered() == 1 && b.HubsRegistered() == 1
	})
	// No per-peer back-off was charged, so this runs at once.
	a.sched.Enqueue(b.NodeID(), erB, PrioHigh)
	waitFor(t, "punch outcome after the hub returned", func() bool { return len(a.Punches()) > 2 })
	if p := a.Punches()[2]; !p.OK {
		t.Fatalf("punch after the hub returned: %s", p.Reason)
	}
	waitFor(t, "callee pooled", func() bool { return b.pool.HasConn(a.NodeID()) })
}
