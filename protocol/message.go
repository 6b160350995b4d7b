package protocol

import (
	"crypto/ed25519"
	"fmt"

	"github.com/a2alnode/a2al"
)

// SignFunc returns a 64-byte Ed25519 signature of msg.
type SignFunc func(msg []byte) ([]byte, error)

// Signing prefixes (docs/wire.md §0.1).
var (
	msgSignPrefix = []byte("a2al-msg\x00")
	recSignPrefix = []byte("a2al-rec\x00")
	delSignPrefix = []byte("a2al-del\x00")
)

// Message is a decoded, signature-checked DHT message.
type Message struct {
	Header     Header
	Body       any // one of the Body* value types
	SenderPub  []byte
	SenderAddr a2al.Address
	// VerifiedRaw is true when the signature verified over the received
	// header/body bytes; false when it only verified over the canonical
	// re-encoding of the known fields (the reference's rule, docs/wire.md §3.3).
	VerifiedRaw bool
}

// MsgTypeOf returns the message type of a Body* value (or pointer), or 0.
func MsgTypeOf(body any) uint8 {
	switch body.(type) {
	case BodyPing, *BodyPing:
		return MsgPing
	case BodyPong, *BodyPong:
		return MsgPong
	case BodyFindNode, *BodyFindNode:
		return MsgFindNode
	case BodyFindNodeResp, *BodyFindNodeResp:
		return MsgFindNodeResp
	case BodyFindValue, *BodyFindValue:
		return MsgFindValue
	case BodyFindValueResp, *BodyFindValueResp:
		return MsgFindValueResp
	case BodyStore, *BodyStore:
		return MsgStore
	case BodyStoreResp, *BodyStoreResp:
		return MsgStoreResp
	case BodyNATProbeReq, *BodyNATProbeReq:
		return MsgNATProbeReq
	case BodyNATProbeEcho, *BodyNATProbeEcho:
		return MsgNATProbeEcho
	case BodyDHTPush, *BodyDHTPush:
		return MsgDHTPush
	case BodyDHTPushAck, *BodyDHTPushAck:
		return MsgDHTPushAck
	}
	return 0
}

// KnownMsgType reports whether t is one of the message types we implement:
// the v0.1.8 set plus HEAD's DHT_PUSH and DHT_PUSH_ACK.
func KnownMsgType(t uint8) bool { return t >= MsgPing && t <= MsgDHTPushAck }

// deref turns a *BodyX into BodyX so the switch below sees one form.
func deref(body any) any {
	switch b := body.(type) {
	case *BodyPing:
		return *b
	case *BodyPong:
		return *b
	case *BodyFindNode:
		return *b
	case *BodyFindNodeResp:
		return *b
	case *BodyFindValue:
		return *b
	case *BodyFindValueResp:
		return *b
	case *BodyStore:
		return *b
	case *BodyStoreResp:
		return *b
	case *BodyNATProbeReq:
		return *b
	case *BodyNATProbeEcho:
		return *b
	case *BodyDHTPush:
		return *b
	case *BodyDHTPushAck:
		return *b
	}
	return body
}

func checkSockAddr(what string, b []byte) error {
	if len(b) != 6 && len(b) != 18 {
		return fmt.Errorf("%w: %s is %d bytes, want 6 or 18", ErrShape, what, len(b))
	}
	return nil
}

