package dht

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// RPC engine parameters.
const (
	maxPendingRPCs   = 4096 // bound of the tx_id -> waiter map
	rpcAttempts      = 3
	rpcMinTimeout    = 100 * time.Millisecond
	rpcMaxTimeout    = 2 * time.Second
	rpcDefaultTO     = time.Second // before any RTT sample
	queryHardTimeout = 2 * time.Second
)

// rpcResult is a matched response.
type rpcResult struct {
	c    *call
	msg  *protocol.Message
	path inPath
	rtt  time.Duration
	size int // datagram bytes
}

// call is one outstanding request attempt. A response is accepted only if
// it carries the tx_id, the expected type and comes from the peer asked:
// the expected NodeID when we know it, else the address we sent to (docs/reference-defects.md W-5).
type call struct {
	tx     [protocol.TxIDLen]byte
	want   uint8
	peerID a2al.NodeID
	hasID  bool
	addr   string
	sent   time.Time // wall clock, for RTT
	ch     chan rpcResult
	tag    any
}

type rpcEngine struct {
	mu      sync.Mutex
	pending map[[protocol.TxIDLen]byte]*call
}

func (e *rpcEngine) init() { e.pending = make(map[[protocol.TxIDLen]byte]*call) }

func (e *rpcEngine) register(c *call) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.pending) >= maxPendingRPCs {
		return errTooManyRPCs
	}
	e.pending[c.tx] = c
	return nil
}

func (e *rpcEngine) unregister(c *call) {
	e.mu.Lock()
	if e.pending[c.tx] == c {
		delete(e.pending, c.tx)
	}
	e.mu.Unlock()
}

// deliver hands a verified response to its waiter. It returns false when no
// waiter matches (late, unsolicited or from the wrong peer).
func (n *Node) deliver(msg *protocol.Message, p inPath, size int) bool {
	e := &n.rpc
	e.mu.Lock()
	c := e.pending[msg.Header.TxID]
	if c == nil || c.want != msg.Header.MsgType {
		e.mu.Unlock()
		return false
	}
	if c.hasID && p.id != c.peerID || !c.hasID && p.from.String() != c.addr {
		e.mu.Unlock()
		n.cnt.dropWrongPeer.Add(1)
		return false
	}
	delete(e.pending, c.tx)
	e.mu.Unlock()
	select {
	case c.ch <- rpcResult{c: c, msg: msg, path: p, rtt: time.Since(c.sent), size: size}:
	default: // channel sized for every outstanding call; never blocks
	}
	return true
}

func newTxID() (tx [protocol.TxIDLen]byte) {
	_, _ = crand.Read(tx[:])
	return tx
}

func wantFor(msgType uint8) uint8 {
	switch msgType {
	case protocol.MsgPing:
		return protocol.MsgPong
	case protocol.MsgFindNode:
		return protocol.MsgFindNodeResp
	case protocol.MsgFindValue:
		return protocol.MsgFindValueResp
	case protocol.MsgStore:
		return protocol.MsgStoreResp
	case protocol.MsgDHTPush:
		return protocol.MsgDHTPushAck
	}
	return 0
}

func (n *Node) encode(tx [protocol.TxIDLen]byte, body any) ([]byte, error) {
	h := protocol.Header{Version: protocol.ProtocolVersion, MsgType: protocol.MsgTypeOf(body), TxID: tx}
	raw, err := protocol.EncodeMessage(h, body, n.pub, n.sign)
	if err != nil {
		return nil, fmt.Errorf("dht: encode msg type %#x: %w", h.MsgType, err)
	}
	return raw, nil
}

// sendOut sends raw to a peer: over an existing punched connection when we
// know the peer's NodeID and the punch layer has one, else over UDP.
func (n *Node) sendOut(ctx context.Context, to net.Addr, id a2al.NodeID, hasID bool, raw []byte) error {
	if n.punch != nil && hasID {
		if sent, err := n.sendPunched(ctx, id, raw); sent {
			return err
		}
	}
	if err := n.tr.Send(to, raw); err != nil {
		return fmt.Errorf("dht: send to %v: %w", to, err)
	}
	n.cnt.tx.Add(1)
	return nil
}

// sendPunched offers raw to the punch layer. done: it went there, or must
// go nowhere (ctx ended: err says why). A punched connection that refuses
// the message (its send queue is full) is counted as punch_send_fallback
// and the message falls back to UDP.
func (n *Node) sendPunched(ctx context.Context, id a2al.NodeID, raw []byte) (done bool, err error) {
	ok, err := n.punch.SendTo(ctx, id, raw)
	switch {
	case ok:
		if err == nil {
			n.cnt.tx.Add(1)
		}
		return true, err
	case err == nil:
		return false, nil // no punched connection
	case ctx.Err() != nil:
		return true, fmt.Errorf("dht: send to %v over its punched connection: %w", id, err)
	}
	n.cnt.punchFallback.Add(1)
	n.log.Debug("dht: punched connection refused a message, sending it over UDP", "peer", id, "err", err)
	return false, nil
}

