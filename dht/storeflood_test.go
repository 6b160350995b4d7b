package dht

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// TestStoreFloodSparesOwnAndHonest is attack 5 of docs/dht-security.md:
// STOREs from rotating source addresses used to evict every earlier record
// (one global LRU), the node's own endpoint record included. Now the flood
// only competes with itself, prefix by prefix.
func TestStoreFloodSparesOwnAndHonest(t *testing.T) {
	const limit = 100
	v := udpNode(t, "127.0.20.1", 1, func(c *Config) { c.MaxStoreKeys = limit })
	v.limiter.setSpec(classStore, rateSpec{rate: 1e6, burst: 1e6})
	v.limiter.setSpec(classPacket, rateSpec{rate: 1e6, burst: 1e6})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	own := endpointRecord(t, newTestKeys(1), 1, time.Now(), 3600, "")
	if err := v.PublishEndpointRecord(ctx, own); err != nil {
		t.Fatal(err)
	}
	sent := uint64(0)
	settle := func() {
		t.Helper()
		waitFor(t, 10*time.Second, "stores processed", func() bool { return v.cnt.rx.Load() >= sent })
	}
	// 20 honest records from 5 sources in 5 different /16s.
	var honest []a2al.NodeID
	for i := 0; i < 5; i++ {
		p := udpRawPeer(t, fmt.Sprintf("127.%d.1.1", 30+i), uint64(100+i))
		for j := 0; j < 4; j++ {
			key := a2al.NodeID{0x11, byte(i), byte(j)}
			p.send(t, v.LocalAddr(), newTxID(), protocol.BodyStore{Record: mailboxRecord(t, p.k, fmt.Sprintf("h%d-%d", i, j)), Key: &key})
			honest = append(honest, key)
			sent++
		}
	}
	settle()
	// The flood: 1500 STOREs at fresh keys from 40 addresses, 32 /24s of
	// one /16 and 8 other /16s, signed by 8 identities.
	var srcs []*rawPeer
	for i := 0; i < 32; i++ {
		srcs = append(srcs, udpRawPeer(t, fmt.Sprintf("127.66.%d.1", i+1), uint64(600+i%8)))
	}
	for i := 0; i < 8; i++ {
		srcs = append(srcs, udpRawPeer(t, fmt.Sprintf("127.%d.1.1", 70+i), uint64(600+i)))
	}
	for i := 0; i < 1500; i++ {
		p := srcs[i%len(srcs)]
		key := a2al.NodeID{0x66, byte(i >> 8), byte(i)}
		p.send(t, v.LocalAddr(), newTxID(), protocol.BodyStore{Record: mailboxRecord(t, p.k, fmt.Sprintf("f%d", i)), Key: &key})
		sent++
		if i%100 == 99 {
			settle()
		}
	}
	settle()
	if v.store.Len() > limit {
		t.Fatalf("store holds %d keys, limit %d", v.store.Len(), limit)
	}
	ownAlive := len(v.LocalStoreGet(a2al.NodeIDFromAddress(own.Address), protocol.RecTypeEndpoint))
	alive := 0
	for _, k := range honest {
		if len(v.LocalStoreGet(k, 0)) > 0 {
			alive++
		}
	}
	if ownAlive != 1 || alive != len(honest) {
		t.Fatalf("survived the flood: own %d/1, honest %d/%d", ownAlive, alive, len(honest))
	}
	flood := 0
	for i := 0; i < 1500; i++ {
		if len(v.LocalStoreGet(a2al.NodeID{0x66, byte(i >> 8), byte(i)}, 0)) > 0 {
			flood++
		}
	}
	if flood < limit/2 {
		t.Fatalf("only %d flood records stored: the test proves nothing", flood)
	}
	t.Logf("survived: own %d/1, honest %d/%d; flood records held %d of %d keys", ownAlive, alive, len(honest), flood, limit)
}
