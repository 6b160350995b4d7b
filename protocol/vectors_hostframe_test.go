package protocol

import (
	"bytes"
	"errors"
	"net"
	"testing"

	"github.com/a2alnode/a2al"
)

type hostFramesFile struct {
	ALPN  string `json:"alpn"`
	Route struct {
		Target string `json:"target_address_hex"`
		Frame  string `json:"frame_hex"`
	} `json:"agent_route_a2r1"`
	Route2 struct {
		Target string `json:"target_address_hex"`
		Frame  string `json:"frame_hex"`
	} `json:"agent_route_a2r2"`
	Dialer       string `json:"ctrl_dialer_stream_hex"`
	Acceptor     string `json:"ctrl_acceptor_stream_hex"`
	AcceptorHeld string `json:"ctrl_acceptor_stream_when_dialer_holds_seq_hex"`
	UnknownType  string `json:"ctrl_unknown_type_then_hint_hex"`
}

func TestHostFrameVectors(t *testing.T) {
	var hf hostFramesFile
	loadVectors(t, "host_frames.json", &hf)
	target := a2al.Address(unhex(t, hf.Route.Target))
	if got := EncodeRouteFrame(RouteMagicV1, target); !bytes.Equal(got, unhex(t, hf.Route.Frame)) {
		t.Fatalf("a2r1 frame %x", got)
	}
	if got := EncodeRouteFrame(RouteMagicV2, target); !bytes.Equal(got, unhex(t, hf.Route2.Frame)) {
		t.Fatalf("a2r2 frame %x", got)
	}
	for _, fr := range []string{hf.Route.Frame, hf.Route2.Frame} {
		m, tg, err := DecodeRouteFrame(unhex(t, fr))
		if err != nil || tg != target || (m != RouteMagicV1 && m != RouteMagicV2) {
			t.Fatalf("decode %s: %q %x %v", fr, m, tg[:], err)
		}
	}
	if _, _, err := DecodeRouteFrame(append([]byte("a2r9"), target[:]...)); !errors.Is(err, ErrRouteFrame) {
		t.Fatalf("unknown magic accepted: %v", err)
	}

	// Dialer: one AgentInfoHint with the vector's max seq.
	msgs, err := ReadCtrlMsgs(bytes.NewReader(unhex(t, hf.Dialer)), 8)
	if err != nil || len(msgs) != 1 || msgs[0].Type != CtrlAgentInfoHint {
		t.Fatalf("dialer stream: %+v %v", msgs, err)
	}
	tg, seq, ok := DecodeAgentInfoHint(msgs[0].Payload)
	if !ok || tg != target {
		t.Fatalf("hint %x %d %v", tg[:], seq, ok)
	}
	mine, _ := AppendCtrlMsg(nil, CtrlMsg{Type: CtrlAgentInfoHint, Payload: EncodeAgentInfoHint(target, seq)})
	if !bytes.Equal(mine, unhex(t, hf.Dialer)) {
		t.Fatalf("our dialer stream %x", mine)
	}

	// Acceptor: ObservedAddr for 203.0.113.7:50000, then the topic record.
	var rf recordsFile
	loadVectors(t, "records.json", &rf)
	var topic []byte
	for _, r := range rf.Records {
		if r.Name == "topic" {
			topic = unhex(t, r.RecordCBOR)
		}
	}
	if topic == nil {
		t.Fatal("records.json has no topic record")
	}
	obs := EncodeUDPAddr(net.IPv4(203, 0, 113, 7), 50000)
	acc, _ := AppendCtrlMsg(nil, CtrlMsg{Type: CtrlObservedAddr, Payload: obs})
	if !bytes.Equal(acc, unhex(t, hf.AcceptorHeld)) {
		t.Fatalf("our acceptor stream (nothing to send) %x", acc)
	}
	acc, _ = AppendCtrlMsg(acc, CtrlMsg{Type: CtrlAgentInfo, Payload: topic})
	if !bytes.Equal(acc, unhex(t, hf.Acceptor)) {
		t.Fatalf("our acceptor stream %x", acc)
	}
	msgs, err = ReadCtrlMsgs(bytes.NewReader(acc), 8)
	if err != nil || len(msgs) != 2 || msgs[1].Type != CtrlAgentInfo {
		t.Fatalf("acceptor parse %v %v", msgs, err)
	}
	if _, err := DecodeRecord(msgs[1].Payload); err != nil {
		t.Fatalf("agent info record: %v", err)
	}

	// Unknown type first: returned, so the reader can skip it; the hint follows.
	msgs, err = ReadCtrlMsgs(bytes.NewReader(unhex(t, hf.UnknownType)), 8)
	if err != nil || len(msgs) != 2 || msgs[0].Type != 0x7f || msgs[1].Type != CtrlAgentInfoHint {
		t.Fatalf("unknown type stream: %+v %v", msgs, err)
	}
}

func TestCtrlMsgLimits(t *testing.T) {
	big := make([]byte, MaxCtrlPayload+1)
	if _, err := AppendCtrlMsg(nil, CtrlMsg{Type: 1, Payload: big}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize payload encoded: %v", err)
	}
	if _, err := ReadCtrlMsgs(bytes.NewReader([]byte{1, 0x10, 0x01}), 8); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize length accepted: %v", err)
	}
	if _, err := ReadCtrlMsgs(bytes.NewReader([]byte{1, 0, 5, 1, 2}), 8); !errors.Is(err, ErrRouteFrame) {
		t.Fatalf("truncated payload accepted: %v", err)
	}
	if _, err := ReadCtrlMsgs(bytes.NewReader([]byte{1, 0}), 8); !errors.Is(err, ErrRouteFrame) {
		t.Fatalf("truncated header accepted: %v", err)
	}
	var many []byte
	for range 3 {
		many, _ = AppendCtrlMsg(many, CtrlMsg{Type: 9})
	}
	if _, err := ReadCtrlMsgs(bytes.NewReader(many), 2); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too many messages accepted: %v", err)
	}
	if _, _, ok := DecodeAgentInfoHint(make([]byte, 28)); ok {
		t.Fatal("short hint accepted")
	}
}

// FuzzReadCtrlMsgs: no panic; every accepted stream re-encodes byte-identically.
func FuzzReadCtrlMsgs(f *testing.F) {
	var hf hostFramesFile
	loadVectors(f, "host_frames.json", &hf)
	for _, s := range []string{hf.Dialer, hf.Acceptor, hf.AcceptorHeld, hf.UnknownType} {
		f.Add(unhex(f, s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := ReadCtrlMsgs(bytes.NewReader(data), 64)
		if err != nil {
			return
		}
		var out []byte
		for _, m := range msgs {
			if out, err = AppendCtrlMsg(out, m); err != nil {
				t.Fatalf("accepted message does not re-encode: %v", err)
			}
			if m.Type == CtrlAgentInfoHint {
				DecodeAgentInfoHint(m.Payload)
			}
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// FuzzDecodeRouteFrame: no panic; accepted frames re-encode byte-identically.
func FuzzDecodeRouteFrame(f *testing.F) {
	var hf hostFramesFile
	loadVectors(f, "host_frames.json", &hf)
	f.Add(unhex(f, hf.Route.Frame))
	f.Add(unhex(f, hf.Route2.Frame))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, tg, err := DecodeRouteFrame(data)
		if err != nil {
			return
		}
		if !bytes.Equal(EncodeRouteFrame(m, tg), data) {
			t.Fatalf("re-encoding differs")
		}
	})
}