// startCall sends one request attempt and registers its waiter on ch; it
// returns the datagram size. ch must have room for every call registered on it.
func (n *Node) startCall(ctx context.Context, to net.Addr, id a2al.NodeID, hasID bool, body any, ch chan rpcResult, tag any) (*call, int, error) {
	typ := protocol.MsgTypeOf(body)
	c := &call{tx: newTxID(), want: wantFor(typ), peerID: id, hasID: hasID, ch: ch, tag: tag}
	if !hasID {
		c.addr = to.String() // matched by address only when the NodeID is unknown
	}
	raw, err := n.encode(c.tx, body)
	if err != nil {
		return nil, 0, err
	}
	if err := n.rpc.register(c); err != nil {
		return nil, 0, err
	}
	c.sent = time.Now()
	if err := n.sendOut(ctx, to, id, hasID, raw); err != nil {
		n.rpc.unregister(c)
		return nil, 0, err
	}
	return c, len(raw), nil
}

// rpcTimeout adapts the per-attempt timeout to the measured RTT:
// max(3*srtt, 100ms) capped at 2 s; 1 s before any sample.
func (n *Node) rpcTimeout(id a2al.NodeID, hasID bool) time.Duration {
	var s time.Duration
	if hasID {
		s = n.health.srttOf(id)
	}
	if s == 0 {
		s = n.health.globalSRTT()
		if s == 0 {
			return rpcDefaultTO
		}
		s *= 2 // unknown peer: be more patient than with a measured one
	}
	return min(max(3*s, rpcMinTimeout), rpcMaxTimeout)
}

// roundTrip runs a request with up to 3 attempts, each with a fresh tx_id.
// Earlier attempts stay registered, so a late answer to attempt 1 still
// completes the RPC. It records health success/failure.
func (n *Node) roundTrip(ctx context.Context, to net.Addr, matchID bool, body any) (rpcResult, error) {
	if to == nil {
		return rpcResult{}, fmt.Errorf("dht: nil peer address")
	}
	id, hasID := n.book.idOf(to)
	return n.roundTripTo(ctx, to, id, hasID, matchID, body)
}

// roundTripTo is roundTrip with the peer's NodeID supplied by the caller.
func (n *Node) roundTripTo(ctx context.Context, to net.Addr, id a2al.NodeID, hasID, matchID bool, body any) (rpcResult, error) {
	if !n.started.Load() {
		return rpcResult{}, ErrNotStarted
	}
	expectID := hasID && matchID
	ch := make(chan rpcResult, rpcAttempts)
	var calls []*call
	defer func() {
		for _, c := range calls {
			n.rpc.unregister(c)
		}
	}()
	var lastErr error
	for attempt := 0; attempt < rpcAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			lastErr = err
			break
		}
		c, _, err := n.startCall(ctx, to, id, expectID, body, ch, nil)
		if err != nil {
			if hasID {
				n.recordFailure(id)
			}
			return rpcResult{}, err
		}
		calls = append(calls, c)
		t := time.NewTimer(n.rpcTimeout(id, hasID))
		select {
		case r := <-ch:
			t.Stop()
			n.cnt.rpcOK.Add(1)
			return r, nil
		case <-t.C:
			lastErr = fmt.Errorf("dht: rpc to %v timed out after %d attempt(s): %w", to, attempt+1, context.DeadlineExceeded)
		case <-ctx.Done():
			t.Stop()
			lastErr = ctx.Err()
		case <-n.ctx.Done():
			t.Stop()
			lastErr = errClosed
		}
		if lastErr == errClosed || ctx.Err() != nil {
			break
		}
	}
	// A response may have raced with the final timeout.
	select {
	case r := <-ch:
		n.cnt.rpcOK.Add(1)
		return r, nil
	default:
	}
	if hasID && n.ctx.Err() == nil {
		n.recordFailure(id)
	}
	return rpcResult{}, fmt.Errorf("dht: rpc to %v: %w", to, lastErr)
}

// onRPCSuccess updates health, RTT and the routing table for a verified
// response from r.path.from.
func (n *Node) onRPCSuccess(r rpcResult) a2al.NodeID {
	id := a2al.NodeIDFromAddress(r.msg.SenderAddr)
	n.recordSuccess(id, r.rtt)
	n.tabMu.Lock()
	n.tab.UpdateVerifiedAt(id, n.now())
	n.tabMu.Unlock()
	return id
}
