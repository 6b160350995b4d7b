package protocol

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// hdrHex is the canonical header of a PING with tx_id 01..14.
const hdrHex = "a401010200030104540102030405060708090a0b0c0d0e0f1011121314"

// rawEnvelope signs header‖body as given (alice) and wraps them without any
// checks, so tests can build hostile but correctly signed messages.
func rawEnvelope(t testing.TB, header, body []byte) []byte {
	t.Helper()
	sig, _ := keyAlice.sign(msgSigningInput(header, body))
	b := append([]byte{0xa4, 0x01}, header...)
	b = append(append(b, 0x02), body...)
	b = append(append(b, 0x03, 0x58, 0x20), keyAlice.pub...)
	return append(append(b, 0x04, 0x58, 0x40), sig...)
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func validPing(t testing.TB) []byte {
	var h Header
	copy(h.TxID[:], seqBytes(1, 20))
	b, err := EncodeMessage(h, BodyPing{Address: keyAlice.addr}, keyAlice.pub, keyAlice.sign)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pingBody() []byte { return append([]byte{0xa1, 0x01, 0x55}, keyAlice.addr[:]...) }

// nested returns n nested one-element arrays around 0x00.
func nested(n int) []byte { return append(bytes.Repeat([]byte{0x81}, n), 0x00) }

func TestMalformedMessages(t *testing.T) {
	ping := validPing(t)
	hdr := mustHex(hdrHex)
	flip := func(b []byte, i int) []byte { c := append([]byte{}, b...); c[i] ^= 1; return c }
	bigMap := func(n int) []byte {
		b := []byte{0xb9, byte(n >> 8), byte(n)}
		for i := 0; i < n; i++ {
			b = append(b, 0x19, byte((i+10)>>8), byte(i+10), 0x00)
		}
		return b
	}
	cases := []struct {
		name string
		in   []byte
		want []error
	}{
		{"empty", nil, []error{ErrMalformed, ErrTruncated}},
		{"truncated", ping[:len(ping)-10], []error{ErrMalformed, ErrTruncated}},
		{"oversized", make([]byte, MaxMessageSize+1), []error{ErrTooLarge}},
		{"trailing byte", append(append([]byte{}, ping...), 0x00), []error{ErrMalformed, ErrTrailingData}},
		{"outer is array", mustHex("80"), []error{ErrMalformed, ErrWrongType}},
		{"outer is text", mustHex("6161"), []error{ErrMalformed, ErrWrongType}},
		{"header is bytes", rawEnvelope(t, mustHex("4100"), pingBody()), []error{ErrMalformed, ErrWrongType}},
		{"msg_type 256", rawEnvelope(t, mustHex("a30101020003190100"), pingBody()), []error{ErrMalformed, ErrWrongType}},
		{"version is float", rawEnvelope(t, mustHex("a401f93c00020003010454"+hex.EncodeToString(seqBytes(1, 20))), pingBody()), []error{ErrMalformed, ErrWrongType}},
		{"tx_id 19 bytes", rawEnvelope(t, mustHex("a40101020003010453"+hex.EncodeToString(seqBytes(1, 19))), pingBody()), []error{ErrShape}},
		{"tx_id missing", rawEnvelope(t, mustHex("a3010102000301"), pingBody()), []error{ErrShape}},
		{"forged signature", flip(ping, len(ping)-1), []error{ErrBadSignature}},
		{"body swapped after signing", func() []byte {
			b := bytes.Replace(ping, keyAlice.addr[:], keyBob.addr[:], 1)
			return b
		}(), []error{ErrBadSignature}},
		{"indefinite outer map", append(append([]byte{0xbf}, ping[1:]...), 0xff), []error{ErrMalformed, ErrIndefiniteLength}},
		{"indefinite tx_id", rawEnvelope(t, mustHex("a4010102000301045f54"+hex.EncodeToString(seqBytes(1, 20))+"ff"), pingBody()), []error{ErrMalformed, ErrIndefiniteLength}},
		{"deep nesting", rawEnvelope(t, hdr, append(append(pingBody()[:0:0], 0xa2, 0x01, 0x55), append(keyAlice.addr[:], append([]byte{0x09}, nested(40)...)...)...)), []error{ErrMalformed, ErrTooDeep}},
		{"huge declared array", rawEnvelope(t, hdr, mustHex("a2015500000000000000000000000000000000000000000009"+"9b7fffffffffffffff")), []error{ErrMalformed}},
		{"huge declared byte string", mustHex("a4015b7fffffffffffffff"), []error{ErrMalformed, ErrTruncated}},
		{"too many map pairs", rawEnvelope(t, hdr, bigMap(MaxMapPairs+1)), []error{ErrMalformed, ErrTooManyElements}},
		{"too many array elements", rawEnvelope(t, mustHex("a401010200030404540102030405060708090a0b0c0d0e0f1011121314"),
			append(append([]byte{0xa2, 0x01, 0x99, byte((MaxArrayElements + 1) >> 8), byte((MaxArrayElements + 1) & 0xff)}, bytes.Repeat([]byte{0xa0}, MaxArrayElements+1)...), 0x02, 0x46, 1, 2, 3, 4, 5, 6)), []error{ErrMalformed, ErrTooManyElements}},
		{"duplicate header key", rawEnvelope(t, mustHex("a5010101010200030104540"+"1"+hex.EncodeToString(seqBytes(2, 19))), pingBody()), []error{ErrMalformed, ErrDuplicateKey}},
		{"tagged tx_id", rawEnvelope(t, mustHex("a401010200030104c254"+hex.EncodeToString(seqBytes(1, 20))), pingBody()), []error{ErrMalformed, ErrTagForbidden}},
		{"unknown msg_type 0x0d", rawEnvelope(t, mustHex("a401010200030d0454"+hex.EncodeToString(seqBytes(1, 20))), pingBody()), []error{ErrUnknownMsgType}},
		{"dht_push with a 21-byte key", rawEnvelope(t, mustHex("a401010200030b0454"+hex.EncodeToString(seqBytes(1, 20))), pingBody()), []error{ErrShape}},
		{"dht_push_ack with a 31-byte msg_id", rawEnvelope(t, mustHex("a401010200030c0454"+hex.EncodeToString(seqBytes(1, 20))),
			mustHex("a2015820"+hex.EncodeToString(make([]byte, 32))+"02581f"+hex.EncodeToString(make([]byte, 31)))), []error{ErrShape}},
		{"msg_type 0", rawEnvelope(t, mustHex("a40101020003000454"+hex.EncodeToString(seqBytes(1, 20))), pingBody()), []error{ErrUnknownMsgType}},
		{"ping for another address", rawEnvelope(t, hdr, append([]byte{0xa1, 0x01, 0x55}, keyBob.addr[:]...)), []error{ErrSenderMismatch}},
		{"ping address wrong type", rawEnvelope(t, hdr, mustHex("a10101")), []error{ErrMalformed, ErrWrongType}},
		{"invalid utf-8 key text", rawEnvelope(t, hdr, append(append([]byte{0xa2, 0x01, 0x55}, keyAlice.addr[:]...), 0x62, 0xff, 0xfe, 0x00)), []error{ErrMalformed, ErrInvalidUTF8}},
		{"node port 70000", rawEnvelope(t, mustHex("a401010200030404540102030405060708090a0b0c0d0e0f1011121314"),
			mustHex("a20181a40155"+hex.EncodeToString(make([]byte, 21))+"025820"+hex.EncodeToString(make([]byte, 32))+"034401020304041a000111700246cb0071071019")), []error{ErrMalformed, ErrWrongType}},
		{"negative seq in record", func() []byte {
			rec := mustHex("a80155" + hex.EncodeToString(keyAlice.addr[:]) + "020103f60420051a6955b90006190e10075820" + hex.EncodeToString(keyAlice.pub) + "075840" + hex.EncodeToString(make([]byte, 64)))
			return rawEnvelope(t, mustHex("a401010200030704540102030405060708090a0b0c0d0e0f1011121314"), append([]byte{0xa1, 0x01}, rec...))
		}(), []error{ErrMalformed}},
		{"store record signature 10 bytes", func() []byte {
			rec := mustHex("a80155" + hex.EncodeToString(keyAlice.addr[:]) + "020103f60401051a6955b90006190e10075820" + hex.EncodeToString(keyAlice.pub) + "084a" + hex.EncodeToString(make([]byte, 10)))
			return rawEnvelope(t, mustHex("a401010200030704540102030405060708090a0b0c0d0e0f1011121314"), append([]byte{0xa1, 0x01}, rec...))
		}(), []error{ErrShape, ErrRecordShape}},
		{"pubkey 33 bytes", func() []byte {
			var env wireEnvelope
			_ = cbor.Unmarshal(ping, &env)
			env.Pub = append(env.Pub, 0)
			b, _ := encMode.Marshal(env)
			return b
		}(), []error{ErrShape}},
		{"signature missing", func() []byte {
			var env wireEnvelope
			_ = cbor.Unmarshal(ping, &env)
			env.Sig = nil
			b, _ := encMode.Marshal(env)
			return b
		}(), []error{ErrShape}},
	}
	if len(cases) < 20 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := DecodeMessage(c.in)
			if err == nil {
				t.Fatalf("accepted: %+v", m)
			}
			for _, w := range c.want {
				if !errors.Is(err, w) {
					t.Errorf("error %q does not wrap %q", err, w)
				}
			}
		})
	}
}

