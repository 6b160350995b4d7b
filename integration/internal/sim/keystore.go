// Package sim holds helpers for in-process DHT simulations (dhtsim): an
// in-memory key store, a UDP-addressed view of the in-memory network, a
// counting transport wrapper and an accelerated clock.
package sim

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/a2alnode/a2al"
)

var errUnknownAddress = errors.New("sim: key store does not hold this address")

// KeyStore is a single-identity in-memory crypto.KeyStore.
type KeyStore struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	addr a2al.Address
}

// NewKeyStore wraps an Ed25519 key.
func NewKeyStore(priv ed25519.PrivateKey) *KeyStore {
	pub := priv.Public().(ed25519.PublicKey)
	return &KeyStore{priv: priv, pub: pub, addr: a2al.AddressFromEd25519(pub)}
}

// Generate is not supported: a simulated node has exactly one identity.
func (k *KeyStore) Generate() (a2al.Address, error) {
	return a2al.Address{}, errors.New("sim: key store holds a fixed identity")
}

// Sign signs data with the identity's key.
func (k *KeyStore) Sign(addr a2al.Address, data []byte) ([]byte, error) {
	if addr != k.addr {
		return nil, fmt.Errorf("sign for %x: %w", addr[:], errUnknownAddress)
	}
	return ed25519.Sign(k.priv, data), nil
}

// PublicKey returns the identity's public key.
func (k *KeyStore) PublicKey(addr a2al.Address) ([]byte, error) {
	if addr != k.addr {
		return nil, fmt.Errorf("public key of %x: %w", addr[:], errUnknownAddress)
	}
	return append([]byte(nil), k.pub...), nil
}

// List returns the one address.
func (k *KeyStore) List() []a2al.Address { return []a2al.Address{k.addr} }

// Address is the identity's address.
func (k *KeyStore) Address() a2al.Address { return k.addr }

// Pub is the identity's public key.
func (k *KeyStore) Pub() []byte { return k.pub }

// SignFunc signs arbitrary messages (records) with the identity.
func (k *KeyStore) SignFunc(msg []byte) ([]byte, error) { return ed25519.Sign(k.priv, msg), nil }