// bodyToWire converts a Body* value to its wire struct, applying the
// send-side shape checks of docs/wire.md §6.
func bodyToWire(body any) (any, error) {
	if body == nil {
		return nil, fmt.Errorf("%w: nil body", ErrShape)
	}
	if w, ok, err := pushToWire(deref(body)); ok {
		return w, err
	}
	switch b := deref(body).(type) {
	case BodyPing:
		return wirePing{Address: b.Address[:]}, nil
	case BodyPong:
		if err := checkSockAddr("observed_addr", b.ObservedAddr); err != nil {
			return nil, err
		}
		return wirePong{Address: b.Address[:], Observed: b.ObservedAddr}, nil
	case BodyFindNode:
		return wireFindNode{Target: b.Target[:]}, nil
	case BodyFindNodeResp:
		if err := checkSockAddr("observed_addr", b.ObservedAddr); err != nil {
			return nil, err
		}
		nodes, err := nodesToWire(b.Nodes)
		if err != nil {
			return nil, err
		}
		return wireFindNodeResp{Nodes: nodes, Observed: b.ObservedAddr}, nil
	case BodyFindValue:
		return wireFindValue{Target: b.Target[:], RecType: b.RecType, Subscribe: b.OneShotSubscribe}, nil
	case BodyFindValueResp:
		if err := checkSockAddr("observed_addr", b.ObservedAddr); err != nil {
			return nil, err
		}
		nodes, err := nodesToWire(b.Nodes)
		if err != nil {
			return nil, err
		}
		w := wireFindValueResp{Nodes: nodes, Observed: b.ObservedAddr}
		if b.Record != nil {
			if err := recordShape(*b.Record); err != nil {
				return nil, fmt.Errorf("%w: legacy record: %w", ErrShape, err)
			}
			r := recordToWire(*b.Record)
			w.Record = &r
		}
		for i, r := range b.Records {
			if err := recordShape(r); err != nil {
				return nil, fmt.Errorf("%w: record %d: %w", ErrShape, i, err)
			}
			w.Records = append(w.Records, recordToWire(r))
		}
		return w, nil
	case BodyStore:
		if err := recordShape(b.Record); err != nil {
			return nil, fmt.Errorf("%w: record: %w", ErrShape, err)
		}
		w := wireStore{Record: recordToWire(b.Record)}
		if b.Key != nil {
			w.Key = append([]byte{}, b.Key[:]...)
		}
		return w, nil
	case BodyStoreResp:
		return wireStoreResp{Stored: b.Stored, AlreadyHad: b.AlreadyHad, Reason: b.Reason}, nil
	case BodyNATProbeReq:
		if err := checkSockAddr("claimed_addr", b.ClaimedAddr); err != nil {
			return nil, err
		}
		return wireNATProbeReq{Token: b.Token[:], Claimed: b.ClaimedAddr}, nil
	case BodyNATProbeEcho:
		return wireNATProbeEcho{Token: b.Token[:]}, nil
	}
	return nil, fmt.Errorf("%w: unsupported body type %T", ErrShape, body)
}

// EncodeBody returns the canonical CBOR of body (the bytes that are signed
// and that count against ResponseBodyBudget).
func EncodeBody(body any) ([]byte, error) {
	w, err := bodyToWire(body)
	if err != nil {
		return nil, err
	}
	return marshal(w)
}

// EncodeMessage builds a complete signed message (docs/wire.md §5). h.MsgType may be
// 0 (taken from body) but must match body otherwise; h.Version 0 means
// ProtocolVersion. The result is byte-identical to what the reference emits.
func EncodeMessage(h Header, body any, pub []byte, sign SignFunc) ([]byte, error) {
	mt := MsgTypeOf(body)
	if mt == 0 {
		return nil, fmt.Errorf("%w: unsupported body type %T", ErrShape, body)
	}
	if h.MsgType == 0 {
		h.MsgType = mt
	} else if h.MsgType != mt {
		return nil, fmt.Errorf("%w: header msg_type %#x does not match body %T", ErrShape, h.MsgType, body)
	}
	if h.Version == 0 {
		h.Version = ProtocolVersion
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: sender pubkey is %d bytes, want 32", ErrShape, len(pub))
	}
	if sign == nil {
		return nil, fmt.Errorf("a2al/protocol: encode message: nil SignFunc")
	}
	hb, err := marshal(wireHeader{Version: h.Version, Features: h.Features, MsgType: h.MsgType, TxID: h.TxID[:]})
	if err != nil {
		return nil, err
	}
	bb, err := EncodeBody(body)
	if err != nil {
		return nil, err
	}
	sig, err := sign(msgSigningInput(hb, bb))
	if err != nil {
		return nil, fmt.Errorf("a2al/protocol: sign message: %w", err)
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature is %d bytes, want 64", ErrShape, len(sig))
	}
	out, err := marshal(wireEnvelope{Header: hb, Body: bb, Pub: pub, Sig: sig})
	if err != nil {
		return nil, err
	}
	if len(out) > MaxMessageSize {
		return nil, fmt.Errorf("%w: message is %d bytes, limit %d", ErrTooLarge, len(out), MaxMessageSize)
	}
	return out, nil
}

func msgSigningInput(header, body []byte) []byte {
	in := make([]byte, 0, len(msgSignPrefix)+len(header)+len(body))
	in = append(in, msgSignPrefix...)
	in = append(in, header...)
	return append(in, body...)
}

