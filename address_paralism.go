package a2al

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/big"
	"strings"
)

// Paralism (0xA2) text forms, docs/wire.md §2.4.3. The bech32 form is the
// upstream variant: the byte 0x00 is prepended to the 20-byte hash and the
// 21 bytes are regrouped 8→5 as a whole (not a segwit witness version plus
// program), so standard P2WPKH addresses do not parse.

const (
	bech32Charset    = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
	bech32Const      = 1
	bech32mConst     = 0x2bc830a3
	bech32MaxLen     = 90
	paralismHRP      = "bc"
	base58Alphabet   = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
	p2pkhVersionByte = 0x00
)

var bech32Rev = func() (r [128]int8) {
	for i := range r {
		r[i] = -1
	}
	for i := 0; i < len(bech32Charset); i++ {
		r[bech32Charset[i]] = int8(i)
	}
	return
}()

func bech32Polymod(values []byte) uint32 {
	gen := [5]uint32{0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3}
	chk := uint32(1)
	for _, v := range values {
		top := chk >> 25
		chk = (chk&0x1ffffff)<<5 ^ uint32(v)
		for i := 0; i < 5; i++ {
			if (top>>i)&1 == 1 {
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

// convertBits regroups data from fromBits-wide to toBits-wide groups. Without
// pad, leftover bits must be fewer than fromBits and all zero.
func convertBits(data []byte, fromBits, toBits uint, pad bool) ([]byte, error) {
	var acc, bits uint
	maxv := uint(1)<<toBits - 1
	out := make([]byte, 0, len(data)*int(fromBits)/int(toBits)+1)
	for _, v := range data {
		acc = acc<<fromBits | uint(v)
		bits += fromBits
		for bits >= toBits {
			bits -= toBits
			out = append(out, byte(acc>>bits&maxv))
		}
	}
	if pad {
		if bits > 0 {
			out = append(out, byte(acc<<(toBits-bits)&maxv))
		}
	} else if bits >= fromBits {
		return nil, fmt.Errorf("invalid incomplete group")
	} else if acc<<(toBits-bits)&maxv != 0 {
		return nil, fmt.Errorf("non-zero padding bits")
	}
	return out, nil
}

func encodeParalism(hash []byte) string {
	payload := append([]byte{0x00}, hash...)
	data, _ := convertBits(payload, 8, 5, true) // cannot fail with padding
	values := append(bech32HRPExpand(paralismHRP), data...)
	polymod := bech32Polymod(append(values, 0, 0, 0, 0, 0, 0)) ^ bech32Const
	var sb strings.Builder
	sb.WriteString(paralismHRP)
	sb.WriteByte('1')
	for _, d := range data {
		sb.WriteByte(bech32Charset[d])
	}
	for i := 0; i < 6; i++ {
		sb.WriteByte(bech32Charset[(polymod>>(5*(5-i)))&31])
	}
	return sb.String()
}

func parseParalismBech32(s string) (Address, error) {
	if len(s) > bech32MaxLen {
		return Address{}, fmt.Errorf("%w: bech32 string longer than %d characters", ErrInvalidAddress, bech32MaxLen)
	}
	lower := strings.ToLower(s)
	if s != lower && s != strings.ToUpper(s) {
		return Address{}, fmt.Errorf("%w: bech32 string mixes upper and lower case", ErrInvalidAddress)
	}
	sep := strings.LastIndexByte(lower, '1')
	if sep < 1 || len(lower)-sep-1 < 6 {
		return Address{}, fmt.Errorf("%w: bech32 separator or checksum missing", ErrInvalidAddress)
	}
	hrp := lower[:sep]
	if hrp != "bc" && hrp != "pr" {
		return Address{}, fmt.Errorf("%w: bech32 prefix %q, want bc or pr", ErrInvalidAddress, hrp)
	}
	rest := lower[sep+1:]
	values := make([]byte, len(rest))
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if c >= 128 || bech32Rev[c] < 0 {
			return Address{}, fmt.Errorf("%w: invalid bech32 character %q", ErrInvalidAddress, c)
		}
		values[i] = byte(bech32Rev[c])
	}
	switch bech32Polymod(append(bech32HRPExpand(hrp), values...)) {
	case bech32Const, bech32mConst:
	default:
		return Address{}, fmt.Errorf("%w: bech32 checksum mismatch", ErrInvalidAddress)
	}
	payload, err := convertBits(values[:len(values)-6], 5, 8, false)
	if err != nil {
		return Address{}, fmt.Errorf("%w: %w", ErrInvalidAddress, err)
	}
	if len(payload) != AddressLen || payload[0] != 0x00 {
		return Address{}, fmt.Errorf("%w: bech32 payload is %d bytes, want 0x00 followed by a 20-byte hash", ErrInvalidAddress, len(payload))
	}
	var a Address
	a[0] = VersionParalism
	copy(a[1:], payload[1:])
	return a, nil
}

func parseParalismBase58(s string) (Address, error) {
	n := new(big.Int)
	radix := big.NewInt(58)
	zeros := 0
	for zeros < len(s) && s[zeros] == '1' {
		zeros++
	}
	for i := 0; i < len(s); i++ {
		d := strings.IndexByte(base58Alphabet, s[i])
		if d < 0 {
			return Address{}, fmt.Errorf("%w: invalid base58 character %q", ErrInvalidAddress, s[i])
		}
		n.Mul(n, radix)
		n.Add(n, big.NewInt(int64(d)))
	}
	raw := append(make([]byte, zeros), n.Bytes()...)
	if len(raw) != 25 {
		return Address{}, fmt.Errorf("%w: base58 payload is %d bytes, want 25", ErrInvalidAddress, len(raw))
	}
	first := sha256.Sum256(raw[:21])
	sum := sha256.Sum256(first[:])
	if !bytes.Equal(sum[:4], raw[21:]) {
		return Address{}, fmt.Errorf("%w: base58check checksum mismatch", ErrInvalidAddress)
	}
	if raw[0] != p2pkhVersionByte {
		return Address{}, fmt.Errorf("%w: base58 version byte %#02x, want 0x00 (P2PKH)", ErrInvalidAddress, raw[0])
	}
	var a Address
	a[0] = VersionParalism
	copy(a[1:], raw[1:21])
	return a, nil
}
