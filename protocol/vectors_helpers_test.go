package protocol

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
)

const vecT0 = 1767225600

// vectorDir is where the copied spec vectors live (testdata/vectors at the repo root).
var vectorDir = filepath.Join("..", "testdata", "vectors")

func loadVectors(t testing.TB, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorDir, name))
	if err != nil {
		t.Fatalf("read vector file: %v", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// seqBytes returns start, start+1, ... (n bytes): the vector seeds.
func seqBytes(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

type testKey struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	addr a2al.Address
}

func newTestKey(seed []byte) testKey {
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	return testKey{priv: priv, pub: pub, addr: a2al.AddressFromEd25519(pub)}
}

func (k testKey) sign(msg []byte) ([]byte, error) { return ed25519.Sign(k.priv, msg), nil }

var (
	keyAlice = newTestKey(seqBytes(0x00, 32))
	keyBob   = newTestKey(seqBytes(0x20, 32))
	keyCarol = newTestKey(func() []byte {
		b := make([]byte, 32)
		for i := range b {
			b[i] = 0x42
		}
		return b
	}())
	keyMaster = newTestKey(seqBytes(0x60, 32))
	keyOp     = newTestKey(seqBytes(0x80, 32))
)

// vecCounter runs one subtest per vector and prints one summary line per file.
type vecCounter struct {
	t           *testing.T
	file        string
	pass, total int
}

func newVecCounter(t *testing.T, file string) *vecCounter { return &vecCounter{t: t, file: file} }

func (c *vecCounter) run(name string, f func(t *testing.T)) {
	c.total++
	if c.t.Run(name, f) {
		c.pass++
	}
}

func (c *vecCounter) report() {
	if c.total == 0 {
		c.t.Errorf("vectors %s: no vectors ran", c.file)
	}
	line := fmt.Sprintf("vectors %s: %d/%d passed", c.file, c.pass, c.total)
	if testing.Verbose() {
		fmt.Println(line)
	}
	if c.pass != c.total {
		c.t.Error(line)
	}
}

func at(sec int64) time.Time { return time.Unix(sec, 0) }
