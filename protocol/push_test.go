package protocol

import (
	"bytes"
	"testing"
)

// checkPushVector checks the decoded values of the HEAD push vectors: the
// pushed record verifies and the ACK's msg_id is SHA-256 of its payload
// (the pushed record of the dht_push vector, which shares the key).
func checkPushVector(t *testing.T, v msgVector, pushID [32]byte) {
	t.Helper()
	m, err := DecodeMessage(unhex(t, v.Wire))
	if err != nil {
		t.Fatal(err)
	}
	switch b := m.Body.(type) {
	case BodyDHTPush:
		if err := VerifySignedRecord(b.Record, at(vecT0+10)); err != nil {
			t.Fatalf("pushed record: %v", err)
		}
		if err := CheckAuthority(b.Key, b.Record, at(vecT0+10)); err != nil {
			t.Fatalf("pushed record authority: %v", err)
		}
		if PushMsgID(b.Record) != pushID {
			t.Fatal("msg_id mismatch")
		}
	case BodyDHTPushAck:
		if b.MsgID != pushID {
			t.Fatalf("ack msg_id %x, want SHA-256(payload) %x", b.MsgID, pushID)
		}
		if b.OneShotSubscribe != (v.Name == "dht_push_ack_resubscribe") {
			t.Fatalf("one_shot_subscribe = %v", b.OneShotSubscribe)
		}
	default:
		t.Fatalf("body %T", m.Body)
	}
}

// pushMsgIDOf returns PushMsgID of the record in the dht_push vector.
func pushMsgIDOf(t *testing.T, vs []msgVector) [32]byte {
	t.Helper()
	for _, v := range vs {
		if v.Name != "dht_push" {
			continue
		}
		m, err := DecodeMessage(unhex(t, v.Wire))
		if err != nil {
			t.Fatal(err)
		}
		return PushMsgID(m.Body.(BodyDHTPush).Record)
	}
	t.Fatal("no dht_push vector")
	return [32]byte{}
}

// FuzzDecodePushBody: the DHT_PUSH / DHT_PUSH_ACK body decoders never panic,
// and an accepted body re-encodes to bytes that decode to the same encoding.
func FuzzDecodePushBody(f *testing.F) {
	var hf struct {
		Messages []msgVector `json:"messages"`
	}
	loadVectors(f, "head.json", &hf)
	for _, v := range hf.Messages {
		if v.Header.MsgType == MsgDHTPush || v.Header.MsgType == MsgDHTPushAck {
			f.Add(v.Header.MsgType, unhex(f, v.BodyCBOR))
		}
	}
	f.Fuzz(func(t *testing.T, mt uint8, data []byte) {
		if mt != MsgDHTPush && mt != MsgDHTPushAck {
			mt = MsgDHTPush + mt%2
		}
		b, _, err := decodePushBody(mt, data)
		if err != nil {
			return
		}
		enc, err := EncodeBody(b)
		if err != nil {
			t.Fatalf("accepted body does not re-encode: %v", err)
		}
		b2, _, err := decodePushBody(mt, enc)
		if err != nil {
			t.Fatalf("re-encoded body does not decode: %v", err)
		}
		if enc2, _ := EncodeBody(b2); !bytes.Equal(enc, enc2) {
			t.Fatal("push body encoding not stable")
		}
	})
}
