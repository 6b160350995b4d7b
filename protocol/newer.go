package protocol

import (
	"bytes"

	"github.com/a2alnode/a2al"
)

// RecordIsNewer reports whether a supersedes b in a slot, by the HEAD rule
// (docs/dht-push.md, "Which record is newest"): the record whose delegation
// was issued later wins; only on a tie does the v0.1.8 rule decide. An owner
// who re-delegates to a fresh operational key thereby retires every record
// of the old key, whatever its seq.
//
// Unlike the reference, a delegation counts only when it is what authorises
// the record: a self-signed record, or a delegation for another key or
// address, counts as issued_at 0, so nobody can pin a captured record by
// attaching a fabricated proof (the proof is outside the record signature).
// The proof's own signature is not checked here: compare only records that
// passed CheckAuthority, as the store and lookups do.
func RecordIsNewer(a, b SignedRecord) bool {
	ia, ib := DelegationIssuedAt(a), DelegationIssuedAt(b)
	if ia != ib {
		return ia > ib
	}
	return RecordIsNewerV018(a, b)
}

// RecordIsNewerV018 is the v0.1.8 ordering: larger seq wins, then larger
// timestamp; equal is not newer.
func RecordIsNewerV018(a, b SignedRecord) bool {
	if a.Seq != b.Seq {
		return a.Seq > b.Seq
	}
	return a.Timestamp > b.Timestamp
}

// DelegationIssuedAt is the issued_at of the delegation that authorises rec,
// or 0 when rec is self-signed or carries no proof for its own key and
// address.
func DelegationIssuedAt(rec SignedRecord) uint64 {
	if len(rec.Delegation) == 0 || len(rec.Pubkey) != 32 || a2al.AddressFromEd25519(rec.Pubkey) == rec.Address {
		return 0
	}
	p, err := ParseDelegation(rec.Delegation)
	if err != nil || p.AgentAddr != rec.Address || !bytes.Equal(p.OpPub, rec.Pubkey) {
		return 0
	}
	return p.IssuedAt
}
