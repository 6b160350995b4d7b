package interop

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/integration/natlab"
)

// dhtScenarios: the v0.1.8 DHT in both directions.
var dhtScenarios = []Scenario{
	{"dht bootstrap", dirOursToRef, func(t *testing.T, n *Net) {
		// Our node's only seed is ref1; it must learn ref2 and the others.
		if err := Eventually(20*time.Second, func() error {
			st, err := n.Ours.Status()
			if err == nil && st.RoutingPeers < 3 {
				err = fmt.Errorf("routing peers %d, want >= 3", st.RoutingPeers)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}},
	{"dht bootstrap", dirRefToOurs, func(t *testing.T, n *Net) {
		// ref3's only seed is our node: it must have joined through it.
		if err := Eventually(20*time.Second, func() error {
			st, err := n.RefViaOurs.Status()
			if err == nil && st.DHTPeers < 1 {
				err = fmt.Errorf("ref3 has %d DHT peers", st.DHTPeers)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}},
	{"dht ping", dirOursToRef, func(t *testing.T, n *Net) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		id, err := n.DHT.PingIdentity(ctx, udpAddr(t, n.Ref1.UDP))
		if err != nil {
			t.Fatal(err)
		}
		if id.Address.String() != n.Ref1.AID {
			t.Fatalf("PONG from %s, want %s", id.Address, n.Ref1.AID)
		}
	}},
	{"dht ping", dirRefToOurs, func(t *testing.T, n *Net) {
		// ref3 joined by pinging our node: its signed request put it in our
		// routing table as a verified contact.
		want := addrHex(t, n.RefViaOurs.AID)
		if err := Eventually(20*time.Second, func() error {
			var rt struct {
				Peers []struct {
					AddressHex  string `json:"address_hex"`
					VerifiedAgo string `json:"verified_ago"`
				} `json:"peers"`
			}
			if err := n.Ours.Call(http.MethodGet, "/debug/routing", nil, &rt); err != nil {
				return err
			}
			for _, p := range rt.Peers {
				if p.AddressHex == want && p.VerifiedAgo != "" {
					return nil
				}
			}
			return fmt.Errorf("ref3 not a verified contact of our node (%d peers)", len(rt.Peers))
		}); err != nil {
			t.Fatal(err)
		}
	}},
	{"dht find_node", dirOursToRef, func(t *testing.T, n *Net) {
		// Our control API dials peers by address: resolve ref2 first.
		resolveRef2(t, n)
		var r natlab.FindNodeResult
		if err := n.Ours.Call(http.MethodPost, "/api/findnode?addr="+url.QueryEscape(n.Ref2.AID), nil, &r); err != nil {
			t.Fatal(err)
		}
		if !r.OK || r.Contacts == 0 {
			t.Fatalf("FIND_NODE to ref2: ok=%v contacts=%d err=%s", r.OK, r.Contacts, r.Error)
		}
	}},
	{"dht find_node", dirRefToOurs, func(t *testing.T, n *Net) {
		// ref3 knows only our node; every other peer it has came from our
		// FIND_NODE answers.
		if err := Eventually(30*time.Second, func() error {
			st, err := n.RefViaOurs.Status()
			if err == nil && st.DHTPeers < 3 {
				err = fmt.Errorf("ref3 has %d DHT peers, want >= 3", st.DHTPeers)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}},
	{"dht resolve", dirOursToRef, func(t *testing.T, n *Net) {
		rec := resolveRef2(t, n)
		if !slices.ContainsFunc(rec.Endpoints, func(e string) bool { return strings.Contains(e, n.Ref2.UDP) }) {
			t.Fatalf("ref2's record lists %v, want %s", rec.Endpoints, n.Ref2.UDP)
		}
	}},
	{"dht resolve", dirRefToOurs, func(t *testing.T, n *Net) {
		var res map[string]any
		if err := Eventually(20*time.Second, func() error {
			return n.Ref1.Call(http.MethodPost, "/resolve/"+n.Ours.Address, struct{}{}, &res)
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("ref1 resolved our node: %v", res)
		if s := fmt.Sprint(res); !strings.Contains(s, n.Ours.UDP) {
			t.Fatalf("ref1 resolved our node to %s, want an endpoint %s", s, n.Ours.UDP)
		}
	}},
}

func addrHex(t testing.TB, text string) string {
	t.Helper()
	a, err := a2al.ParseAddress(text)
	if err != nil {
		t.Fatalf("address %q: %v", text, err)
	}
	return hex.EncodeToString(a[:])
}

// resolveRef2 has our node resolve ref2's endpoint record through its
// control API, retrying while the DHT settles.
func resolveRef2(t *testing.T, n *Net) natlab.Record {
	t.Helper()
	var rec natlab.Record
	if err := Eventually(20*time.Second, func() error {
		if err := n.Ours.Call(http.MethodGet, "/api/resolve?addr="+url.QueryEscape(n.Ref2.AID), nil, &rec); err != nil {
			return err
		}
		if !rec.OK {
			return fmt.Errorf("resolve ref2: %s %s", rec.Reason, rec.Error)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return rec
}