func TestMalformedRecordsAndPayloads(t *testing.T) {
	base := SignedRecord{Address: keyAlice.addr, RecType: RecTypeEndpoint, Seq: 1, Timestamp: vecT0, TTL: 3600}
	base.Payload, _ = EncodeEndpointPayload(EndpointPayload{Endpoints: []string{"quic://203.0.113.5:4121"}})
	if err := SignRecord(&base, keyAlice.pub, keyAlice.sign); err != nil {
		t.Fatal(err)
	}
	resign := func(mut func(*SignedRecord)) SignedRecord {
		r := base
		mut(&r)
		if err := SignRecord(&r, keyAlice.pub, keyAlice.sign); err != nil {
			t.Fatal(err)
		}
		return r
	}
	encRec, _ := EncodeRecord(base)
	cases := []struct {
		name string
		err  func() error
		want error
	}{
		{"expired", func() error { return VerifySignedRecord(base, at(vecT0+3601)) }, ErrRecordExpired},
		{"future beyond skew", func() error { return VerifySignedRecord(base, at(vecT0-61)) }, ErrRecordFuture},
		{"future within skew accepted", func() error {
			if err := VerifySignedRecord(base, at(vecT0-60)); err != nil {
				return err
			}
			return ErrRecordFuture // sentinel to prove the branch ran
		}, ErrRecordFuture},
		{"timestamp near max u64 does not overflow", func() error {
			return VerifySignedRecord(resign(func(r *SignedRecord) { r.Timestamp = ^uint64(0) - 5 }), at(vecT0))
		}, ErrRecordFuture},
		{"forged record signature", func() error {
			r := base
			r.Signature = append([]byte{}, r.Signature...)
			r.Signature[0] ^= 1
			return VerifySignedRecord(r, at(vecT0))
		}, ErrRecordSignature},
		{"payload changed after signing", func() error {
			r := base
			r.Seq++
			return VerifySignedRecord(r, at(vecT0))
		}, ErrRecordSignature},
		{"pubkey 31 bytes", func() error { r := base; r.Pubkey = r.Pubkey[:31]; return VerifySignedRecord(r, at(vecT0)) }, ErrRecordShape},
		{"nat_type 5", func() error {
			return VerifySignedRecord(resign(func(r *SignedRecord) { r.Payload = mustHex("a201f60205") }), at(vecT0))
		}, ErrRecordPayload},
		{"endpoint payload not cbor", func() error {
			return VerifySignedRecord(resign(func(r *SignedRecord) { r.Payload = []byte("hello") }), at(vecT0))
		}, ErrRecordPayload},
		{"topic payload 513 bytes", func() error {
			return VerifySignedRecord(resign(func(r *SignedRecord) { r.RecType = RecTypeTopic; r.Payload = make([]byte, 513) }), at(vecT0))
		}, ErrRecordPayload},
		{"mailbox payload 513 bytes", func() error {
			return VerifySignedRecord(resign(func(r *SignedRecord) { r.RecType = RecTypeMailbox; r.Payload = make([]byte, 513) }), at(vecT0))
		}, ErrRecordPayload},
		{"record truncated", func() error { _, err := DecodeRecord(encRec[:len(encRec)-1]); return err }, ErrTruncated},
		{"record oversized", func() error { _, err := DecodeRecord(make([]byte, MaxRecordSize+1)); return err }, ErrTooLarge},
		{"record is array", func() error { _, err := DecodeRecord(mustHex("80")); return err }, ErrWrongType},
		{"delegation truncated", func() error { _, err := ParseDelegation(mustHex("a70158")); return err }, ErrTruncated},
		{"delegation wrong agent version", func() error {
			b, _ := EncodeDelegation(DelegationProof{OpPub: keyOp.pub, AgentAddr: [21]byte{0xA1}, Scope: 1, Signature: make([]byte, 64), MasterPub: keyMaster.pub})
			_, err := ParseDelegation(b)
			return err
		}, ErrDelegation},
		{"authority: foreign key", func() error { return CheckAuthority(keyBob.addr.NodeID(), base, at(vecT0)) }, ErrAuthority},
		{"authority: garbage delegation", func() error {
			r := base
			r.Address = keyBob.addr
			r.Delegation = []byte{0xff}
			return CheckAuthority(keyBob.addr.NodeID(), r, at(vecT0))
		}, ErrAuthority},
		{"endpoint 9 signals", func() error {
			_, err := EncodeEndpointPayload(EndpointPayload{Signals: make([]string, 9)})
			return err
		}, ErrRecordPayload},
		{"endpoint turn 513 bytes", func() error {
			_, err := DecodeEndpointPayload(mustHex("a301f60200048179020" + "1" + hex.EncodeToString(bytes.Repeat([]byte{'a'}, 513))))
			return err
		}, ErrRecordPayload},
		{"mailbox payload wrong nonce length", func() error {
			b, _ := marshal(wireMailbox{Recipient: keyBob.addr[:], Sender: keyAlice.addr[:], EphemeralPK: make([]byte, 32), Ciphertext: []byte{1}, Nonce: make([]byte, 11)})
			_, err := DecodeMailboxPayload(b)
			return err
		}, ErrShape},
		{"mailbox payload oversized", func() error { _, err := DecodeMailboxPayload(make([]byte, 600)); return err }, ErrTooLarge},
		{"udp addr 7 bytes", func() error { _, err := DecodeUDPAddr(make([]byte, 7)); return err }, ErrAddr},
		{"x25519 conversion of non-point", func() error {
			bad := bytes.Repeat([]byte{0xff}, 32)
			_, err := Ed25519PublicToX25519(bad)
			return err
		}, ErrMailbox},
		{"topic brief 141 runes", func() error {
			_, err := EncodeTopicPayload(TopicPayload{Topic: "t", Brief: string(bytes.Repeat([]byte("é"), 141))})
			return err
		}, ErrRecordPayload},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.err(); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}
