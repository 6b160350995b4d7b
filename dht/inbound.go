package dht

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/dht/internal/routing"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

// Inbound parameters.
const (
	maxInboundPacket = 64 << 10
	evictQueueCap    = 32
	taskQueueCap     = 64
	taskWorkers      = 4
	evictPingTimeout = 2 * time.Second
	evictFresh       = time.Minute // an LRU verified this recently is kept without a ping
	decodeLogEvery   = 30 * time.Second
)

type evictJob struct {
	lru, cand routing.Contact
}

// via is the channel a datagram arrived on. It decides how far the source
// address is trusted and where an answer goes.
type via uint8

const (
	// viaUDP: the node's own socket. The source address may be forged
	// until the peer answers our tx_id there (docs/dht-security.md).
	viaUDP via = iota
	// viaPunched: a punched Mode B connection of the PunchTransport,
	// authenticated end to end; answers go back on it.
	viaPunched
)

// inPath is where an inbound message came from: source address, channel
// and, once the message is verified, the sender's NodeID.
type inPath struct {
	from net.Addr
	via  via
	id   a2al.NodeID // zero until verified
}

// punched reports whether the message came over an authenticated punched
// connection.
func (p inPath) punched() bool { return p.via == viaPunched }

// inPacket is a datagram waiting for verification (its sender is not
// known yet, so it carries no inPath).
type inPacket struct {
	data []byte
	from net.Addr
	via  via
}

func (p inPacket) path() inPath { return inPath{from: p.from, via: p.via} }

// The verify stage (Node.verify): up to verifyWorkers decode and verify
// datagrams in parallel (signature checks dominate the receive path, and a
// lookup's answers arrive together); the workers exist only while
// datagrams wait. Its queue has one bounded lane per channel: UDP sources
// can be forged, so a UDP flood must not crowd out authenticated punched
// peers; workers serve the punched lane first.
const (
	verifyWorkers   = 2
	lanePunched     = 0
	punchedQueueCap = 32 // punched datagrams waiting; beyond, dropped and counted
	laneUDP         = 1
	udpQueueCap     = verifyWorkers
)

