package protocol

import (
	"bytes"
	"errors"
	"net"
	"testing"

	"github.com/a2alnode/a2al"
)

func contact(i int) NodeInfo {
	a := a2al.Address{a2al.VersionEd25519, byte(i), byte(i >> 8)}
	return NodeInfo{Address: a, NodeID: a.NodeID(), IP: net.IPv4(198, 51, 100, byte(i)), Port: uint16(4000 + i)}
}

func testRecord(t testing.TB, payloadLen int, seq uint64) SignedRecord {
	r := SignedRecord{Address: keyAlice.addr, RecType: 0x05, Payload: bytes.Repeat([]byte{1}, payloadLen), Seq: seq, Timestamp: vecT0, TTL: 600}
	if err := SignRecord(&r, keyAlice.pub, keyAlice.sign); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTrimFindNodeResp(t *testing.T) {
	b := BodyFindNodeResp{ObservedAddr: EncodeUDPAddr(net.IPv4(203, 0, 113, 7), 4121)}
	for i := 0; i < 16; i++ {
		b.Nodes = append(b.Nodes, contact(i))
	}
	full, _ := EncodeBody(b)
	if len(full) <= ResponseBodyBudget {
		t.Fatalf("test needs an oversized body, have %d", len(full))
	}
	if err := TrimFindNodeResp(&b); err != nil {
		t.Fatal(err)
	}
	enc, _ := EncodeBody(b)
	if len(enc) > ResponseBodyBudget || len(b.Nodes) == 16 {
		t.Fatalf("not trimmed: %d bytes, %d nodes", len(enc), len(b.Nodes))
	}
	// One more contact would exceed the budget: trimming removes the minimum.
	b.Nodes = append(b.Nodes, contact(99))
	if more, _ := EncodeBody(b); len(more) <= ResponseBodyBudget {
		t.Fatalf("trimmed too much: %d nodes fit", len(b.Nodes))
	}
	// The first contacts (nearest) are kept in order.
	if b.Nodes[0].Address != contact(0).Address {
		t.Fatal("wrong contact dropped")
	}
}

func TestTrimFindValueResp(t *testing.T) {
	b := BodyFindValueResp{ObservedAddr: EncodeUDPAddr(net.IPv4(203, 0, 113, 7), 1)}
	for i := 0; i < 4; i++ {
		b.Nodes = append(b.Nodes, contact(i))
	}
	for i := 0; i < 5; i++ {
		b.Records = append(b.Records, testRecord(t, 200, uint64(i)))
	}
	if err := TrimFindValueResp(&b); err != nil {
		t.Fatal(err)
	}
	if len(b.Nodes) != 1 {
		t.Fatalf("contacts must go first: %d left", len(b.Nodes))
	}
	if b.Records[len(b.Records)-1].Seq != 4 || b.Records[0].Seq == 0 {
		t.Fatalf("oldest records must be dropped first: %v", b.Records[0].Seq)
	}
	// A single record larger than the budget cannot be trimmed.
	big := BodyFindValueResp{ObservedAddr: b.ObservedAddr, Records: []SignedRecord{testRecord(t, 1100, 1)}}
	if err := TrimFindValueResp(&big); !errors.Is(err, ErrTooLarge) || len(big.Records) != 1 {
		t.Fatalf("want ErrTooLarge keeping the record, got %v", err)
	}
	// The legacy record is dropped after records.
	leg := testRecord(t, 600, 9)
	l := BodyFindValueResp{ObservedAddr: b.ObservedAddr, Records: []SignedRecord{testRecord(t, 600, 1)}, Record: &leg}
	if err := TrimFindValueResp(&l); err != nil || l.Record != nil || len(l.Records) != 1 {
		t.Fatalf("legacy record not dropped: %v", err)
	}
}

func TestEncodeMessageChecks(t *testing.T) {
	var h Header
	obs := EncodeUDPAddr(net.IPv4(1, 2, 3, 4), 5)
	cases := []struct {
		name string
		h    Header
		body any
		pub  []byte
		want error
	}{
		{"unsupported body", h, 42, keyAlice.pub, ErrShape},
		{"type mismatch", Header{MsgType: MsgPong}, BodyPing{}, keyAlice.pub, ErrShape},
		{"short pubkey", h, BodyPing{}, keyAlice.pub[:31], ErrShape},
		{"pong without observed", h, BodyPong{Address: keyAlice.addr}, keyAlice.pub, ErrShape},
		{"nat probe bad claimed", h, BodyNATProbeReq{ClaimedAddr: []byte{1}}, keyAlice.pub, ErrShape},
		{"node with 5-byte ip", h, BodyFindNodeResp{ObservedAddr: obs, Nodes: []NodeInfo{{IP: net.IP{1, 2, 3, 4, 5}}}}, keyAlice.pub, ErrShape},
		{"store record without signature", h, BodyStore{Record: SignedRecord{Pubkey: keyAlice.pub}}, keyAlice.pub, ErrRecordShape},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := EncodeMessage(c.h, c.body, c.pub, keyAlice.sign); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	// Pointers work like values; version defaults to 1; 16-byte IPv4 is sent as 4 bytes.
	n := contact(1)
	n.IP = n.IP.To16()
	b, err := EncodeMessage(Header{}, &BodyFindNodeResp{Nodes: []NodeInfo{n}, ObservedAddr: obs}, keyAlice.pub, keyAlice.sign)
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	got := m.Body.(BodyFindNodeResp).Nodes[0]
	if m.Header.Version != ProtocolVersion || len(got.IP) != 4 || got.Valid() != nil {
		t.Fatalf("decoded %+v", got)
	}
}

func TestStoreKeyAndNodeValid(t *testing.T) {
	zero := a2al.NodeID{}
	r := testRecord(t, 3, 1)
	b, err := EncodeMessage(Header{}, BodyStore{Record: r, Key: &zero}, keyAlice.pub, keyAlice.sign)
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	s := m.Body.(BodyStore)
	if s.Key == nil || s.EffectiveKey() != keyAlice.addr.NodeID() {
		t.Fatalf("zero key must be carried and mean NodeID(address)")
	}
	n := contact(3)
	n.NodeID[0] ^= 1
	if err := n.Valid(); !errors.Is(err, ErrNodeIDMismatch) {
		t.Fatalf("mismatched node id: %v", err)
	}
	if IsPublicIP(nil) || IsPublicIP(net.IP{1, 2, 3}) {
		t.Fatal("malformed IPs are not public")
	}
}

func BenchmarkEncodePing(b *testing.B) {
	var h Header
	body := BodyPing{Address: keyAlice.addr}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := EncodeMessage(h, body, keyAlice.pub, keyAlice.sign); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeVerifyPing(b *testing.B) {
	ping := validPing(b)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := DecodeMessage(ping); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFindNodeResp(b *testing.B) {
	body := BodyFindNodeResp{ObservedAddr: EncodeUDPAddr(net.IPv4(203, 0, 113, 7), 4121)}
	for i := 0; i < 16; i++ {
		body.Nodes = append(body.Nodes, contact(i))
	}
	if err := TrimFindNodeResp(&body); err != nil {
		b.Fatal(err)
	}
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := EncodeMessage(Header{}, body, keyAlice.pub, keyAlice.sign); err != nil {
				b.Fatal(err)
			}
		}
	})
	msg, _ := EncodeMessage(Header{}, body, keyAlice.pub, keyAlice.sign)
	b.Run("decode_verify", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := DecodeMessage(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
