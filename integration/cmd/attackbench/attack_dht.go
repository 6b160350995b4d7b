package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/crypto"
	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

// ident is an attacker-made identity.
type ident struct {
	key  ed25519.PrivateKey
	pub  []byte
	addr a2al.Address
}

func newIdent() ident {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	return ident{key: key, pub: pub, addr: a2al.AddressFromEd25519(pub)}
}

func (i ident) sign(b []byte) ([]byte, error) { return ed25519.Sign(i.key, b), nil }

// msg encodes one signed DHT message from i with a fresh transaction ID.
func (i ident) msg(body any) []byte {
	var h protocol.Header
	_, _ = rand.Read(h.TxID[:])
	b, err := protocol.EncodeMessage(h, body, i.pub, i.sign)
	if err != nil {
		panic(fmt.Sprintf("attackbench: encode %T: %v", body, err)) // our own bodies: a bug
	}
	return b
}

func topicRecord(i ident, topic string, payloadLen int) protocol.SignedRecord {
	name := strings.Repeat("n", payloadLen)
	var p []byte
	for {
		b, err := protocol.EncodeTopicPayload(protocol.TopicPayload{Topic: topic, Name: name,
			Brief: strings.Repeat("b", min(protocol.MaxTopicBrief, payloadLen/3))})
		if err == nil {
			p = b
			break
		}
		if len(name) < 8 {
			panic("attackbench: topic payload does not fit: " + err.Error())
		}
		name = name[:len(name)-8]
	}
	now := uint64(time.Now().Unix())
	rec := protocol.SignedRecord{Address: i.addr, RecType: protocol.RecTypeTopic, Payload: p, Seq: now, Timestamp: now, TTL: 3600}
	if err := protocol.SignRecord(&rec, i.pub, i.sign); err != nil {
		panic(err)
	}
	return rec
}

func endpointRecord(i ident) protocol.SignedRecord {
	now := uint64(time.Now().Unix())
	rec, err := protocol.NewEndpointRecord(i.addr, protocol.EndpointPayload{Endpoints: []string{"quic://198.51.100.7:4121"}},
		now, now, 3600, i.pub, i.sign)
	if err != nil {
		panic(err)
	}
	return rec
}

// udpFrom opens a UDP socket on a loopback source address.
func udpFrom(ip net.IP) (*net.UDPConn, error) {
	return net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
}

