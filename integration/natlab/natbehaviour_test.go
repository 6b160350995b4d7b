package natlab

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// TestNATBehaviour checks each router type's mapping and filtering with raw
// UDP from inside the namespaces, before any product code relies on them.
func TestNATBehaviour(t *testing.T) {
	l := New(t)
	prober := l.AddProber()
	hosts := map[NATType]*Host{}
	for i, typ := range AllNATTypes {
		hosts[typ] = l.AddNATHost(fmt.Sprintf("n%d", i), typ)
	}
	var (
		mu    sync.Mutex
		table []string
	)
	t.Cleanup(func() {
		t.Logf("NAT behaviour (inner port %d):\n%s\n%s", ProbePort, RowHeader, strings.Join(table, "\n"))
	})
	for i, typ := range AllNATTypes {
		i, typ := i, typ
		t.Run(string(typ), func(t *testing.T) {
			t.Parallel()
			h := hosts[typ]
			b, err := prober.Measure(h, 5000+10*i, ExpectedBehaviour[typ])
			if err != nil {
				t.Fatalf("%s: %v", typ, err)
			}
			for _, e := range b.Check(typ, h, prober) {
				t.Errorf("%s: %s", typ, e)
			}
			if t.Failed() {
				for _, r := range h.Routers() {
					t.Logf("router %s conntrack:\n%s\nruleset:\n%s", r.Name, r.Conntrack(), r.Ruleset())
				}
			}
			mu.Lock()
			table = append(table, b.Row(typ))
			progress("behaviour " + b.Row(typ))
			mu.Unlock()
		})
	}
}
