package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/a2alnode/a2al"
)

func seedMessages(f *testing.F) {
	var mf messagesFile
	loadVectors(f, "messages.json", &mf)
	for _, v := range append(mf.Valid, mf.EdgeCases...) {
		f.Add(unhex(f, v.Wire))
	}
	var hf struct {
		Messages []msgVector `json:"messages"`
	}
	loadVectors(f, "head.json", &hf)
	for _, v := range hf.Messages {
		f.Add(unhex(f, v.Wire))
	}
}

func seedRecords(f *testing.F) [][]byte {
	var rf recordsFile
	loadVectors(f, "records.json", &rf)
	var out [][]byte
	for _, r := range rf.Records {
		out = append(out, unhex(f, r.RecordCBOR))
	}
	return out
}

// FuzzDecodeMessage: no panic; every accepted message re-encodes (as the
// sender would) to a message that decodes to the same values, and a message
// verified over its raw bytes in canonical form re-encodes byte-identically.
func FuzzDecodeMessage(f *testing.F) {
	seedMessages(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMessage(data)
		if err != nil {
			return
		}
		body, err := EncodeBody(m.Body)
		if err != nil {
			t.Fatalf("accepted body does not re-encode: %v", err)
		}
		m2, err := decodeBodyOnly(m.Header.MsgType, body)
		if err != nil {
			t.Fatalf("re-encoded body does not decode: %v", err)
		}
		body2, _ := EncodeBody(m2)
		if !bytes.Equal(body, body2) {
			t.Fatalf("body encoding not stable")
		}
	})
}

func decodeBodyOnly(mt uint8, b []byte) (any, error) {
	v, _, err := decodeBody(mt, b)
	return v, err
}

// FuzzDecodeRecordVerify: decode, verify and authority-check any input
// without panic; decodable records round-trip byte-exactly when canonical.
func FuzzDecodeRecordVerify(f *testing.F) {
	for _, r := range seedRecords(f) {
		f.Add(r, int64(vecT0+10))
	}
	f.Fuzz(func(t *testing.T, data []byte, now int64) {
		rec, err := DecodeRecord(data)
		if err != nil {
			return
		}
		_ = VerifySignedRecord(rec, at(now))
		_ = CheckAuthority(a2al.NodeIDFromAddress(rec.Address), rec, at(now))
		enc, err := EncodeRecord(rec)
		if err != nil {
			t.Fatalf("decoded record does not re-encode: %v", err)
		}
		rec2, err := DecodeRecord(enc)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if enc2, _ := EncodeRecord(rec2); !bytes.Equal(enc, enc2) {
			t.Fatal("record encoding not stable")
		}
	})
}

// FuzzDelegation: parse + verify arbitrary proofs; parsed proofs re-encode stably.
func FuzzDelegation(f *testing.F) {
	var df delegationFile
	loadVectors(f, "delegation.json", &df)
	for _, c := range []delegCase{df.Ed25519, df.NoExpiry, df.Ethereum, df.Paralism} {
		f.Add(unhex(f, c.Proof), int64(vecT0))
	}
	for _, inv := range df.Invalid {
		f.Add(unhex(f, inv.Proof), int64(vecT0))
	}
	f.Fuzz(func(t *testing.T, data []byte, now int64) {
		p, err := ParseDelegation(data)
		if err != nil {
			return
		}
		_ = p.Verify(at(now))
		_ = p.Authorizes(p.AgentAddr, p.OpPub, at(now))
		enc, err := EncodeDelegation(*p)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := ParseDelegation(enc)
		if err != nil {
			t.Fatalf("re-encoded proof does not parse: %v", err)
		}
		if enc2, _ := EncodeDelegation(*p2); !bytes.Equal(enc, enc2) {
			t.Fatal("proof encoding not stable")
		}
	})
}

// FuzzEndpointPayload: decoded payloads satisfy the limits and round-trip.
func FuzzEndpointPayload(f *testing.F) {
	var rf recordsFile
	loadVectors(f, "records.json", &rf)
	for _, r := range rf.Records {
		if r.RecType == RecTypeEndpoint {
			f.Add(unhex(f, r.PayloadHex))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodeEndpointPayload(data)
		if err != nil {
			return
		}
		if checkEndpointLimits(*p) != nil {
			t.Fatal("decoded payload violates limits")
		}
		enc, err := EncodeEndpointPayload(*p)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := DecodeEndpointPayload(enc)
		if err != nil {
			t.Fatal(err)
		}
		if enc2, _ := EncodeEndpointPayload(*p2); !bytes.Equal(enc, enc2) {
			t.Fatal("endpoint encoding not stable")
		}
	})
}

// FuzzMailboxPayload: decode arbitrary payloads and try to open them; a
// payload built by EncryptMailbox from fuzzed plaintext always decrypts.
func FuzzMailboxPayload(f *testing.F) {
	var mf mailboxFile
	loadVectors(f, "mailbox.json", &mf)
	f.Add(unhex(f, mf.PayloadCBOR), uint8(3), []byte("hello bob"))
	priv, _ := X25519PrivateFromSeed(seqBytes(0x20, 32))
	f.Fuzz(func(t *testing.T, data []byte, msgType uint8, body []byte) {
		if p, err := DecodeMailboxPayload(data); err == nil {
			rec := SignedRecord{Address: p.Sender, RecType: RecTypeMailbox, Payload: data}
			_, _ = DecryptMailbox(rec, p.Recipient, priv)
			if enc, err := EncodeMailboxPayload(*p); err != nil || len(enc) > MaxMailboxPayload {
				t.Fatalf("decoded payload does not re-encode: %v", err)
			}
		}
		rnd := bytes.NewReader(append(bytes.Repeat([]byte{7}, 32), binary.BigEndian.AppendUint32(make([]byte, 8), uint32(len(body)))...))
		payload, err := EncryptMailbox(keyAlice.addr, keyBob.addr, keyBob.pub, MailboxMessage{MsgType: msgType, Body: body}, rnd)
		if err != nil {
			return // too large for 512 bytes
		}
		m, err := DecryptMailbox(SignedRecord{Address: keyAlice.addr, RecType: RecTypeMailbox, Payload: payload}, keyBob.addr, priv)
		if err != nil || m.MsgType != msgType || !bytes.Equal(m.Body, body) {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}

func FuzzParseEndpointURL(f *testing.F) {
	for _, s := range []string{"quic://203.0.113.5:4121", "udp://[2001:db8::1]:7", "quic://a:0", "ws://x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ep string) {
		host, port, err := ParseEndpointURL(ep)
		if err != nil {
			if !errors.Is(err, ErrEndpointURL) {
				t.Fatalf("%q: error %v does not wrap ErrEndpointURL", ep, err)
			}
			return
		}
		if host == "" || port == 0 {
			t.Fatalf("%q: accepted with host %q port %d", ep, host, port)
		}
	})
}
