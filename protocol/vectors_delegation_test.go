package protocol

import (
	"bytes"
	"errors"
	"testing"

	"github.com/a2alnode/a2al/crypto"
)

func hashSlice(h [32]byte) []byte { return h[:] }

type delegVerify struct {
	Now  int64  `json:"now"`
	V018 string `json:"v018"`
	Head string `json:"head"`
}

type delegCase struct {
	MasterSeed   string        `json:"master_seed_hex"`
	MasterPub    string        `json:"master_public_key_hex"`
	OwnerPriv    string        `json:"owner_private_key_hex"`
	OpPub        string        `json:"op_public_key_hex"`
	AgentAddr    string        `json:"agent_address_hex"`
	IssuedAt     uint64        `json:"issued_at"`
	ExpiresAt    uint64        `json:"expires_at"`
	Scope        uint8         `json:"scope"`
	Message      string        `json:"message"`
	EIP191Hash   string        `json:"eip191_hash_hex"`
	BTCHash      string        `json:"signed_message_hash_hex"`
	SignFields   string        `json:"sign_fields_cbor_hex"`
	SigningInput string        `json:"signing_input_hex"`
	Signature    string        `json:"signature_hex"`
	Proof        string        `json:"proof_cbor_hex"`
	Verify       []delegVerify `json:"verify"`
	WrongKey     []delegVerify `json:"verify_with_op_binding_wrong_key"`
}

type delegationFile struct {
	SignPrefix string    `json:"sign_prefix_hex"`
	Ed25519    delegCase `json:"ed25519"`
	NoExpiry   delegCase `json:"ed25519_no_expiry"`
	Ethereum   delegCase `json:"ethereum"`
	Paralism   delegCase `json:"paralism"`
	Invalid    []struct {
		Name   string        `json:"name"`
		Proof  string        `json:"proof_cbor_hex"`
		Verify []delegVerify `json:"verify"`
	} `json:"invalid"`
}

// delegResult runs parse + verify and maps the outcome to the vector vocabulary.
func delegResult(t *testing.T, proof []byte, now int64) string {
	p, err := ParseDelegation(proof)
	if err != nil {
		if !errors.Is(err, ErrDelegation) {
			t.Errorf("parse error does not wrap ErrDelegation: %v", err)
		}
		return "parse_error"
	}
	if err := p.Verify(at(now)); err != nil {
		if !errors.Is(err, ErrDelegation) && !errors.Is(err, ErrDelegationExpired) {
			t.Errorf("verify error does not wrap a delegation sentinel: %v", err)
		}
		return "rejected"
	}
	return "ok"
}

func checkDelegCase(t *testing.T, c delegCase) {
	proof := unhex(t, c.Proof)
	p, err := ParseDelegation(proof)
	if err != nil {
		t.Fatalf("ParseDelegation: %v", err)
	}
	if c.OpPub != "" && !bytes.Equal(p.OpPub, unhex(t, c.OpPub)) {
		t.Errorf("op_pub differs")
	}
	if c.AgentAddr != "" && !bytes.Equal(p.AgentAddr[:], unhex(t, c.AgentAddr)) {
		t.Errorf("agent_addr differs")
	}
	if c.IssuedAt != 0 && (p.IssuedAt != c.IssuedAt || p.ExpiresAt != c.ExpiresAt || p.Scope != c.Scope) {
		t.Errorf("numeric fields differ: %+v", p)
	}
	if c.Message != "" && p.Message != c.Message {
		t.Errorf("message differs")
	}
	if enc, err := EncodeDelegation(*p); err != nil || !bytes.Equal(enc, proof) {
		t.Errorf("EncodeDelegation round trip: %v\n got %x\nwant %x", err, enc, proof)
	}
	if c.SigningInput != "" {
		in, err := DelegationSigningInput(*p)
		if err != nil || !bytes.Equal(in, unhex(t, c.SigningInput)) || !bytes.HasSuffix(in, unhex(t, c.SignFields)) {
			t.Errorf("signing input differs: %v", err)
		}
	}
	if c.MasterSeed != "" {
		m := newTestKey(unhex(t, c.MasterSeed))
		fresh := DelegationProof{OpPub: p.OpPub, IssuedAt: p.IssuedAt, ExpiresAt: p.ExpiresAt}
		if err := SignDelegation(&fresh, m.pub, m.sign); err != nil {
			t.Fatalf("SignDelegation: %v", err)
		}
		if enc, _ := EncodeDelegation(fresh); !bytes.Equal(enc, proof) {
			t.Errorf("SignDelegation output differs from vector")
		}
	}
	if c.EIP191Hash != "" && !bytes.Equal(hashSlice(crypto.EthereumMessageHash([]byte(c.Message))), unhex(t, c.EIP191Hash)) {
		t.Errorf("EIP-191 hash differs")
	}
	if c.BTCHash != "" && !bytes.Equal(hashSlice(crypto.BitcoinMessageHash([]byte(c.Message))), unhex(t, c.BTCHash)) {
		t.Errorf("Bitcoin message hash differs")
	}
	if c.Message != "" {
		if msg, err := DelegationMessage(*p); err != nil || msg != c.Message {
			t.Errorf("DelegationMessage:\n got %q\nwant %q (%v)", msg, c.Message, err)
		}
	}
	for _, v := range c.Verify {
		if got := delegResult(t, proof, v.Now); got != v.Head {
			t.Errorf("verify at %d = %s, want %s (HEAD rule)", v.Now, got, v.Head)
		}
		if v.Head == "ok" {
			if _, err := VerifyDelegation(proof, p.AgentAddr, p.OpPub, at(v.Now)); err != nil {
				t.Errorf("VerifyDelegation with correct binding: %v", err)
			}
		}
	}
	for _, v := range c.WrongKey {
		_, err := VerifyDelegation(proof, p.AgentAddr, keyCarol.pub, at(v.Now))
		if (err == nil) != (v.Head == "ok") || (err != nil && !errors.Is(err, ErrDelegation)) {
			t.Errorf("wrong op binding at %d: %v, want %s", v.Now, err, v.Head)
		}
	}
}

func TestVectorDelegation(t *testing.T) {
	var f delegationFile
	loadVectors(t, "delegation.json", &f)
	if !bytes.Equal(delSignPrefix, unhex(t, f.SignPrefix)) {
		t.Fatal("delegation sign prefix mismatch")
	}
	vc := newVecCounter(t, "delegation.json")
	vc.run("ed25519", func(t *testing.T) { checkDelegCase(t, f.Ed25519) })
	vc.run("ed25519_no_expiry", func(t *testing.T) { checkDelegCase(t, f.NoExpiry) })
	vc.run("ethereum", func(t *testing.T) { checkDelegCase(t, f.Ethereum) })
	vc.run("paralism", func(t *testing.T) { checkDelegCase(t, f.Paralism) })
	for _, inv := range f.Invalid {
		vc.run("invalid/"+inv.Name, func(t *testing.T) {
			for _, v := range inv.Verify {
				if got := delegResult(t, unhex(t, inv.Proof), v.Now); got != v.Head {
					t.Errorf("at %d: %s, want %s", v.Now, got, v.Head)
				}
			}
		})
	}
	vc.report()
}
