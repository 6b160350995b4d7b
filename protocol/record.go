package protocol

import (
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/a2alnode/a2al"
)

// RecordFutureSkew is how far into the future a record timestamp may lie
// (docs/wire.md §8.3 [HEAD]); v0.1.8's zero tolerance breaks on any clock drift.
const RecordFutureSkew = 60 // seconds

// Category is the storage category of a rec_type (docs/wire.md §8.5).
type Category int

const (
	// CategoryUnknown is any reserved rec_type; it is stored like a sovereign record.
	CategoryUnknown Category = iota
	// CategorySovereign: 0x01–0x0F, stored at NodeID(address), slot (address, rec_type).
	CategorySovereign
	// CategoryTopic: 0x10–0x1F, slot = signing key.
	CategoryTopic
	// CategoryMailbox: 0x80–0x8F, stored at NodeID(recipient), slot (pubkey, payload, rec_type).
	CategoryMailbox
)

func (c Category) String() string {
	switch c {
	case CategorySovereign:
		return "sovereign"
	case CategoryTopic:
		return "topic"
	case CategoryMailbox:
		return "mailbox"
	}
	return "unknown"
}

// RecordCategory maps a rec_type to its category (the numbering of
// records.json "category": 0 unknown, 1 sovereign, 2 topic, 3 mailbox).
func RecordCategory(recType uint8) Category {
	switch {
	case recType >= 0x01 && recType <= 0x0F:
		return CategorySovereign
	case recType >= 0x10 && recType <= 0x1F:
		return CategoryTopic
	case recType >= 0x80 && recType <= 0x8F:
		return CategoryMailbox
	}
	return CategoryUnknown
}

// RecordSigningInput returns "a2al-rec\0" ‖ canonical {1..6} (docs/wire.md §8.2).
// A nil payload is encoded as null, an empty one as an empty byte string.
func RecordSigningInput(rec SignedRecord) ([]byte, error) {
	fields, err := marshal(wireRecordSignFields{
		Address:   rec.Address[:],
		RecType:   rec.RecType,
		Payload:   rec.Payload,
		Seq:       rec.Seq,
		Timestamp: rec.Timestamp,
		TTL:       rec.TTL,
	})
	if err != nil {
		return nil, err
	}
	return append(append(make([]byte, 0, len(recSignPrefix)+len(fields)), recSignPrefix...), fields...), nil
}

// SignRecord sets rec.Pubkey = pub and rec.Signature over fields 1–6. Like
// the reference signer it refuses ttl 0 and, when rec carries no delegation,
// an address that does not derive from pub.
func SignRecord(rec *SignedRecord, pub []byte, sign SignFunc) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: signing pubkey is %d bytes, want 32", ErrRecordShape, len(pub))
	}
	if rec.TTL == 0 {
		return fmt.Errorf("%w: refusing to sign a record with ttl 0", ErrRecordShape)
	}
	if len(rec.Delegation) == 0 && a2al.AddressFromEd25519(pub) != rec.Address {
		return fmt.Errorf("%w: key does not derive address %x and no delegation is attached", ErrAuthority, rec.Address[:])
	}
	in, err := RecordSigningInput(*rec)
	if err != nil {
		return err
	}
	sig, err := sign(in)
	if err != nil {
		return fmt.Errorf("a2al/protocol: sign record: %w", err)
	}
	if len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is %d bytes, want 64", ErrRecordShape, len(sig))
	}
	rec.Pubkey = append([]byte{}, pub...)
	rec.Signature = sig
	return nil
}

// unixNow converts now to non-negative Unix seconds.
func unixNow(now time.Time) uint64 {
	s := now.Unix()
	if s < 0 {
		return 0
	}
	return uint64(s)
}

