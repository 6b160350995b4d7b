package host

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/a2alnode/a2al/natprobe"
)

func TestMain(m *testing.M) {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	os.Exit(m.Run())
}

var matrixKinds = []natprobe.NATType{
	natprobe.TypeOpen, natprobe.TypeFullCone, natprobe.TypeAddressRestricted,
	natprobe.TypePortRestricted, natprobe.TypeSymmetric,
}

type matrixRow struct {
	pair   string
	ok     bool
	reason string
	took   time.Duration
	path   string
	ptype  PathType
	rpc    string
}

// TestVNetNATMatrix punches every pair of NAT kinds through an in-process hub
// with a TURN relay and checks that every pair carries a FIND_NODE over
// Mode B: punchable pairs without the relay, the others through it. Run with
// -v for the table.
func TestVNetNATMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("matrix skipped in -short")
	}
	// A2AL_MATRIX_LATENCY (e.g. 20ms) adds per-router delay to the WAN and NATs.
	lat, _ := time.ParseDuration(os.Getenv("A2AL_MATRIX_LATENCY"))
	s := newSim(t, lat)
	var mu sync.Mutex
	var rows []matrixRow
	t.Cleanup(func() {
		sort.Slice(rows, func(i, j int) bool { return rows[i].pair < rows[j].pair })
		var b strings.Builder
		fmt.Fprintf(&b, "\n%-42s %-6s %-12s %9s  %-8s %-18s %s\n", "pair (caller <-> callee)", "result", "reason", "connect", "type", "path", "FIND_NODE via pool")
		for _, r := range rows {
			res := "ok"
			if !r.ok {
				res = "FAIL"
			}
			fmt.Fprintf(&b, "%-42s %-6s %-12s %9s  %-8s %-18s %s\n", r.pair, res, r.reason, r.took.Round(time.Millisecond), r.ptype, r.path, r.rpc)
		}
		t.Log(b.String())
	})
	for i, ka := range matrixKinds {
		for _, kb := range matrixKinds[i:] {
			name := string(ka) + "<->" + string(kb)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				a, _ := s.addNode(ka)
				b, erB := s.addNode(kb)
				a.sched.Enqueue(b.NodeID(), erB, PrioHigh)
				waitFor(t, "punch outcome", func() bool { return len(a.Punches()) > 0 })
				p := a.Punches()[0]
				row := matrixRow{pair: name, ok: p.OK, reason: p.Reason, took: p.Duration, path: p.Path, ptype: p.PathType}
				defer func() { mu.Lock(); rows = append(rows, row); mu.Unlock() }()
				if !p.OK {
					t.Fatalf("punch failed: %s (%s)", p.Reason, p.Error)
				}
				if relayed := p.PathType == PathRelayed; relayed == natprobe.Punchable(ka, kb) {
					t.Fatalf("path type %s for a pair that is punchable=%v", p.PathType, natprobe.Punchable(ka, kb))
				}
				waitFor(t, "callee pooled", func() bool { return b.pool.HasConn(a.NodeID()) })
				remote, _ := a.pool.RemoteAddr(b.NodeID())
				before := a.pool.Stats().SentDatagrams.Load()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := a.node.FindNode(ctx, remote, a.NodeID()); err != nil {
					row.rpc = "error: " + err.Error()
					t.Fatalf("FIND_NODE over the pool: %v", err)
				}
				if a.pool.Stats().SentDatagrams.Load() == before {
					row.rpc = "went over UDP"
					t.Fatal("FIND_NODE did not travel over Mode B")
				}
				row.rpc = "ok"
			})
		}
	}
}
