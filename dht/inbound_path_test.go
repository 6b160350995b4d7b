package dht

import (
	"testing"
	"time"

	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

// Datagrams from punched connections enter the verify stage like UDP ones:
// InjectReceived queues a copy (the caller may reuse its buffer), a full
// punched lane drops and counts, and what was queued is verified once the
// workers run.
func TestInjectReceivedQueues(t *testing.T) {
	c := newMemCluster(t)
	n := c.newNode(1, nil) // not started: nothing drains the queue yet
	for cl := 0; cl < numClasses; cl++ {
		n.limiter.setSpec(cl, rateSpec{rate: 1e9, burst: 1e9})
	}
	peer := newTestKeys(2)
	from := transport.Addr{Name: "punched"}
	const extra = 3
	for i := 0; i < punchedQueueCap+extra; i++ {
		h := protocol.Header{Version: 1, MsgType: protocol.MsgPing, TxID: newTxID()}
		raw, err := protocol.EncodeMessage(h, protocol.BodyPing{Address: peer.addr}, peer.pub(), peer.sign)
		if err != nil {
			t.Fatal(err)
		}
		n.InjectReceived(raw, from)
		clear(raw) // the node must have kept its own copy
	}
	if got := n.cnt.dropPunchedQueue.Load(); got != extra {
		t.Fatalf("drop_punched_queue = %d, want %d", got, extra)
	}
	if got := n.cnt.rx.Load(); got != 0 {
		t.Fatalf("%d datagrams handled before the workers started", got)
	}
	n.Start()
	waitFor(t, 5*time.Second, "queued datagrams verified", func() bool { return n.cnt.rx.Load() == punchedQueueCap })
	if bad := n.cnt.dropDecode.Load() + n.cnt.dropSig.Load(); bad != 0 {
		t.Fatalf("%d queued datagrams failed to decode or verify (buffer not copied?)", bad)
	}
}
