package crypto

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/a2alnode/a2al"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMemKeyStoreVectors(t *testing.T) {
	var v struct {
		Ed25519 []struct {
			Name       string `json:"name"`
			Seed       string `json:"seed_hex"`
			Pub        string `json:"public_key_hex"`
			AddressHex string `json:"address_hex"`
		} `json:"ed25519_identities"`
	}
	raw, err := os.ReadFile("../testdata/vectors/identity.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Ed25519) == 0 {
		t.Fatal("no vectors")
	}
	for _, id := range v.Ed25519 {
		ks, err := NewMemKeyStoreFromSeed(unhex(t, id.Seed))
		if err != nil {
			t.Fatal(err)
		}
		list := ks.List()
		if len(list) != 1 || hex.EncodeToString(list[0][:]) != id.AddressHex {
			t.Fatalf("%s: address %x, want %s", id.Name, list, id.AddressHex)
		}
		pub, err := ks.PublicKey(list[0])
		if err != nil || hex.EncodeToString(pub) != id.Pub {
			t.Fatalf("%s: pub %x %v", id.Name, pub, err)
		}
		sig, err := ks.Sign(list[0], []byte("msg"))
		if err != nil || !ed25519.Verify(pub, []byte("msg"), sig) {
			t.Fatalf("%s: signature does not verify (%v)", id.Name, err)
		}
	}
}

func TestMemKeyStoreBehaviour(t *testing.T) {
	ks := NewMemKeyStore()
	var unknown a2al.Address
	if _, err := ks.Sign(unknown, nil); !errors.Is(err, ErrUnknownAddress) {
		t.Fatalf("sign unknown: %v", err)
	}
	if _, err := ks.PublicKey(unknown); !errors.Is(err, ErrUnknownAddress) {
		t.Fatalf("pub unknown: %v", err)
	}
	a1, err := ks.Generate()
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := ks.Generate()
	if l := ks.List(); len(l) != 2 || l[0] != a1 || l[1] != a2 {
		t.Fatalf("List order %x", l)
	}
	priv, err := ks.PrivateKey(a1)
	if err != nil || a2al.AddressFromEd25519(priv.Public().(ed25519.PublicKey)) != a1 {
		t.Fatalf("PrivateKey: %v", err)
	}
	priv[0] ^= 1 // the returned key is a copy
	if p2, _ := ks.PrivateKey(a1); bytes.Equal(p2, priv) {
		t.Fatal("PrivateKey returned the internal slice")
	}
	if again, err := ks.Add(p2(ks, a1)); err != nil || again != a1 || len(ks.List()) != 2 {
		t.Fatalf("re-adding a key: %v", err)
	}
	if _, err := NewMemKeyStoreFromSeed(make([]byte, 31)); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("short seed: %v", err)
	}
	bad := ed25519.NewKeyFromSeed(make([]byte, 32))
	bad[40] ^= 1
	if _, err := NewMemKeyStoreFromPrivateKey(bad); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("mismatched public half: %v", err)
	}
	if _, err := NewMemKeyStoreFromPrivateKey(bad[:10]); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("short key: %v", err)
	}
}

func p2(ks *MemKeyStore, a a2al.Address) ed25519.PrivateKey {
	k, _ := ks.PrivateKey(a)
	return k
}

func TestMemKeyStoreConcurrent(t *testing.T) {
	ks := NewMemKeyStore()
	a, _ := ks.Generate()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				if _, err := ks.Sign(a, []byte{byte(j)}); err != nil {
					t.Error(err)
					return
				}
				_, _ = ks.Generate()
				_ = ks.List()
			}
		}()
	}
	wg.Wait()
	if n := len(ks.List()); n != 201 {
		t.Fatalf("%d keys", n)
	}
}

func TestKeyFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "node.key")
	key, created, err := LoadOrCreateKeyFile(path)
	if err != nil || !created {
		t.Fatalf("create: %v created=%v", err, created)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o", st.Mode().Perm())
	}
	again, created, err := LoadOrCreateKeyFile(path)
	if err != nil || created || !bytes.Equal(again, key) {
		t.Fatalf("reload: %v created=%v", err, created)
	}
	if _, err := GenerateKeyFile(path); !errors.Is(err, ErrKeyFileExists) {
		t.Fatalf("overwrite: %v", err)
	}
	if loaded, _ := LoadKeyFile(path); !bytes.Equal(loaded, key) {
		t.Fatal("key changed after refused overwrite")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
	data, _ := os.ReadFile(path)
	if !bytes.HasPrefix(data, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Fatalf("unexpected format:\n%s", data)
	}
}

func TestKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadKeyFile(filepath.Join(dir, "missing")); !errors.Is(err, ErrKeyFileNotFound) {
		t.Fatalf("missing: %v", err)
	}
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, _ := EncodeKeyFile(ed25519.NewKeyFromSeed(make([]byte, 32)))
	cases := []struct {
		name string
		data []byte
		mode os.FileMode
		want error
	}{
		{"garbage", []byte("not a key"), 0o600, ErrKeyFileCorrupt},
		{"truncated", good[:len(good)/2], 0o600, ErrKeyFileCorrupt},
		{"trailing", append(append([]byte(nil), good...), "junk"...), 0o600, ErrKeyFileCorrupt},
		{"wrong type", bytes.Replace(good, []byte("PRIVATE KEY"), []byte("PUBLIC KEY"), 2), 0o600, ErrKeyFileCorrupt},
		{"corrupt der", bytes.Replace(good, []byte("MC4CAQ"), []byte("MC4CAA"), 1), 0o600, ErrKeyFileCorrupt},
	}
	if runtime.GOOS != "windows" {
		cases = append(cases,
			struct {
				name string
				data []byte
				mode os.FileMode
				want error
			}{"group readable", good, 0o640, ErrKeyFileInsecure},
			struct {
				name string
				data []byte
				mode os.FileMode
				want error
			}{"world readable", good, 0o604, ErrKeyFileInsecure})
	}
	for _, c := range cases {
		p := write(c.name, c.data, c.mode)
		if _, err := LoadKeyFile(p); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
		if _, created, err := LoadOrCreateKeyFile(p); created || !errors.Is(err, c.want) {
			t.Errorf("%s: LoadOrCreate replaced a bad file (created=%v, err=%v)", c.name, created, err)
		}
	}
	if _, err := LoadKeyFile(write("ok", good, 0o600)); err != nil {
		t.Fatalf("good file: %v", err)
	}
}

func FuzzDecodeKeyFile(f *testing.F) {
	good, _ := EncodeKeyFile(ed25519.NewKeyFromSeed(make([]byte, 32)))
	f.Add(good)
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		priv, err := DecodeKeyFile(data)
		if err != nil {
			return
		}
		if err := checkPrivateKey(priv); err != nil {
			t.Fatalf("decoded an invalid key: %v", err)
		}
	})
}

type delegationVector struct {
	OwnerPriv  string `json:"owner_private_key_hex"`
	AgentAddr  string `json:"agent_address_hex"`
	Message    string `json:"message"`
	EIP191Hash string `json:"eip191_hash_hex"`
	BTCHash    string `json:"signed_message_hash_hex"`
	Signature  string `json:"signature_hex"`
}

