package protocol

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/crypto"
)

// Address text forms are needed here only to check the "agent:" line of a
// secp256k1 delegation message (wire.md §10.3–§10.5), which must parse to the
// proof's agent_addr under the precedence rules of §2.4.4. These helpers are
// internal; the root package owns the public text API.

var errAddrText = errors.New("invalid address text")

// parseAddressText parses an address in any accepted text form (§2.4.4).
func parseAddressText(s string) (a2al.Address, error) {
	s = strings.TrimSpace(s)
	lower := strings.ToLower(s)
	switch {
	case len(s) == 42 && (strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X")):
		return parseEthereumText(s[2:])
	case strings.HasPrefix(lower, "bc1") || strings.HasPrefix(lower, "pr1"):
		return parseParalismBech32(s)
	case strings.HasPrefix(s, "1") && len(s) >= 26 && len(s) <= 35:
		return parseBase58Check(s)
	case len(s) == 42:
		return parseNativeText(s)
	}
	return a2al.Address{}, fmt.Errorf("%w: %q", errAddrText, s)
}

func keccak256(b ...[]byte) []byte {
	h := crypto.Keccak256(b...)
	return h[:]
}

// checksumCase applies EIP-55-style casing to lowercase hex using hash h.
func checksumCase(lower string, h []byte) string {
	out := []byte(lower)
	for i, c := range out {
		if c < 'a' || c > 'f' {
			continue
		}
		nib := h[i/2] >> 4
		if i%2 == 1 {
			nib = h[i/2] & 0x0f
		}
		if nib >= 8 {
			out[i] = c - 'a' + 'A'
		}
	}
	return string(out)
}

// ethereumText formats a 0xA3 address as 0x + EIP-55.
func ethereumText(a a2al.Address) string {
	lower := hex.EncodeToString(a[1:])
	return "0x" + checksumCase(lower, keccak256([]byte(lower)))
}

func parseEthereumText(body string) (a2al.Address, error) {
	var a a2al.Address
	raw, err := hex.DecodeString(body)
	if err != nil || len(raw) != 20 {
		return a, fmt.Errorf("%w: ethereum hex", errAddrText)
	}
	lower := strings.ToLower(body)
	if body != lower && body != checksumCase(lower, keccak256([]byte(lower))) {
		return a, fmt.Errorf("%w: EIP-55 checksum mismatch", errAddrText)
	}
	a[0] = a2al.VersionEthereum
	copy(a[1:], raw)
	return a, nil
}

// nativeText formats any address in the checksummed native hex form (§2.4.1).
func nativeText(a a2al.Address) string {
	lower := hex.EncodeToString(a[:])
	h := sha256.Sum256([]byte(lower))
	return checksumCase(lower, h[:])
}

func parseNativeText(s string) (a2al.Address, error) {
	var a a2al.Address
	raw, err := hex.DecodeString(s)
	if err != nil || len(raw) != a2al.AddressLen || raw[0] < 0xA0 || raw[0] > 0xAF {
		return a, fmt.Errorf("%w: native hex", errAddrText)
	}
	copy(a[:], raw)
	if s != strings.ToLower(s) && s != nativeText(a) {
		return a2al.Address{}, fmt.Errorf("%w: native checksum mismatch", errAddrText)
	}
	return a, nil
}

// ---- bech32 (BIP-173) with the reference's non-standard 0x00 ‖ hash20 layout ----

const bech32Charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

func bech32Polymod(values []byte) uint32 {
	gen := [5]uint32{0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3}
	chk := uint32(1)
	for _, v := range values {
		top := chk >> 25
		chk = (chk&0x1ffffff)<<5 ^ uint32(v)
		for i := 0; i < 5; i++ {
			if (top>>uint(i))&1 == 1 {
				chk ^= gen[i]
			}
		}
	}
	return chk
}

func bech32HRPExpand(hrp string) []byte {
	out := make([]byte, 0, 2*len(hrp)+1)
	for i := 0; i < len(hrp); i++ {
		out = append(out, hrp[i]>>5)
	}
	out = append(out, 0)
	for i := 0; i < len(hrp); i++ {
		out = append(out, hrp[i]&31)
	}
	return out
}

// convertBits regroups bits; pad=false rejects incomplete groups.
func convertBits(data []byte, from, to uint, pad bool) ([]byte, error) {
	var acc, bits uint
	var out []byte
	maxv := uint(1)<<to - 1
	for _, v := range data {
		acc = acc<<from | uint(v)
		bits += from
		for bits >= to {
			bits -= to
			out = append(out, byte(acc>>bits&maxv))
		}
	}
	if pad {
		if bits > 0 {
			out = append(out, byte(acc<<(to-bits)&maxv))
		}
	} else if bits >= from || acc<<(to-bits)&maxv != 0 {
		return nil, fmt.Errorf("%w: invalid incomplete group", errAddrText)
	}
	return out, nil
}

// paralismText formats a 0xA2 address (HRP "bc", bech32 checksum).
func paralismText(a a2al.Address) string {
	data, _ := convertBits(append([]byte{0}, a[1:]...), 8, 5, true)
	values := append(bech32HRPExpand("bc"), data...)
	pm := bech32Polymod(append(values, 0, 0, 0, 0, 0, 0)) ^ 1
	var sb strings.Builder
	sb.WriteString("bc1")
	for _, d := range data {
		sb.WriteByte(bech32Charset[d])
	}
	for i := 0; i < 6; i++ {
		sb.WriteByte(bech32Charset[(pm>>uint(5*(5-i)))&31])
	}
	return sb.String()
}

func parseParalismBech32(s string) (a2al.Address, error) {
	var a a2al.Address
	if s != strings.ToLower(s) && s != strings.ToUpper(s) {
		return a, fmt.Errorf("%w: mixed-case bech32", errAddrText)
	}
	s = strings.ToLower(s)
	pos := strings.LastIndexByte(s, '1')
	if pos < 1 || len(s)-pos-1 < 6 || len(s) > 90 {
		return a, fmt.Errorf("%w: bech32 layout", errAddrText)
	}
	hrp := s[:pos]
	if hrp != "bc" && hrp != "pr" {
		return a, fmt.Errorf("%w: bech32 hrp %q", errAddrText, hrp)
	}
	var data []byte
	for i := pos + 1; i < len(s); i++ {
		d := strings.IndexByte(bech32Charset, s[i])
		if d < 0 {
			return a, fmt.Errorf("%w: bech32 character", errAddrText)
		}
		data = append(data, byte(d))
	}
	pm := bech32Polymod(append(bech32HRPExpand(hrp), data...))
	if pm != 1 && pm != 0x2bc830a3 { // bech32 or bech32m
		return a, fmt.Errorf("%w: bech32 checksum", errAddrText)
	}
	raw, err := convertBits(data[:len(data)-6], 5, 8, false)
	if err != nil {
		return a, err
	}
	if len(raw) != 21 || raw[0] != 0 {
		return a, fmt.Errorf("%w: bech32 payload", errAddrText)
	}
	a[0] = a2al.VersionParalism
	copy(a[1:], raw[1:])
	return a, nil
}

const base58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

func parseBase58Check(s string) (a2al.Address, error) {
	var a a2al.Address
	n := new(big.Int)
	for i := 0; i < len(s); i++ {
		d := strings.IndexByte(base58Alphabet, s[i])
		if d < 0 {
			return a, fmt.Errorf("%w: base58 character", errAddrText)
		}
		n.Mul(n, big.NewInt(58)).Add(n, big.NewInt(int64(d)))
	}
	raw := n.Bytes()
	for i := 0; i < len(s) && s[i] == '1'; i++ {
		raw = append([]byte{0}, raw...)
	}
	if len(raw) != 25 || raw[0] != 0 {
		return a, fmt.Errorf("%w: base58check payload", errAddrText)
	}
	h1 := sha256.Sum256(raw[:21])
	h2 := sha256.Sum256(h1[:])
	if string(h2[:4]) != string(raw[21:]) {
		return a, fmt.Errorf("%w: base58check checksum", errAddrText)
	}
	a[0] = a2al.VersionParalism
	copy(a[1:], raw[1:21])
	return a, nil
}