// VerifySignedRecord checks integrity and freshness (docs/wire.md §8.3) in the
// reference's order: shape, signature, type-specific payload, time window
// (future skew RecordFutureSkew, expiry inclusive at timestamp+ttl). It says
// nothing about who may publish for the address; see CheckAuthority.
func VerifySignedRecord(rec SignedRecord, now time.Time) error {
	if len(rec.Pubkey) != ed25519.PublicKeySize || len(rec.Signature) != ed25519.SignatureSize {
		return fmt.Errorf("%w: pubkey %d bytes, signature %d bytes", ErrRecordShape, len(rec.Pubkey), len(rec.Signature))
	}
	in, err := RecordSigningInput(rec)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRecordShape, err)
	}
	if !ed25519.Verify(rec.Pubkey, in, rec.Signature) {
		return fmt.Errorf("%w: address %x rec_type %#x", ErrRecordSignature, rec.Address[:], rec.RecType)
	}
	if err := checkRecordPayload(rec); err != nil {
		return err
	}
	t := unixNow(now)
	if rec.Timestamp > t && rec.Timestamp-t > RecordFutureSkew {
		return fmt.Errorf("%w: timestamp %d, now %d", ErrRecordFuture, rec.Timestamp, t)
	}
	if t > rec.Timestamp && t-rec.Timestamp > uint64(rec.TTL) {
		return fmt.Errorf("%w: timestamp %d + ttl %d < now %d", ErrRecordExpired, rec.Timestamp, rec.TTL, t)
	}
	return nil
}

// checkRecordPayload applies the type-specific checks of docs/wire.md §8.3 step 3.
func checkRecordPayload(rec SignedRecord) error {
	switch {
	case rec.RecType == RecTypeEndpoint:
		if _, err := DecodeEndpointPayload(rec.Payload); err != nil {
			return fmt.Errorf("%w: endpoint: %w", ErrRecordPayload, err)
		}
	case rec.RecType == RecTypeTopic:
		if len(rec.Payload) > MaxTopicPayload {
			return fmt.Errorf("%w: topic payload %d bytes, limit %d", ErrRecordPayload, len(rec.Payload), MaxTopicPayload)
		}
		if _, err := DecodeTopicPayload(rec.Payload); err != nil {
			return fmt.Errorf("%w: topic: %w", ErrRecordPayload, err)
		}
	case RecordCategory(rec.RecType) == CategoryMailbox:
		if len(rec.Payload) > MaxMailboxPayload {
			return fmt.Errorf("%w: mailbox payload %d bytes, limit %d", ErrRecordPayload, len(rec.Payload), MaxMailboxPayload)
		}
	}
	return nil
}

// CheckAuthority applies the authority policy of docs/wire.md §8.4 for storage
// key `key`: sovereign and unknown categories must be stored at
// NodeID(address); then the record must be self-signed (pubkey derives the
// address) or carry a delegation proof for exactly this pubkey and address
// that verifies at now. Run it after VerifySignedRecord.
func CheckAuthority(key a2al.NodeID, rec SignedRecord, now time.Time) error {
	switch RecordCategory(rec.RecType) {
	case CategorySovereign, CategoryUnknown:
		if key != a2al.NodeIDFromAddress(rec.Address) {
			return fmt.Errorf("%w: sovereign record for %x offered under foreign key %x", ErrAuthority, rec.Address[:], key[:])
		}
	}
	if len(rec.Pubkey) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: pubkey is %d bytes", ErrAuthority, len(rec.Pubkey))
	}
	if a2al.AddressFromEd25519(rec.Pubkey) == rec.Address {
		return nil
	}
	if len(rec.Delegation) == 0 {
		return fmt.Errorf("%w: pubkey does not derive %x and no delegation", ErrAuthority, rec.Address[:])
	}
	p, err := ParseDelegation(rec.Delegation)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrAuthority, err)
	}
	if err := p.Authorizes(rec.Address, rec.Pubkey, now); err != nil {
		return fmt.Errorf("%w: %w", ErrAuthority, err)
	}
	return nil
}

// EncodeRecord returns the SignedRecord map as embedded in messages (docs/wire.md §8.1),
// after the shape check.
func EncodeRecord(rec SignedRecord) ([]byte, error) {
	if err := recordShape(rec); err != nil {
		return nil, err
	}
	return marshal(recordToWire(rec))
}

// DecodeRecord decodes a standalone SignedRecord map (control streams,
// mailbox frames) and applies the docs/wire.md §8.1 shape check. It does not verify.
func DecodeRecord(b []byte) (SignedRecord, error) {
	if len(b) > MaxRecordSize {
		return SignedRecord{}, fmt.Errorf("%w: record is %d bytes, limit %d", ErrTooLarge, len(b), MaxRecordSize)
	}
	var w wireRecord
	if err := unmarshal(b, &w, "record"); err != nil {
		return SignedRecord{}, err
	}
	return recordFromWire(w)
}
