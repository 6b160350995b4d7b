package protocol

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/a2alnode/a2al"
)

// Endpoint payload limits (docs/wire.md §9.1, docs/wire.md §8.8).
const (
	MaxNATType       = NATSymmetric
	MaxSignalLen     = 2048
	MaxSignals       = 8
	MaxTurns         = 16
	MaxTurnLen       = 512
	MaxEndpointCount = 64 // ours: bounds work; far above what fits a datagram
)

type wireEndpoint struct {
	Endpoints []string `cbor:"1,keyasint"`
	NatType   uint8    `cbor:"2,keyasint"`
	Signal    string   `cbor:"3,keyasint,omitempty"`
	Turns     []string `cbor:"4,keyasint,omitempty"`
	Signals   []string `cbor:"5,keyasint,omitempty"`
}

// checkEndpointLimits applies the verifier limits of docs/wire.md §9.1.
func checkEndpointLimits(p EndpointPayload) error {
	if p.NatType > MaxNATType {
		return fmt.Errorf("%w: nat_type %d > %d", ErrRecordPayload, p.NatType, MaxNATType)
	}
	if len(p.Signal) > MaxSignalLen {
		return fmt.Errorf("%w: signal is %d bytes, limit %d", ErrRecordPayload, len(p.Signal), MaxSignalLen)
	}
	if len(p.Signals) > MaxSignals {
		return fmt.Errorf("%w: %d signals, limit %d", ErrRecordPayload, len(p.Signals), MaxSignals)
	}
	for i, s := range p.Signals {
		if len(s) > MaxSignalLen {
			return fmt.Errorf("%w: signals[%d] is %d bytes, limit %d", ErrRecordPayload, i, len(s), MaxSignalLen)
		}
	}
	if len(p.Turns) > MaxTurns {
		return fmt.Errorf("%w: %d turns, limit %d", ErrRecordPayload, len(p.Turns), MaxTurns)
	}
	for i, s := range p.Turns {
		if len(s) > MaxTurnLen {
			return fmt.Errorf("%w: turns[%d] is %d bytes, limit %d", ErrRecordPayload, i, len(s), MaxTurnLen)
		}
	}
	if len(p.Endpoints) > MaxEndpointCount {
		return fmt.Errorf("%w: %d endpoints, limit %d", ErrRecordPayload, len(p.Endpoints), MaxEndpointCount)
	}
	return nil
}

// EncodeEndpointPayload encodes p canonically (nil Endpoints → null, as the
// reference sends when it has none) after checking the docs/wire.md §9.1 limits.
func EncodeEndpointPayload(p EndpointPayload) ([]byte, error) {
	if err := checkEndpointLimits(p); err != nil {
		return nil, err
	}
	return marshal(wireEndpoint(p))
}

// DecodeEndpointPayload decodes and limit-checks an endpoint payload.
func DecodeEndpointPayload(b []byte) (*EndpointPayload, error) {
	var w wireEndpoint
	if err := unmarshal(b, &w, "endpoint payload"); err != nil {
		return nil, err
	}
	p := EndpointPayload(w)
	if err := checkEndpointLimits(p); err != nil {
		return nil, err
	}
	return &p, nil
}

// ParseEndpointRecord extracts the endpoint payload of a rec_type 0x01 record.
// It does not verify: run VerifySignedRecord and CheckAuthority first.
func ParseEndpointRecord(rec SignedRecord) (*EndpointRecord, error) {
	if rec.RecType != RecTypeEndpoint {
		return nil, fmt.Errorf("%w: rec_type %#x is not an endpoint record", ErrRecordPayload, rec.RecType)
	}
	p, err := DecodeEndpointPayload(rec.Payload)
	if err != nil {
		return nil, err
	}
	return &EndpointRecord{
		Address:   rec.Address,
		Endpoints: p.Endpoints,
		NatType:   p.NatType,
		Signal:    p.Signal,
		Turns:     p.Turns,
		Signals:   p.Signals,
		Timestamp: rec.Timestamp,
		Seq:       rec.Seq,
		TTL:       rec.TTL,
	}, nil
}

// SignalURLs returns the signaling hubs a reader should use: Signals when
// non-empty, else Signal (docs/wire.md §9.1).
func (e EndpointRecord) SignalURLs() []string {
	if len(e.Signals) > 0 {
		return e.Signals
	}
	if e.Signal != "" {
		return []string{e.Signal}
	}
	return nil
}

// NewEndpointRecord builds and signs a self-signed endpoint record for addr
// (pub must derive addr). Delegated agents build the SignedRecord themselves,
// attach Delegation and call SignRecord.
func NewEndpointRecord(addr a2al.Address, p EndpointPayload, seq, timestamp uint64, ttl uint32, pub []byte, sign SignFunc) (SignedRecord, error) {
	payload, err := EncodeEndpointPayload(p)
	if err != nil {
		return SignedRecord{}, err
	}
	rec := SignedRecord{Address: addr, RecType: RecTypeEndpoint, Payload: payload, Seq: seq, Timestamp: timestamp, TTL: ttl}
	if err := SignRecord(&rec, pub, sign); err != nil {
		return SignedRecord{}, err
	}
	return rec, nil
}

// ParseEndpointURL splits an endpoint URL from a record into host and port:
// "quic://host:port", or the legacy "udp://host:port", with IPv6 literals in
// brackets (returned without them) (docs/wire.md §9.1). The host may be a
// name; resolving it is the dialer's business. Other schemes, a missing host
// and a port outside 1..65535 give an error wrapping ErrEndpointURL, so a
// dialer can skip the endpoint.
func ParseEndpointURL(ep string) (host string, port uint16, err error) {
	rest, ok := strings.CutPrefix(ep, "quic://")
	if !ok {
		if rest, ok = strings.CutPrefix(ep, "udp://"); !ok {
			return "", 0, fmt.Errorf("%w: %q: scheme is not quic or udp", ErrEndpointURL, ep)
		}
	}
	host, p, err := net.SplitHostPort(rest)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %q: %w", ErrEndpointURL, ep, err)
	}
	if host == "" {
		return "", 0, fmt.Errorf("%w: %q: no host", ErrEndpointURL, ep)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("%w: %q: port %q is not in 1..65535", ErrEndpointURL, ep, p)
	}
	return host, uint16(n), nil
}
