package natsim_test

import (
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/stun"

	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/natprobe/natsim"
)

// A host behind each kind of NAT can reach an open host, and the open host
// sees the NAT's public IP; the blocked host cannot.
func TestWorldReachability(t *testing.T) {
	before := runtime.NumGoroutine()
	w, err := natsim.NewWorld()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := w.AddOpenHost()
	if err != nil {
		t.Fatal(err)
	}
	server, err := pub.Net.ListenPacket("udp4", pub.Bind(7000))
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range natprobe.AllTypes {
		h, err := w.AddNAT(kind)
		if err != nil {
			t.Fatalf("AddNAT(%s): %v", kind, err)
		}
		c, err := h.Net.ListenPacket("udp4", h.Bind(0))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteTo([]byte(kind), server.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = server.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 100)
		n, from, err := server.ReadFrom(buf)
		if kind == natprobe.TypeUDPBlocked {
			if err == nil {
				t.Fatalf("blocked host got through: %q from %v", buf[:n], from)
			}
		} else {
			if err != nil {
				t.Fatalf("%s: nothing arrived: %v", kind, err)
			}
			if got := from.(*net.UDPAddr).IP; !got.Equal(h.PublicIP) || string(buf[:n]) != string(kind) {
				t.Fatalf("%s: got %q from %v, want from %v", kind, buf[:n], from, h.PublicIP)
			}
		}
		_ = c.Close()
	}
	_ = server.Close()
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := w.AddNAT(natprobe.TypeFullCone); err == nil {
		t.Fatal("AddNAT after Close succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before, %d after Close", before, runtime.NumGoroutine())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNATTypeFor(t *testing.T) {
	if _, ok := natsim.NATTypeFor(natprobe.TypeOpen); ok {
		t.Fatal("open has no NAT behaviour")
	}
	sym, ok := natsim.NATTypeFor(natprobe.TypeSymmetric)
	if !ok || sym.MappingBehavior == 0 {
		t.Fatalf("symmetric must have endpoint-dependent mapping: %+v", sym)
	}
}

// pion ICE gathers a server-reflexive candidate from the world's STUN
// server through a NAT: the setup the host's ICE matrix relies on.
func TestICEGathersSrflx(t *testing.T) {
	w, err := natsim.NewWorld()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h, err := w.AddNAT(natprobe.TypePortRestricted)
	if err != nil {
		t.Fatal(err)
	}
	uri, err := stun.ParseURI(w.STUNURL())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ice.NewAgent(&ice.AgentConfig{
		Urls:             []*stun.URI{uri},
		NetworkTypes:     []ice.NetworkType{ice.NetworkTypeUDP4},
		CandidateTypes:   []ice.CandidateType{ice.CandidateTypeServerReflexive},
		Net:              h.Net,
		MulticastDNSMode: ice.MulticastDNSModeDisabled,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	got := make(chan ice.Candidate, 4)
	if err := a.OnCandidate(func(c ice.Candidate) {
		if c != nil {
			got <- c
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.GatherCandidates(); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-got:
		if c.Type() != ice.CandidateTypeServerReflexive || c.Address() != h.PublicIP.String() {
			t.Fatalf("candidate %s, want srflx at %v", c, h.PublicIP)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no srflx candidate gathered")
	}
	if st := w.STUN.Stats(); st.Requests == 0 {
		t.Fatalf("server stats %+v", st)
	}
}

// Worlds, NATs and hosts may be created from many goroutines at once: the
// package serialises pion vnet's racy MAC counter (run with -race).
func TestConcurrentTopology(t *testing.T) {
	w, err := natsim.NewWorld()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const n = 8
	errs := make(chan error, 2*n)
	hosts := make(chan *natsim.Host, 2*n)
	for i := 0; i < n; i++ {
		go func() {
			h, err := w.AddNAT(natprobe.TypePortRestricted)
			errs <- err
			hosts <- h
		}()
		go func() {
			w2, err := natsim.NewWorld(natsim.Options{NoSTUN: true})
			if err == nil {
				err = w2.Close()
			}
			errs <- err
			hosts <- nil
		}()
	}
	seen := map[string]bool{}
	for i := 0; i < 2*n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		if h := <-hosts; h != nil {
			if seen[h.IP.String()] {
				t.Fatalf("two hosts got %v", h.IP)
			}
			seen[h.IP.String()] = true
		}
	}
	if len(seen) != n {
		t.Fatalf("%d distinct hosts, want %d", len(seen), n)
	}
}
