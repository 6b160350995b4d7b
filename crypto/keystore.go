// Package crypto holds the node's keys: the KeyStore the DHT signs with,
// Ed25519 key files, and secp256k1 helpers for delegation proofs.
package crypto

import "github.com/a2alnode/a2al"

// KeyStore holds identities and signs on their behalf (docs/dht.md §1.2).
// The DHT requires exactly one Ed25519 (0xA0) identity in List.
type KeyStore interface {
	// Generate creates a new Ed25519 identity and returns its address.
	Generate() (a2al.Address, error)
	// Sign returns a 64-byte Ed25519 signature of data by addr's key.
	Sign(addr a2al.Address, data []byte) ([]byte, error)
	// PublicKey returns the 32-byte Ed25519 public key of addr.
	PublicKey(addr a2al.Address) ([]byte, error)
	// List returns the addresses held, in a stable order.
	List() []a2al.Address
}
