package protocol

import (
	"fmt"
	"net"

	"github.com/a2alnode/a2al"
	"github.com/fxamacker/cbor/v2"
)

// The wire* structs mirror the CBOR maps of docs/wire.md §5–§8 field by field.
// Byte fields are plain []byte so that the decoder keeps the received length
// (checked afterwards) and the null/empty distinction of docs/wire.md §3.1: nil encodes as
// null, an empty slice as an empty byte string or array. "omitempty" marks omit-if-zero fields.

type wireEnvelope struct {
	Header cbor.RawMessage `cbor:"1,keyasint"`
	Body   cbor.RawMessage `cbor:"2,keyasint"`
	Pub    []byte          `cbor:"3,keyasint"`
	Sig    []byte          `cbor:"4,keyasint"`
}

type wireHeader struct {
	Version  uint8  `cbor:"1,keyasint"`
	Features uint16 `cbor:"2,keyasint"`
	MsgType  uint8  `cbor:"3,keyasint"`
	TxID     []byte `cbor:"4,keyasint"`
}

type wireNodeInfo struct {
	Address []byte `cbor:"1,keyasint"`
	NodeID  []byte `cbor:"2,keyasint"`
	IP      []byte `cbor:"3,keyasint"`
	Port    uint16 `cbor:"4,keyasint"`
}

type wireRecord struct {
	Address    []byte `cbor:"1,keyasint"`
	RecType    uint8  `cbor:"2,keyasint"`
	Payload    []byte `cbor:"3,keyasint"`
	Seq        uint64 `cbor:"4,keyasint"`
	Timestamp  uint64 `cbor:"5,keyasint"`
	TTL        uint32 `cbor:"6,keyasint"`
	Pubkey     []byte `cbor:"7,keyasint"`
	Signature  []byte `cbor:"8,keyasint"`
	Delegation []byte `cbor:"9,keyasint,omitempty"`
}

// wireRecordSignFields is the map covered by the record signature (docs/wire.md §8.2).
type wireRecordSignFields struct {
	Address   []byte `cbor:"1,keyasint"`
	RecType   uint8  `cbor:"2,keyasint"`
	Payload   []byte `cbor:"3,keyasint"`
	Seq       uint64 `cbor:"4,keyasint"`
	Timestamp uint64 `cbor:"5,keyasint"`
	TTL       uint32 `cbor:"6,keyasint"`
}

type wirePing struct {
	Address []byte `cbor:"1,keyasint"`
}

type wirePong struct {
	Address  []byte `cbor:"1,keyasint"`
	Observed []byte `cbor:"2,keyasint"`
}

type wireFindNode struct {
	Target []byte `cbor:"1,keyasint"`
}

type wireFindNodeResp struct {
	Nodes    []wireNodeInfo `cbor:"1,keyasint"`
	Observed []byte         `cbor:"2,keyasint"`
}

type wireFindValue struct {
	Target    []byte `cbor:"1,keyasint"`
	RecType   uint8  `cbor:"2,keyasint,omitempty"`
	Subscribe bool   `cbor:"3,keyasint,omitempty"`
}

type wireFindValueResp struct {
	Nodes    []wireNodeInfo `cbor:"1,keyasint"`
	Record   *wireRecord    `cbor:"2,keyasint,omitempty"`
	Observed []byte         `cbor:"3,keyasint"`
	Records  []wireRecord   `cbor:"4,keyasint,omitempty"`
}

type wireStore struct {
	Record wireRecord `cbor:"1,keyasint"`
	Key    []byte     `cbor:"2,keyasint,omitempty"`
}

type wireStoreResp struct {
	Stored     bool  `cbor:"1,keyasint"`
	AlreadyHad bool  `cbor:"2,keyasint,omitempty"`
	Reason     uint8 `cbor:"3,keyasint,omitempty"`
}

type wireNATProbeReq struct {
	Token   []byte `cbor:"1,keyasint"`
	Claimed []byte `cbor:"2,keyasint"`
}

