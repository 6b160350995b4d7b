package host

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/signal"
)

// A peer flooding an ICE session with candidates gets only
// Limits.RemoteCandidates of them added; the rest are refused and counted.
func TestICERemoteCandidatesBounded(t *testing.T) {
	s := newSim(t, 0)
	n, _ := s.addNode(natprobe.TypeFullCone)
	ours, peer := memSigPair()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	is, err := startICE(ctx, n.env, ours, false, nil, nil)
	if err != nil {
		t.Fatalf("start ICE: %v", err)
	}
	defer is.Close()
	send := func(m signal.Signal) {
		if err := peer.Send(ctx, m); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	send(signal.Signal{Kind: signal.KindCred, Ufrag: "ufragufragufrag1", Pwd: "passwordpasswordpassword1"})
	const flood = 200
	for i := range flood {
		cand := fmt.Sprintf("candidate:%d 1 udp 2130706431 192.0.2.%d %d typ host", i, 1+i%200, 10000+i)
		send(signal.Signal{Kind: signal.KindCand, Candidate: cand})
	}
	want := uint64(flood - n.cfg.Limits.RemoteCandidates)
	deadline := time.Now().Add(10 * time.Second)
	for is.candsDropped.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("dropped %d remote candidates, want %d", is.candsDropped.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := is.candsDropped.Load(); got != want {
		t.Fatalf("dropped %d remote candidates, want exactly %d", got, want)
	}
}
