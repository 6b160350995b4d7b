package dht

import (
	"fmt"
	"testing"
	"time"

	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

// TestWidePrefixLimit is the /16 Sybil run of docs/dht-security.md: 100
// identities from 100 different /24s of one /16 used to fill the table
// (the /24 limits never triggered). At most 24 may enter, 4 per bucket.
func TestWidePrefixLimit(t *testing.T) {
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
	const sybils = 100
	for i := 0; i < sybils; i++ {
		st, err := transport.ListenUDP("udp4", fmt.Sprintf("127.43.%d.1:0", i+1))
		if err != nil {
			t.Fatal(err)
		}
		p := newRawPeer(t, st, uint64(2000+i))
		p.send(t, v.LocalAddr(), newTxID(), protocol.BodyPing{Address: p.k.addr})
	}
	ot, err := transport.ListenUDP("udp4", "127.44.1.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other := newRawPeer(t, ot, 5000)
	other.send(t, v.LocalAddr(), newTxID(), protocol.BodyPing{Address: other.k.addr})
	waitFor(t, 10*time.Second, "all pings processed", func() bool { return v.cnt.rx.Load() >= sybils+1 })
	v.tabMu.RLock()
	all := v.tab.All()
	v.tabMu.RUnlock()
	perBucket := map[int]int{}
	total := 0
	for _, e := range all {
		if ip := e.Info.IP.To4(); ip != nil && ip[0] == 127 && ip[1] == 43 {
			total++
			perBucket[v.tab.BucketIndex(e.Info.NodeID)]++
		}
	}
	if total == 0 || total > 24 {
		t.Fatalf("%d entries from one /16 (limit 24)", total)
	}
	for b, n := range perBucket {
		if n > 4 {
			t.Fatalf("bucket %d holds %d entries of one /16 (limit 4)", b, n)
		}
	}
	waitFor(t, 5*time.Second, "other /16 admitted", func() bool {
		v.tabMu.RLock()
		defer v.tabMu.RUnlock()
		return v.tab.Contains(other.k.addr.NodeID())
	})
}
