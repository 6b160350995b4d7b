package protocol

import (
	"crypto/sha256"
	"fmt"
	"unicode/utf8"

	"github.com/a2alnode/a2al"
	"github.com/fxamacker/cbor/v2"
)

// Topic limits (docs/wire.md §9.2).
const (
	MaxTopicPayload = 512
	MaxTopicBrief   = 140 // Unicode code points
	// MaxTopicTTL is the publisher-side cap (7200 s); verifiers do not apply it.
	MaxTopicTTL = 7200
)

// TopicPayload is the payload of rec_type 0x10 (docs/wire.md §9.2). Meta values
// are kept as raw CBOR so re-encoding is byte-exact.
type TopicPayload struct {
	Version   uint8
	Topic     string
	Name      string
	Protocols []string // nil encodes as null
	Tags      []string // nil encodes as null
	Brief     string
	Meta      map[string]cbor.RawMessage
}

type wireTopic struct {
	Version   uint8                      `cbor:"1,keyasint"`
	Topic     string                     `cbor:"2,keyasint"`
	Name      string                     `cbor:"3,keyasint"`
	Protocols []string                   `cbor:"4,keyasint"`
	Tags      []string                   `cbor:"5,keyasint"`
	Brief     string                     `cbor:"6,keyasint"`
	Meta      map[string]cbor.RawMessage `cbor:"7,keyasint,omitempty"`
}

// TopicKey is the storage key SHA-256("topic:" ‖ topic); no normalisation.
func TopicKey(topic string) a2al.NodeID {
	h := sha256.New()
	h.Write([]byte("topic:"))
	h.Write([]byte(topic))
	var k a2al.NodeID
	copy(k[:], h.Sum(nil))
	return k
}

func checkTopic(p TopicPayload) error {
	if p.Topic == "" {
		return fmt.Errorf("%w: empty topic", ErrRecordPayload)
	}
	if n := utf8.RuneCountInString(p.Brief); n > MaxTopicBrief {
		return fmt.Errorf("%w: brief is %d code points, limit %d", ErrRecordPayload, n, MaxTopicBrief)
	}
	return nil
}

// EncodeTopicPayload encodes p canonically (Version 0 is written as 1, like
// the reference publisher) and enforces the verifier limits.
func EncodeTopicPayload(p TopicPayload) ([]byte, error) {
	if p.Version == 0 {
		p.Version = 1
	}
	if err := checkTopic(p); err != nil {
		return nil, err
	}
	b, err := marshal(wireTopic(p))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxTopicPayload {
		return nil, fmt.Errorf("%w: topic payload %d bytes, limit %d", ErrTooLarge, len(b), MaxTopicPayload)
	}
	return b, nil
}

// DecodeTopicPayload decodes and checks a topic payload.
func DecodeTopicPayload(b []byte) (*TopicPayload, error) {
	if len(b) > MaxTopicPayload {
		return nil, fmt.Errorf("%w: topic payload %d bytes, limit %d", ErrTooLarge, len(b), MaxTopicPayload)
	}
	var w wireTopic
	if err := unmarshal(b, &w, "topic payload"); err != nil {
		return nil, err
	}
	p := TopicPayload(w)
	if err := checkTopic(p); err != nil {
		return nil, err
	}
	return &p, nil
}
