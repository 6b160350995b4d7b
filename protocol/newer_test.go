package protocol

import (
	"testing"
)

// newerVectorRecord builds a record for master's address: self-signed when
// issuedAt is 0, else signed by op under a master delegation issued then.
func newerVectorRecord(t *testing.T, seq, ts, issuedAt uint64) SignedRecord {
	t.Helper()
	rec := SignedRecord{Address: keyMaster.addr, RecType: RecTypeAgentProfile, Payload: []byte{0xa1, 0x01, 0x01}, Seq: seq, Timestamp: ts, TTL: 3600}
	signer := keyMaster
	if issuedAt != 0 {
		signer = keyOp
		rec.Delegation = delegationFor(t, keyOp.pub, issuedAt)
	}
	if err := SignRecord(&rec, signer.pub, signer.sign); err != nil {
		t.Fatal(err)
	}
	return rec
}

func delegationFor(t *testing.T, op []byte, issuedAt uint64) []byte {
	t.Helper()
	p := DelegationProof{OpPub: op, IssuedAt: issuedAt}
	if err := SignDelegation(&p, keyMaster.pub, keyMaster.sign); err != nil {
		t.Fatal(err)
	}
	b, err := EncodeDelegation(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A re-delegation retires the old operational key's record even with a
// higher seq (the owner's recovery path).
func TestRecordIsNewerReDelegation(t *testing.T) {
	old := newerVectorRecord(t, 50, vecT0, vecT0-100)
	fresh := newerVectorRecord(t, 1, vecT0, vecT0)
	if !RecordIsNewer(fresh, old) || RecordIsNewer(old, fresh) {
		t.Fatal("a later delegation must win over a higher seq")
	}
	if RecordIsNewerV018(fresh, old) {
		t.Fatal("v0.1.8 rule must still prefer the higher seq")
	}
}

// A proof attached to a self-signed record, or a proof for another key, is
// not what authorises the record and must not rank it (the reference's
// docs/dht-push.md: a captured record pinned with a fabricated issued_at).
func TestRecordIsNewerIgnoresForeignDelegation(t *testing.T) {
	legit := newerVectorRecord(t, 2, vecT0, 0)
	captured := newerVectorRecord(t, 1, vecT0, 0)
	captured.Delegation = delegationFor(t, keyOp.pub, 1<<62) // a real proof, but for op's key
	if DelegationIssuedAt(captured) != 0 {
		t.Fatal("delegation on a self-signed record counted")
	}
	if !RecordIsNewer(legit, captured) {
		t.Fatal("attached proof pinned a stale self-signed record")
	}
	delegated := newerVectorRecord(t, 1, vecT0, vecT0)
	delegated.Delegation = delegationFor(t, keyAlice.pub, 1<<62) // proof for another op key
	if got := DelegationIssuedAt(delegated); got != 0 {
		t.Fatalf("proof for a foreign key counted: %d", got)
	}
	delegated.Delegation = []byte{0xff, 0x00}
	if DelegationIssuedAt(delegated) != 0 {
		t.Fatal("unparsable proof counted")
	}
}
