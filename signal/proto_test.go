package signal

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/a2alnode/a2al"
)

func seedFrames() []Frame {
	sid := strings.Repeat("ab", 16)
	id := strings.Repeat("cd", 32)
	addr := "a0" + strings.Repeat("ef", 20)
	return []Frame{
		{T: TChallenge, Nonce: bytes.Repeat([]byte{1}, NonceLen), PingMS: 25000, MaxMsg: 8192},
		{T: TAuth, Pub: bytes.Repeat([]byte{2}, 32), Sig: bytes.Repeat([]byte{3}, 64), NodeID: id, URL: "ws://h:4122/v2/signal", Register: true},
		{T: TWelcome, Addr: addr, Register: true},
		{T: TCall, CID: 9, Target: id},
		{T: TNoAgent, CID: 9},
		{T: TRinging, CID: 9, SID: sid, Peer: addr},
		{T: TIncoming, SID: sid, Peer: addr},
		{T: TAccept, SID: sid},
		{T: TAccepted, CID: 9, SID: sid, Peer: addr},
		{T: TSig, SID: sid, Kind: KindCred, Ufrag: "u", Pwd: "p"},
		{T: TSig, SID: sid, Kind: KindCand, Cand: "candidate:1 1 udp 1 1.2.3.4 5 typ host"},
		{T: TSig, SID: sid, Kind: KindDone},
		{T: TEnd, SID: sid, Reason: ReasonDone},
		{T: TError, Code: CodeBadFrame, Msg: "x"},
		{T: TReplaced},
	}
}

func TestFrameRoundTrip(t *testing.T) {
	for _, f := range seedFrames() {
		g, err := DecodeFrame(EncodeFrame(f))
		if err != nil {
			t.Fatalf("%s: %v", f.T, err)
		}
		if !reflect.DeepEqual(f, g) {
			t.Fatalf("round trip: %+v != %+v", f, g)
		}
	}
}

func TestDecodeFrameRejects(t *testing.T) {
	sid := strings.Repeat("ab", 16)
	bad := []string{
		``, `null`, `[]`, `{"t":"nope"}`, `{"t":"call","cid":1,"target":"zz"}`,
		`{"t":"call","target":"` + strings.Repeat("00", 32) + `"}`,
		`{"t":"sig","sid":"` + sid + `","kind":"cand"}`,
		`{"t":"sig","sid":"` + sid + `","kind":"cred","ufrag":"u"}`,
		`{"t":"sig","sid":"` + sid + `","kind":"done","cand":"x"}`,
		`{"t":"sig","sid":"short","kind":"done"}`,
		`{"t":"auth","pub":"AAAA","sig":"AAAA"}`,
		`{"t":"challenge","nonce":"AAAA"}`,
		`{"t":"sig","sid":"` + sid + `","kind":"cand","cand":"` + strings.Repeat("x", 2000) + `"}`,
	}
	for _, b := range bad {
		if _, err := DecodeFrame([]byte(b)); err == nil {
			t.Errorf("accepted %s", b)
		}
	}
}

func TestCanonicalURL(t *testing.T) {
	cases := map[string]string{
		"WS://Hub.Example:80":           "ws://hub.example/",
		"wss://hub.example:443/x?q=1#f": "wss://hub.example/x",
		"ws://127.0.0.1:4122/v2/signal": "ws://127.0.0.1:4122/v2/signal",
	}
	for in, want := range cases {
		if got, err := CanonicalURL(in); err != nil || got != want {
			t.Errorf("CanonicalURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"http://x", "ws://", "ws://u@x/", "::"} {
		if _, err := CanonicalURL(in); err == nil {
			t.Errorf("CanonicalURL(%q) accepted", in)
		}
	}
	for in, want := range map[string]string{
		"ws://h:1":           "ws://h:1/v2/signal",
		"ws://h:1/":          "ws://h:1/v2/signal",
		"wss://h/a2al/":      "wss://h/a2al/v2/signal",
		"ws://h:1/v2/signal": "ws://h:1/v2/signal",
	} {
		if got, err := SignalURL(in); err != nil || got != want {
			t.Errorf("SignalURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestAuthMessageBindsEverything(t *testing.T) {
	n := bytes.Repeat([]byte{1}, NonceLen)
	var id a2al.NodeID
	base := AuthMessage(n, "ws://a/v2/signal", id)
	n2 := bytes.Repeat([]byte{2}, NonceLen)
	id2 := id
	id2[0] = 1
	for _, other := range [][]byte{AuthMessage(n2, "ws://a/v2/signal", id), AuthMessage(n, "ws://b/v2/signal", id), AuthMessage(n, "ws://a/v2/signal", id2)} {
		if bytes.Equal(base, other) {
			t.Fatal("auth message does not depend on all inputs")
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, fr := range seedFrames() {
		f.Add(EncodeFrame(fr))
	}
	f.Add([]byte(`{"t":"sig","sid":"` + strings.Repeat("a", 32) + `","kind":"cand","cand":"\u0000"}`))
	f.Add([]byte(`{"t":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := DecodeFrame(data)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode to an equivalent, valid frame.
		g, err := DecodeFrame(EncodeFrame(fr))
		if err != nil {
			t.Fatalf("re-decode of %+v: %v", fr, err)
		}
		if !reflect.DeepEqual(fr, g) {
			t.Fatalf("unstable: %+v vs %+v", fr, g)
		}
	})
}
