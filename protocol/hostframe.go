package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/a2alnode/a2al"
)

// Agent-route frame: the first 25 bytes a Mode A dialer writes on the first
// bidirectional stream (docs/modea.md).
const (
	RouteMagicV1   = "a2r1" // legacy: nothing follows on the stream
	RouteMagicV2   = "a2r2" // control messages follow, then FIN both ways
	RouteFrameSize = 4 + a2al.AddressLen
)

// Control message types carried after an a2r2 frame.
const (
	CtrlObservedAddr  = 0x01 // acceptor → dialer: the dialer's address as seen
	CtrlAgentInfoHint = 0x02 // dialer → acceptor: target ‖ highest topic seq held
	CtrlAgentInfo     = 0x03 // acceptor → dialer: one topic SignedRecord
)

// MaxCtrlPayload bounds one control message payload (both directions).
const MaxCtrlPayload = 4096

// agentInfoHintSize is target (21) ‖ max_seq (8); shorter hints are ignored.
const agentInfoHintSize = a2al.AddressLen + 8

// ErrRouteFrame is wrapped by every route-frame and control-message failure.
var ErrRouteFrame = errors.New("a2al/protocol: bad agent-route frame")

// EncodeRouteFrame returns magic ‖ target. magic must be RouteMagicV1 or V2.
func EncodeRouteFrame(magic string, target a2al.Address) []byte {
	out := make([]byte, 0, RouteFrameSize)
	out = append(out, magic...)
	return append(out, target[:]...)
}

// DecodeRouteFrame splits a 25-byte frame into its magic and target. An
// unknown magic is an error wrapping ErrRouteFrame (the acceptor then routes
// by SNI alone).
func DecodeRouteFrame(b []byte) (magic string, target a2al.Address, err error) {
	if len(b) != RouteFrameSize {
		return "", target, fmt.Errorf("%w: %d bytes, want %d", ErrRouteFrame, len(b), RouteFrameSize)
	}
	magic = string(b[:4])
	if magic != RouteMagicV1 && magic != RouteMagicV2 {
		return "", target, fmt.Errorf("%w: unknown magic %x", ErrRouteFrame, b[:4])
	}
	copy(target[:], b[4:])
	return magic, target, nil
}

// CtrlMsg is one control message: type(1) ‖ len(2, BE) ‖ payload.
type CtrlMsg struct {
	Type    uint8
	Payload []byte
}

// AppendCtrlMsg appends the encoding of m to dst; payloads above
// MaxCtrlPayload are refused.
func AppendCtrlMsg(dst []byte, m CtrlMsg) ([]byte, error) {
	if len(m.Payload) > MaxCtrlPayload {
		return dst, fmt.Errorf("%w: %w: control payload %d bytes, limit %d", ErrRouteFrame, ErrTooLarge, len(m.Payload), MaxCtrlPayload)
	}
	dst = append(dst, m.Type)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(m.Payload)))
	return append(dst, m.Payload...), nil
}

// ReadCtrlMsgs reads control messages from r until EOF. It returns an error
// wrapping ErrRouteFrame for a truncated message, a payload above
// MaxCtrlPayload or more than maxMsgs messages; messages of every type are
// returned (the caller skips the types it does not know).
func ReadCtrlMsgs(r io.Reader, maxMsgs int) ([]CtrlMsg, error) {
	var out []CtrlMsg
	var hdr [3]byte
	for {
		if _, err := io.ReadFull(r, hdr[:1]); err != nil {
			if err == io.EOF {
				return out, nil
			}
			return out, fmt.Errorf("%w: control header: %w", ErrRouteFrame, err)
		}
		if _, err := io.ReadFull(r, hdr[1:]); err != nil {
			return out, fmt.Errorf("%w: control header truncated: %w", ErrRouteFrame, err)
		}
		n := int(binary.BigEndian.Uint16(hdr[1:]))
		if n > MaxCtrlPayload {
			return out, fmt.Errorf("%w: %w: control payload %d bytes, limit %d", ErrRouteFrame, ErrTooLarge, n, MaxCtrlPayload)
		}
		if len(out) >= maxMsgs {
			return out, fmt.Errorf("%w: %w: more than %d control messages", ErrRouteFrame, ErrTooLarge, maxMsgs)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			return out, fmt.Errorf("%w: control payload truncated: %w", ErrRouteFrame, err)
		}
		out = append(out, CtrlMsg{Type: hdr[0], Payload: p})
	}
}

// EncodeAgentInfoHint is the AgentInfoHint payload: target ‖ maxSeq (BE).
func EncodeAgentInfoHint(target a2al.Address, maxSeq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, agentInfoHintSize), target[:]...), maxSeq)
}

// DecodeAgentInfoHint parses an AgentInfoHint payload. Payloads shorter than
// 29 bytes are not hints (ok=false); bytes after the 29th are ignored, as the
// reference does.
func DecodeAgentInfoHint(p []byte) (target a2al.Address, maxSeq uint64, ok bool) {
	if len(p) < agentInfoHintSize {
		return target, 0, false
	}
	copy(target[:], p[:a2al.AddressLen])
	return target, binary.BigEndian.Uint64(p[a2al.AddressLen:agentInfoHintSize]), true
}
