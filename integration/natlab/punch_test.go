package natlab

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// world is a hub, a public bootstrap node and helpers to add NATed nodes.
type world struct {
	lab  *Lab
	hub  *Hub
	boot *Node
}

func newWorld(t *testing.T) *world {
	l := New(t)
	w := &world{lab: l, hub: l.StartHub(t)}
	bh := l.AddWANHost("boot", mustIP(WANNet+".5"))
	w.boot = l.StartNode(t, bh, NodeOptions{Hub: w.hub})
	return w
}

func (w *world) node(t *testing.T, name string, typ NATType) *Node {
	h := w.lab.AddNATHost(name, typ)
	return w.lab.StartNode(t, h, NodeOptions{Hub: w.hub, Bootstrap: []string{fmt.Sprintf("%s.5:%d", WANNet, NodePort)}})
}

// punchable is the expected outcome without a relay (host.md §15.2):
// symmetric only pairs with full cone, address-restricted or public; UDP
// blocked pairs with nobody.
func punchable(a, b NATType) bool {
	if a == UDPBlocked || b == UDPBlocked {
		return false
	}
	easy := func(t NATType) bool { return t == Public || t == FullCone || t == AddressRestricted }
	if a == Symmetric || b == Symmetric {
		return easy(a) || easy(b)
	}
	return true
}

func TestPunchSmoke(t *testing.T) {
	w := newWorld(t)
	a := w.node(t, "a", PortRestricted)
	b := w.node(t, "b", PortRestricted)
	for _, n := range []*Node{w.boot, a, b} {
		st, err := n.WaitReady(60 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %+v", n.Host.Name, st)
	}
	r, err := a.Dial(b.Address, 40*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dial: %+v", r)
	ps, _ := a.Punches()
	t.Logf("punches a: %+v", ps)
	if !r.OK {
		t.Fatalf("port-restricted pair did not connect: %s", r.Error)
	}
	_ = sort.Strings
	_ = strings.Join
	_ = sync.Mutex{}
}