// decodeBody decodes raw into the wire struct of msgType, applies the docs/wire.md §6
// receive-side shape checks and returns (Body value, decoded wire struct).
func decodeBody(mt uint8, raw []byte) (any, any, error) {
	switch mt {
	case MsgPing:
		var w wirePing
		if err := unmarshal(raw, &w, "ping body"); err != nil {
			return nil, nil, err
		}
		if len(w.Address) != a2al.AddressLen {
			return nil, nil, fmt.Errorf("%w: ping address is %d bytes", ErrShape, len(w.Address))
		}
		var b BodyPing
		copy(b.Address[:], w.Address)
		return b, w, nil
	case MsgPong:
		var w wirePong
		if err := unmarshal(raw, &w, "pong body"); err != nil {
			return nil, nil, err
		}
		if len(w.Address) != a2al.AddressLen {
			return nil, nil, fmt.Errorf("%w: pong address is %d bytes", ErrShape, len(w.Address))
		}
		if err := checkSockAddr("observed_addr", w.Observed); err != nil {
			return nil, nil, err
		}
		b := BodyPong{ObservedAddr: w.Observed}
		copy(b.Address[:], w.Address)
		return b, w, nil
	case MsgFindNode:
		var w wireFindNode
		if err := unmarshal(raw, &w, "find_node body"); err != nil {
			return nil, nil, err
		}
		if len(w.Target) != a2al.NodeIDLen {
			return nil, nil, fmt.Errorf("%w: find_node target is %d bytes", ErrShape, len(w.Target))
		}
		var b BodyFindNode
		copy(b.Target[:], w.Target)
		return b, w, nil
	case MsgFindNodeResp:
		var w wireFindNodeResp
		if err := unmarshal(raw, &w, "find_node_resp body"); err != nil {
			return nil, nil, err
		}
		nodes, err := nodesFromWire(w.Nodes)
		if err != nil {
			return nil, nil, err
		}
		if err := checkSockAddr("observed_addr", w.Observed); err != nil {
			return nil, nil, err
		}
		return BodyFindNodeResp{Nodes: nodes, ObservedAddr: w.Observed}, w, nil
	case MsgFindValue:
		var w wireFindValue
		if err := unmarshal(raw, &w, "find_value body"); err != nil {
			return nil, nil, err
		}
		if len(w.Target) != a2al.NodeIDLen {
			return nil, nil, fmt.Errorf("%w: find_value target is %d bytes", ErrShape, len(w.Target))
		}
		b := BodyFindValue{RecType: w.RecType, OneShotSubscribe: w.Subscribe}
		copy(b.Target[:], w.Target)
		return b, w, nil
	case MsgFindValueResp:
		var w wireFindValueResp
		if err := unmarshal(raw, &w, "find_value_resp body"); err != nil {
			return nil, nil, err
		}
		nodes, err := nodesFromWire(w.Nodes)
		if err != nil {
			return nil, nil, err
		}
		if err := checkSockAddr("observed_addr", w.Observed); err != nil {
			return nil, nil, err
		}
		b := BodyFindValueResp{Nodes: nodes, ObservedAddr: w.Observed}
		if w.Record != nil {
			r, err := recordFromWire(*w.Record)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: legacy record: %w", ErrShape, err)
			}
			b.Record = &r
		}
		if len(w.Records) > 0 {
			b.Records = make([]SignedRecord, 0, len(w.Records))
			for i, wr := range w.Records {
				r, err := recordFromWire(wr)
				if err != nil {
					return nil, nil, fmt.Errorf("%w: record %d: %w", ErrShape, i, err)
				}
				b.Records = append(b.Records, r)
			}
		}
		return b, w, nil
	case MsgStore:
		var w wireStore
		if err := unmarshal(raw, &w, "store body"); err != nil {
			return nil, nil, err
		}
		r, err := recordFromWire(w.Record)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: record: %w", ErrShape, err)
		}
		b := BodyStore{Record: r}
		switch len(w.Key) {
		case 0:
		case a2al.NodeIDLen:
			var k a2al.NodeID
			copy(k[:], w.Key)
			b.Key = &k
		default:
			return nil, nil, fmt.Errorf("%w: store key is %d bytes, want 0 or 32", ErrShape, len(w.Key))
		}
		return b, w, nil
	case MsgStoreResp:
		var w wireStoreResp
		if err := unmarshal(raw, &w, "store_resp body"); err != nil {
			return nil, nil, err
		}
		return BodyStoreResp{Stored: w.Stored, AlreadyHad: w.AlreadyHad, Reason: w.Reason}, w, nil
	case MsgNATProbeReq:
		var w wireNATProbeReq
		if err := unmarshal(raw, &w, "nat_probe_req body"); err != nil {
			return nil, nil, err
		}
		if len(w.Token) != 8 {
			return nil, nil, fmt.Errorf("%w: token is %d bytes, want 8", ErrShape, len(w.Token))
		}
		if err := checkSockAddr("claimed_addr", w.Claimed); err != nil {
			return nil, nil, err
		}
		b := BodyNATProbeReq{ClaimedAddr: w.Claimed}
		copy(b.Token[:], w.Token)
		return b, w, nil
	case MsgNATProbeEcho:
		var w wireNATProbeEcho
		if err := unmarshal(raw, &w, "nat_probe_echo body"); err != nil {
			return nil, nil, err
		}
		if len(w.Token) != 8 {
			return nil, nil, fmt.Errorf("%w: token is %d bytes, want 8", ErrShape, len(w.Token))
		}
		var b BodyNATProbeEcho
		copy(b.Token[:], w.Token)
		return b, w, nil
	case MsgDHTPush, MsgDHTPushAck:
		return decodePushBody(mt, raw)
	}
	return nil, nil, fmt.Errorf("%w: %#x", ErrUnknownMsgType, mt)
}

