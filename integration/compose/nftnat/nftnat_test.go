package nftnat_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/a2alnode/a2al/integration/compose/nftnat"
	"github.com/a2alnode/a2al/integration/natlab"
)

// program installs the router rules through netlink inside the router's
// namespace, the way the compose router container does.
func program(r *natlab.Router) error {
	f, err := os.Open(r.NS.Path())
	if err != nil {
		return err
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		return err
	}
	return nftnat.Apply(c, nftnat.Config{
		Type: string(r.Type), WANIf: "wan0", WANIP: r.WANIP,
		ShiftedPorts: natlab.ShiftedPorts, ShiftOffset: natlab.ShiftOffset,
	})
}

// TestBehaviour runs the lab's raw-UDP NAT probe against routers programmed
// by this package: each type must map and filter like its nft-text twin.
func TestBehaviour(t *testing.T) {
	l := natlab.New(t)
	prober := l.AddProber()
	types := []natlab.NATType{natlab.FullCone, natlab.AddressRestricted, natlab.PortRestricted,
		natlab.Symmetric, natlab.PortShifted, natlab.UDPBlocked}
	var rows []string
	for i, typ := range types {
		r := l.AddRouter(fmt.Sprintf("r%d", i), typ, natlab.RouterOptions{Program: program})
		h := r.AddHost(fmt.Sprintf("h%d", i))
		b, err := prober.Measure(h, 6000+10*i, natlab.ExpectedBehaviour[typ])
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		for _, e := range b.Check(typ, h, prober) {
			t.Errorf("%s: %s\n%s", typ, e, r.Ruleset())
		}
		rows = append(rows, b.Row(typ))
	}
	t.Logf("netlink-programmed routers:\n%s\n%s", natlab.RowHeader, strings.Join(rows, "\n"))
}

// TestApplyIsIdempotent re-applies a ruleset (router restart) and checks
// bad configurations are refused without touching the kernel.
func TestApplyIsIdempotent(t *testing.T) {
	l := natlab.New(t)
	r := l.AddRouter("r", natlab.FullCone, natlab.RouterOptions{Program: program})
	if err := program(r); err != nil {
		t.Fatalf("re-apply: %v", err)
	}
	// (nft(8) cannot pretty-print maps created without its private
	// userdata, so inspect through netlink.)
	var tables, chains int
	err := r.NS.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		ts, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
		if err != nil {
			return err
		}
		for _, tb := range ts {
			if tb.Name == nftnat.TableName {
				tables++
			}
		}
		cs, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
		chains = len(cs)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if tables != 1 || chains != 5 {
		t.Fatalf("after re-apply: %d router tables, %d chains; want 1 and 5", tables, chains)
	}
	for _, cfg := range []nftnat.Config{
		{Type: "bogus", WANIf: "wan0", WANIP: r.WANIP},
		{Type: nftnat.FullCone, WANIf: "", WANIP: r.WANIP},
		{Type: nftnat.FullCone, WANIf: "wan0", WANIP: nil},
		{Type: nftnat.PortShifted, WANIf: "wan0", WANIP: r.WANIP, ShiftedPorts: []int{65000}, ShiftOffset: 1000},
	} {
		if err := nftnat.Apply(nil, cfg); err == nil {
			t.Errorf("Apply(%+v) accepted a bad config", cfg)
		}
	}
}
