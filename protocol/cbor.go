package protocol

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// Decoding limits. A DHT message travels in one UDP datagram (1200 bytes) or
// one Mode B QUIC stream (≤ 64 KiB, docs/wire.md §4.3), so nothing legitimate comes
// near these bounds; they exist to cap the work an attacker can cause.
const (
	// MaxMessageSize is the largest encoded message DecodeMessage accepts.
	MaxMessageSize = 64 << 10
	// MaxRecordSize is the largest standalone SignedRecord DecodeRecord accepts.
	MaxRecordSize = 64 << 10
	// MaxNestingDepth bounds CBOR nesting (the deepest protocol structure,
	// FIND_VALUE_RESP → records → record, is 4 levels; payload meta maps add more).
	MaxNestingDepth = 16
	// MaxArrayElements and MaxMapPairs bound declared container lengths.
	MaxArrayElements = 1024
	MaxMapPairs      = 256
)

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	// Canonical CBOR (RFC 7049 §3.9, length-first key order) is what the
	// reference emits; with integer keys it equals plain ascending order.
	eo := cbor.CanonicalEncOptions()
	eo.NilContainers = cbor.NilContainerAsNull // nil slice → null, empty slice → empty array / byte string
	var err error
	if encMode, err = eo.EncMode(); err != nil {
		panic(err)
	}
	do := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  MaxNestingDepth,
		MaxArrayElements: MaxArrayElements,
		MaxMapPairs:      MaxMapPairs,
		UTF8:             cbor.UTF8RejectInvalid,
	}
	if decMode, err = do.DecMode(); err != nil {
		panic(err)
	}
}

// marshal encodes v canonically.
func marshal(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("a2al/protocol: encode %T: %w", v, err)
	}
	return b, nil
}

// unmarshal decodes exactly one item into v; every failure is wrapped in
// ErrMalformed plus a specific sentinel. what names the structure.
func unmarshal(data []byte, v any, what string) error {
	if err := decMode.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %s: %w: %v", ErrMalformed, what, classify(err), err)
	}
	return nil
}

// classify maps a library error to one of our specific sentinels.
func classify(err error) error {
	var (
		ext   *cbor.ExtraneousDataError
		nest  *cbor.MaxNestedLevelError
		arr   *cbor.MaxArrayElementsError
		mp    *cbor.MaxMapPairsError
		indef *cbor.IndefiniteLengthError
		dup   *cbor.DupMapKeyError
		typ   *cbor.UnmarshalTypeError
		tag   *cbor.TagsMdError
		sem   *cbor.SemanticError
	)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return ErrTruncated
	case errors.As(err, &ext):
		return ErrTrailingData
	case errors.As(err, &nest):
		return ErrTooDeep
	case errors.As(err, &arr), errors.As(err, &mp):
		return ErrTooManyElements
	case errors.As(err, &indef):
		return ErrIndefiniteLength
	case errors.As(err, &dup):
		return ErrDuplicateKey
	case errors.As(err, &tag):
		return ErrTagForbidden
	case errors.As(err, &typ):
		return ErrWrongType
	case errors.As(err, &sem):
		if strings.Contains(err.Error(), "UTF-8") {
			return ErrInvalidUTF8
		}
		return ErrWrongType
	default:
		return ErrWrongType
	}
}
