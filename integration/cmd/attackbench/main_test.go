package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
)

func TestSelected(t *testing.T) {
	for _, c := range []struct {
		only, name string
		want       bool
	}{
		{"", "1-ice-reflection", true},
		{"1,4", "4-hub-callflood", true},
		{"1,4", "5-store-flood", false},
		{" 5 ", "5-store-flood", true},
	} {
		if got := selected(c.only, c.name); got != c.want {
			t.Errorf("selected(%q, %q) = %v", c.only, c.name, got)
		}
	}
}

// The attacker's messages are valid protocol: the victim must verify and
// process them, or the bench measures nothing.
func TestAttackMessagesDecode(t *testing.T) {
	id := newIdent()
	rec := topicRecord(id, "t", 500)
	if len(rec.Payload) > protocol.MaxTopicPayload || len(rec.Payload) < 300 {
		t.Fatalf("topic payload %d bytes, want near the %d limit", len(rec.Payload), protocol.MaxTopicPayload)
	}
	key := protocol.TopicKey("t")
	for _, body := range []any{protocol.BodyStore{Record: rec, Key: &key}, protocol.BodyStore{Record: endpointRecord(id)},
		protocol.BodyPing{Address: id.addr}, protocol.BodyFindValue{Target: key, RecType: protocol.RecTypeTopic}} {
		m, err := protocol.DecodeMessage(id.msg(body))
		if err != nil {
			t.Fatalf("%T: %v", body, err)
		}
		if m.SenderAddr != id.addr {
			t.Fatalf("%T: sender %v, want %v", body, m.SenderAddr, id.addr)
		}
	}
}

func TestFrameCost(t *testing.T) {
	f := signal.Frame{T: signal.TSig, SID: fakeSID, Kind: signal.KindCand, Cand: strings.Repeat("c", 200)}
	if got, json := frameCost(f), len(signal.EncodeFrame(f)); got != int64(json+8) {
		t.Fatalf("frameCost = %d for a %d-byte frame, want +8 (extended length, mask)", got, json)
	}
}

func TestPrintTable(t *testing.T) {
	var b bytes.Buffer
	printTable(&b, Summary{Rows: []Row{{Attack: "x", Err: "boom"}, {Attack: "y", VictimSent: "z"}}})
	if !strings.Contains(b.String(), "ERROR: boom") || strings.Count(b.String(), "\n") != 3 {
		t.Fatalf("table:\n%s", b.String())
	}
}

// Split runs merge: later non-null fields and rows win.
func TestCompareMerges(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a.json", `{"reflection_amplification": 90, "rows": [{"attack": "1-ice-reflection", "victim_sent": "old"}]}`)
	b := write("b.json", `{"reflection_amplification": null, "modea_legit_ok": true, "rows": [{"attack": "1-ice-reflection", "victim_sent": "new"}]}`)
	s, err := loadSummary(a + "," + b)
	if err != nil {
		t.Fatal(err)
	}
	if s.ReflectionAmplification == nil || *s.ReflectionAmplification != 90 || s.ModeALegitOK == nil || len(s.Rows) != 1 || s.Rows[0].VictimSent != "new" {
		t.Fatalf("merged %+v", s)
	}
	var out bytes.Buffer
	printCompare(&out, s, s)
	if !strings.Contains(out.String(), "| `reflection_amplification` | 90 | 90 |") {
		t.Fatalf("compare:\n%s", out.String())
	}
}
