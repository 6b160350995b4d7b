package dht

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

// sinkTransport records what a node sends and never delivers anything.
type sinkTransport struct {
	mu     sync.Mutex
	sent   [][]byte
	keep   bool
	closed chan struct{}
	once   sync.Once
	count  atomic.Int64
}

func newSinkTransport(keep bool) *sinkTransport {
	return &sinkTransport{keep: keep, closed: make(chan struct{})}
}

func (s *sinkTransport) Send(_ net.Addr, data []byte) error {
	s.count.Add(1)
	if s.keep {
		s.mu.Lock()
		s.sent = append(s.sent, append([]byte(nil), data...))
		s.mu.Unlock()
	}
	return nil
}
func (s *sinkTransport) Receive() ([]byte, net.Addr, error) {
	<-s.closed
	return nil, nil, transport.ErrClosed
}
func (s *sinkTransport) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 9, 9, 9), Port: 4121}
}
func (s *sinkTransport) Close() error { s.once.Do(func() { close(s.closed) }); return nil }

func (s *sinkTransport) take() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sent
	s.sent = nil
	return out
}

// topicRecord signs a topic record with a payload near the 512-byte limit.
func topicRecord(tb testing.TB, k *testKeys, topic string, ts time.Time) protocol.SignedRecord {
	tb.Helper()
	p, err := protocol.EncodeTopicPayload(protocol.TopicPayload{Topic: topic, Name: k.addr.String()[:12], Brief: strings.Repeat("b", 140), Tags: []string{strings.Repeat("t", 230)}})
	if err != nil {
		tb.Fatal(err)
	}
	rec := protocol.SignedRecord{Address: k.addr, RecType: protocol.RecTypeTopic, Payload: p, Seq: 1, Timestamp: uint64(ts.Unix()), TTL: 3600}
	if err := protocol.SignRecord(&rec, k.pub(), k.sign); err != nil {
		tb.Fatal(err)
	}
	return rec
}

// fullKeyNode is the attack 2 victim: a node whose store holds 100
// near-maximal topic records at one key, from 100 identities.
func fullKeyNode(tb testing.TB, keep bool) (*Node, *sinkTransport, a2al.NodeID) {
	tb.Helper()
	tr := newSinkTransport(keep)
	n, err := NewNode(Config{Transport: tr, Keystore: newTestKeys(1), Logger: quietLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = n.Close() })
	n.limiter.setSpec(classPacket, rateSpec{rate: 1e9, burst: 1e9})
	n.limiter.setSpec(classAmplify, rateSpec{rate: 1e9, burst: 1e9})
	n.limiter.setSpec(classAmplifyUnproven, rateSpec{rate: 1e9, burst: 1e9})
	key := protocol.TopicKey("crowded")
	now := time.Now()
	for i := 0; i < 100; i++ {
		if err := n.store.Put(key, topicRecord(tb, newTestKeys(uint64(1000+i)), "crowded", now.Add(-time.Duration(i)*time.Second)), now); err != nil {
			tb.Fatal(err)
		}
	}
	return n, tr, key
}

func findValueMsg(tb testing.TB, k *testKeys, key a2al.NodeID) *protocol.Message {
	tb.Helper()
	h := protocol.Header{Version: 1, MsgType: protocol.MsgFindValue, TxID: newTxID()}
	raw, err := protocol.EncodeMessage(h, protocol.BodyFindValue{Target: key}, k.pub(), k.sign)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := protocol.DecodeMessage(raw)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// TestFindValueAnswerIsFair is attack 2 of docs/dht-security.md: with more
// records at a key than one answer holds, the answer used to carry only
// the newest, so whoever wrote the latest timestamp decided what every
// lookup saw. Successive answers must now cover many publishers.
func TestFindValueAnswerIsFair(t *testing.T) {
	n, tr, key := fullKeyNode(t, true)
	req := newTestKeys(7)
	from := &net.UDPAddr{IP: net.IPv4(127, 3, 3, 3), Port: 5000}
	publishers := map[a2al.Address]int{}
	const asks = 200
	for i := 0; i < asks; i++ {
		n.handleRequest(findValueMsg(t, req, key), inPath{from: from, via: viaUDP, id: a2al.NodeIDFromAddress(req.addr)})
	}
	for _, raw := range tr.take() {
		m, err := protocol.DecodeMessage(raw)
		if err != nil {
			t.Fatal(err)
		}
		b, ok := m.Body.(protocol.BodyFindValueResp)
		if !ok {
			continue
		}
		if len(b.Records) == 0 {
			t.Fatal("answer without records")
		}
		for _, r := range b.Records {
			publishers[r.Address]++
		}
	}
	// 200 answers of one record each from 100 publishers: a fair choice
	// covers most of them (expected ≈ 86); the newest-wins rule covers 1.
	if len(publishers) < 50 {
		t.Fatalf("%d answers covered only %d of 100 publishers", asks, len(publishers))
	}
	t.Logf("%d answers covered %d of 100 publishers", asks, len(publishers))
	for a, c := range publishers {
		if c > asks/5 {
			t.Fatalf("publisher %x got %d of %d answers", a[:4], c, asks)
		}
	}
}

// BenchmarkFindValueAnswer measures the work of answering a FIND_VALUE
// (decoded request in, signed answer out) for an empty key and for a key
// holding 100 near-maximal topic records. Figures in docs/dht-security.md.
func BenchmarkFindValueAnswer(b *testing.B) {
	for _, full := range []bool{false, true} {
		b.Run(fmt.Sprintf("full=%v", full), func(b *testing.B) {
			n, _, key := fullKeyNode(b, false)
			if !full {
				key = a2al.NodeID{0x42}
			}
			req := newTestKeys(7)
			from := &net.UDPAddr{IP: net.IPv4(127, 3, 3, 3), Port: 5000}
			msg := findValueMsg(b, req, key)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				n.handleRequest(msg, inPath{from: from, via: viaUDP, id: a2al.NodeIDFromAddress(req.addr)})
			}
		})
	}
}