// dhtNode runs a real DHT node (a legitimate peer, or an identity whose
// traffic the attacker captures) on its own loopback address.
func dhtNode(ip net.IP, key ed25519.PrivateKey) (*dht.Node, *net.UDPConn, error) {
	c, err := udpFrom(ip)
	if err != nil {
		return nil, nil, err
	}
	ks, err := crypto.NewMemKeyStoreFromPrivateKey(key)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	n, err := dht.NewNode(dht.Config{Transport: transport.NewUDPTransport(c), Keystore: ks,
		RecordAuth: dht.SecureRecordAuth, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	n.Start()
	return n, c, nil
}

// exchange sends req from c to dst and waits for the answer with its TxID.
func exchange(c *net.UDPConn, dst *net.UDPAddr, req []byte, wait time.Duration) (*protocol.Message, error) {
	if _, err := c.WriteTo(req, dst); err != nil {
		return nil, err
	}
	q, err := protocol.DecodeMessage(req)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(wait)
	for {
		_ = c.SetReadDeadline(deadline)
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return nil, err
		}
		m, err := protocol.DecodeMessage(buf[:n])
		if err == nil && m.Header.TxID == q.Header.TxID {
			return m, nil
		}
	}
}

// storeAt stores rec at key on v from c, waiting for the answer.
func storeAt(c *net.UDPConn, v *net.UDPAddr, from ident, key a2al.NodeID, rec protocol.SignedRecord) bool {
	m, err := exchange(c, v, from.msg(protocol.BodyStore{Record: rec, Key: &key}), time.Second)
	if err != nil {
		return false
	}
	r, ok := m.Body.(protocol.BodyStoreResp)
	return ok && (r.Stored || r.AlreadyHad)
}

// findValue asks v for key's records of recType from c.
func findValue(c *net.UDPConn, v *net.UDPAddr, from ident, key a2al.NodeID, recType uint8) []protocol.SignedRecord {
	m, err := exchange(c, v, from.msg(protocol.BodyFindValue{Target: key, RecType: recType}), time.Second)
	if err != nil {
		return nil
	}
	r, ok := m.Body.(protocol.BodyFindValueResp)
	if !ok {
		return nil
	}
	out := append([]protocol.SignedRecord(nil), r.Records...)
	if r.Record != nil {
		out = append(out, *r.Record)
	}
	return out
}

// pingLoop measures a legitimate node's PINGs to v (every 50 ms until
// stop): the fraction answered and the p99 latency in ms.
func pingLoop(ctx context.Context, n *dht.Node, v *net.UDPAddr, stop <-chan struct{}) func() (float64, float64) {
	var mu sync.Mutex
	var lat []float64
	sent := 0
	var wg sync.WaitGroup
	t := time.NewTicker(50 * time.Millisecond)
	go func() {
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			mu.Lock()
			sent++
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				start := time.Now()
				if n.Ping(pctx, v) == nil {
					mu.Lock()
					lat = append(lat, float64(time.Since(start).Microseconds())/1000)
					mu.Unlock()
				}
			}()
		}
	}()
	return func() (float64, float64) {
		<-stop
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if sent == 0 {
			return 0, 0
		}
		slices.Sort(lat)
		p99 := 2000.0 // unanswered count as the timeout
		if len(lat) > 0 && len(lat) >= sent*99/100 {
			p99 = lat[min(len(lat)-1, len(lat)*99/100)]
		}
		return float64(len(lat)) / float64(sent), p99
	}
}

