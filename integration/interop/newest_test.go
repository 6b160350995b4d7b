package interop

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/a2alnode/a2al/protocol"
)

// newestScenarios: the HEAD ordering of delegated records, which lets an
// owner retire an operational key by re-delegating.
var newestScenarios = []Scenario{
	{"re-delegation wins", dirOursToRef, func(t *testing.T, n *Net) {
		// Records for one address from two operational keys: the key
		// delegated later wins at ref2 despite a far lower seq, and the old
		// key cannot take the slot back with any seq.
		master, stolen, fresh := newOwner(t), newOwner(t), newOwner(t)
		now := time.Now()
		ref := udpAddr(t, n.Ref2.UDP)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		steps := []struct {
			what string
			rec  protocol.SignedRecord
		}{
			{"old key, seq 100", master.delegatedRecord(t, stolen, now.Add(-time.Hour), 100)},
			{"re-delegated key, seq 1", master.delegatedRecord(t, fresh, now, 1)},
			{"old key again, seq 1000", master.delegatedRecord(t, stolen, now.Add(-time.Hour), 1000)},
		}
		for _, s := range steps {
			if ok, err := n.DHT.StoreAt(ctx, ref, master.key(), s.rec); err != nil || !ok {
				t.Fatalf("STORE %s at ref2: %v %v", s.what, ok, err)
			}
		}
		recs, _, err := n.DHT.FindValueWithNodes(ctx, ref, master.key(), protocol.RecTypeEndpoint)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1 || !bytes.Equal(recs[0].Pubkey, fresh.pub()) || recs[0].Seq != 1 {
			t.Fatalf("ref2 holds %d records (want only the re-delegated key's seq 1): %+v", len(recs), recs)
		}
	}},
}

func (o owner) pub() ed25519.PublicKey { return o.priv.Public().(ed25519.PublicKey) }

// delegatedRecord is an endpoint record for o's address signed by op under
// a delegation from o issued at issued.
func (o owner) delegatedRecord(t testing.TB, op owner, issued time.Time, seq uint64) protocol.SignedRecord {
	t.Helper()
	p := protocol.DelegationProof{OpPub: op.pub(), IssuedAt: uint64(issued.Unix())}
	if err := protocol.SignDelegation(&p, o.pub(), o.sign); err != nil {
		t.Fatal(err)
	}
	proof, err := protocol.EncodeDelegation(p)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := protocol.EncodeEndpointPayload(protocol.EndpointPayload{Endpoints: []string{"quic://127.0.201.1:4121"}})
	if err != nil {
		t.Fatal(err)
	}
	rec := protocol.SignedRecord{Address: o.addr, RecType: protocol.RecTypeEndpoint, Payload: payload,
		Seq: seq, Timestamp: uint64(time.Now().Unix()), TTL: 3600, Delegation: proof}
	if err := protocol.SignRecord(&rec, op.pub(), op.sign); err != nil {
		t.Fatal(err)
	}
	return rec
}
