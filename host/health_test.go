package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/a2alnode/a2al/natprobe"
)

// TestUnreachableSTUNIsUnknownNotUDPBlocked: a node whose STUN server does
// not answer, while UDP to its DHT peer works, reports an unknown NAT type
// (and an error saying why), never udp-blocked.
func TestUnreachableSTUNIsUnknownNotUDPBlocked(t *testing.T) {
	dead, err := net.ListenPacket("udp4", "127.0.0.1:0") // bound, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	newHost := func(boot ...string) *Host {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		h, err := New(Config{Key: key, ListenAddr: "127.0.0.1:0", Bootstrap: boot, STUNServers: []string{dead.LocalAddr().String()},
			NATTimeout: 200 * time.Millisecond, DisableMaintenance: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	b := newHost()
	a := newHost(b.LocalAddr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Bootstrap(ctx); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	res, err := a.ClassifyNAT(ctx)
	if err == nil || res.Type != natprobe.TypeUnknown {
		t.Fatalf("classify with a silent STUN server: %v, %v; want unknown and an error", res.Type, err)
	}
	if nr, known := a.NATResult(); known || nr.Type == natprobe.TypeUDPBlocked {
		t.Fatalf("stored NAT result %v (known %v)", nr.Type, known)
	}
	if st := a.Status(); st.NAT != string(natprobe.TypeUnknown) {
		t.Fatalf("status NAT %q", st.NAT)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("classification ran out of time: %v", err)
	}
}

// TestNewRefusesBadHubURL: a hub URL nodes could not dial is a
// configuration error, not a warning followed by publishing it.
func TestNewRefusesBadHubURL(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	for _, u := range []string{"http://hub.example/v2/signal", "hub.example:4122"} {
		h, err := New(Config{Key: key, ListenAddr: "127.0.0.1:0", HubURLs: []string{u}, DisableMaintenance: true})
		if err == nil {
			h.Close()
			t.Fatalf("hub URL %q accepted", u)
		}
	}
}
