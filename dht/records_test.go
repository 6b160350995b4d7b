package dht

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

func TestStoreAtFindValue(t *testing.T) {
	c := newMemCluster(t)
	a := c.newNode(1, nil)
	b := c.newNode(2, nil)
	a.Start()
	b.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Ping(ctx, b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	k := newTestKeys(50)
	rec := endpointRecord(t, k, 1, time.Now(), 3600, "ws://hub")
	ok, err := a.StoreAt(ctx, b.LocalAddr(), a2al.NodeID{}, rec)
	if err != nil || !ok {
		t.Fatalf("StoreAt: %v %v", ok, err)
	}
	// Same record again: AlreadyHad counts as stored.
	if ok, err := a.StoreAt(ctx, b.LocalAddr(), a2al.NodeID{}, rec); err != nil || !ok {
		t.Fatalf("StoreAt again: %v %v", ok, err)
	}
	key := k.addr.NodeID()
	if got := b.LocalStoreGet(key, 0); len(got) != 1 {
		t.Fatalf("b holds %d records", len(got))
	}
	if got := b.LocalStoreGetByAddress(k.addr, protocol.RecTypeEndpoint); len(got) != 1 {
		t.Fatalf("by address %d", len(got))
	}
	recs, _, err := a.FindValueWithNodes(ctx, b.LocalAddr(), key, 0)
	if err != nil || len(recs) != 1 {
		t.Fatalf("FindValueWithNodes: %d %v", len(recs), err)
	}
	best, err := a.FindValue(ctx, b.LocalAddr(), key)
	if err != nil || best == nil || best.Seq != 1 {
		t.Fatalf("FindValue: %v %v", best, err)
	}
	nodes, err := a.FindNode(ctx, b.LocalAddr(), key)
	if err != nil {
		t.Fatalf("FindNode: %v", err)
	}
	for _, ni := range nodes {
		if ni.NodeID == a.NodeID() {
			t.Fatal("answer contains the requester")
		}
	}
	// Sovereign record stored under a wrong key is refused (RecordInvalid).
	resp, _, err := a.storeAt(ctx, b.LocalAddr(), a2al.NodeID{9}, rec)
	if err != nil || resp.Stored || resp.Reason != protocol.StoreReasonRecordInvalid {
		t.Fatalf("wrong key: %+v %v", resp, err)
	}
	// TTL above the cap is a policy refusal.
	long := endpointRecord(t, k, 2, time.Now(), uint32((48 * time.Hour).Seconds()), "")
	resp, _, err = a.storeAt(ctx, b.LocalAddr(), a2al.NodeID{}, long)
	if err != nil || resp.Stored || resp.Reason != protocol.StoreReasonPolicy {
		t.Fatalf("long TTL: %+v %v", resp, err)
	}
	b.LocalStoreInvalidate(key, 0)
	if got := b.LocalStoreGet(key, 0); len(got) != 0 {
		t.Fatal("invalidate did not drop")
	}
	if err := b.LocalStorePut(a2al.NodeID{}, rec); err != nil {
		t.Fatalf("LocalStorePut: %v", err)
	}
	b.SetMaxStoreKeys(1)
	if err := b.LocalStorePut(a2al.NodeID{}, endpointRecord(t, newTestKeys(51), 1, time.Now(), 3600, "")); err != nil {
		t.Fatal(err)
	}
	if b.store.Len() != 1 {
		t.Fatalf("SetMaxStoreKeys not applied: %d keys", b.store.Len())
	}
}

func TestPublishReplicateResolve(t *testing.T) {
	c := newMemCluster(t)
	c.build(30, nil)
	pub := c.nodes[4]
	k := c.keys[4]
	rec := endpointRecord(t, k, 1, time.Now(), 3600, "ws://hub.example")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pub.PublishEndpointRecord(ctx, rec); err != nil {
		t.Fatalf("publish: %v", err)
	}
	key := pub.NodeID()
	waitFor(t, 10*time.Second, "8 replicas", func() bool { return pub.RepSetSize(key, key) >= nRep })
	holders := 0
	for _, n := range c.nodes {
		if n != pub && len(n.LocalStoreGet(key, 0)) > 0 {
			holders++
		}
	}
	if holders < nRep {
		t.Fatalf("only %d remote holders", holders)
	}
	// A node that never heard of it resolves it over the network.
	er, err := NewQuery(c.nodes[20]).Resolve(ctx, key)
	if err != nil || er.Signal != "ws://hub.example" {
		t.Fatalf("Resolve: %v %v", er, err)
	}
	// Now cached locally: FindRecords answers from the fast path.
	if got := c.nodes[20].LocalStoreGet(key, protocol.RecTypeEndpoint); len(got) != 1 {
		t.Fatal("FindRecords did not cache the result")
	}
	// Unknown key: ErrNoEndpoint / ErrNoMatchingRecords.
	if _, err := NewQuery(c.nodes[21]).Resolve(ctx, a2al.NodeID{1, 2, 3}); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("missing: %v", err)
	}
	if _, err := NewQuery(c.nodes[21]).FindRecords(ctx, a2al.NodeID{1, 2, 3}, 0); !errors.Is(err, ErrNoMatchingRecords) {
		t.Fatalf("missing records: %v", err)
	}
	pub.RemoveRepSetsForPublisher(key)
	if pub.RepSetSize(key, key) != 0 {
		t.Fatal("rep set not removed")
	}
}

