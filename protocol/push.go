package protocol

import (
	"crypto/sha256"
	"fmt"

	"github.com/a2alnode/a2al"
)

// HEAD message types: a replica pushes a newly stored record to a node that
// subscribed with FIND_VALUE key 3, and the subscriber acknowledges it
// (docs/dht-push.md). v0.1.8 nodes drop both as unknown types.
const (
	MsgDHTPush    uint8 = 0x0B
	MsgDHTPushAck uint8 = 0x0C
)

// BodyDHTPush carries one record newly stored at Key.
type BodyDHTPush struct {
	Key    a2al.NodeID
	Record SignedRecord
}

// BodyDHTPushAck acknowledges a push. MsgID is PushMsgID of the pushed
// record; OneShotSubscribe asks the pusher to keep us subscribed for the
// next record.
type BodyDHTPushAck struct {
	Key              a2al.NodeID
	MsgID            [32]byte
	OneShotSubscribe bool
}

type wireDHTPush struct {
	Key    []byte     `cbor:"1,keyasint"`
	Record wireRecord `cbor:"2,keyasint"`
}

type wireDHTPushAck struct {
	Key       []byte `cbor:"1,keyasint"`
	MsgID     []byte `cbor:"2,keyasint"`
	Subscribe bool   `cbor:"3,keyasint,omitempty"`
}

// PushMsgID identifies a pushed record in its ACK: SHA-256 of the payload.
func PushMsgID(rec SignedRecord) [32]byte { return sha256.Sum256(rec.Payload) }

func pushToWire(body any) (any, bool, error) {
	switch b := body.(type) {
	case BodyDHTPush:
		if err := recordShape(b.Record); err != nil {
			return nil, true, fmt.Errorf("%w: pushed record: %w", ErrShape, err)
		}
		return wireDHTPush{Key: append([]byte{}, b.Key[:]...), Record: recordToWire(b.Record)}, true, nil
	case BodyDHTPushAck:
		return wireDHTPushAck{Key: append([]byte{}, b.Key[:]...), MsgID: append([]byte{}, b.MsgID[:]...), Subscribe: b.OneShotSubscribe}, true, nil
	}
	return nil, false, nil
}

// decodePushBody decodes the two HEAD bodies with their receive-side shape
// checks: both keys and the msg_id are exactly 32 bytes.
func decodePushBody(mt uint8, raw []byte) (any, any, error) {
	switch mt {
	case MsgDHTPush:
		var w wireDHTPush
		if err := unmarshal(raw, &w, "dht_push body"); err != nil {
			return nil, nil, err
		}
		if len(w.Key) != a2al.NodeIDLen {
			return nil, nil, fmt.Errorf("%w: dht_push key is %d bytes, want 32", ErrShape, len(w.Key))
		}
		r, err := recordFromWire(w.Record)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: pushed record: %w", ErrShape, err)
		}
		b := BodyDHTPush{Record: r}
		copy(b.Key[:], w.Key)
		return b, w, nil
	case MsgDHTPushAck:
		var w wireDHTPushAck
		if err := unmarshal(raw, &w, "dht_push_ack body"); err != nil {
			return nil, nil, err
		}
		if len(w.Key) != a2al.NodeIDLen {
			return nil, nil, fmt.Errorf("%w: dht_push_ack key is %d bytes, want 32", ErrShape, len(w.Key))
		}
		if len(w.MsgID) != sha256.Size {
			return nil, nil, fmt.Errorf("%w: dht_push_ack msg_id is %d bytes, want 32", ErrShape, len(w.MsgID))
		}
		b := BodyDHTPushAck{OneShotSubscribe: w.Subscribe}
		copy(b.Key[:], w.Key)
		copy(b.MsgID[:], w.MsgID)
		return b, w, nil
	}
	return nil, nil, fmt.Errorf("%w: %#x", ErrUnknownMsgType, mt)
}
