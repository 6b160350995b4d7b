package interop

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// pushScenarios: HEAD's one-shot subscription and DHT_PUSH (the reference
// is v0.2.9, a HEAD node), in both directions.
var pushScenarios = []Scenario{
	{"dht push to subscriber", dirRefToOurs, func(t *testing.T, n *Net) {
		// Our in-process node stores a record at ref2, subscribes there with
		// FIND_VALUE key 3, stores a newer record: ref2 must push it to us.
		o := newOwner(t)
		ref := udpAddr(t, n.Ref2.UDP)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if ok, err := n.DHT.StoreAt(ctx, ref, o.key(), o.record(t, 1)); err != nil || !ok {
			t.Fatalf("STORE seq 1 at ref2: %v %v", ok, err)
		}
		got := make(chan protocol.SignedRecord, 4)
		n.DHT.SetPushHandler(func(k a2al.NodeID, rec protocol.SignedRecord, from a2al.NodeID) bool {
			if k == o.key() && from.String() == nodeIDText(t, n.Ref2.AID) {
				select {
				case got <- rec:
				default:
				}
			}
			return false
		})
		defer n.DHT.SetPushHandler(nil)
		recs, _, err := n.DHT.FindValueSubscribe(ctx, ref, o.key(), 0)
		if err != nil || len(recs) == 0 {
			t.Fatalf("subscribing FIND_VALUE at ref2: %d records, %v", len(recs), err)
		}
		if ok, err := n.DHT.StoreAt(ctx, ref, o.key(), o.record(t, 2)); err != nil || !ok {
			t.Fatalf("STORE seq 2 at ref2: %v %v", ok, err)
		}
		select {
		case rec := <-got:
			if rec.Seq != 2 || rec.Address != o.addr {
				t.Fatalf("pushed record seq %d for %s", rec.Seq, rec.Address)
			}
		case <-ctx.Done():
			t.Fatalf("no DHT_PUSH from ref2: %v", n.DHT.PushStatsData())
		}
	}},
	{"dht push to subscriber", dirOursToRef, func(t *testing.T, n *Net) {
		// A replica of ours holds a topic registration; ref1 discovers the
		// topic (its exhaustive lookup subscribes at nodes that hold records);
		// a second registration stored at our replica must be pushed to ref1
		// and acknowledged for exactly that record.
		rep := n.W.DHTNode(n.W.NextIP())
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := rep.BootstrapAddrs(ctx, []net.Addr{udpAddr(t, n.Ref1.UDP)}); err != nil {
			t.Fatal(err)
		}
		topic := fmt.Sprintf("interop-push-%d", time.Now().UnixNano())
		key := protocol.TopicKey(topic)
		if err := rep.LocalStorePut(key, newOwner(t).topicRecord(t, topic)); err != nil {
			t.Fatal(err)
		}
		if err := Eventually(15*time.Second, func() error {
			if err := n.Ref1.Call(http.MethodPost, "/discover", map[string]any{"services": []string{topic}}, nil); err != nil {
				return err
			}
			if st := rep.PushStatsData(); st.Subscriptions == 0 {
				return fmt.Errorf("ref1 did not subscribe at our replica: %v", st)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if ok, err := n.DHT.StoreAt(ctx, rep.LocalAddr(), key, newOwner(t).topicRecord(t, topic)); err != nil || !ok {
			t.Fatalf("STORE of a second registration at our replica: %v %v", ok, err)
		}
		if err := Eventually(10*time.Second, func() error {
			if st := rep.PushStatsData(); st.Acked == 0 || st.AckBad != 0 {
				return fmt.Errorf("push not acknowledged by ref1: %v", st)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}},
}

// owner is an identity whose records the push scenarios publish.
type owner struct {
	priv ed25519.PrivateKey
	addr a2al.Address
}

func newOwner(t testing.TB) owner {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return owner{priv: priv, addr: a2al.AddressFromEd25519(priv.Public().(ed25519.PublicKey))}
}

func (o owner) key() a2al.NodeID { return a2al.NodeIDFromAddress(o.addr) }

// record is an endpoint record with sequence seq (endpoints differ by seq so
// every record has its own payload and msg_id).
func (o owner) record(t testing.TB, seq uint64) protocol.SignedRecord {
	t.Helper()
	rec, err := protocol.NewEndpointRecord(o.addr, protocol.EndpointPayload{Endpoints: []string{fmt.Sprintf("quic://127.0.200.%d:4121", seq)}},
		seq, uint64(time.Now().Unix()), 3600, o.pub(), o.sign)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// topicRecord registers o under topic.
func (o owner) topicRecord(t testing.TB, topic string) protocol.SignedRecord {
	t.Helper()
	p, err := protocol.EncodeTopicPayload(protocol.TopicPayload{Topic: topic, Brief: "interop " + o.addr.String()[:8]})
	if err != nil {
		t.Fatal(err)
	}
	rec := protocol.SignedRecord{Address: o.addr, RecType: protocol.RecTypeTopic, Payload: p, Seq: 1, Timestamp: uint64(time.Now().Unix()), TTL: 600}
	if err := protocol.SignRecord(&rec, o.pub(), o.sign); err != nil {
		t.Fatal(err)
	}
	return rec
}

func (o owner) sign(m []byte) ([]byte, error) { return ed25519.Sign(o.priv, m), nil }

func nodeIDText(t testing.TB, aid string) string {
	t.Helper()
	a, err := a2al.ParseAddress(aid)
	if err != nil {
		t.Fatal(err)
	}
	return a2al.NodeIDFromAddress(a).String()
}
