package dht

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

// FuzzInboundPacket feeds arbitrary datagrams to the node's inbound path
// (both the UDP-style path and InjectReceived); nothing may panic.
func FuzzInboundPacket(f *testing.F) {
	k := newTestKeys(42)
	enc := func(body any) []byte {
		h := protocol.Header{Version: 1, MsgType: protocol.MsgTypeOf(body), TxID: newTxID()}
		raw, err := protocol.EncodeMessage(h, body, k.pub(), k.sign)
		if err != nil {
			f.Fatal(err)
		}
		return raw
	}
	key := a2al.NodeID{7}
	rec := endpointRecordF(f, k)
	claimed := protocol.EncodeUDPAddr(net.IPv4(203, 0, 113, 9), 4000)
	seeds := [][]byte{
		enc(protocol.BodyPing{Address: k.addr}),
		enc(protocol.BodyFindNode{Target: key}),
		enc(protocol.BodyFindValue{Target: key, RecType: 1}),
		enc(protocol.BodyStore{Record: rec}),
		enc(protocol.BodyStore{Record: rec, Key: &key}),
		enc(protocol.BodyNATProbeReq{Token: [8]byte{1}, ClaimedAddr: claimed}),
		enc(protocol.BodyNATProbeEcho{Token: [8]byte{1}}),
		enc(protocol.BodyPong{Address: k.addr, ObservedAddr: claimed}),
		enc(protocol.BodyStoreResp{Stored: true}),
		enc(protocol.BodyFindValue{Target: key, OneShotSubscribe: true}),
		enc(protocol.BodyDHTPush{Key: key, Record: rec}),
		enc(protocol.BodyDHTPushAck{Key: key, MsgID: protocol.PushMsgID(rec), OneShotSubscribe: true}),
		{0xa0}, {0xa4, 0x01}, {}, []byte("not cbor at all"),
	}
	for _, s := range seeds {
		f.Add(s, false)
		f.Add(s, true)
	}
	net := transport.NewMemNetwork()
	tr, err := net.NewTransport("fuzz-victim")
	if err != nil {
		f.Fatal(err)
	}
	n, err := NewNode(Config{Transport: tr, Keystore: newTestKeys(1), Logger: quietLogger()})
	if err != nil {
		f.Fatal(err)
	}
	n.Start()
	n.nat.allowPrivate.Store(true)
	for c := 0; c < numClasses; c++ { // let every input reach the decoder
		n.limiter.setSpec(c, rateSpec{rate: 1e9, burst: 1e9})
	}
	f.Cleanup(func() { _ = n.Close(); _ = net.Close() })
	from := transport.Addr{Name: "fuzzer"}
	f.Fuzz(func(t *testing.T, data []byte, inject bool) {
		if inject {
			n.InjectReceived(data, from)
		} else {
			n.handlePacket(data, inPath{from: &netUDP, via: viaUDP})
		}
	})
}

var netUDP = net.UDPAddr{IP: net.IPv4(203, 0, 113, 9), Port: 4000}

func endpointRecordF(f *testing.F, k *testKeys) protocol.SignedRecord {
	rec, err := protocol.NewEndpointRecord(k.addr, protocol.EndpointPayload{Endpoints: []string{"quic://203.0.113.1:1"}}, 1, 1_700_000_000, 3600, k.pub(), k.sign)
	if err != nil {
		f.Fatal(err)
	}
	return rec
}

// FuzzSeenPeersLoad feeds arbitrary files to the seen-peers loader.
func FuzzSeenPeersLoad(f *testing.F) {
	f.Add([]byte("# c\n" + "0000000000000000000000000000000000000000000000000000000000000001 1700000000\n"))
	f.Add([]byte("zz 1\n\n  \t\nabc def ghi\n"))
	f.Add([]byte{0xff, 0x00, '\n'})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "seen")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var s seenPeers
		s.init(path, a2al.NodeID{})
		s.load(time.Unix(1700000100, 0), quietLogger())
		if len(s.m) > maxSeenPeers {
			t.Fatalf("loaded %d entries", len(s.m))
		}
		if _, ok := s.m[a2al.NodeID{}]; ok {
			t.Fatal("self loaded")
		}
	})
}