func TestTopicAggregate(t *testing.T) {
	c := newMemCluster(t)
	c.build(20, nil)
	topicKey := protocol.TopicKey("chess")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 2; i < 5; i++ {
		k := c.keys[i]
		payload, err := protocol.EncodeTopicPayload(protocol.TopicPayload{Topic: "chess", Brief: "player"})
		if err != nil {
			t.Fatal(err)
		}
		rec := protocol.SignedRecord{Address: k.addr, RecType: protocol.RecTypeTopic, Payload: payload, Seq: 1, Timestamp: uint64(time.Now().Unix()), TTL: 3600}
		if err := protocol.SignRecord(&rec, k.pub(), k.sign); err != nil {
			t.Fatal(err)
		}
		if err := c.nodes[i].PublishTopicRecord(ctx, topicKey, rec); err != nil {
			t.Fatalf("publish topic: %v", err)
		}
		if err := c.nodes[i].PublishMailboxRecord(ctx, topicKey, rec); !errors.Is(err, errNotMailbox) {
			t.Fatalf("topic as mailbox: %v", err)
		}
		waitFor(t, 10*time.Second, "topic replicas", func() bool {
			return c.nodes[i].RepSetSize(topicKey, c.nodes[i].NodeID()) >= nRep
		})
	}
	if err := c.nodes[2].PublishTopicRecord(ctx, topicKey, endpointRecord(t, c.keys[2], 1, time.Now(), 60, "")); !errors.Is(err, errNotTopic) {
		t.Fatalf("endpoint as topic: %v", err)
	}
	recs, err := NewQuery(c.nodes[15]).AggregateRecords(ctx, topicKey, protocol.RecTypeTopic)
	if err != nil || len(recs) != 3 {
		t.Fatalf("aggregate: %d %v", len(recs), err)
	}
}

func TestMailboxPublishAndObservedAddr(t *testing.T) {
	c := newMemCluster(t)
	c.build(12, nil)
	recipient := c.nodes[7].NodeID()
	rec := mailboxRecord(t, c.keys[2], "sealed")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.nodes[2].PublishMailboxRecord(ctx, recipient, rec); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[2].PublishTopicRecord(ctx, recipient, rec); !errors.Is(err, errNotTopic) {
		t.Fatalf("mailbox as topic: %v", err)
	}
	waitFor(t, 10*time.Second, "mailbox replicated", func() bool {
		return c.nodes[2].RepSetSize(recipient, c.nodes[2].NodeID()) >= nRep
	})
	got, err := NewQuery(c.nodes[7]).AggregateRecords(ctx, recipient, protocol.RecTypeMailbox)
	if err != nil || len(got) != 1 || string(got[0].Payload) != "sealed" {
		t.Fatalf("mailbox fetch: %v %v", got, err)
	}
	var nilNode *Node
	if err := nilNode.PublishMailboxRecord(ctx, recipient, rec); !errors.Is(err, errNilNode) {
		t.Fatal("nil node publish")
	}

	if w := ObservedAddr(&net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 4121}); len(w) != 6 || w[0] != 198 || w[4] != 0x10 || w[5] != 0x19 {
		t.Fatalf("v4 observed %x", w)
	}
	if w := ObservedAddr(&net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1}); len(w) != 18 {
		t.Fatalf("v6 observed %x", w)
	}
	if w := ObservedAddr(transport.Addr{Name: "x"}); len(w) != 6 || w[0] != 127 || w[5] != 0 {
		t.Fatalf("mem observed %x", w)
	}
}
