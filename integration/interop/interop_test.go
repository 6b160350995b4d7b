package interop

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/integration/natlab"
)

func TestMain(m *testing.M) {
	code := m.Run()
	natlab.RemoveBinaries()
	os.Exit(code)
}

// Scenario is one row of the interop table. Run gets the shared network
// and fails its *testing.T when the behaviour does not hold; it may add
// nodes of its own to n.W.
type Scenario struct {
	Name      string // what is exercised, e.g. "dht resolve"
	Direction string // dirOursToRef or dirRefToOurs
	Run       func(t *testing.T, n *Net)
}

const (
	dirOursToRef = "ours → ref" // our node acts, the reference answers
	dirRefToOurs = "ref → ours" // the reference acts, our node answers
)

// scenarioGroups lists every table row, group by group. A new group is a
// []Scenario in its own file, added here.
var scenarioGroups = [][]Scenario{dhtScenarios, pushScenarios, newestScenarios, modeaScenarios}

// Net is the network every scenario starts from: two reference daemons,
// our a2al-node and an in-process node of our dht package all bootstrapped
// from Ref1, and a reference daemon whose only seed is our node.
type Net struct {
	W          *World
	Ref1, Ref2 *RefNode
	Ours       *OurNode
	DHT        *dht.Node // in-process; its socket is DHTAddr inside the namespace
	DHTAddr    *net.UDPAddr
	RefViaOurs *RefNode
}

func newNet(t *testing.T) *Net {
	w := NewWorld(t)
	n := &Net{W: w}
	n.Ref1 = w.StartRef("ref1", RefOptions{})
	n.Ref2 = w.StartRef("ref2", RefOptions{Bootstrap: []string{n.Ref1.UDP}})
	n.Ours = w.StartOurs("ours", OurOptions{Bootstrap: []string{n.Ref1.UDP}})
	ip := w.NextIP()
	n.DHT = w.DHTNode(ip)
	n.DHTAddr = &net.UDPAddr{IP: net.ParseIP(ip), Port: NodePort}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := n.DHT.BootstrapAddrs(ctx, []net.Addr{udpAddr(t, n.Ref1.UDP)}); err != nil {
		t.Fatalf("in-process node bootstrap from ref1: %v", err)
	}
	n.RefViaOurs = w.StartRef("ref3", RefOptions{Bootstrap: []string{n.Ours.UDP}})
	return n
}

func udpAddr(t testing.TB, s string) *net.UDPAddr {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp4", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type row struct {
	name, dir, result string
	took              time.Duration
}

// TestInterop runs every scenario against one shared network and prints the
// table (scenario, direction, result); run with -v to see it on success.
func TestInterop(t *testing.T) {
	Require(t)
	start := time.Now()
	n := newNet(t)
	setup := time.Since(start)
	var rows []row
	for _, g := range scenarioGroups {
		for _, s := range g {
			skipped := false
			t0 := time.Now()
			ok := t.Run(s.Name+" "+s.Direction, func(t *testing.T) {
				defer func() { skipped = t.Skipped() }()
				s.Run(t, n)
			})
			res := "pass"
			switch {
			case skipped:
				res = "skip"
			case !ok:
				res = "FAIL"
			}
			rows = append(rows, row{s.Name, s.Direction, res, time.Since(t0)})
		}
	}
	t.Log(table(rows, setup))
}

func table(rows []row, setup time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "interop against the reference (setup %s):\n", setup.Round(100*time.Millisecond))
	fmt.Fprintf(&b, "| %-26s | %-11s | %-6s | %8s |\n", "scenario", "direction", "result", "time")
	fmt.Fprintf(&b, "|%s|%s|%s|%s|\n", strings.Repeat("-", 28), strings.Repeat("-", 13), strings.Repeat("-", 8), strings.Repeat("-", 10))
	for _, r := range rows {
		fmt.Fprintf(&b, "| %-26s | %-11s | %-6s | %8s |\n", r.name, r.dir, r.result, r.took.Round(10*time.Millisecond))
	}
	return b.String()
}
