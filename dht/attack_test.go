package dht

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/clock"
	"github.com/a2alnode/a2al/dht/internal/routing"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

// rawPeer speaks the wire protocol by hand (an attacker or a scripted peer).
type rawPeer struct {
	k   *testKeys
	tr  transport.Transport
	in  chan rawPkt
	ctx context.Context
}

type rawPkt struct {
	msg  *protocol.Message
	from net.Addr
}

func newRawPeer(t *testing.T, tr transport.Transport, seed uint64) *rawPeer {
	ctx, cancel := context.WithCancel(context.Background())
	p := &rawPeer{k: newTestKeys(seed), tr: tr, in: make(chan rawPkt, 1024), ctx: ctx}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			data, from, err := tr.Receive()
			if err != nil {
				return
			}
			if m, err := protocol.DecodeMessage(data); err == nil {
				select {
				case p.in <- rawPkt{m, from}:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); _ = tr.Close(); <-done })
	return p
}

func (p *rawPeer) raw(t *testing.T, tx [protocol.TxIDLen]byte, body any) []byte {
	t.Helper()
	h := protocol.Header{Version: 1, MsgType: protocol.MsgTypeOf(body), TxID: tx}
	raw, err := protocol.EncodeMessage(h, body, p.k.pub(), p.k.sign)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return raw
}

func (p *rawPeer) send(t *testing.T, to net.Addr, tx [protocol.TxIDLen]byte, body any) {
	t.Helper()
	raw := p.raw(t, tx, body)
	end := time.Now().Add(5 * time.Second)
	for {
		err := p.tr.Send(to, raw)
		if err == nil {
			return
		}
		if !errors.Is(err, transport.ErrMemBufferFull) || time.Now().After(end) {
			t.Fatalf("raw send: %v", err)
		}
		time.Sleep(time.Millisecond) // receiver busy: back off
	}
}

// serve answers requests of msgType with fn until the test ends.
func (p *rawPeer) serve(t *testing.T, fn func(m *protocol.Message) any) {
	go func() {
		for {
			select {
			case <-p.ctx.Done():
				return
			case pk := <-p.in:
				if body := fn(pk.msg); body != nil {
					h := protocol.Header{Version: 1, MsgType: protocol.MsgTypeOf(body), TxID: pk.msg.Header.TxID}
					raw, err := protocol.EncodeMessage(h, body, p.k.pub(), p.k.sign)
					if err == nil {
						_ = p.tr.Send(pk.from, raw)
					}
				}
			}
		}
	}()
}

func keysInBucket(self a2al.NodeID, bi, count int, from uint64) []*testKeys {
	var out []*testKeys
	for s := from; len(out) < count; s++ {
		k := newTestKeys(s)
		if a2al.CommonPrefixLen(self, k.addr.NodeID()) == bi {
			out = append(out, k)
		}
	}
	return out
}

func mailboxRecord(t *testing.T, k *testKeys, payload string) protocol.SignedRecord {
	rec := protocol.SignedRecord{Address: k.addr, RecType: protocol.RecTypeMailbox, Payload: []byte(payload), Seq: 1, Timestamp: uint64(time.Now().Unix()), TTL: 600}
	if err := protocol.SignRecord(&rec, k.pub(), k.sign); err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestAttacks(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"forged NodeID contact rejected", attackForgedNodeID},
		{"hearsay cannot redirect a known peer", attackHearsayRedirect},
		{"per-/24 limit holds", attackSubnetFlood},
		{"contact flood into full bucket does not stall RPCs", attackBucketFlood},
		{"response from the wrong peer is ignored", attackWrongPeerResponse},
		{"store flood stays within MaxStoreKeys and per-key caps", attackStoreFlood},
		{"record TTL above 24h refused", attackLongTTL},
		{"rate limits trigger", attackRateLimits},
		{"unknown message types dropped and counted", attackUnknownType},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.run)
	}
}

