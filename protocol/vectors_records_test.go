package protocol

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/a2alnode/a2al"
)

type recordVector struct {
	Name          string `json:"name"`
	RecType       uint8  `json:"rec_type"`
	Category      int    `json:"category"`
	Signer        string `json:"signer"`
	AddressHex    string `json:"address_hex"`
	PubkeyHex     string `json:"pubkey_hex"`
	Seq           uint64 `json:"seq"`
	Timestamp     uint64 `json:"timestamp"`
	TTL           uint32 `json:"ttl"`
	PayloadHex    string `json:"payload_hex"`
	PayloadIsNull bool   `json:"payload_is_null"`
	DelegationHex string `json:"delegation_hex"`
	SignFields    string `json:"sign_fields_cbor_hex"`
	SigningInput  string `json:"signing_input_hex"`
	Signature     string `json:"signature_hex"`
	RecordCBOR    string `json:"record_cbor_hex"`
	StoreKey      string `json:"store_key_hex"`
	Checks        []struct {
		Now        int64  `json:"now"`
		VerifyV018 string `json:"verify_v018"`
		VerifyHead string `json:"verify_head"`
		AuthV018   string `json:"auth_v018"`
		AuthHead   string `json:"auth_head"`
		Detail     string `json:"detail"`
	} `json:"checks"`
}

type recordsFile struct {
	T0            int64          `json:"T0"`
	SignPrefix    string         `json:"sign_prefix_hex"`
	Records       []recordVector `json:"records"`
	RecordIsNewer []struct {
		A, B struct {
			Seq       uint64 `json:"seq"`
			Timestamp uint64 `json:"timestamp"`
			IssuedAt  uint64 `json:"delegation_issued_at"`
		}
		NewerV018 bool `json:"a_is_newer_v018"`
		NewerHead bool `json:"a_is_newer_head"`
	} `json:"record_is_newer"`
	StoreSequences []struct {
		Name  string `json:"name"`
		Now   int64  `json:"now"`
		Steps []struct {
			Step      string `json:"step"`
			KeyHex    string `json:"key_hex"`
			AddrHex   string `json:"record_address_hex"`
			RecType   uint8  `json:"rec_type"`
			Seq       uint64 `json:"seq"`
			Timestamp uint64 `json:"timestamp"`
			Result    string `json:"result"`
			StoreResp struct {
				Stored     bool  `json:"stored"`
				AlreadyHad bool  `json:"already_had"`
				Reason     uint8 `json:"reason"`
			} `json:"store_resp"`
			Held []struct {
				AddrHex   string `json:"address_hex"`
				RecType   uint8  `json:"rec_type"`
				Seq       uint64 `json:"seq"`
				Timestamp uint64 `json:"timestamp"`
			} `json:"held_at_key_after"`
		} `json:"steps"`
	} `json:"store_sequences"`
}

func signerKey(name string) (testKey, bool) {
	switch {
	case strings.HasPrefix(name, "alice"):
		return keyAlice, true
	case strings.HasPrefix(name, "bob"):
		return keyBob, true
	case strings.HasPrefix(name, "op"):
		return keyOp, true
	}
	return testKey{}, false
}

// verifyClass maps our errors to the vector vocabulary.
func verifyClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrRecordShape):
		return "invalid_shape"
	case errors.Is(err, ErrRecordExpired):
		return "expired"
	case errors.Is(err, ErrRecordSignature), errors.Is(err, ErrRecordPayload), errors.Is(err, ErrRecordFuture):
		return "invalid_record"
	}
	return "unexpected: " + err.Error()
}

func authClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrAuthority):
		return "rejected"
	}
	return "unexpected: " + err.Error()
}

