// Package protocol is the A2AL wire format: canonical CBOR messages with the
// signed envelope, SignedRecord and its payloads, delegation proofs and the
// mailbox encryption (docs/wire.md). Encodings are byte-exact with the
// reference implementation; decoding is hardened against hostile input.
package protocol

import (
	"net"

	"github.com/a2alnode/a2al"
)

// Protocol constants (docs/wire.md §0.1).
const (
	ProtocolVersion    = 1
	TxIDLen            = 20
	MaxDatagram        = 1200
	ResponseBodyBudget = 1050
	QUICALPN           = "a2al-quic-1"
)

// Message types (docs/wire.md §5.6).
const (
	MsgPing          uint8 = 0x01
	MsgPong          uint8 = 0x02
	MsgFindNode      uint8 = 0x03
	MsgFindNodeResp  uint8 = 0x04
	MsgFindValue     uint8 = 0x05
	MsgFindValueResp uint8 = 0x06
	MsgStore         uint8 = 0x07
	MsgStoreResp     uint8 = 0x08
	MsgNATProbeReq   uint8 = 0x09
	MsgNATProbeEcho  uint8 = 0x0A
)

// Record types (docs/wire.md §8.5).
const (
	RecTypeEndpoint uint8 = 0x01
	RecTypeTopic    uint8 = 0x10
	RecTypeMailbox  uint8 = 0x80
)

// STORE_RESP reasons (docs/wire.md §6.8).
const (
	StoreReasonNone          uint8 = 0
	StoreReasonPolicy        uint8 = 1
	StoreReasonRecordInvalid uint8 = 2
)

// NAT types carried in the endpoint payload (docs/wire.md §9.1).
const (
	NATUnknown        uint8 = 0
	NATFullCone       uint8 = 1
	NATRestricted     uint8 = 2
	NATPortRestricted uint8 = 3
	NATSymmetric      uint8 = 4
)

// Header is the signed message header (docs/wire.md §5.2).
type Header struct {
	Version  uint8
	Features uint16
	MsgType  uint8
	TxID     [TxIDLen]byte
}

// NodeInfo is a contact (docs/wire.md §7.1). IP is 4 bytes for IPv4, 16 for IPv6.
type NodeInfo struct {
	Address a2al.Address
	NodeID  a2al.NodeID
	IP      net.IP
	Port    uint16
}

// SignedRecord is a signed statement by Address (docs/wire.md §8.1).
// Payload nil encodes as CBOR null, which signs differently from an empty payload.
type SignedRecord struct {
	Address    a2al.Address
	RecType    uint8
	Payload    []byte
	Seq        uint64
	Timestamp  uint64
	TTL        uint32
	Pubkey     []byte
	Signature  []byte
	Delegation []byte
}

// EndpointPayload is the payload of rec_type 0x01 (docs/wire.md §9.1).
type EndpointPayload struct {
	Endpoints []string
	NatType   uint8
	Signal    string
	Turns     []string
	Signals   []string
}

// EndpointRecord is a parsed, verified endpoint record.
type EndpointRecord struct {
	Address   a2al.Address
	Endpoints []string
	NatType   uint8
	Signal    string
	Turns     []string
	Signals   []string
	Timestamp uint64
	Seq       uint64
	TTL       uint32
}

// Message bodies (docs/wire.md §6). ObservedAddr / ClaimedAddr are the 6- or
// 18-byte forms of docs/wire.md §7.2.
type (
	BodyPing struct{ Address a2al.Address }
	BodyPong struct {
		Address      a2al.Address
		ObservedAddr []byte
	}
	BodyFindNode     struct{ Target a2al.NodeID }
	BodyFindNodeResp struct {
		Nodes        []NodeInfo
		ObservedAddr []byte
	}
	BodyFindValue struct {
		Target  a2al.NodeID
		RecType uint8
		// OneShotSubscribe is the [HEAD] key 3 (docs/wire.md §6.5). Leave it false
		// when talking to v0.1.8 nodes: they drop requests that carry it.
		OneShotSubscribe bool
	}
	BodyFindValueResp struct {
		Nodes        []NodeInfo
		Record       *SignedRecord // legacy single record, key 2
		ObservedAddr []byte
		Records      []SignedRecord
	}
	BodyStore struct {
		Record SignedRecord
		Key    *a2al.NodeID // nil = omitted (store at NodeID(record.Address))
	}
	BodyStoreResp struct {
		Stored     bool
		AlreadyHad bool
		Reason     uint8
	}
	BodyNATProbeReq struct {
		Token       [8]byte
		ClaimedAddr []byte
	}
	BodyNATProbeEcho struct{ Token [8]byte }
)
