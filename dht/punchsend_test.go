package dht

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// fullPunch has a connection to every peer whose send queue is always full.
type fullPunch struct{ refused atomic.Uint64 }

var errQueueFull = errors.New("send queue full")

func (f *fullPunch) SendTo(ctx context.Context, _ a2al.NodeID, _ []byte) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	f.refused.Add(1)
	return false, errQueueFull
}
func (f *fullPunch) HasConn(a2al.NodeID) bool                         { return true }
func (f *fullPunch) Punch(a2al.NodeID, *protocol.EndpointRecord, int) {}

// A punched connection that refuses a message (full queue) does not lose
// it: the request goes over UDP instead, and the fallback is counted.
func TestPunchedSendRefusedFallsBackToUDP(t *testing.T) {
	c := newMemCluster(t)
	fp := &fullPunch{}
	v := c.newNode(1, func(cfg *Config) { cfg.PunchTransport = fp })
	peer := c.newNode(2, nil)
	v.Start()
	peer.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The PING learns the peer's NodeID (PINGs themselves stay on UDP); the
	// FIND_NODE is offered to the punch layer first.
	if err := v.Ping(ctx, peer.LocalAddr()); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if _, err := v.FindNode(ctx, peer.LocalAddr(), v.NodeID()); err != nil {
		t.Fatalf("find_node: %v", err)
	}
	// Maintenance may send concurrently: every refusal is counted after it
	// happened, and the FIND_NODE's was.
	got := v.debugHealth()["punch_send_fallback"].(uint64)
	refused := fp.refused.Load()
	if got == 0 || got > refused {
		t.Fatalf("refused %d, punch_send_fallback %d", refused, got)
	}
	// A send whose context has ended goes nowhere and says why.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if sent, err := v.sendPunched(done, peer.NodeID(), []byte{1}); !sent || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled send: sent %v err %v", sent, err)
	}
}

// An RPC of a node that was never started fails at once instead of starting
// the node behind the caller's back.
func TestRPCBeforeStart(t *testing.T) {
	c := newMemCluster(t)
	v := c.newNode(1, nil)
	peer := c.newNode(2, nil)
	peer.Start()
	if err := v.Ping(context.Background(), peer.LocalAddr()); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("ping before Start: %v, want ErrNotStarted", err)
	}
	if v.started.Load() {
		t.Fatal("the RPC started the node")
	}
}
