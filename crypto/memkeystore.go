package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/a2alnode/a2al"
)

// MaxMemKeys bounds the number of identities a MemKeyStore holds.
const MaxMemKeys = 4096

// Errors returned by MemKeyStore.
var (
	ErrUnknownAddress = errors.New("crypto: address not in key store")
	ErrInvalidKey     = errors.New("crypto: invalid Ed25519 private key")
	ErrKeyStoreFull   = errors.New("crypto: key store full")
)

// MemKeyStore is an in-memory, thread-safe KeyStore of Ed25519 identities.
// List returns addresses in insertion order.
type MemKeyStore struct {
	mu    sync.RWMutex
	keys  map[a2al.Address]ed25519.PrivateKey
	order []a2al.Address
}

var _ KeyStore = (*MemKeyStore)(nil)

// NewMemKeyStore returns an empty key store.
func NewMemKeyStore() *MemKeyStore {
	return &MemKeyStore{keys: make(map[a2al.Address]ed25519.PrivateKey)}
}

// NewMemKeyStoreFromPrivateKey returns a store holding exactly priv, e.g. a
// node key loaded with LoadKeyFile.
func NewMemKeyStoreFromPrivateKey(priv ed25519.PrivateKey) (*MemKeyStore, error) {
	ks := NewMemKeyStore()
	if _, err := ks.Add(priv); err != nil {
		return nil, err
	}
	return ks, nil
}

// NewMemKeyStoreFromSeed returns a store holding the key derived from a
// 32-byte Ed25519 seed.
func NewMemKeyStoreFromSeed(seed []byte) (*MemKeyStore, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: seed is %d bytes, want %d", ErrInvalidKey, len(seed), ed25519.SeedSize)
	}
	return NewMemKeyStoreFromPrivateKey(ed25519.NewKeyFromSeed(seed))
}

// checkPrivateKey verifies that priv is 64 bytes whose public half matches its seed.
func checkPrivateKey(priv ed25519.PrivateKey) error {
	if len(priv) != ed25519.PrivateKeySize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrInvalidKey, len(priv), ed25519.PrivateKeySize)
	}
	derived := ed25519.NewKeyFromSeed(priv.Seed())
	if !bytes.Equal(derived[32:], priv[32:]) {
		return fmt.Errorf("%w: public half does not match the seed", ErrInvalidKey)
	}
	return nil
}

// Add stores a copy of priv and returns its 0xA0 address. Adding a key that
// is already present is not an error.
func (k *MemKeyStore) Add(priv ed25519.PrivateKey) (a2al.Address, error) {
	if err := checkPrivateKey(priv); err != nil {
		return a2al.Address{}, err
	}
	cp := append(ed25519.PrivateKey(nil), priv...)
	addr := a2al.AddressFromEd25519(cp[32:])
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.keys[addr]; ok {
		return addr, nil
	}
	if len(k.keys) >= MaxMemKeys {
		return a2al.Address{}, fmt.Errorf("%w: %d keys", ErrKeyStoreFull, MaxMemKeys)
	}
	k.keys[addr] = cp
	k.order = append(k.order, addr)
	return addr, nil
}

// Generate creates and stores a fresh Ed25519 identity.
func (k *MemKeyStore) Generate() (a2al.Address, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return a2al.Address{}, fmt.Errorf("crypto: generate Ed25519 key: %w", err)
	}
	return k.Add(priv)
}

func (k *MemKeyStore) get(addr a2al.Address) (ed25519.PrivateKey, error) {
	k.mu.RLock()
	priv, ok := k.keys[addr]
	k.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownAddress, addr)
	}
	return priv, nil
}

// Sign returns the 64-byte Ed25519 signature of data by addr's key.
func (k *MemKeyStore) Sign(addr a2al.Address, data []byte) ([]byte, error) {
	priv, err := k.get(addr)
	if err != nil {
		return nil, err
	}
	return ed25519.Sign(priv, data), nil
}

// PublicKey returns addr's 32-byte public key.
func (k *MemKeyStore) PublicKey(addr a2al.Address) ([]byte, error) {
	priv, err := k.get(addr)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), priv[32:]...), nil
}

// PrivateKey returns a copy of addr's private key (for TLS certificates).
func (k *MemKeyStore) PrivateKey(addr a2al.Address) (ed25519.PrivateKey, error) {
	priv, err := k.get(addr)
	if err != nil {
		return nil, err
	}
	return append(ed25519.PrivateKey(nil), priv...), nil
}

// List returns the stored addresses in insertion order.
func (k *MemKeyStore) List() []a2al.Address {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return append([]a2al.Address(nil), k.order...)
}