func attackForgedNodeID(t *testing.T) {
	c := newMemCluster(t)
	v := c.newNode(1, nil)
	v.Start()
	tr, _ := c.net.NewTransport("evil")
	evil := newRawPeer(t, tr, 666)
	victimTarget := newTestKeys(777).addr.NodeID()
	honest := newTestKeys(778).addr
	forged := protocol.NodeInfo{Address: honest, NodeID: victimTarget, IP: net.IPv4(10, 1, 1, 1).To4(), Port: 4000}
	good := protocol.NodeInfo{Address: honest, NodeID: honest.NodeID(), IP: net.IPv4(10, 1, 2, 1).To4(), Port: 4000}
	evil.serve(t, func(m *protocol.Message) any {
		return protocol.BodyFindNodeResp{Nodes: []protocol.NodeInfo{forged, good}, ObservedAddr: ObservedAddr(nil)}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := v.FindNode(ctx, transport.Addr{Name: "evil"}, victimTarget); err != nil {
		t.Fatalf("FindNode: %v", err)
	}
	v.tabMu.RLock()
	defer v.tabMu.RUnlock()
	if v.tab.Contains(victimTarget) {
		t.Fatal("forged NodeID entered the table")
	}
	if a, _ := v.book.get(victimTarget); a != nil {
		t.Fatal("forged NodeID got a dial address")
	}
	if !v.tab.Contains(honest.NodeID()) {
		t.Fatal("valid hearsay was not absorbed (test would prove nothing)")
	}
}

func attackHearsayRedirect(t *testing.T) {
	c := newMemCluster(t)
	v := c.newNode(1, nil)
	p := c.newNode(2, nil)
	v.Start()
	p.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := v.Ping(ctx, p.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	tr, _ := c.net.NewTransport("evil")
	evil := newRawPeer(t, tr, 666)
	redirect := protocol.NodeInfo{Address: p.Address(), NodeID: p.NodeID(), IP: net.IPv4(6, 6, 6, 6).To4(), Port: 6666}
	evil.serve(t, func(*protocol.Message) any {
		return protocol.BodyFindNodeResp{Nodes: []protocol.NodeInfo{redirect}, ObservedAddr: ObservedAddr(nil)}
	})
	if _, err := v.FindNode(ctx, transport.Addr{Name: "evil"}, p.NodeID()); err != nil {
		t.Fatal(err)
	}
	if a, _ := v.book.get(p.NodeID()); a == nil || a.String() != p.LocalAddr().String() {
		t.Fatalf("dial address redirected to %v", a)
	}
	v.tabMu.RLock()
	e, _ := v.tab.Get(p.NodeID())
	v.tabMu.RUnlock()
	if e.Info.IP.Equal(net.IPv4(6, 6, 6, 6)) {
		t.Fatal("table address redirected")
	}
	if err := v.Ping(ctx, p.LocalAddr()); err != nil {
		t.Fatalf("peer no longer reachable: %v", err)
	}
}

func attackSubnetFlood(t *testing.T) {
	vt, err := transport.ListenUDP("udp4", "127.40.1.1:0")
	if err != nil {
		t.Skipf("cannot bind 127.40.1.1: %v", err)
	}
	v, err := NewNode(Config{Transport: vt, Keystore: newTestKeys(1), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	v.Start()
	defer v.Close()
	// 30 identities, all inside 127.41.1.0/24.
	for i := 0; i < 30; i++ {
		st, err := transport.ListenUDP("udp4", fmt.Sprintf("127.41.1.%d:0", i+1))
		if err != nil {
			t.Fatal(err)
		}
		p := newRawPeer(t, st, uint64(1000+i))
		p.send(t, v.LocalAddr(), newTxID(), protocol.BodyPing{Address: p.k.addr})
	}
	// And one from another /24, which must get in.
	ot, _ := transport.ListenUDP("udp4", "127.42.1.1:0")
	other := newRawPeer(t, ot, 5000)
	other.send(t, v.LocalAddr(), newTxID(), protocol.BodyPing{Address: other.k.addr})
	waitFor(t, 5*time.Second, "other /24 admitted", func() bool {
		v.tabMu.RLock()
		defer v.tabMu.RUnlock()
		return v.tab.Contains(other.k.addr.NodeID())
	})
	waitFor(t, 5*time.Second, "all pings processed", func() bool { return v.cnt.rx.Load() >= 31 })
	v.tabMu.RLock()
	all := v.tab.All()
	v.tabMu.RUnlock()
	perBucket := map[int]int{}
	total := 0
	for _, e := range all {
		if e.Info.IP.Equal(net.IPv4(127, 41, 1, e.Info.IP.To4()[3])) {
			total++
			perBucket[v.tab.BucketIndex(e.Info.NodeID)]++
		}
	}
	if total == 0 || total > routing.DefaultLimits.TablePerSubnet {
		t.Fatalf("%d entries from one /24 (limit %d)", total, routing.DefaultLimits.TablePerSubnet)
	}
	for b, n := range perBucket {
		if n > routing.DefaultLimits.BucketPerSubnet {
			t.Fatalf("bucket %d holds %d entries of one /24", b, n)
		}
	}
}

func attackBucketFlood(t *testing.T) {
	c := newMemCluster(t)
	v := c.newNode(1, nil)
	legit := c.newNode(2, nil)
	v.Start()
	legit.Start()
	// A transport that never reads: pings to it hang until their timeout.
	for i, k := range keysInBucket(v.NodeID(), 0, routing.K, 100) {
		name := fmt.Sprintf("blackhole%d", i)
		hole, _ := c.net.NewTransport(name)
		defer hole.Close()
		v.AddContact(transport.Addr{Name: name}, protocol.NodeInfo{Address: k.addr, NodeID: k.addr.NodeID()})
	}
	if v.tab.BucketLen(0) != routing.K {
		t.Fatalf("bucket 0 has %d entries", v.tab.BucketLen(0))
	}
	tr, _ := c.net.NewTransport("flood")
	flood := newRawPeer(t, tr, 1)
	for _, k := range keysInBucket(v.NodeID(), 0, 150, 10000) {
		flood.k = k
		flood.send(t, v.LocalAddr(), newTxID(), protocol.BodyPing{Address: k.addr})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := legit.Ping(ctx, v.LocalAddr()); err != nil {
		t.Fatalf("legit ping during flood: %v", err)
	}
	waitFor(t, 5*time.Second, "flood processed", func() bool { return v.cnt.rx.Load() >= 150 })
	if v.cnt.dropEvictQueue.Load() == 0 {
		t.Fatal("eviction queue unbounded? no drops under flood")
	}
	v.tabMu.RLock()
	bl := v.tab.BucketLen(0)
	v.tabMu.RUnlock()
	if bl > routing.K {
		t.Fatal("bucket overflow")
	}
}

func attackWrongPeerResponse(t *testing.T) {
	c := newMemCluster(t)
	v := c.newNode(1, nil)
	p := c.newNode(2, nil)
	v.Start()
	tr, _ := c.net.NewTransport("evil")
	evil := newRawPeer(t, tr, 666)
	v.BindPeerAddr(p.NodeID(), p.LocalAddr())
	for _, hasID := range []bool{true, false} {
		ch := make(chan rpcResult, 1)
		call := &call{tx: newTxID(), want: protocol.MsgPong, peerID: p.NodeID(), hasID: hasID, addr: p.LocalAddr().String(), ch: ch, sent: time.Now()}
		if err := v.rpc.register(call); err != nil {
			t.Fatal(err)
		}
		before := v.cnt.dropWrongPeer.Load()
		forged := evil.raw(t, call.tx, protocol.BodyPong{Address: evil.k.addr, ObservedAddr: ObservedAddr(nil)})
		v.handlePacket(forged, inPath{from: transport.Addr{Name: "evil"}, via: viaUDP})
		select {
		case <-ch:
			t.Fatalf("hasID=%v: response from the wrong peer accepted", hasID)
		default:
		}
		if v.cnt.dropWrongPeer.Load() != before+1 {
			t.Fatal("wrong-peer drop not counted")
		}
		// The genuine answer still completes the call.
		h := protocol.Header{Version: 1, MsgType: protocol.MsgPong, TxID: call.tx}
		genuine, err := protocol.EncodeMessage(h, protocol.BodyPong{Address: p.Address(), ObservedAddr: ObservedAddr(nil)}, c.keys[1].pub(), c.keys[1].sign)
		if err != nil {
			t.Fatal(err)
		}
		v.handlePacket(genuine, inPath{from: p.LocalAddr(), via: viaUDP})
		select {
		case r := <-ch:
			if r.msg.SenderAddr != p.Address() {
				t.Fatal("wrong sender delivered")
			}
		default:
			t.Fatalf("hasID=%v: genuine response not delivered", hasID)
		}
	}
}

func attackStoreFlood(t *testing.T) {
	c := newMemCluster(t)
	v := c.newNode(1, func(cfg *Config) { cfg.MaxStoreKeys = 50 })
	v.Start()
	v.limiter.setSpec(classStore, rateSpec{rate: 1e6, burst: 1e6})
	tr, _ := c.net.NewTransport("evil")
	evil := newRawPeer(t, tr, 666)
	acks := 0
	evil.serve(t, func(m *protocol.Message) any { return nil })
	attackers := []*testKeys{newTestKeys(11), newTestKeys(12), newTestKeys(13)}
	sent := 0
	for i := 0; i < 200; i++ {
		k := attackers[i%3]
		key := a2al.NodeID{byte(i), byte(i >> 8), 1}
		evil.send(t, v.LocalAddr(), newTxID(), protocol.BodyStore{Record: mailboxRecord(t, k, fmt.Sprintf("m%d", i)), Key: &key})
		sent++
	}
	// 20 mailbox messages from one key at one key.
	victimKey := a2al.NodeID{0xee}
	for i := 0; i < 20; i++ {
		evil.send(t, v.LocalAddr(), newTxID(), protocol.BodyStore{Record: mailboxRecord(t, attackers[0], fmt.Sprintf("x%d", i)), Key: &victimKey})
		sent++
	}
	_ = acks
	waitFor(t, 10*time.Second, "stores processed", func() bool { return v.cnt.rx.Load() >= uint64(sent) })
	if got := v.store.Len(); got > 50 {
		t.Fatalf("store holds %d keys, limit 50", got)
	}
	if got := len(v.LocalStoreGet(victimKey, 0)); got > 4 {
		t.Fatalf("%d mailbox records of one pubkey at one key (cap 4)", got)
	}
	if got := len(v.LocalStoreGet(victimKey, 0)); got == 0 {
		t.Fatal("nothing stored at the last key (test would prove nothing)")
	}
}

func attackLongTTL(t *testing.T) {
	c := newMemCluster(t)
	v := c.newNode(1, nil)
	a := c.newNode(2, nil)
	v.Start()
	a.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	k := newTestKeys(99)
	rec := endpointRecord(t, k, 1, time.Now(), uint32((100 * 24 * time.Hour).Seconds()), "")
	resp, _, err := a.storeAt(ctx, v.LocalAddr(), a2al.NodeID{}, rec)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Stored || resp.Reason != protocol.StoreReasonPolicy || len(v.LocalStoreGet(k.addr.NodeID(), 0)) != 0 {
		t.Fatalf("100-day TTL accepted: %+v", resp)
	}
	ok := endpointRecord(t, k, 2, time.Now(), uint32((24 * time.Hour).Seconds()), "")
	if stored, err := a.StoreAt(ctx, v.LocalAddr(), a2al.NodeID{}, ok); err != nil || !stored {
		t.Fatalf("24h TTL refused: %v %v", stored, err)
	}
}

func attackRateLimits(t *testing.T) {
	c := newMemCluster(t)
	fc := clock.NewFake(time.Now())
	v := c.newNode(1, func(cfg *Config) { cfg.Clock = fc }) // frozen clock: no refill
	v.Start()
	tr, _ := c.net.NewTransport("evil")
	evil := newRawPeer(t, tr, 666)
	got := make(chan uint8, 4096)
	evil.serve(t, func(m *protocol.Message) any {
		got <- m.Header.MsgType
		return nil
	})
	rec := mailboxRecord(t, evil.k, "hello")
	for i := 0; i < 100; i++ {
		evil.send(t, v.LocalAddr(), newTxID(), protocol.BodyStore{Record: rec})
	}
	for i := 0; i < 300; i++ {
		evil.send(t, v.LocalAddr(), newTxID(), protocol.BodyFindNode{Target: a2al.NodeID{byte(i)}})
	}
	waitFor(t, 10*time.Second, "flood handled", func() bool {
		return v.cnt.rx.Load()+v.cnt.dropRate.Load() >= 400
	})
	stores, finds := 0, 0
	deadline := time.After(2 * time.Second)
loop:
	for {
		select {
		case mt := <-got:
			if mt == protocol.MsgStoreResp {
				stores++
			} else if mt == protocol.MsgFindNodeResp {
				finds++
			}
		case <-deadline:
			break loop
		}
	}
	if stores > int(defaultRateLimits[classStore].burst) || stores == 0 {
		t.Fatalf("%d STORE answers, burst %v", stores, defaultRateLimits[classStore].burst)
	}
	if finds > int(defaultRateLimits[classAmplify].burst) || finds == 0 {
		t.Fatalf("%d FIND answers, burst %v", finds, defaultRateLimits[classAmplify].burst)
	}
	if v.cnt.dropRate.Load() == 0 {
		t.Fatal("rate-limit drops not counted")
	}
}

func attackUnknownType(t *testing.T) {
	c := newMemCluster(t)
	v := c.newNode(1, nil)
	v.Start()
	tr, _ := c.net.NewTransport("evil")
	evil := newRawPeer(t, tr, 666)
	raw := evil.raw(t, newTxID(), protocol.BodyPing{Address: evil.k.addr})
	// Patch header msg_type 0x01 -> 0x0D (0x0B, 0x0C are HEAD push types) (key 3 precedes key 4 = 20-byte tx_id).
	i := bytes.Index(raw, []byte{0x03, 0x01, 0x04, 0x54})
	if i < 0 {
		t.Fatal("header pattern not found")
	}
	raw[i+1] = 0x0D
	for j := 0; j < 5; j++ {
		_ = tr.Send(v.LocalAddr(), raw)
	}
	waitFor(t, 5*time.Second, "unknown types counted", func() bool { return v.cnt.dropUnknown.Load() == 5 })
	if v.cnt.rx.Load() != 0 {
		t.Fatal("unknown type counted as verified")
	}
}
