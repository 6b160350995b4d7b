package dht

import (
	"net"
	"testing"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

func benchResp(b *testing.B) (protocol.BodyFindNodeResp, *testKeys) {
	k := newTestKeys(1)
	var resp protocol.BodyFindNodeResp
	for i := 0; i < 16; i++ {
		a := newTestKeys(uint64(i + 10)).addr
		resp.Nodes = append(resp.Nodes, protocol.NodeInfo{Address: a, NodeID: a2al.NodeIDFromAddress(a), IP: net.IPv4(127, 1, byte(i), 1).To4(), Port: 4000})
	}
	resp.ObservedAddr = ObservedAddr(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5})
	return resp, k
}

func BenchmarkTrimFindNodeResp(b *testing.B) {
	resp, _ := benchResp(b)
	for i := 0; i < b.N; i++ {
		r := resp
		r.Nodes = append([]protocol.NodeInfo(nil), resp.Nodes...)
		_ = protocol.TrimFindNodeResp(&r)
	}
}

func BenchmarkEncodeFindNodeResp(b *testing.B) {
	resp, k := benchResp(b)
	_ = protocol.TrimFindNodeResp(&resp)
	h := protocol.Header{Version: 1, MsgType: protocol.MsgFindNodeResp}
	for i := 0; i < b.N; i++ {
		if _, err := protocol.EncodeMessage(h, resp, k.pub(), k.sign); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeFindNodeResp(b *testing.B) {
	resp, k := benchResp(b)
	_ = protocol.TrimFindNodeResp(&resp)
	h := protocol.Header{Version: 1, MsgType: protocol.MsgFindNodeResp}
	raw, err := protocol.EncodeMessage(h, resp, k.pub(), k.sign)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := protocol.DecodeMessage(raw); err != nil {
			b.Fatal(err)
		}
	}
}
