package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

const vecT0 = 1767225600

// TestCertVectors: the reference's plain and delegated certificates verify
// as host_frames.json says, and both reference defects are closed: an
// extension that does not verify proves nothing (the key-derived address is
// reported), and a proof for another agent does not pass for the claimed one.
func TestCertVectors(t *testing.T) {
	hf := loadHostFrames(t)
	now := time.Unix(vecT0, 0)
	clock := func() time.Time { return now }
	plain := [][]byte{mustHex(t, hf.Plain.DER)}
	if got, err := PeerAddressFromCerts(plain, now); err != nil || got != a2al.Address(mustHex(t, hf.Plain.Peer)) {
		t.Fatalf("plain: %s %v", got, err)
	}
	del := [][]byte{mustHex(t, hf.Delegated.DER)}
	master := a2al.Address(mustHex(t, hf.Delegated.Peer))
	if got, err := PeerAddressFromCerts(del, now); err != nil || got != master {
		t.Fatalf("delegated: %s %v", got, err)
	}
	if err := verifyExpected(master, clock)(del, nil); err != nil {
		t.Fatalf("delegated, expecting the agent: %v", err)
	}
	if err := verifyExpected(a2al.Address(mustHex(t, hf.Delegated.OpAddr)), clock)(del, nil); err != nil {
		t.Fatalf("delegated, expecting the key's own address: %v", err)
	}
	for _, d := range hf.Defects {
		raw := [][]byte{mustHex(t, d.DER)}
		switch d.Name {
		case "unverified_extension_on_accept":
			if got, err := PeerAddressFromCerts(raw, now); err != nil || got != a2al.Address(mustHex(t, d.Correct)) {
				t.Fatalf("%s: got %s %v", d.Name, got, err)
			}
		case "proof_agent_not_bound_to_extension":
			bob := a2al.Address(mustHex(t, d.BobHex))
			if err := verifyExpected(bob, clock)(raw, nil); err == nil {
				t.Fatalf("%s: accepted", d.Name)
			}
			if got, _ := PeerAddressFromCerts(raw, now); got == bob {
				t.Fatalf("%s: reported bob", d.Name)
			}
		default:
			t.Fatalf("unknown defect vector %q", d.Name)
		}
	}
}

// TestDelegatedIdentityVectors: our certificates for agents owned by
// Ed25519, Ethereum and Paralism keys (delegation.json proofs) verify as the
// owner's address, and only while the proof is valid.
func TestDelegatedIdentityVectors(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "testdata", "vectors", "delegation.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dv map[string]json.RawMessage
	if err := json.Unmarshal(b, &dv); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(vecT0, 0)
	for _, kind := range []string{"ed25519", "ethereum", "paralism"} {
		var v struct {
			OpSeed string `json:"op_seed_hex"`
			Agent  string `json:"agent_address_hex"`
			Proof  string `json:"proof_cbor_hex"`
		}
		if err := json.Unmarshal(dv[kind], &v); err != nil {
			t.Fatal(err)
		}
		op := ed25519.NewKeyFromSeed(mustHex(t, "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"))
		id, err := NewDelegatedIdentity(op, mustHex(t, v.Proof), now)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		agent := a2al.Address(mustHex(t, v.Agent))
		if id.Address != agent {
			t.Fatalf("%s: identity address %s", kind, id.Address)
		}
		if got, err := PeerAddressFromCerts(id.cert.Certificate, now); err != nil || got != agent {
			t.Fatalf("%s: peer address %s %v", kind, got, err)
		}
		if _, err := NewDelegatedIdentity(op, mustHex(t, v.Proof), time.Unix(1767312000+60, 0)); err == nil {
			t.Fatalf("%s: expired proof accepted", kind)
		}
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		if _, err := NewDelegatedIdentity(other, mustHex(t, v.Proof), now); err == nil {
			t.Fatalf("%s: proof for another operational key accepted", kind)
		}
	}
}

// newDelegation makes a fresh Ed25519 owner and a proof for op valid for a day.
func newDelegation(t testing.TB, op ed25519.PrivateKey) (a2al.Address, []byte) {
	t.Helper()
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	p := protocol.DelegationProof{OpPub: op.Public().(ed25519.PublicKey), IssuedAt: uint64(time.Now().Unix()),
		ExpiresAt: uint64(time.Now().Add(24 * time.Hour).Unix())}
	if err := protocol.SignDelegation(&p, owner.Public().(ed25519.PublicKey), func(m []byte) ([]byte, error) {
		return ed25519.Sign(owner, m), nil
	}); err != nil {
		t.Fatal(err)
	}
	b, err := protocol.EncodeDelegation(p)
	if err != nil {
		t.Fatal(err)
	}
	return p.AgentAddr, b
}

// TestDelegatedAgentDial: a host serving a delegated agent is dialled at the
// agent's address (the dialer checks the delegation in the certificate), and
// a delegated dialer is seen by the acceptor as the agent it acts for.
func TestDelegatedAgentDial(t *testing.T) {
	a := loopbackHostCfg(t, Config{})
	b := loopbackHostCfg(t, Config{})
	_, op, _ := ed25519.GenerateKey(rand.Reader)
	agentAddr, proof := newDelegation(t, op)
	agent, err := NewDelegatedIdentity(op, proof, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddAgent(agent); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.DialEndpoint(ctx, b.LocalAddr(), agentAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bc, err := b.Accept(ctx)
	if err != nil || bc.Local != agentAddr {
		t.Fatalf("accepted %v local %v", err, bc)
	}

	// A delegated client: the acceptor reports the agent, not the key.
	_, op2, _ := ed25519.GenerateKey(rand.Reader)
	agent2Addr, proof2 := newDelegation(t, op2)
	p := newRawPeer(t, "127.0.0.1", nil)
	p.id, err = NewDelegatedIdentity(op2, proof2, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	qc := p.dial(t, b)
	defer qc.CloseWithError(0, "")
	if _, err := sendRoute(t, qc, dialerRouteBytes(b.Address(), 0)); err != nil {
		t.Fatal(err)
	}
	bc2, err := b.Accept(ctx)
	if err != nil || bc2.Peer != agent2Addr {
		t.Fatalf("delegated caller seen as %v (%v), want %s", bc2, err, agent2Addr)
	}
}
