package dht

import (
	"fmt"
	"net"
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
		if err := n.store.Put(key, topicRecord(tb, newTestKeys(uint64(1000+i)), "crowded", now.Add(time.Duration(i)*time.Second)), now.Add(time.Minute)); err != nil {
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
		n.handleRequest(findValueMsg(t, req, key), from, false)
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
				n.handleRequest(msg, from, false)
			}
		})
	}
}