func loadDelegationVectors(t *testing.T) (eth, par delegationVector) {
	t.Helper()
	raw, err := os.ReadFile("../testdata/vectors/delegation.json")
	if err != nil {
		t.Skipf("delegation vectors unavailable: %v", err)
	}
	var v struct {
		Ethereum delegationVector `json:"ethereum"`
		Paralism delegationVector `json:"paralism"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v.Ethereum, v.Paralism
}

func TestEthereumRecoveryVector(t *testing.T) {
	eth, _ := loadDelegationVectors(t)
	msg := []byte(eth.Message)
	h := EthereumMessageHash(msg)
	if hex.EncodeToString(h[:]) != eth.EIP191Hash {
		t.Fatalf("EIP-191 hash %x, want %s", h, eth.EIP191Hash)
	}
	sig := unhex(t, eth.Signature)
	addr, err := RecoverEthereumAddress(msg, sig)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(addr[:]) != eth.AgentAddr[2:] {
		t.Fatalf("recovered %x, want %s", addr, eth.AgentAddr[2:])
	}
	// v in {0,1} is accepted as well.
	alt := append([]byte(nil), sig...)
	alt[64] -= 27
	if a2, err := RecoverEthereumAddress(msg, alt); err != nil || a2 != addr {
		t.Fatalf("v-27 form: %x %v", a2, err)
	}
	// A changed message recovers a different signer (or fails).
	if a3, err := RecoverEthereumAddress(append(msg, ' '), sig); err == nil && a3 == addr {
		t.Fatal("tampered message recovered the same address")
	}
	bad := append([]byte(nil), sig...)
	bad[64] = 29
	if _, err := RecoverEthereumAddress(msg, bad); !errors.Is(err, ErrSecpSignature) {
		t.Fatalf("bad v: %v", err)
	}
	if _, err := RecoverEthereumAddress(msg, sig[:64]); !errors.Is(err, ErrSecpSignature) {
		t.Fatalf("short sig: %v", err)
	}
	// Our signer reproduces a signature that recovers to the same owner.
	priv := secp256k1.PrivKeyFromBytes(unhex(t, eth.OwnerPriv))
	if a4, err := RecoverEthereumAddress(msg, SignEthereumMessage(priv, msg)); err != nil || a4 != addr {
		t.Fatalf("own signature: %x %v", a4, err)
	}
}

func TestBitcoinRecoveryVector(t *testing.T) {
	_, par := loadDelegationVectors(t)
	msg := []byte(par.Message)
	h := BitcoinMessageHash(msg)
	if hex.EncodeToString(h[:]) != par.BTCHash {
		t.Fatalf("signed-message hash %x, want %s", h, par.BTCHash)
	}
	sig := unhex(t, par.Signature)
	h160, compressed, err := RecoverBitcoinHash160(msg, sig)
	if err != nil {
		t.Fatal(err)
	}
	if !compressed || hex.EncodeToString(h160[:]) != par.AgentAddr[2:] {
		t.Fatalf("recovered %x compressed=%v, want %s", h160, compressed, par.AgentAddr[2:])
	}
	priv := secp256k1.PrivKeyFromBytes(unhex(t, par.OwnerPriv))
	uh, uc, err := RecoverBitcoinHash160(msg, SignBitcoinMessage(priv, msg, false))
	if err != nil || uc || hex.EncodeToString(uh[:]) != "e4e517ee07984a4000cd7b00cbcb545911c541c4" {
		t.Fatalf("uncompressed: %x %v %v", uh, uc, err)
	}
	bad := append([]byte(nil), sig...)
	bad[0] = 35
	if _, _, err := RecoverBitcoinHash160(msg, bad); !errors.Is(err, ErrSecpSignature) {
		t.Fatalf("bad header: %v", err)
	}
	zero := make([]byte, 65)
	zero[0] = 27
	if _, _, err := RecoverBitcoinHash160(msg, zero); !errors.Is(err, ErrSecpSignature) {
		t.Fatalf("zero r,s: %v", err)
	}
}

func TestIdentitySecpVectors(t *testing.T) {
	priv := secp256k1.PrivKeyFromBytes(unhex(t, "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))
	if a := EthereumAddressFromPubKey(priv.PubKey()); hex.EncodeToString(a[:]) != "2c7536e3605d9c16a7a3d7b1898e529396a65c23" {
		t.Fatalf("eth address %x", a)
	}
	p := secp256k1.PrivKeyFromBytes(unhex(t, "1111111111111111111111111111111111111111111111111111111111111111"))
	if h := Hash160(p.PubKey().SerializeCompressed()); hex.EncodeToString(h[:]) != "fc7250a211deddc70ee5a2738de5f07817351cef" {
		t.Fatalf("hash160 %x", h)
	}
	if got := appendVarStr(nil, make([]byte, 300))[:3]; !bytes.Equal(got, []byte{0xfd, 0x2c, 0x01}) {
		t.Fatalf("varstr prefix % x", got)
	}
}

func FuzzRecover(f *testing.F) {
	f.Add([]byte("m"), make([]byte, 65))
	f.Fuzz(func(t *testing.T, msg, sig []byte) {
		_, _ = RecoverEthereumAddress(msg, sig)
		_, _, _ = RecoverBitcoinHash160(msg, sig)
	})
}
