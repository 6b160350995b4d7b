package host

import (
	"crypto/ed25519"
	"fmt"

	"github.com/a2alnode/a2al"
)

// keyStore adapts the node's single Ed25519 key to crypto.KeyStore for the DHT.
type keyStore struct {
	key  ed25519.PrivateKey
	addr a2al.Address
}

func newKeyStore(key ed25519.PrivateKey) *keyStore {
	return &keyStore{key: key, addr: a2al.AddressFromEd25519(key.Public().(ed25519.PublicKey))}
}

func (k *keyStore) Generate() (a2al.Address, error) {
	return a2al.Address{}, fmt.Errorf("host: keystore holds exactly the node key; Generate is not supported")
}

func (k *keyStore) Sign(addr a2al.Address, data []byte) ([]byte, error) {
	if addr != k.addr {
		return nil, fmt.Errorf("host: keystore: unknown address %s", AddressText(addr))
	}
	return ed25519.Sign(k.key, data), nil
}

func (k *keyStore) PublicKey(addr a2al.Address) ([]byte, error) {
	if addr != k.addr {
		return nil, fmt.Errorf("host: keystore: unknown address %s", AddressText(addr))
	}
	return []byte(k.key.Public().(ed25519.PublicKey)), nil
}

func (k *keyStore) List() []a2al.Address { return []a2al.Address{k.addr} }