// BenchmarkFindValueFlood is attack 2 end to end on loopback UDP: three
// sources send FIND_VALUE for a key holding 100 near-maximal topic records
// at 100 requests/s each (the per-source amplify budget), while a legitimate
// peer sends one PING per iteration and waits up to 2 s for the PONG. It
// reports the fraction of PINGs answered and their p50/p99 round trip.
// "proven" lifts the tighter budget for unproven sources, so that all 300
// requests/s are answered and only the cost of answering is measured.
//
//	go test -run '^$' -bench FindValueFlood -benchtime 200x ./dht/
func BenchmarkFindValueFlood(b *testing.B) {
	b.Run("sources=unproven", func(b *testing.B) { findValueFlood(b, false) })
	b.Run("sources=proven", func(b *testing.B) { findValueFlood(b, true) })
}

func findValueFlood(b *testing.B, proven bool) {
	tr, err := transport.ListenUDP("udp4", "127.0.21.1:0")
	if err != nil {
		b.Skip(err)
	}
	v, err := NewNode(Config{Transport: tr, Keystore: newTestKeys(1), Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	v.Start()
	defer v.Close()
	if proven {
		v.limiter.setSpec(classAmplifyUnproven, defaultRateLimits[classAmplify])
	}
	key := protocol.TopicKey("crowded")
	now := time.Now()
	for i := 0; i < 100; i++ {
		if err := v.store.Put(key, topicRecord(b, newTestKeys(uint64(1000+i)), "crowded", now), now); err != nil {
			b.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		at, err := transport.ListenUDP("udp4", fmt.Sprintf("127.0.%d.1:0", 22+i))
		if err != nil {
			b.Skip(err)
		}
		k := newTestKeys(uint64(50 + i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer at.Close()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				h := protocol.Header{Version: 1, MsgType: protocol.MsgFindValue, TxID: newTxID()}
				raw, err := protocol.EncodeMessage(h, protocol.BodyFindValue{Target: key}, k.pub(), k.sign)
				if err == nil {
					_ = at.Send(v.LocalAddr(), raw)
				}
			}
		}()
	}
	lt, err := transport.ListenUDP("udp4", "127.0.25.1:0")
	if err != nil {
		b.Skip(err)
	}
	legit := newTestKeys(60)
	pongs := make(chan [protocol.TxIDLen]byte, 64)
	go func() {
		for {
			data, _, err := lt.Receive()
			if err != nil {
				return
			}
			if m, err := protocol.DecodeMessage(data); err == nil && m.Header.MsgType == protocol.MsgPong {
				pongs <- m.Header.TxID
			}
		}
	}()
	time.Sleep(time.Second) // let the flood reach its rate
	var rtts []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tx := newTxID()
		h := protocol.Header{Version: 1, MsgType: protocol.MsgPing, TxID: tx}
		raw, _ := protocol.EncodeMessage(h, protocol.BodyPing{Address: legit.addr}, legit.pub(), legit.sign)
		t0 := time.Now()
		_ = lt.Send(v.LocalAddr(), raw)
		deadline := time.After(2 * time.Second)
	wait:
		for {
			select {
			case got := <-pongs:
				if got == tx {
					rtts = append(rtts, time.Since(t0))
					break wait
				}
			case <-deadline:
				break wait
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	_ = lt.Close()
	slices.Sort(rtts)
	b.ReportMetric(float64(len(rtts))/float64(b.N), "answered")
	if len(rtts) > 0 {
		b.ReportMetric(float64(rtts[len(rtts)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(rtts[len(rtts)*99/100].Microseconds())/1000, "p99-ms")
	}
}
