package protocol

import (
	"crypto/sha256"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// RecTypeAgentProfile is the [HEAD] AgentProfile sovereign record (docs/wire.md §9.4).
// Record verification does not look at it; readers that parse it apply
// MaxAgentProfilePayload.
const (
	RecTypeAgentProfile    uint8 = 0x02
	MaxAgentProfilePayload       = 700
)

// AgentProfile is the payload of rec_type 0x02 (docs/wire.md §9.4).
type AgentProfile struct {
	Version    uint8
	Name       string
	Brief      string
	Protocols  []string
	Skills     []string
	CardHash   []byte
	Modalities []string
	Meta       map[string]cbor.RawMessage
}

type wireAgentProfile struct {
	Version    uint8                      `cbor:"1,keyasint"`
	Name       string                     `cbor:"2,keyasint,omitempty"`
	Brief      string                     `cbor:"3,keyasint,omitempty"`
	Protocols  []string                   `cbor:"4,keyasint,omitempty"`
	Skills     []string                   `cbor:"5,keyasint,omitempty"`
	CardHash   []byte                     `cbor:"6,keyasint,omitempty"`
	Modalities []string                   `cbor:"8,keyasint,omitempty"`
	Meta       map[string]cbor.RawMessage `cbor:"9,keyasint,omitempty"`
}

// EncodeAgentProfile encodes p (Version 0 written as 1) within 700 bytes.
func EncodeAgentProfile(p AgentProfile) ([]byte, error) {
	if p.Version == 0 {
		p.Version = 1
	}
	b, err := marshal(wireAgentProfile(p))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxAgentProfilePayload {
		return nil, fmt.Errorf("%w: agent profile %d bytes, limit %d", ErrTooLarge, len(b), MaxAgentProfilePayload)
	}
	return b, nil
}

// DecodeAgentProfile decodes an AgentProfile payload.
func DecodeAgentProfile(b []byte) (*AgentProfile, error) {
	if len(b) > MaxAgentProfilePayload {
		return nil, fmt.Errorf("%w: agent profile %d bytes, limit %d", ErrTooLarge, len(b), MaxAgentProfilePayload)
	}
	var w wireAgentProfile
	if err := unmarshal(b, &w, "agent profile"); err != nil {
		return nil, err
	}
	p := AgentProfile(w)
	return &p, nil
}

// MailboxMsgID is SHA-256(record.payload), the msg_id of the [HEAD] a2mb
// frame and DHT_PUSH_ACK (docs/wire.md §6.12, docs/wire.md §11.6).
func MailboxMsgID(rec SignedRecord) [32]byte { return sha256.Sum256(rec.Payload) }