// attackFindValue: 100 max-size topic records at one key, then FIND_VALUE
// for that key at ~300/s from 3 sources while a legitimate node PINGs.
func attackFindValue(ctx context.Context, e *env, s *Summary) (r Row) {
	v, err := startNode(e.bins, e.dir(), nil)
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer v.stop()
	const topic = "attackbench-findvalue"
	key := protocol.TopicKey(topic)
	stored := 0
	for i := range 100 / e.scale {
		if i%25 == 0 && i > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		c, err := udpFrom(net.IPv4(127, 0, 60, byte(1+i/25)))
		if err != nil {
			return Row{Err: err.Error()}
		}
		id := newIdent()
		if storeAt(c, v.udp, id, key, topicRecord(id, topic, 500)) {
			stored++
		}
		c.Close()
	}
	legit, lc, err := dhtNode(net.IPv4(127, 0, 61, 1), newIdent().key)
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer legit.Close()
	defer lc.Close()
	r.MemBeforeKB = v.rssKB()
	stop := make(chan struct{})
	result := pingLoop(ctx, legit, v.udp, stop)
	var sentB, recvB, recvN atomic.Int64
	var wg sync.WaitGroup
	const dur = 4 * time.Second
	for src := range 3 {
		c, err := udpFrom(net.IPv4(127, 0, 62, byte(1+src)))
		if err != nil {
			return Row{Err: err.Error()}
		}
		defer c.Close()
		id := newIdent()
		wg.Add(2)
		go func() { // reader: what the victim sends back
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for {
				_ = c.SetReadDeadline(time.Now().Add(dur + time.Second))
				n, _, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				recvB.Add(int64(n))
				recvN.Add(1)
			}
		}()
		go func() {
			defer wg.Done()
			t := time.NewTicker(10 * time.Millisecond) // 100/s per source
			defer t.Stop()
			end := time.Now().Add(dur)
			for time.Now().Before(end) && ctx.Err() == nil {
				<-t.C
				m := id.msg(protocol.BodyFindValue{Target: key, RecType: protocol.RecTypeTopic})
				if n, err := c.WriteTo(m, v.udp); err == nil {
					sentB.Add(int64(n))
					r.AttackerPkts++
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	answered, p99 := result()
	r.MemAfterKB = v.rssKB()
	r.AttackerBytes = sentB.Load()
	s.FindValueLegitAnswered, s.FindValueLegitP99MS = ptr(answered), ptr(p99)
	r.VictimSent = fmt.Sprintf("%d answers %d B (%d records stored)", recvN.Load(), recvB.Load(), stored)
	r.Legit = fmt.Sprintf("PINGs answered %.1f%%, p99 %.1f ms", 100*answered, p99)
	return r
}

// attackReplay: a PING B sent to the victim is replayed from another
// address; does the victim's verified address for B move there?
func attackReplay(ctx context.Context, e *env, s *Summary) (r Row) {
	v, err := startNode(e.bins, e.dir(), nil)
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer v.stop()
	r.MemBeforeKB = v.rssKB()
	bi := newIdent()
	b, bc, err := dhtNode(net.IPv4(127, 0, 70, 1), bi.key)
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer b.Close()
	defer bc.Close()
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	err = b.Ping(pctx, v.udp)
	cancel()
	if err != nil {
		return Row{Err: "honest PING: " + err.Error()}
	}
	// The captured packet: a PING exactly as B sends it, sent from B's
	// address (B's node drops the PONG to a transaction it did not start).
	captured := bi.msg(protocol.BodyPing{Address: bi.addr})
	if _, err := bc.WriteTo(captured, v.udp); err != nil {
		return Row{Err: err.Error()}
	}
	time.Sleep(500 * time.Millisecond)
	before := addrOf(v.udp, bi.addr)
	atk, err := udpFrom(net.IPv4(127, 0, 71, 1))
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer atk.Close()
	answered := 0
	for range 3 {
		r.AttackerPkts++
		r.AttackerBytes += int64(len(captured))
		_ = atk.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := atk.WriteTo(captured, v.udp); err != nil {
			continue
		}
		buf := make([]byte, 2048)
		if n, _, err := atk.ReadFrom(buf); err == nil && n > 0 {
			answered++
			r.VictimSent = fmt.Sprintf("%d B", n)
		}
	}
	time.Sleep(time.Second)
	after := addrOf(v.udp, bi.addr)
	moved := after != "" && after == atk.LocalAddr().String()
	r.MemAfterKB = v.rssKB()
	s.ReplayMovedVerifiedAddress = ptr(moved)
	r.VictimSent = fmt.Sprintf("%d/3 replays answered; B at %s -> %s", answered, before, after)
	r.Legit = fmt.Sprintf("verified address moved: %v", moved)
	return r
}

// addrOf asks v (FIND_NODE for id's NodeID) where it would reach id.
func addrOf(v *net.UDPAddr, id a2al.Address) string {
	c, err := udpFrom(net.IPv4(127, 0, 72, 1))
	if err != nil {
		return ""
	}
	defer c.Close()
	m, err := exchange(c, v, newIdent().msg(protocol.BodyFindNode{Target: a2al.NodeIDFromAddress(id)}), time.Second)
	if err != nil {
		return ""
	}
	resp, ok := m.Body.(protocol.BodyFindNodeResp)
	if !ok {
		return ""
	}
	for _, n := range resp.Nodes {
		if n.Address == id {
			return (&net.UDPAddr{IP: n.IP, Port: int(n.Port)}).String()
		}
	}
	return ""
}

// attackStoreFlood: honest records are stored, then a flood of STOREs from
// rotating source addresses; how many honest records and the victim's own
// endpoint record are still served?
func attackStoreFlood(ctx context.Context, e *env, s *Summary) (r Row) {
	_, v, stopVictim, err := startHubAndVictim(e)
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer stopVictim()
	hc, err := udpFrom(net.IPv4(127, 0, 80, 1))
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer hc.Close()
	asker := newIdent()
	// The victim publishes its own record once it has classified its NAT.
	vid := a2al.NodeIDFromAddress(v.addr)
	own := waitUntil(15*time.Second, func() bool {
		return len(findValue(hc, v.udp, asker, vid, protocol.RecTypeEndpoint)) > 0
	}) == nil
	var honest []ident
	for i := range 50 {
		if i > 0 && i%30 == 0 {
			time.Sleep(1500 * time.Millisecond) // the per-IP STORE burst
		}
		id := newIdent()
		if storeAt(hc, v.udp, id, a2al.NodeIDFromAddress(id.addr), endpointRecord(id)) {
			honest = append(honest, id)
		}
	}
	r.MemBeforeKB = v.rssKB()
	total := e.storeFlood / e.scale
	const perIP = 40
	var sent int64
	start := time.Now()
	// Send at least total; go on (up to twice that) while the victim has
	// not reached its key limit, so a slow victim is still flooded.
	full := func() bool {
		k, _ := v.debugHealth()["store_keys"].(float64)
		return k >= 100000
	}
	isFull := false
	more := func(ipn int) bool {
		if sent < int64(total) {
			return true
		}
		if ipn%50 == 0 {
			isFull = full()
		}
		return sent < int64(2*total) && !isFull
	}
	for ipn := 0; more(ipn) && ctx.Err() == nil; ipn++ {
		c, err := udpFrom(net.IPv4(127, byte(100+ipn/60000), byte(ipn/250%240), byte(1+ipn%250)))
		if err != nil {
			continue
		}
		pub := newIdent()
		for j := 0; j < perIP; j++ {
			topic := fmt.Sprintf("flood-%d-%d", ipn, j)
			m := pub.msg(protocol.BodyStore{Record: topicRecord(pub, topic, 100), Key: ptr(protocol.TopicKey(topic))})
			if n, err := c.WriteTo(m, v.udp); err == nil {
				r.AttackerBytes += int64(n)
				sent++
			}
		}
		c.Close()
		// Pace at ~5000 STOREs/s so the victim's socket buffer is not
		// what decides.
		if ahead := time.Duration(sent)*time.Second/5000 - time.Since(start); ahead > 0 {
			time.Sleep(ahead)
		}
	}
	r.AttackerPkts = sent
	time.Sleep(2 * time.Second)
	// Look up slowly, with one retry: our raw socket never answers the
	// victim's challenges, so it gets the small answer budget of an
	// unproven source (10/s); a lookup lost to it is not a lost record.
	has := func(key a2al.NodeID) bool {
		for try := range 2 {
			time.Sleep(time.Duration(1+try*10) * 120 * time.Millisecond)
			if len(findValue(hc, v.udp, asker, key, protocol.RecTypeEndpoint)) > 0 {
				return true
			}
		}
		return false
	}
	survived := 0
	for _, id := range honest {
		if has(a2al.NodeIDFromAddress(id.addr)) {
			survived++
		}
	}
	ownLeft := has(vid)
	r.MemAfterKB = v.rssKB()
	hs := float64(survived) / float64(max(1, len(honest)))
	s.StoreFloodHonestSurvived = ptr(hs)
	ownStr := "own record never published"
	if own {
		o := 0.0
		if ownLeft {
			o = 1
		}
		s.StoreFloodOwnSurvived = ptr(o)
		ownStr = fmt.Sprintf("own record kept: %v", ownLeft)
	}
	dh := v.debugHealth()
	r.VictimSent = fmt.Sprintf("%d STOREs in %.0f s; store_keys %v, rate-dropped %v", sent, time.Since(start).Seconds(),
		dh["store_keys"], dh["drop_rate_limit"])
	r.Legit = fmt.Sprintf("honest %d/%d kept; %s", survived, len(honest), ownStr)
	return r
}