func checkRecordVector(t *testing.T, v recordVector) {
	raw := unhex(t, v.RecordCBOR)
	rec, err := DecodeRecord(raw)
	if len(v.AddressHex) != 2*a2al.AddressLen {
		// Cannot be represented: every check must say invalid_shape / rejected.
		if !errors.Is(err, ErrRecordShape) {
			t.Fatalf("DecodeRecord: want ErrRecordShape, got %v", err)
		}
		for _, c := range v.Checks {
			if c.VerifyHead != "invalid_shape" || c.AuthHead != "rejected" {
				t.Fatalf("vector expects %s/%s for an unrepresentable record", c.VerifyHead, c.AuthHead)
			}
		}
		return
	}
	if err != nil {
		t.Fatalf("DecodeRecord: %v", err)
	}
	if !bytes.Equal(rec.Address[:], unhex(t, v.AddressHex)) || rec.RecType != v.RecType || rec.Seq != v.Seq ||
		rec.Timestamp != v.Timestamp || rec.TTL != v.TTL || !bytes.Equal(rec.Pubkey, unhex(t, v.PubkeyHex)) ||
		!bytes.Equal(rec.Signature, unhex(t, v.Signature)) || !bytes.Equal(rec.Delegation, unhex(t, v.DelegationHex)) {
		t.Fatalf("decoded record fields differ from vector: %+v", rec)
	}
	if v.PayloadIsNull != (rec.Payload == nil) || !bytes.Equal(rec.Payload, unhex(t, v.PayloadHex)) {
		t.Fatalf("payload = %x (nil=%v), want %s (null=%v)", rec.Payload, rec.Payload == nil, v.PayloadHex, v.PayloadIsNull)
	}
	if got := RecordCategory(rec.RecType); int(got) != v.Category {
		t.Errorf("category %v, want %d", got, v.Category)
	}
	enc, err := EncodeRecord(rec)
	if err != nil || !bytes.Equal(enc, raw) {
		t.Errorf("EncodeRecord round trip: err=%v\n got %x\nwant %x", err, enc, raw)
	}
	in, err := RecordSigningInput(rec)
	if err != nil || !bytes.Equal(in, unhex(t, v.SigningInput)) || !bytes.HasSuffix(in, unhex(t, v.SignFields)) {
		t.Errorf("signing input: err=%v\n got %x\nwant %s", err, in, v.SigningInput)
	}
	if k, ok := signerKey(v.Signer); ok {
		fresh := rec
		fresh.Pubkey, fresh.Signature = nil, nil
		err := SignRecord(&fresh, k.pub, k.sign)
		switch {
		case rec.TTL == 0:
			if !errors.Is(err, ErrRecordShape) {
				t.Errorf("SignRecord ttl 0: want refusal, got %v", err)
			}
		case rec.Delegation == nil && k.addr != rec.Address:
			if !errors.Is(err, ErrAuthority) {
				t.Errorf("SignRecord foreign address: want ErrAuthority, got %v", err)
			}
		case err != nil:
			t.Errorf("SignRecord: %v", err)
		case v.Name == "invalid_bad_signature":
			if bytes.Equal(fresh.Signature, rec.Signature) {
				t.Errorf("bad-signature vector re-signed to the same bytes")
			}
		case !bytes.Equal(fresh.Signature, rec.Signature) || !bytes.Equal(fresh.Pubkey, rec.Pubkey):
			t.Errorf("SignRecord signature differs from vector")
		}
	}
	// Payload codecs must reproduce the signed payload bytes exactly.
	if v.Checks[0].VerifyHead == "ok" {
		switch rec.RecType {
		case RecTypeEndpoint:
			p, err := DecodeEndpointPayload(rec.Payload)
			if err != nil {
				t.Fatalf("DecodeEndpointPayload: %v", err)
			}
			if b, err := EncodeEndpointPayload(*p); err != nil || !bytes.Equal(b, rec.Payload) {
				t.Errorf("endpoint payload round trip: %v\n got %x\nwant %x", err, b, rec.Payload)
			}
			if _, err := ParseEndpointRecord(rec); err != nil {
				t.Errorf("ParseEndpointRecord: %v", err)
			}
		case RecTypeTopic:
			p, err := DecodeTopicPayload(rec.Payload)
			if err != nil {
				t.Fatalf("DecodeTopicPayload: %v", err)
			}
			if b, err := EncodeTopicPayload(*p); err != nil || !bytes.Equal(b, rec.Payload) {
				t.Errorf("topic payload round trip: %v\n got %x\nwant %x", err, b, rec.Payload)
			}
			if TopicKey(p.Topic) != a2al.NodeID(unhex(t, v.StoreKey)) {
				t.Errorf("TopicKey(%q) != store key", p.Topic)
			}
		}
	}
	key := a2al.NodeID(unhex(t, v.StoreKey))
	for _, c := range v.Checks {
		if got := verifyClass(VerifySignedRecord(rec, at(c.Now))); got != c.VerifyHead {
			t.Errorf("verify at T0%+d = %s, want %s (%s)", c.Now-vecT0, got, c.VerifyHead, c.Detail)
		}
		if got := authClass(CheckAuthority(key, rec, at(c.Now))); got != c.AuthHead {
			t.Errorf("authority at T0%+d = %s, want %s (%s)", c.Now-vecT0, got, c.AuthHead, c.Detail)
		}
	}
}

