package protocol

import "errors"

// Sentinel errors. Every rejection wraps one of the top-level sentinels
// (ErrMalformed, ErrShape, ...) and, where it helps callers count drops,
// also a more specific one (ErrTruncated, ErrIndefiniteLength, ...).
var (
	// ErrMalformed: the bytes are not a well-formed CBOR item of the
	// expected structure (syntax, types, limits).
	ErrMalformed = errors.New("a2al/protocol: malformed message")
	// ErrUnknownMsgType: header.msg_type is not one we implement (docs/wire.md §5.4 step 4).
	// Callers drop and count such datagrams.
	ErrUnknownMsgType = errors.New("a2al/protocol: unknown message type")
	// ErrBadSignature: the envelope signature does not verify.
	ErrBadSignature = errors.New("a2al/protocol: bad message signature")
	// ErrShape: a field has the wrong length or a body violates docs/wire.md §6 checks.
	ErrShape = errors.New("a2al/protocol: invalid message shape")
	// ErrTooLarge: input or output exceeds a size limit.
	ErrTooLarge = errors.New("a2al/protocol: too large")
	// ErrSenderMismatch: PING/PONG body address is not the sender (docs/wire.md §5.4 step 8).
	ErrSenderMismatch = errors.New("a2al/protocol: body address does not match sender")

	// Specific decoding failures; always wrapped together with ErrMalformed.
	ErrTruncated        = errors.New("truncated CBOR input")
	ErrTrailingData     = errors.New("trailing bytes after CBOR item")
	ErrIndefiniteLength = errors.New("indefinite-length CBOR item")
	ErrDuplicateKey     = errors.New("duplicate CBOR map key")
	ErrTooDeep          = errors.New("CBOR nesting too deep")
	ErrTooManyElements  = errors.New("CBOR array or map too long")
	ErrWrongType        = errors.New("CBOR item has wrong type or range")
	ErrTagForbidden     = errors.New("CBOR tags are not allowed")
	ErrInvalidUTF8      = errors.New("invalid UTF-8 text string")

	// Record verification (docs/wire.md §8.3) and authority (docs/wire.md §8.4).
	ErrRecordShape     = errors.New("a2al/protocol: invalid record shape")
	ErrRecordSignature = errors.New("a2al/protocol: invalid record signature")
	ErrRecordPayload   = errors.New("a2al/protocol: invalid record payload")
	ErrRecordFuture    = errors.New("a2al/protocol: record timestamp in future")
	ErrRecordExpired   = errors.New("a2al/protocol: record expired")
	ErrAuthority       = errors.New("a2al/protocol: record not authorised for key")

	// ErrNodeIDMismatch: a NodeInfo whose node_id is not SHA-256(address).
	ErrNodeIDMismatch = errors.New("a2al/protocol: node_id does not derive from address")
	// ErrAddr: an observed/claimed address that is not 6 or 18 bytes.
	ErrAddr = errors.New("a2al/protocol: invalid socket address encoding")

	// ErrEndpointURL: an endpoint URL dialers do not accept (scheme other
	// than quic or udp, no host, or no usable port).
	ErrEndpointURL = errors.New("a2al/protocol: unusable endpoint URL")

	// Delegation (docs/wire.md §10).
	ErrDelegation        = errors.New("a2al/protocol: invalid delegation proof")
	ErrDelegationExpired = errors.New("a2al/protocol: delegation expired")

	// Mailbox (docs/wire.md §9.3).
	ErrMailbox = errors.New("a2al/protocol: mailbox")
)
