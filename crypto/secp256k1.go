package crypto

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"golang.org/x/crypto/ripemd160" //nolint:staticcheck // HASH160 is defined with RIPEMD-160
	"golang.org/x/crypto/sha3"
)

// These helpers verify delegation proofs of secp256k1 owners
// (docs/wire.md §10.3–§10.5): Ethereum personal_sign and Bitcoin "Signed Message". They
// recover the signer's public key and reduce it to the 20-byte hash carried
// in an 0xA3 or 0xA2 address.

// SecpSignatureSize is the size of a recoverable secp256k1 signature.
const SecpSignatureSize = 65

// ErrSecpSignature is wrapped by every signature recovery failure.
var ErrSecpSignature = errors.New("crypto: invalid secp256k1 signature")

const (
	ethMessagePrefix = "\x19Ethereum Signed Message:\n"
	btcMessageMagic  = "Bitcoin Signed Message:\n"
)

// Keccak256 is the legacy (pre-SHA-3) Keccak-256 Ethereum uses.
func Keccak256(data ...[]byte) [32]byte {
	h := sha3.NewLegacyKeccak256()
	for _, d := range data {
		h.Write(d)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Hash160 is RIPEMD-160(SHA-256(data)).
func Hash160(data []byte) [20]byte {
	s := sha256.Sum256(data)
	h := ripemd160.New()
	h.Write(s[:])
	var out [20]byte
	h.Sum(out[:0])
	return out
}

// EthereumMessageHash is the EIP-191 personal_sign digest of msg.
func EthereumMessageHash(msg []byte) [32]byte {
	return Keccak256([]byte(ethMessagePrefix), []byte(strconv.Itoa(len(msg))), msg)
}

// BitcoinMessageHash is the "Bitcoin Signed Message" digest of msg:
// SHA-256(SHA-256(varstr(magic) ‖ varstr(msg))).
func BitcoinMessageHash(msg []byte) [32]byte {
	buf := make([]byte, 0, 1+len(btcMessageMagic)+9+len(msg))
	buf = appendVarStr(buf, []byte(btcMessageMagic))
	buf = appendVarStr(buf, msg)
	first := sha256.Sum256(buf)
	return sha256.Sum256(first[:])
}

// appendVarStr appends a Bitcoin CompactSize length and b.
func appendVarStr(dst, b []byte) []byte {
	n := uint64(len(b))
	switch {
	case n < 0xfd:
		dst = append(dst, byte(n))
	case n <= 0xffff:
		dst = append(dst, 0xfd)
		dst = binary.LittleEndian.AppendUint16(dst, uint16(n))
	case n <= 0xffffffff:
		dst = append(dst, 0xfe)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
	default:
		dst = append(dst, 0xff)
		dst = binary.LittleEndian.AppendUint64(dst, n)
	}
	return append(dst, b...)
}

// EthereumAddressFromPubKey returns Keccak-256(X‖Y)[12:32] of pub.
func EthereumAddressFromPubKey(pub *secp256k1.PublicKey) [20]byte {
	unc := pub.SerializeUncompressed() // 0x04 ‖ X ‖ Y
	h := Keccak256(unc[1:])
	var out [20]byte
	copy(out[:], h[12:])
	return out
}

// RecoverEthereumPubKey recovers the signer of an EIP-191 personal_sign
// signature r‖s‖v over msg; v may be 27/28 or 0/1.
func RecoverEthereumPubKey(msg, sig []byte) (*secp256k1.PublicKey, error) {
	if len(sig) != SecpSignatureSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrSecpSignature, len(sig), SecpSignatureSize)
	}
	v := sig[64]
	if v >= 27 {
		v -= 27
	}
	if v > 1 {
		return nil, fmt.Errorf("%w: recovery byte v=%d, want 27, 28, 0 or 1", ErrSecpSignature, sig[64])
	}
	compact := make([]byte, SecpSignatureSize)
	compact[0] = 27 + v // uncompressed form: Ethereum hashes the full point
	copy(compact[1:], sig[:64])
	h := EthereumMessageHash(msg)
	pub, _, err := ecdsa.RecoverCompact(compact, h[:])
	if err != nil {
		return nil, fmt.Errorf("%w: recover: %w", ErrSecpSignature, err)
	}
	return pub, nil
}

// RecoverEthereumAddress returns the 20-byte Ethereum address that signed
// msg with personal_sign.
func RecoverEthereumAddress(msg, sig []byte) ([20]byte, error) {
	pub, err := RecoverEthereumPubKey(msg, sig)
	if err != nil {
		return [20]byte{}, err
	}
	return EthereumAddressFromPubKey(pub), nil
}

// RecoverBitcoinPubKey recovers the signer of a Bitcoin "Signed Message"
// compact signature header‖r‖s, header = 27 + recid (+4 for a compressed key).
func RecoverBitcoinPubKey(msg, sig []byte) (pub *secp256k1.PublicKey, compressed bool, err error) {
	if len(sig) != SecpSignatureSize {
		return nil, false, fmt.Errorf("%w: %d bytes, want %d", ErrSecpSignature, len(sig), SecpSignatureSize)
	}
	if sig[0] < 27 || sig[0] > 34 {
		return nil, false, fmt.Errorf("%w: header byte %d outside 27..34", ErrSecpSignature, sig[0])
	}
	h := BitcoinMessageHash(msg)
	pub, compressed, err = ecdsa.RecoverCompact(sig, h[:])
	if err != nil {
		return nil, false, fmt.Errorf("%w: recover: %w", ErrSecpSignature, err)
	}
	return pub, compressed, nil
}

// RecoverBitcoinHash160 returns HASH160 of the signer's public key, serialized
// in the form (compressed or not) the signature header declares.
func RecoverBitcoinHash160(msg, sig []byte) ([20]byte, bool, error) {
	pub, compressed, err := RecoverBitcoinPubKey(msg, sig)
	if err != nil {
		return [20]byte{}, false, err
	}
	if compressed {
		return Hash160(pub.SerializeCompressed()), true, nil
	}
	return Hash160(pub.SerializeUncompressed()), false, nil
}

// SignEthereumMessage produces a personal_sign signature r‖s‖v (v = 27/28)
// of msg; used by tools and tests that create delegation proofs.
func SignEthereumMessage(priv *secp256k1.PrivateKey, msg []byte) []byte {
	h := EthereumMessageHash(msg)
	c := ecdsa.SignCompact(priv, h[:], false)
	out := make([]byte, SecpSignatureSize)
	copy(out, c[1:])
	out[64] = c[0]
	return out
}

// SignBitcoinMessage produces a Bitcoin "Signed Message" compact signature.
func SignBitcoinMessage(priv *secp256k1.PrivateKey, msg []byte, compressed bool) []byte {
	h := BitcoinMessageHash(msg)
	return ecdsa.SignCompact(priv, h[:], compressed)
}
