package a2al

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/sha3"
)

// ErrInvalidAddress is wrapped by every ParseAddress failure.
var ErrInvalidAddress = errors.New("a2al: invalid address")

// ErrInvalidNodeID is wrapped by every ParseNodeID failure.
var ErrInvalidNodeID = errors.New("a2al: invalid node ID")

// String returns the canonical text form (docs/wire.md §2.4): "0x" + EIP-55 for
// Ethereum (0xA3), the upstream bech32 "bc1…" form for Paralism (0xA2), and
// native checksummed hex for every other version. The text is load-bearing
// (TLS SNI, signaling), so it must match the reference byte for byte.
func (a Address) String() string {
	switch a[0] {
	case VersionEthereum:
		return "0x" + eip55(a[1:])
	case VersionParalism:
		return encodeParalism(a[1:])
	default:
		return nativeText(a)
	}
}

// MarshalText implements encoding.TextMarshaler with String.
func (a Address) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseAddress.
func (a *Address) UnmarshalText(text []byte) error {
	p, err := ParseAddress(string(text))
	if err != nil {
		return err
	}
	*a = p
	return nil
}

// ParseAddress parses any text form of docs/wire.md §2.4, after trimming whitespace:
//  1. 42 characters starting with 0x/0X: Ethereum (lowercase or exact EIP-55);
//  2. bc1…/pr1… (bech32, upstream variant) or a 26–35 character string
//     starting with '1' (Base58Check P2PKH): Paralism;
//  3. 42 hex characters: native (entirely lowercase or exactly checksummed),
//     version 0xA0–0xAF.
func ParseAddress(s string) (Address, error) {
	s = strings.TrimSpace(s)
	switch {
	case len(s) == 42 && (s[:2] == "0x" || s[:2] == "0X"):
		return parseEthereum(s[2:])
	case len(s) >= 3 && (strings.EqualFold(s[:3], "bc1") || strings.EqualFold(s[:3], "pr1")):
		return parseParalismBech32(s)
	case len(s) >= 26 && len(s) <= 35 && s[0] == '1':
		return parseParalismBase58(s)
	case len(s) == 2*AddressLen:
		return parseNative(s)
	}
	return Address{}, fmt.Errorf("%w: %q is not a native (42 hex), 0x-Ethereum or Paralism address", ErrInvalidAddress, truncate(s))
}

// truncate keeps error messages bounded for hostile input.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// checksumCase upper-cases the hex letters of lower whose nibble in h is ≥ 8
// (the EIP-55 rule, shared by the native form with SHA-256 as h).
func checksumCase(lower string, h []byte) string {
	out := []byte(lower)
	for i, c := range out {
		if c < 'a' || c > 'f' {
			continue
		}
		nib := h[i/2]
		if i%2 == 0 {
			nib >>= 4
		}
		if nib&0x0f >= 8 {
			out[i] = c - 'a' + 'A'
		}
	}
	return string(out)
}

func nativeText(a Address) string {
	lower := hex.EncodeToString(a[:])
	h := sha256.Sum256([]byte(lower))
	return checksumCase(lower, h[:])
}

func eip55(b []byte) string {
	lower := hex.EncodeToString(b)
	k := sha3.NewLegacyKeccak256()
	k.Write([]byte(lower))
	return checksumCase(lower, k.Sum(nil))
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// errChecksumText explains a case-checksum mismatch. It never suggests a
// corrected form: the checksummed form of a mistyped address would look
// valid and name someone else.
const errChecksumText = "checksum mismatch: the letter case does not match, so a character is probably mistyped; copy the address again"

func parseNative(s string) (Address, error) {
	if !isHex(s) {
		return Address{}, fmt.Errorf("%w: %q contains non-hex characters", ErrInvalidAddress, truncate(s))
	}
	var a Address
	if _, err := hex.Decode(a[:], []byte(s)); err != nil {
		return Address{}, fmt.Errorf("%w: %w", ErrInvalidAddress, err)
	}
	if a[0] < 0xA0 || a[0] > 0xAF {
		return Address{}, fmt.Errorf("%w: version byte %#02x outside 0xa0-0xaf", ErrInvalidAddress, a[0])
	}
	if s != strings.ToLower(s) && s != nativeText(a) {
		return Address{}, fmt.Errorf("%w: %s", ErrInvalidAddress, errChecksumText)
	}
	return a, nil
}

func parseEthereum(body string) (Address, error) {
	if !isHex(body) {
		return Address{}, fmt.Errorf("%w: Ethereum address 0x%s contains non-hex characters", ErrInvalidAddress, body)
	}
	var a Address
	a[0] = VersionEthereum
	if _, err := hex.Decode(a[1:], []byte(body)); err != nil {
		return Address{}, fmt.Errorf("%w: %w", ErrInvalidAddress, err)
	}
	if body != strings.ToLower(body) && body != eip55(a[1:]) {
		return Address{}, fmt.Errorf("%w: EIP-55 %s", ErrInvalidAddress, errChecksumText)
	}
	return a, nil
}

// String returns the lowercase hex form of id.
func (id NodeID) String() string { return hex.EncodeToString(id[:]) }

// MarshalText implements encoding.TextMarshaler (lowercase hex).
func (id NodeID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseNodeID.
func (id *NodeID) UnmarshalText(text []byte) error {
	p, err := ParseNodeID(string(text))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

// ParseNodeID parses 64 hex digits (either case, surrounding whitespace ignored).
func ParseNodeID(s string) (NodeID, error) {
	s = strings.TrimSpace(s)
	if len(s) != 2*NodeIDLen {
		return NodeID{}, fmt.Errorf("%w: %d characters, want %d hex digits", ErrInvalidNodeID, len(s), 2*NodeIDLen)
	}
	var id NodeID
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return NodeID{}, fmt.Errorf("%w: %w", ErrInvalidNodeID, err)
	}
	return id, nil
}
