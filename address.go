// Package a2al holds the identities of the A2AL network: the 21-byte Address
// (AID) and the 32-byte NodeID used for Kademlia routing.
package a2al

import (
	"crypto/sha256"
	"math/bits"
)

// Address versions (docs/wire.md §2.1).
const (
	VersionEd25519  byte = 0xA0
	VersionP256     byte = 0xA1 // reserved: parses and prints, cannot sign
	VersionParalism byte = 0xA2 // secp256k1 + HASH160, delegation only
	VersionEthereum byte = 0xA3 // secp256k1 + Keccak-256, delegation only
)

// AddressLen and NodeIDLen are the binary sizes of Address and NodeID.
const (
	AddressLen = 21
	NodeIDLen  = 32
)

// Address is an A2AL identity: one version byte followed by a 20-byte hash.
type Address [AddressLen]byte

// NodeID is SHA-256 over the 21 address bytes; it is the Kademlia key.
type NodeID [NodeIDLen]byte

// Version returns the address version byte.
func (a Address) Version() byte { return a[0] }

// IsZero reports whether a is the all-zero address.
func (a Address) IsZero() bool { return a == Address{} }

// NodeID derives the routing key of a.
func (a Address) NodeID() NodeID { return NodeIDFromAddress(a) }

// NodeIDFromAddress returns SHA-256(addr).
func NodeIDFromAddress(addr Address) NodeID { return sha256.Sum256(addr[:]) }

// AddressFromEd25519 derives the 0xA0 address of a 32-byte Ed25519 public key:
// 0xA0 ‖ SHA-256(pub)[0:20].
func AddressFromEd25519(pub []byte) Address {
	var a Address
	a[0] = VersionEd25519
	h := sha256.Sum256(pub)
	copy(a[1:], h[:20])
	return a
}

// IsZero reports whether id is all zeros.
func (id NodeID) IsZero() bool { return id == NodeID{} }

// Distance returns the XOR distance between a and b.
func Distance(a, b NodeID) NodeID {
	var d NodeID
	for i := range d {
		d[i] = a[i] ^ b[i]
	}
	return d
}

// CommonPrefixLen returns the number of leading equal bits of a and b (256 if equal).
func CommonPrefixLen(a, b NodeID) int {
	for i := range a {
		if x := a[i] ^ b[i]; x != 0 {
			return i*8 + bits.LeadingZeros8(x)
		}
	}
	return NodeIDLen * 8
}

// Closer reports whether a is strictly closer to target than b in XOR distance.
func Closer(a, b, target NodeID) bool {
	for i := range target {
		da, db := a[i]^target[i], b[i]^target[i]
		if da != db {
			return da < db
		}
	}
	return false
}
