package dht

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

type vecRecord struct {
	Name          string `json:"name"`
	RecordCBORHex string `json:"record_cbor_hex"`
	StoreKeyHex   string `json:"store_key_hex"`
	Checks        []struct {
		Now        int64  `json:"now"`
		VerifyHead string `json:"verify_head"`
		AuthHead   string `json:"auth_head"`
	} `json:"checks"`
}

func loadRecordVectors(t *testing.T) []vecRecord {
	t.Helper()
	var doc struct {
		Records []vecRecord `json:"records"`
	}
	if err := json.Unmarshal(readVectors(t, "records.json"), &doc); err != nil {
		t.Fatalf("parse records.json: %v", err)
	}
	if len(doc.Records) == 0 {
		t.Fatal("no records in records.json")
	}
	return doc.Records
}

// TestSecureRecordAuthVectors checks the policy against the host authority
// results recorded with the reference (auth_head), and Store.Put against
// verification ∧ authority, including the STORE_RESP reason.
func TestSecureRecordAuthVectors(t *testing.T) {
	for _, v := range loadRecordVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			raw, err := hex.DecodeString(v.RecordCBORHex)
			if err != nil {
				t.Fatal(err)
			}
			var key a2al.NodeID
			copy(key[:], mustHex(v.StoreKeyHex))
			rec, decErr := protocol.DecodeRecord(raw)
			for _, c := range v.Checks {
				now := at(uint64(c.Now))
				if decErr != nil {
					if c.VerifyHead != "invalid_shape" {
						t.Fatalf("decode: %v", decErr)
					}
					continue
				}
				authErr := SecureRecordAuth(key, rec, now)
				if (authErr == nil) != (c.AuthHead == "ok") {
					t.Fatalf("now %d: SecureRecordAuth = %v, reference %s", c.Now, authErr, c.AuthHead)
				}
				if authErr != nil && (errors.Is(authErr, ErrStorePolicy) || !errors.Is(authErr, protocol.ErrAuthority)) {
					t.Fatalf("authority refusal must be a record error wrapping ErrAuthority: %v", authErr)
				}
				s := NewStore(SecureRecordAuth, 0)
				putErr := s.Put(key, rec, now)
				wantOK := c.VerifyHead == "ok" && c.AuthHead == "ok"
				if (putErr == nil) != wantOK {
					t.Fatalf("now %d: Put = %v, want ok=%v (verify %s, auth %s)", c.Now, putErr, wantOK, c.VerifyHead, c.AuthHead)
				}
				if _, _, reason := storeResp(putErr); putErr != nil && reason != protocol.StoreReasonRecordInvalid {
					t.Fatalf("now %d: Put = %v maps to reason %d, want RecordInvalid", c.Now, putErr, reason)
				}
			}
		})
	}
}

func TestSecureRecordAuthRules(t *testing.T) {
	now := at(testT0 + 10)
	topicKey := protocol.TopicKey("demo/echo")
	tests := []struct {
		name string
		key  a2al.NodeID
		rec  protocol.SignedRecord
		ok   bool
	}{
		{"self-signed endpoint", alice.id, mkRec(t, alice, protocol.RecTypeEndpoint, testEndpointPayload, 1, testT0, 3600), true},
		{"zero key means NodeID(address)", a2al.NodeID{}, mkRec(t, alice, 0x05, []byte{1}, 1, testT0, 3600), true},
		{"sovereign at foreign key", bob.id, mkRec(t, alice, 0x05, []byte{1}, 1, testT0, 3600), false},
		{"unknown type at foreign key", bob.id, mkRec(t, alice, 0x20, []byte{1}, 1, testT0, 3600), false},
		{"foreign signer", alice.id, mkRecFor(t, bob, alice.addr, protocol.RecTypeEndpoint, testEndpointPayload, 1, testT0, 3600), false},
		{"topic at topic key", topicKey, mkRec(t, bob, protocol.RecTypeTopic, testTopicPayload, 1, testT0, 3600), true},
		{"topic by foreign signer", topicKey, mkRecFor(t, bob, alice.addr, protocol.RecTypeTopic, testTopicPayload, 1, testT0, 3600), false},
		{"mailbox at recipient", bob.id, mkRec(t, alice, protocol.RecTypeMailbox, []byte{1}, 1, testT0, 3600), true},
		{"mailbox by foreign signer", bob.id, mkRecFor(t, bob, alice.addr, protocol.RecTypeMailbox, []byte{1}, 1, testT0, 3600), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := SecureRecordAuth(tc.key, tc.rec, now)
			if (err == nil) != tc.ok {
				t.Fatalf("SecureRecordAuth = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && errors.Is(err, ErrStorePolicy) {
				t.Fatalf("authority refusal wrapped as policy: %v", err)
			}
		})
	}
}
