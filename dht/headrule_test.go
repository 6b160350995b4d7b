package dht

import (
	"net"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// delegatedEndpoint is an endpoint record for master's address signed by
// op under a delegation issued at issuedAt.
func delegatedEndpoint(t *testing.T, master, op *testKeys, issuedAt time.Time, seq uint64) protocol.SignedRecord {
	t.Helper()
	p := protocol.DelegationProof{OpPub: op.pub(), IssuedAt: uint64(issuedAt.Unix())}
	if err := protocol.SignDelegation(&p, master.pub(), master.sign); err != nil {
		t.Fatal(err)
	}
	proof, err := protocol.EncodeDelegation(p)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := protocol.EncodeEndpointPayload(protocol.EndpointPayload{Endpoints: []string{"quic://203.0.113.9:4121"}})
	if err != nil {
		t.Fatal(err)
	}
	rec := protocol.SignedRecord{Address: master.addr, RecType: protocol.RecTypeEndpoint, Payload: payload,
		Seq: seq, Timestamp: uint64(time.Now().Unix()), TTL: 3600, Delegation: proof}
	if err := protocol.SignRecord(&rec, op.pub(), op.sign); err != nil {
		t.Fatal(err)
	}
	return rec
}

// An owner's re-delegation retires the old operational key on our replica:
// the new key's record replaces the old one despite a lower seq, and the
// old key (stolen, say) can no longer overwrite it with any seq.
func TestStoreReDelegationRevokesOldKey(t *testing.T) {
	c := newMemCluster(t)
	n := c.newNode(1, func(cfg *Config) { cfg.RecordAuth = SecureRecordAuth })
	master, stolen, fresh := newTestKeys(50), newTestKeys(51), newTestKeys(52)
	key := a2al.NodeIDFromAddress(master.addr)
	now := time.Now()
	src := &net.UDPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 4121}
	old := delegatedEndpoint(t, master, stolen, now.Add(-time.Hour), 100)
	if r := n.storeResponse(key, old, src, now); !r.Stored || r.AlreadyHad {
		t.Fatalf("old key's record: %+v", r)
	}
	renewed := delegatedEndpoint(t, master, fresh, now, 1)
	if r := n.storeResponse(key, renewed, src, now); !r.Stored || r.AlreadyHad {
		t.Fatalf("re-delegated record not stored: %+v", r)
	}
	attack := delegatedEndpoint(t, master, stolen, now.Add(-time.Hour), 1<<40)
	if r := n.storeResponse(key, attack, src, now); !r.AlreadyHad {
		t.Fatalf("old key overwrote the re-delegated record: %+v", r)
	}
	got := n.LocalStoreGet(key, protocol.RecTypeEndpoint)
	if len(got) != 1 || string(got[0].Pubkey) != string(fresh.pub()) {
		t.Fatalf("held %d records, want the fresh key's", len(got))
	}
}