// DecodeMessage runs the receive procedure of docs/wire.md §5.4 on one datagram
// (or Mode B stream payload).
//
// Decoding is strict where the reference is lenient (indefinite lengths,
// duplicate keys and tags are rejected: reference senders never produce
// them). Signature policy (docs/decisions.md D1): verify first over the RECEIVED
// header and body bytes, which accepts senders that add keys we do not know
// (e.g. HEAD's FIND_VALUE key 3); if that fails, verify over the canonical
// re-encoding of the fields we know, exactly as the reference does, which
// accepts reference-signed packets carrying unsigned extra keys or
// non-shortest integer heads. Either way the decoded values are the same and
// the PING/PONG sender binding applies to them.
func DecodeMessage(data []byte) (*Message, error) {
	if len(data) > MaxMessageSize {
		return nil, fmt.Errorf("%w: message is %d bytes, limit %d", ErrTooLarge, len(data), MaxMessageSize)
	}
	var env wireEnvelope
	if err := unmarshal(data, &env, "envelope"); err != nil {
		return nil, err
	}
	var wh wireHeader
	if err := unmarshal(env.Header, &wh, "header"); err != nil {
		return nil, err
	}
	if len(wh.TxID) != TxIDLen {
		return nil, fmt.Errorf("%w: tx_id is %d bytes, want 20", ErrShape, len(wh.TxID))
	}
	if len(env.Pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: sender_pubkey is %d bytes, want 32", ErrShape, len(env.Pub))
	}
	if len(env.Sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature is %d bytes, want 64", ErrShape, len(env.Sig))
	}
	if !KnownMsgType(wh.MsgType) {
		return nil, fmt.Errorf("%w: %#x", ErrUnknownMsgType, wh.MsgType)
	}
	body, wbody, err := decodeBody(wh.MsgType, env.Body)
	if err != nil {
		return nil, err
	}
	pub := ed25519.PublicKey(env.Pub)
	verifiedRaw := ed25519.Verify(pub, msgSigningInput(env.Header, env.Body), env.Sig)
	if !verifiedRaw {
		hb, err1 := marshal(wh)
		bb, err2 := marshal(wbody)
		if err1 != nil || err2 != nil ||
			!ed25519.Verify(pub, msgSigningInput(hb, bb), env.Sig) {
			return nil, fmt.Errorf("%w: msg_type %#x", ErrBadSignature, wh.MsgType)
		}
	}
	m := &Message{
		Header:      Header{Version: wh.Version, Features: wh.Features, MsgType: wh.MsgType},
		Body:        body,
		SenderPub:   env.Pub,
		SenderAddr:  a2al.AddressFromEd25519(env.Pub),
		VerifiedRaw: verifiedRaw,
	}
	copy(m.Header.TxID[:], wh.TxID)
	switch b := body.(type) {
	case BodyPing:
		if b.Address != m.SenderAddr {
			return nil, fmt.Errorf("%w: ping", ErrSenderMismatch)
		}
	case BodyPong:
		if b.Address != m.SenderAddr {
			return nil, fmt.Errorf("%w: pong", ErrSenderMismatch)
		}
	}
	return m, nil
}

// EffectiveKey is the storage key a STORE targets: Key, or NodeID(record
// address) when Key is absent or all zero (docs/wire.md §6.7).
func (b BodyStore) EffectiveKey() a2al.NodeID {
	if b.Key == nil || b.Key.IsZero() {
		return a2al.NodeIDFromAddress(b.Record.Address)
	}
	return *b.Key
}