// recvLoop is the only caller of Transport.Receive (no concurrency demanded
// of transports); it hands datagrams to the verify stage and blocks while
// the UDP lane is full, leaving the backlog to the transport (the demux
// drops and counts beyond its own queue).
func (n *Node) recvLoop() {
	for {
		data, from, err := n.tr.Receive()
		if err != nil {
			if n.ctx.Err() != nil || errors.Is(err, transport.ErrClosed) {
				return
			}
			n.log.Debug("dht: receive error", "err", err)
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		for !n.verify.push(n, laneUDP, inPacket{data: data, from: from, via: viaUDP}) {
			select {
			case <-n.verify.space:
			case <-n.ctx.Done():
				return
			}
		}
	}
}

// InjectReceived queues a DHT datagram that arrived over a punched
// connection of the PunchTransport for the same verification as UDP ones
// (it keeps a copy of data). Replies go back on that connection when the
// punch layer can deliver them, else to from. When the punched lane is
// full the datagram is dropped and counted (drop_punched_queue). Safe for
// concurrent use.
func (n *Node) InjectReceived(data []byte, from net.Addr) {
	if n == nil || from == nil || n.ctx.Err() != nil {
		return
	}
	if !n.verify.push(n, lanePunched, inPacket{data: append([]byte(nil), data...), from: from, via: viaPunched}) {
		n.cnt.dropPunchedQueue.Add(1)
	}
}

func (n *Node) handlePacket(data []byte, p inPath) {
	from := p.from
	if len(data) == 0 || len(data) > maxInboundPacket || from == nil {
		n.cnt.dropDecode.Add(1)
		return
	}
	// Cheap per-source gate before the expensive signature check.
	if !n.limiter.allow(sourceKey(from), classPacket, n.now()) {
		n.cnt.dropRate.Add(1)
		return
	}
	msg, err := protocol.DecodeMessage(data)
	if err != nil {
		switch {
		case errors.Is(err, protocol.ErrUnknownMsgType):
			n.cnt.dropUnknown.Add(1)
		case errors.Is(err, protocol.ErrBadSignature):
			n.cnt.dropSig.Add(1)
		default:
			n.cnt.dropDecode.Add(1)
		}
		n.logDecode(err, from)
		return
	}
	n.cnt.rx.Add(1)
	p.id = a2al.NodeIDFromAddress(msg.SenderAddr)
	switch msg.Header.MsgType {
	case protocol.MsgPong, protocol.MsgFindNodeResp, protocol.MsgFindValueResp, protocol.MsgStoreResp, protocol.MsgDHTPushAck:
		n.deliver(msg, p, len(data))
		return
	}
	if n.replay.seen(p.id, msg.Header.TxID, n.now()) {
		n.cnt.dropReplay.Add(1)
		return
	}
	n.handleRequest(msg, p)
}

func (n *Node) logDecode(err error, from net.Addr) {
	now := time.Now().UnixNano()
	last := n.lastDecodeLog.Load()
	if now-last < int64(decodeLogEvery) || !n.lastDecodeLog.CompareAndSwap(last, now) {
		return
	}
	n.log.Warn("dht: dropped undecodable datagram", "from", from, "err", err)
}

// contactFor builds the NodeInfo for a peer seen at from. Non-UDP sources
// get the 127.0.0.1:0 placeholder (in-memory transports, compat).
func contactFor(addr a2al.Address, id a2al.NodeID, from net.Addr) protocol.NodeInfo {
	ni := protocol.NodeInfo{Address: addr, NodeID: id}
	if u, ok := from.(*net.UDPAddr); ok && u != nil && u.IP != nil {
		ni.IP = u.IP
		if v4 := u.IP.To4(); v4 != nil {
			ni.IP = v4
		}
		ni.Port = uint16(u.Port)
	} else {
		ni.IP = net.IPv4(127, 0, 0, 1).To4()
	}
	return ni
}

// subnetOf is the diversity key for a contact dialled at dial.
func subnetOf(ni protocol.NodeInfo, dial net.Addr) string {
	if u, ok := dial.(*net.UDPAddr); ok {
		return routing.SubnetKey(u.IP)
	}
	if dial != nil {
		return "a:" + dial.Network() + ":" + dial.String()
	}
	if ni.Port != 0 {
		return routing.SubnetKey(ni.IP)
	}
	return ""
}

// tabAddDirect inserts a first-hand contact. With a full bucket the LRU
// check is queued for the eviction worker (never done on the receive path,
// docs/reference-defects.md W-1) when mayEvict is set.
func (n *Node) tabAddDirect(ni protocol.NodeInfo, dial net.Addr, mayEvict bool) {
	if ni.NodeID == n.id {
		return
	}
	now := n.now()
	n.seen.record(ni.NodeID, now)
	c := routing.Contact{Info: ni, Subnet: subnetOf(ni, dial), VerifiedAt: routing.StampOf(now)}
	n.tabMu.Lock()
	res, lru := n.tab.Add(c, true, now)
	n.tabMu.Unlock()
	if res == routing.BucketFull && mayEvict && lru != nil {
		if !n.evicts.push(n, 0, evictJob{lru: *lru, cand: c}) {
			n.cnt.dropEvictQueue.Add(1)
		}
	}
}

// checkEviction pings the LRU entry of a full bucket; a dead LRU is
// replaced by the newcomer, a live one keeps its slot (old-node preference)
// and the newcomer waits in the replacement cache. One eviction worker at
// most runs (evicts), so a burst of newcomers never pings a bucket in
// parallel.
func (n *Node) checkEviction(j evictJob) {
	now := n.now()
	n.tabMu.RLock()
	cur, ok := n.tab.Get(j.lru.Info.NodeID)
	n.tabMu.RUnlock()
	if !ok {
		// LRU already gone: try the newcomer directly.
		n.tabMu.Lock()
		n.tab.Add(j.cand, true, now)
		n.tabMu.Unlock()
		return
	}
	if heard := n.health.lastHeard(cur.Info.NodeID); !heard.IsZero() && now.Sub(heard) < evictFresh {
		// Heard from the LRU moments ago: it is alive, no ping needed.
		n.tabMu.Lock()
		n.tab.Add(j.cand, false, now)
		n.tabMu.Unlock()
		return
	}
	alive := false
	if addr, _ := n.book.get(cur.Info.NodeID); addr != nil {
		ctx, cancel := context.WithTimeout(n.ctx, evictPingTimeout)
		_, err := n.roundTripTo(ctx, addr, cur.Info.NodeID, true, true, protocol.BodyPing{Address: n.addr})
		cancel()
		alive = err == nil
	}
	n.tabMu.Lock()
	defer n.tabMu.Unlock()
	if alive {
		n.tab.Add(j.cand, false, n.now()) // park in the replacement cache
		return
	}
	n.tab.Replace(cur.Info.NodeID, j.cand, n.now())
}

// remember records the sender of a verified request. Only a request from
// the address we already dial (or from a peer we never heard from
// first-hand) counts as a sign of life and refreshes the routing entry.
func (n *Node) remember(msg *protocol.Message, p inPath) {
	id, from := p.id, p.from
	ni := contactFor(msg.SenderAddr, id, from)
	now := n.now()
	if p.punched() {
		n.noteInbound(id)
		// Punched channel: evidence of life, but its address never
		// overrides a better dial address and never clears the punched
		// flag (docs/reference-defects.md W-18, docs/dht.md §17.4 "M6").
		if a, _ := n.book.get(id); a == nil {
			n.book.bind(id, from, rankPunch)
		}
		n.seen.record(id, now)
		dial, _ := n.book.get(id)
		n.tabMu.Lock()
		if n.tab.Contains(id) {
			n.tab.UpdateVerifiedAt(id, now)
		} else {
			n.tab.AddPunched(routing.Contact{Info: ni, Subnet: subnetOf(ni, dial), VerifiedAt: routing.StampOf(now)}, now)
		}
		n.tabMu.Unlock()
		return
	}
	switch known, rank := n.knownAddr(id); {
	case rank <= rankHearsay, sameAddr(known, from):
		// First first-hand contact, or the address we already dial.
		n.noteInbound(id)
		n.book.bind(id, from, rankInbound)
		n.tabAddDirect(ni, from, true)
	default:
		// A request from somewhere else moves nothing by itself: it may
		// be a replay. Challenge the new address (docs/dht-security.md).
		n.challengeAddr(id, from)
	}
}

// handleRequest answers a verified request. The answer goes out first; the
// bookkeeping for the sender (address book, routing table, seen-peers) runs
// after the reply is sent, so it never adds to the requester's latency.
func (n *Node) handleRequest(msg *protocol.Message, p inPath) {
	id, from := p.id, p.from
	if id == n.id {
		n.cnt.dropSelf.Add(1)
		return
	}
	src := sourceKey(from)
	now := n.now()
	switch b := msg.Body.(type) {
	case protocol.BodyPing:
		n.reply(p, msg.Header.TxID, protocol.BodyPong{Address: n.addr, ObservedAddr: ObservedAddr(from)})
	case protocol.BodyFindNode:
		if !n.allowAnswer(p, src, now) {
			return
		}
		resp := protocol.BodyFindNodeResp{Nodes: n.answerContacts(b.Target, id), ObservedAddr: ObservedAddr(from)}
		if err := protocol.TrimFindNodeResp(&resp); err != nil {
			n.log.Debug("dht: trim FIND_NODE_RESP", "err", err)
			return
		}
		n.reply(p, msg.Header.TxID, resp)
	case protocol.BodyFindValue:
		if !n.allowAnswer(p, src, now) {
			return
		}
		resp := n.findValueAnswer(b, id, from, now)
		if err := protocol.TrimFindValueResp(&resp); err != nil {
			n.log.Debug("dht: trim FIND_VALUE_RESP", "err", err)
			return
		}
		n.reply(p, msg.Header.TxID, resp)
		n.onSubscribe(b, p, len(resp.Records))
	case protocol.BodyStore:
		if !n.limiter.allow(src, classStore, now) {
			n.cnt.dropRate.Add(1)
			return
		}
		var key a2al.NodeID
		if b.Key != nil {
			key = *b.Key
		}
		resp := n.storeResponse(key, b.Record, from, now)
		n.reply(p, msg.Header.TxID, resp)
		if resp.Stored && !resp.AlreadyHad {
			n.onNewRecord(b.EffectiveKey(), b.Record)
		}
	case protocol.BodyDHTPush:
		if !n.handlePush(b, p, msg.Header.TxID) {
			return
		}
	case protocol.BodyNATProbeReq:
		n.remember(msg, p)
		n.handleNATProbeReq(b, from)
		return
	case protocol.BodyNATProbeEcho:
		n.remember(msg, p)
		n.nat.wake(b.Token)
		return
	default:
		n.cnt.dropUnknown.Add(1)
		return
	}
	n.remember(msg, p)
}

// allowAnswer spends the budget for an answer several times larger than
// its request. A source not yet proven to be the sender's address (it never
// answered our own tx_id there) may be a spoofed victim, so it gets the
// tighter classAmplifyUnproven budget (docs/dht-security.md). Punched
// channels are authenticated and count as proven.
func (n *Node) allowAnswer(p inPath, src string, now time.Time) bool {
	if !p.punched() {
		if a, rank := n.book.get(p.id); rank < rankAnswered || !sameAddr(a, p.from) {
			if !n.limiter.allow(src, classAmplifyUnproven, now) {
				n.cnt.dropRate.Add(1)
				n.cnt.dropUnproven.Add(1)
				return false
			}
		}
	}
	if !n.limiter.allow(src, classAmplify, now) {
		n.cnt.dropRate.Add(1)
		return false
	}
	return true
}

// sameAddr compares two dial addresses without formatting UDP ones.
func sameAddr(a, b net.Addr) bool {
	ua, ok1 := a.(*net.UDPAddr)
	ub, ok2 := b.(*net.UDPAddr)
	if ok1 && ok2 {
		return ua.Port == ub.Port && ua.IP.Equal(ub.IP) && ua.Zone == ub.Zone
	}
	return a != nil && b != nil && a.String() == b.String()
}

// findValueAnswer builds a FIND_VALUE answer: the nearest contacts and the
// records Store.AnswerRecords picks within what is left of the body budget
// once one contact is kept (contacts are trimmed first, as the reference
// does), so trimming never has to drop a record.
func (n *Node) findValueAnswer(b protocol.BodyFindValue, requester a2al.NodeID, from net.Addr, now time.Time) protocol.BodyFindValueResp {
	resp := protocol.BodyFindValueResp{Nodes: n.answerContacts(b.Target, requester), ObservedAddr: ObservedAddr(from)}
	budget := protocol.ResponseBodyBudget - protocol.FindValueRespOverhead(resp.ObservedAddr)
	if len(resp.Nodes) > 0 {
		budget -= protocol.NodeInfoWireLen(resp.Nodes[0])
	}
	resp.Records = n.store.AnswerRecords(b.Target, b.RecType, budget, now)
	return resp
}

// storeResponse applies a STORE from src and maps the outcome to
// STORE_RESP: AlreadyHad counts as stored; policy refusals say so (reason 1).
func (n *Node) storeResponse(key a2al.NodeID, rec protocol.SignedRecord, src net.Addr, now time.Time) protocol.BodyStoreResp {
	at := key
	if at.IsZero() {
		at = a2al.NodeIDFromAddress(rec.Address)
	}
	err := n.store.putFrom(key, rec, now, originOf(src, n.responsibleFor(at)))
	switch {
	case err == nil:
		return protocol.BodyStoreResp{Stored: true}
	case errors.Is(err, ErrStaleRecord):
		return protocol.BodyStoreResp{Stored: true, AlreadyHad: true}
	case errors.Is(err, ErrStorePolicy):
		return protocol.BodyStoreResp{Reason: protocol.StoreReasonPolicy}
	default:
		return protocol.BodyStoreResp{Reason: protocol.StoreReasonRecordInvalid}
	}
}

// responsibleFor reports whether we are among the K nodes closest to key
// that we know of (verified contacts), i.e. a node that should hold its
// records. It protects those records from eviction by other keys' floods.
func (n *Node) responsibleFor(key a2al.NodeID) bool {
	n.tabMu.RLock()
	cs := n.tab.Nearest(key, routing.K, func(c *routing.Contact) bool { return c.Verified() })
	n.tabMu.RUnlock()
	return len(cs) < routing.K || a2al.Closer(n.id, cs[len(cs)-1].Info.NodeID, key)
}

// reply answers a request on the channel it arrived on: punched requests
// go back through the punch layer, UDP requests straight to their source.
func (n *Node) reply(p inPath, tx [protocol.TxIDLen]byte, body any) {
	raw, err := n.encode(tx, body)
	if err != nil {
		n.log.Debug("dht: encode reply", "err", err)
		return
	}
	if p.punched() && n.punch != nil {
		if sent, err := n.sendPunched(n.ctx, p.id, raw); sent {
			if err != nil {
				n.log.Debug("dht: send reply", "to", p.id, "err", err)
			}
			return
		}
	}
	if err := n.tr.Send(p.from, raw); err != nil {
		n.log.Debug("dht: send reply", "to", p.from, "err", err)
		return
	}
	n.cnt.tx.Add(1)
}

// answerContacts returns the XOR-nearest healthy contacts for a FIND_*
// answer: verified or Good entries that are not Bad, padded with unverified
// (but validated) hearsay only when fewer than K/2 qualify. The requester is
// left out.
func (n *Node) answerContacts(target, requester a2al.NodeID) []protocol.NodeInfo {
	notRequester := func(c *routing.Contact) bool { return c.Info.NodeID != requester }
	g := n.nearestGrouped(target, notRequester, routing.K, func(verified bool, st PeerHealthState) int {
		switch {
		case st == PeerHealthBad:
			return -1
		case verified || st == PeerHealthGood:
			return 0
		default:
			return 1
		}
	})
	out := append(make([]protocol.NodeInfo, 0, routing.K), g[0]...) // never nil: an empty list is [] on the wire, not null
	if len(out) < routing.K/2 {
		for _, s := range g[1] {
			if len(out) >= routing.K {
				break
			}
			out = append(out, s)
		}
		sortInfos(out, target)
	}
	return out
}

func sortInfos(ns []protocol.NodeInfo, target a2al.NodeID) {
	for i := 1; i < len(ns); i++ {
		for j := i; j > 0 && a2al.Closer(ns[j].NodeID, ns[j-1].NodeID, target); j-- {
			ns[j], ns[j-1] = ns[j-1], ns[j]
		}
	}
}
