package protocol

import (
	"math/rand/v2"
	"net"
	"runtime"
	"testing"
)

// TestWireLenMatchesEncoder checks the size arithmetic of trim.go against
// the canonical encoder on varied bodies (nil/empty lists, IPv4/IPv6 and
// IPv4-mapped IPs, long payloads, delegations, legacy record).
func TestWireLenMatchesEncoder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ips := []net.IP{net.IPv4(198, 51, 100, 1), net.IPv4(198, 51, 100, 1).To4(), net.ParseIP("2001:db8::1")}
	for iter := 0; iter < 300; iter++ {
		var b BodyFindValueResp
		switch rng.IntN(3) {
		case 0: // nil nodes encode as null
		case 1:
			b.Nodes = []NodeInfo{}
		default:
			for i := 0; i < rng.IntN(30); i++ {
				c := contact(i)
				c.IP = ips[rng.IntN(len(ips))]
				c.Port = uint16(rng.IntN(70000))
				b.Nodes = append(b.Nodes, c)
			}
		}
		b.ObservedAddr = EncodeUDPAddr(ips[rng.IntN(len(ips))], 4121)
		for i := 0; i < rng.IntN(4); i++ {
			r := testRecord(t, []int{0, 10, 23, 24, 255, 256, 900, 70000}[rng.IntN(8)], rng.Uint64()>>uint(rng.IntN(64)))
			r.TTL = uint32(rng.Uint64() >> uint(rng.IntN(64)))
			if rng.IntN(3) == 0 {
				r.Delegation = make([]byte, rng.IntN(300))
			}
			if rng.IntN(4) == 0 {
				r.Payload = nil
			}
			b.Records = append(b.Records, r)
		}
		if rng.IntN(3) == 0 {
			r := testRecord(t, 50, 1)
			b.Record = &r
		}
		enc, err := EncodeBody(b)
		if err != nil {
			t.Fatal(err)
		}
		want := len(enc)
		got := 1 + 1 + 1 + bytesLen(b.ObservedAddr)
		if b.Record != nil {
			got += 1 + RecordWireLen(*b.Record)
		}
		if len(b.Records) > 0 {
			got += 1 + uintLen(uint64(len(b.Records)))
			for _, r := range b.Records {
				got += RecordWireLen(r)
			}
		}
		if b.Nodes == nil {
			got++
		} else {
			got += uintLen(uint64(len(b.Nodes)))
			for _, n := range b.Nodes {
				got += NodeInfoWireLen(n)
			}
		}
		if got != want {
			t.Fatalf("iter %d: computed %d bytes, encoder %d", iter, got, want)
		}
		// The trimmed body fits (or ErrTooLarge is reported) and keeps
		// every contact that fits before any record is dropped.
		tr := b
		err = TrimFindValueResp(&tr)
		encT, _ := EncodeBody(tr)
		if err == nil && len(encT) > ResponseBodyBudget {
			t.Fatalf("iter %d: trimmed body %d bytes over budget", iter, len(encT))
		}
		if err != nil && len(encT) <= ResponseBodyBudget {
			t.Fatalf("iter %d: ErrTooLarge for a %d-byte body", iter, len(encT))
		}
		if len(tr.Nodes) < len(b.Nodes) && len(tr.Records) == len(b.Records) && tr.Record == b.Record {
			more := tr
			more.Nodes = b.Nodes[:len(tr.Nodes)+1]
			if e, _ := EncodeBody(more); len(e) <= ResponseBodyBudget {
				t.Fatalf("iter %d: dropped a contact that fit", iter)
			}
		}
	}
}

// TestTrimFindValueRespOnePass is attack 2 of docs/dht-security.md: an
// answer for a key holding 100 large records used to be re-encoded once
// per dropped record (≈ 5.8 MB allocated per request). Trimming must cost
// a small multiple of one answer, not of the records held.
func TestTrimFindValueRespOnePass(t *testing.T) {
	b := BodyFindValueResp{ObservedAddr: EncodeUDPAddr(net.IPv4(203, 0, 113, 7), 4121)}
	for i := 0; i < 16; i++ {
		b.Nodes = append(b.Nodes, contact(i))
	}
	for i := 0; i < 100; i++ {
		b.Records = append(b.Records, testRecord(t, 700, uint64(i)))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const rounds = 10
	for i := 0; i < rounds; i++ {
		c := b
		if err := TrimFindValueResp(&c); err != nil {
			t.Fatal(err)
		}
		if len(c.Records) != 1 || len(c.Nodes) != 1 {
			t.Fatalf("kept %d records, %d nodes", len(c.Records), len(c.Nodes))
		}
	}
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / rounds
	if per > 4*ResponseBodyBudget {
		t.Fatalf("trimming a 100-record answer allocated %d bytes per call (want ≤ %d)", per, 4*ResponseBodyBudget)
	}
}
