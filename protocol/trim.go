package protocol

import (
	"fmt"
	"net"
)

// The trimming functions below run on every FIND_* answer, so they work in
// one pass: each element's canonical CBOR size is computed arithmetically
// (no encoding), and the body is encoded once, later, by EncodeMessage.
// TestWireLenMatchesEncoder checks the arithmetic against the encoder.

// TrimFindNodeResp drops contacts from the end while the canonical body
// exceeds ResponseBodyBudget and more than one contact remains (docs/wire.md §6.4).
// It returns ErrTooLarge (with b trimmed as far as allowed) if the body still
// does not fit; the caller may still send it, as the reference does.
func TrimFindNodeResp(b *BodyFindNodeResp) error {
	fixed := 1 + 1 + 1 + bytesLen(b.ObservedAddr) // map head, key 1, key 2 + observed
	size, keep := listFit(b.Nodes, fixed, NodeInfoWireLen, 1)
	b.Nodes = b.Nodes[:keep]
	if size > ResponseBodyBudget {
		return fmt.Errorf("%w: find_node_resp body %d bytes exceeds budget %d", ErrTooLarge, size, ResponseBodyBudget)
	}
	return nil
}

// TrimFindValueResp trims in the reference's order (docs/wire.md §6.6): drop the
// last contact while more than one remains; then drop the oldest (first)
// record while more than one remains; then drop the legacy record (key 2).
// It returns ErrTooLarge if the body still exceeds the budget. Callers that
// want another choice of records (dht answers choose fairly) select them
// before calling, so that only contacts need dropping here.
func TrimFindValueResp(b *BodyFindValueResp) error {
	legacy := 0
	if b.Record != nil {
		legacy = 1 + RecordWireLen(*b.Record)
	}
	// Records: key 4 and array head, omitted when empty.
	recs := 0
	for i := range b.Records {
		recs += RecordWireLen(b.Records[i])
	}
	recsLen := func(n, bytes int) int {
		if n == 0 {
			return 0
		}
		return 1 + uintLen(uint64(n)) + bytes
	}
	fixed := 1 + 1 + 1 + bytesLen(b.ObservedAddr) + legacy + recsLen(len(b.Records), recs)
	size, keep := listFit(b.Nodes, fixed, NodeInfoWireLen, 1)
	b.Nodes = b.Nodes[:keep]
	if size <= ResponseBodyBudget {
		return nil
	}
	// Drop the oldest records (from the front) while more than one remains.
	base := size - recsLen(len(b.Records), recs)
	drop := 0
	for drop < len(b.Records)-1 && base+recsLen(len(b.Records)-drop, recs) > ResponseBodyBudget {
		recs -= RecordWireLen(b.Records[drop])
		drop++
	}
	b.Records = b.Records[drop:]
	size = base + recsLen(len(b.Records), recs)
	if size > ResponseBodyBudget && b.Record != nil {
		b.Record = nil
		size -= legacy
	}
	if size > ResponseBodyBudget {
		return fmt.Errorf("%w: find_value_resp body %d bytes exceeds budget %d", ErrTooLarge, size, ResponseBodyBudget)
	}
	return nil
}

// FindValueRespOverhead is the size of a FIND_VALUE answer with observed
// address observed and no contacts, records or legacy record, plus the
// heads of both lists at their largest (so records chosen within
// ResponseBodyBudget minus this and the contacts kept always fit).
func FindValueRespOverhead(observed []byte) int {
	return 1 + 1 + uintLen(0xffff) + 1 + bytesLen(observed) + 1 + uintLen(0xffff)
}

// listFit returns the body size with the longest prefix of list (at least
// min elements when present) that keeps it within ResponseBodyBudget, and
// that prefix length. fixed is the size of everything else; the list is
// encoded as a CBOR array (null when nil).
func listFit[T any](list []T, fixed int, elemLen func(T) int, min int) (size, keep int) {
	if list == nil {
		return fixed + 1, 0
	}
	size = fixed + uintLen(0)
	elems := 0
	for i := range list {
		e := elemLen(list[i])
		next := fixed + uintLen(uint64(i+1)) + elems + e
		if next > ResponseBodyBudget && i >= min {
			return size, i
		}
		elems += e
		size, keep = next, i+1
	}
	return size, keep
}

// NodeInfoWireLen is the canonical CBOR size of ni as it appears in a
// FIND_*_RESP: {1: address, 2: node_id, 3: ip, 4: port}.
func NodeInfoWireLen(ni NodeInfo) int {
	return 1 + 1 + bytesLen(ni.Address[:]) + 1 + bytesLen(ni.NodeID[:]) + 1 + uintLen(uint64(wireIPLen(ni.IP))) + wireIPLen(ni.IP) + 1 + uintLen(uint64(ni.Port))
}

// RecordWireLen is the canonical CBOR size of rec inside a message
// (docs/wire.md §8.1): 8 fields, plus delegation (key 9) when present.
func RecordWireLen(r SignedRecord) int {
	n := 1 + 8 + bytesLen(r.Address[:]) + uintLen(uint64(r.RecType)) + bytesLen(r.Payload) +
		uintLen(r.Seq) + uintLen(r.Timestamp) + uintLen(uint64(r.TTL)) + bytesLen(r.Pubkey) + bytesLen(r.Signature)
	if len(r.Delegation) > 0 {
		n += 1 + bytesLen(r.Delegation)
	}
	return n
}

// wireIPLen is the length nodeIP gives ip on the wire.
func wireIPLen(ip net.IP) int {
	if (len(ip) == net.IPv4len || len(ip) == net.IPv6len) && ip.To4() != nil {
		return net.IPv4len
	}
	return len(ip)
}

// bytesLen is the size of a CBOR byte string holding b (null when nil).
func bytesLen(b []byte) int {
	if b == nil {
		return 1
	}
	return uintLen(uint64(len(b))) + len(b)
}

// uintLen is the size of a CBOR head carrying v (unsigned int, or the length
// of a string, array or map).
func uintLen(v uint64) int {
	switch {
	case v < 24:
		return 1
	case v <= 0xff:
		return 2
	case v <= 0xffff:
		return 3
	case v <= 0xffffffff:
		return 5
	}
	return 9
}