func TestVectorRecords(t *testing.T) {
	var f recordsFile
	loadVectors(t, "records.json", &f)
	if f.T0 != vecT0 || !bytes.Equal(recSignPrefix, unhex(t, f.SignPrefix)) {
		t.Fatalf("T0 / record sign prefix mismatch")
	}
	vc := newVecCounter(t, "records.json")
	for _, v := range f.Records {
		vc.run("record/"+v.Name, func(t *testing.T) { checkRecordVector(t, v) })
	}
	for i, v := range f.RecordIsNewer {
		vc.run("is_newer/"+string(rune('a'+i)), func(t *testing.T) {
			a := newerVectorRecord(t, v.A.Seq, v.A.Timestamp, v.A.IssuedAt)
			b := newerVectorRecord(t, v.B.Seq, v.B.Timestamp, v.B.IssuedAt)
			if got := RecordIsNewerV018(a, b); got != v.NewerV018 {
				t.Fatalf("RecordIsNewerV018(%+v, %+v) = %v, want %v", v.A, v.B, got, v.NewerV018)
			}
			if got := RecordIsNewer(a, b); got != v.NewerHead {
				t.Fatalf("RecordIsNewer(%+v, %+v) = %v, want %v (HEAD rule)", v.A, v.B, got, v.NewerHead)
			}
		})
	}
	for _, seq := range f.StoreSequences {
		vc.run("store_sequence/"+seq.Name, func(t *testing.T) {
			st := newMiniStore()
			now := at(seq.Now)
			for _, s := range seq.Steps {
				k, ok := map[a2al.Address]testKey{keyAlice.addr: keyAlice, keyBob.addr: keyBob}[a2al.Address(unhex(t, s.AddrHex))]
				if !ok {
					t.Fatalf("%s: unknown signer", s.Step)
				}
				rec := SignedRecord{Address: k.addr, RecType: s.RecType, Seq: s.Seq, Timestamp: s.Timestamp, TTL: 3600}
				if s.RecType == RecTypeTopic {
					rec.Payload, _ = EncodeTopicPayload(TopicPayload{Topic: "t"})
				} else {
					rec.Payload, _ = EncodeEndpointPayload(EndpointPayload{})
				}
				if err := SignRecord(&rec, k.pub, k.sign); err != nil {
					t.Fatal(err)
				}
				resp, held := st.store(a2al.NodeID(unhex(t, s.KeyHex)), rec, now)
				if resp.Stored != s.StoreResp.Stored || resp.AlreadyHad != s.StoreResp.AlreadyHad || resp.Reason != s.StoreResp.Reason {
					t.Fatalf("%s: store_resp %+v, want %+v", s.Step, resp, s.StoreResp)
				}
				if s.Held != nil {
					if len(held) != len(s.Held) {
						t.Fatalf("%s: holds %d records, want %d", s.Step, len(held), len(s.Held))
					}
					for i, h := range s.Held {
						if held[i].Seq != h.Seq || held[i].Timestamp != h.Timestamp || held[i].RecType != h.RecType ||
							!bytes.Equal(held[i].Address[:], unhex(t, h.AddrHex)) {
							t.Fatalf("%s: held[%d] = %+v, want %+v", s.Step, i, held[i], h)
						}
					}
				}
			}
		})
	}
	vc.report()
}

// miniStore replays docs/wire.md §8.7 steps 1–5 with the protocol functions only; it is
// the check that VerifySignedRecord, CheckAuthority, RecordCategory and
// RecordIsNewer compose into the reference's store decisions.
type miniStore struct {
	byKey map[a2al.NodeID][]SignedRecord
}

func newMiniStore() *miniStore { return &miniStore{byKey: map[a2al.NodeID][]SignedRecord{}} }

func sameSlot(a, b SignedRecord) bool {
	switch RecordCategory(a.RecType) {
	case CategoryTopic:
		return a.RecType == b.RecType && bytes.Equal(a.Pubkey, b.Pubkey)
	case CategoryMailbox:
		return a.RecType == b.RecType && bytes.Equal(a.Pubkey, b.Pubkey) && bytes.Equal(a.Payload, b.Payload)
	}
	return a.RecType == b.RecType && a.Address == b.Address
}

func (s *miniStore) store(key a2al.NodeID, rec SignedRecord, now interface{ Unix() int64 }) (BodyStoreResp, []SignedRecord) {
	if key.IsZero() {
		key = a2al.NodeIDFromAddress(rec.Address)
	}
	tm := at(now.Unix())
	if VerifySignedRecord(rec, tm) != nil || CheckAuthority(key, rec, tm) != nil {
		return BodyStoreResp{Reason: StoreReasonRecordInvalid}, s.byKey[key]
	}
	recs := s.byKey[key]
	for i, old := range recs {
		if sameSlot(old, rec) {
			if !RecordIsNewer(rec, old) {
				return BodyStoreResp{Stored: true, AlreadyHad: true}, recs
			}
			// The reference removes the old record and appends the new one.
			recs = append(append(recs[:i:i], recs[i+1:]...), rec)
			s.byKey[key] = recs
			return BodyStoreResp{Stored: true}, recs
		}
	}
	s.byKey[key] = append(recs, rec)
	return BodyStoreResp{Stored: true}, s.byKey[key]
}
