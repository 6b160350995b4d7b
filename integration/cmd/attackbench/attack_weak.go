package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/pion/stun"

	"github.com/a2alnode/a2al/protocol"
)

// joinPeers makes n real DHT nodes PING v, each from its own address made
// by addr(i); it returns a closer.
func joinPeers(ctx context.Context, v *node, n int, addr func(i int) net.IP) func() {
	var closers []func()
	for i := range n {
		dn, c, err := dhtNode(addr(i), newIdent().key)
		if err != nil {
			continue
		}
		closers = append(closers, func() { dn.Close(); c.Close() })
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = dn.Ping(pctx, v.udp)
		cancel()
	}
	time.Sleep(time.Second) // the victim verifies them
	return func() {
		for _, f := range closers {
			f()
		}
	}
}

// attackDHTAmplify: FIND_NODE requests from a source that never answers
// anything (as a spoofed one would): bytes answered per byte asked.
func attackDHTAmplify(ctx context.Context, e *env, s *Summary) (r Row) {
	v, err := startNode(e.bins, e.dir(), nil)
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer v.stop()
	defer joinPeers(ctx, v, 20, func(i int) net.IP { return net.IPv4(127, byte(110+i), 0, 1) })()
	r.MemBeforeKB = v.rssKB()
	c, err := udpFrom(net.IPv4(127, 0, 110, 1))
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer c.Close()
	id := newIdent()
	var answers, ansBytes int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			_ = c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if m, err := protocol.DecodeMessage(buf[:n]); err == nil && m.Header.MsgType == protocol.MsgFindNodeResp {
				answers++
				ansBytes += int64(n)
			}
		}
	}()
	t := time.NewTicker(5 * time.Millisecond) // 200/s for 2 s
	for range 400 / e.scale {
		<-t.C
		var target [32]byte
		copy(target[:], randHex(16))
		m := id.msg(protocol.BodyFindNode{Target: target})
		if n, err := c.WriteTo(m, v.udp); err == nil {
			r.AttackerBytes += int64(n)
			r.AttackerPkts++
		}
	}
	t.Stop()
	<-done
	r.MemAfterKB = v.rssKB()
	amp := float64(ansBytes) / float64(max(1, r.AttackerBytes))
	s.DHTAnswerAmplification, s.DHTAnswersToUnproven = ptr(amp), ptr(int(answers))
	r.VictimSent = fmt.Sprintf("%d answers %d B (%.1fx) to a mute source", answers, ansBytes, amp)
	r.Legit = "-"
	return r
}

// attackSTUNFlood: 1000 Binding requests in about a second from one source
// to the hub's STUN server.
func attackSTUNFlood(ctx context.Context, e *env, s *Summary) (r Row) {
	h, err := startHub(e.bins)
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer h.stop()
	r.MemBeforeKB = h.rssKB()
	dst, err := net.ResolveUDPAddr("udp4", h.stun)
	if err != nil {
		return Row{Err: err.Error()}
	}
	c, err := udpFrom(net.IPv4(127, 0, 120, 1))
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer c.Close()
	var got, gotB int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			got++
			gotB += int64(n)
		}
	}()
	t := time.NewTicker(time.Millisecond)
	for range 1000 / e.scale {
		<-t.C
		m, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
		if n, err := c.WriteTo(m.Raw, dst); err == nil {
			r.AttackerBytes += int64(n)
			r.AttackerPkts++
		}
	}
	t.Stop()
	<-done
	r.MemAfterKB = h.rssKB()
	s.STUNAnsweredOneSource = ptr(int(got))
	r.VictimSent = fmt.Sprintf("%d/%d answered, %d B", got, r.AttackerPkts, gotB)
	r.Legit = "-"
	return r
}

// attackSybil16: 60 nodes from distinct /24s of one /16 join; how many of
// the victim's routing entries come from that /16?
func attackSybil16(ctx context.Context, e *env, s *Summary) (r Row) {
	v, err := startNode(e.bins, e.dir(), nil)
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer v.stop()
	r.MemBeforeKB = v.rssKB()
	n := max(4, 60/e.scale)
	defer joinPeers(ctx, v, n, func(i int) net.IP { return net.IPv4(127, 130, byte(1+i), 1) })()
	r.AttackerPkts = int64(n)
	var rt struct {
		Peers []struct {
			IP string `json:"ip"`
		} `json:"peers"`
	}
	resp, err := apiClient.Get("http://" + v.api + "/debug/routing")
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&rt); err != nil {
		return Row{Err: "routing table: " + err.Error()}
	}
	same, total := 0, len(rt.Peers)
	for _, p := range rt.Peers {
		if strings.HasPrefix(p.IP, "127.130.") {
			same++
		}
	}
	r.MemAfterKB = v.rssKB()
	s.SybilSame16Entries = ptr(same)
	r.VictimSent = fmt.Sprintf("%d of %d routing entries from one /16", same, total)
	r.Legit = "-"
	return r
}
