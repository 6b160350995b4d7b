package dht

import (
	"fmt"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// SecureRecordAuth is the authority policy every node should run
// (docs/wire.md §8.4, docs/dht.md §10.9): a record must be signed by the key of its Address or by
// an operational key holding a valid delegation from it, and sovereign records
// must sit at NodeID(Address). The reference left this to the host, so nodes
// built without it accepted records for any address from anyone (docs/reference-defects.md W-33).
//
// Authority failures describe a bad record (STORE_RESP reason 2), so they do
// not wrap ErrStorePolicy.
func SecureRecordAuth(key a2al.NodeID, rec protocol.SignedRecord, now time.Time) error {
	if key.IsZero() {
		key = a2al.NodeIDFromAddress(rec.Address)
	}
	if err := protocol.CheckAuthority(key, rec, now); err != nil {
		return fmt.Errorf("dht: record authority for %x type 0x%02x: %w", rec.Address[:], rec.RecType, err)
	}
	return nil
}

// compile-time check that SecureRecordAuth is a RecordAuthFunc.
var _ RecordAuthFunc = SecureRecordAuth