type wireNATProbeEcho struct {
	Token []byte `cbor:"1,keyasint"`
}

// ---- conversions between shared types and wire structs ----

// cloneBytes keeps nil as nil and empty as empty (the docs/wire.md §3.1 distinction).
func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

func recordToWire(r SignedRecord) wireRecord {
	return wireRecord{
		Address:    append([]byte{}, r.Address[:]...),
		RecType:    r.RecType,
		Payload:    r.Payload,
		Seq:        r.Seq,
		Timestamp:  r.Timestamp,
		TTL:        r.TTL,
		Pubkey:     r.Pubkey,
		Signature:  r.Signature,
		Delegation: r.Delegation,
	}
}

// recordFromWire applies the docs/wire.md §8.1 message-level shape check.
func recordFromWire(w wireRecord) (SignedRecord, error) {
	var r SignedRecord
	if len(w.Address) != a2al.AddressLen {
		return r, fmt.Errorf("%w: address is %d bytes, want 21", ErrRecordShape, len(w.Address))
	}
	if len(w.Pubkey) != 32 {
		return r, fmt.Errorf("%w: pubkey is %d bytes, want 32", ErrRecordShape, len(w.Pubkey))
	}
	if len(w.Signature) != 64 {
		return r, fmt.Errorf("%w: signature is %d bytes, want 64", ErrRecordShape, len(w.Signature))
	}
	copy(r.Address[:], w.Address)
	r.RecType = w.RecType
	r.Payload = w.Payload
	r.Seq = w.Seq
	r.Timestamp = w.Timestamp
	r.TTL = w.TTL
	r.Pubkey = w.Pubkey
	r.Signature = w.Signature
	if len(w.Delegation) > 0 {
		r.Delegation = w.Delegation
	}
	return r, nil
}

// recordShape checks an outgoing record the way the receiver will.
func recordShape(r SignedRecord) error {
	_, err := recordFromWire(recordToWire(r))
	return err
}

// nodeIP returns the on-wire IP form: 4 bytes for IPv4 (including
// IPv4-mapped IPv6, as the reference emits), 16 for IPv6.
func nodeIP(ip net.IP) []byte {
	if v4 := ip.To4(); v4 != nil && (len(ip) == 4 || len(ip) == 16) {
		return append([]byte{}, v4...)
	}
	return append([]byte{}, ip...)
}

func nodesToWire(ns []NodeInfo) ([]wireNodeInfo, error) {
	if ns == nil {
		return nil, nil
	}
	out := make([]wireNodeInfo, 0, len(ns))
	for i, n := range ns {
		ip := nodeIP(n.IP)
		if len(ip) != 4 && len(ip) != 16 {
			return nil, fmt.Errorf("%w: node %d: ip is %d bytes, want 4 or 16", ErrShape, i, len(ip))
		}
		out = append(out, wireNodeInfo{
			Address: append([]byte{}, n.Address[:]...),
			NodeID:  append([]byte{}, n.NodeID[:]...),
			IP:      ip,
			Port:    n.Port,
		})
	}
	return out, nil
}

func nodesFromWire(ws []wireNodeInfo) ([]NodeInfo, error) {
	if ws == nil {
		return nil, nil
	}
	out := make([]NodeInfo, 0, len(ws))
	for i, w := range ws {
		if len(w.Address) != a2al.AddressLen || len(w.NodeID) != a2al.NodeIDLen ||
			(len(w.IP) != 4 && len(w.IP) != 16) {
			return nil, fmt.Errorf("%w: node %d: lengths address=%d node_id=%d ip=%d, want 21/32/4|16",
				ErrShape, i, len(w.Address), len(w.NodeID), len(w.IP))
		}
		var n NodeInfo
		copy(n.Address[:], w.Address)
		copy(n.NodeID[:], w.NodeID)
		n.IP = net.IP(w.IP)
		n.Port = w.Port
		out = append(out, n)
	}
	return out, nil
}
