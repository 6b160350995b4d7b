package protocol

import (
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/a2alnode/a2al"
)

// DelegationScopeNetworkOps is the only defined scope (DHT records and QUIC).
const DelegationScopeNetworkOps = 1

// DelegationExpirySkew is the grace after expires_at (docs/wire.md §10.6 [HEAD]).
const DelegationExpirySkew = 60 // seconds

// DelegationProof authorises OpPub to act for AgentAddr (docs/wire.md §10).
type DelegationProof struct {
	MasterPub []byte // Ed25519 owners only
	OpPub     []byte
	AgentAddr a2al.Address
	IssuedAt  uint64
	ExpiresAt uint64 // 0 = never
	Scope     uint8
	Signature []byte // 64 (Ed25519) or 65 (secp256k1) bytes
	Message   string // secp256k1 owners only: the signed text
}

type wireDelegation struct {
	MasterPub []byte `cbor:"1,keyasint,omitempty"`
	OpPub     []byte `cbor:"2,keyasint"`
	AgentAddr []byte `cbor:"3,keyasint"`
	IssuedAt  uint64 `cbor:"4,keyasint"`
	ExpiresAt uint64 `cbor:"5,keyasint"`
	Scope     uint8  `cbor:"6,keyasint"`
	Signature []byte `cbor:"7,keyasint"`
	Message   string `cbor:"8,keyasint,omitempty"`
}

type wireDelegationSignFields struct {
	MasterPub []byte `cbor:"1,keyasint"`
	OpPub     []byte `cbor:"2,keyasint"`
	AgentAddr []byte `cbor:"3,keyasint"`
	IssuedAt  uint64 `cbor:"4,keyasint"`
	ExpiresAt uint64 `cbor:"5,keyasint"`
	Scope     uint8  `cbor:"6,keyasint"`
}

// MaxDelegationSize bounds a proof (the secp256k1 text form is ~400 bytes).
const MaxDelegationSize = 4096

// ParseDelegation decodes a proof and applies the parse-time checks of docs/wire.md §10.1.
func ParseDelegation(b []byte) (*DelegationProof, error) {
	if len(b) > MaxDelegationSize {
		return nil, fmt.Errorf("%w: %w: %d bytes, limit %d", ErrDelegation, ErrTooLarge, len(b), MaxDelegationSize)
	}
	var w wireDelegation
	if err := unmarshal(b, &w, "delegation"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDelegation, err)
	}
	if len(w.AgentAddr) != a2al.AddressLen {
		return nil, fmt.Errorf("%w: agent_addr is %d bytes", ErrDelegation, len(w.AgentAddr))
	}
	if len(w.OpPub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: op_pub is %d bytes", ErrDelegation, len(w.OpPub))
	}
	p := &DelegationProof{
		MasterPub: w.MasterPub, OpPub: w.OpPub, IssuedAt: w.IssuedAt, ExpiresAt: w.ExpiresAt,
		Scope: w.Scope, Signature: w.Signature, Message: w.Message,
	}
	copy(p.AgentAddr[:], w.AgentAddr)
	switch p.AgentAddr.Version() {
	case a2al.VersionEd25519:
		if len(p.MasterPub) != ed25519.PublicKeySize || len(p.Signature) != ed25519.SignatureSize || p.Message != "" {
			return nil, fmt.Errorf("%w: ed25519 owner needs 32-byte master_pub, 64-byte signature, no message", ErrDelegation)
		}
	case a2al.VersionEthereum, a2al.VersionParalism:
		if len(p.MasterPub) != 0 || len(p.Signature) != 65 || p.Message == "" {
			return nil, fmt.Errorf("%w: secp256k1 owner needs no master_pub, 65-byte signature, a message", ErrDelegation)
		}
	default:
		return nil, fmt.Errorf("%w: unsupported agent address version %#x", ErrDelegation, p.AgentAddr.Version())
	}
	return p, nil
}

// EncodeDelegation encodes p canonically.
func EncodeDelegation(p DelegationProof) ([]byte, error) {
	return marshal(wireDelegation{
		MasterPub: p.MasterPub, OpPub: p.OpPub, AgentAddr: p.AgentAddr[:], IssuedAt: p.IssuedAt,
		ExpiresAt: p.ExpiresAt, Scope: p.Scope, Signature: p.Signature, Message: p.Message,
	})
}

// DelegationSigningInput is "a2al-del\0" ‖ canonical {1..6} (docs/wire.md §10.2, Ed25519 owners).
func DelegationSigningInput(p DelegationProof) ([]byte, error) {
	f, err := marshal(wireDelegationSignFields{
		MasterPub: p.MasterPub, OpPub: p.OpPub, AgentAddr: p.AgentAddr[:],
		IssuedAt: p.IssuedAt, ExpiresAt: p.ExpiresAt, Scope: p.Scope,
	})
	if err != nil {
		return nil, err
	}
	return append(append([]byte{}, delSignPrefix...), f...), nil
}

// SignDelegation fills an Ed25519 owner's proof: MasterPub, AgentAddr
// (derived from masterPub), Scope (1 if 0) and Signature.
func SignDelegation(p *DelegationProof, masterPub []byte, sign SignFunc) error {
	if len(masterPub) != ed25519.PublicKeySize || len(p.OpPub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: master_pub and op_pub must be 32 bytes", ErrDelegation)
	}
	p.MasterPub = append([]byte{}, masterPub...)
	p.AgentAddr = a2al.AddressFromEd25519(masterPub)
	p.Message = ""
	if p.Scope == 0 {
		p.Scope = DelegationScopeNetworkOps
	}
	in, err := DelegationSigningInput(*p)
	if err != nil {
		return err
	}
	sig, err := sign(in)
	if err != nil {
		return fmt.Errorf("a2al/protocol: sign delegation: %w", err)
	}
	if len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is %d bytes", ErrDelegation, len(sig))
	}
	p.Signature = sig
	return nil
}

// Verify checks the owner's signature, the owner/address binding, scope and
// expiry (with DelegationExpirySkew grace) at now (docs/wire.md §10.2–§10.6).
func (p DelegationProof) Verify(now time.Time) error {
	if p.Scope != DelegationScopeNetworkOps {
		return fmt.Errorf("%w: scope %d, want 1", ErrDelegation, p.Scope)
	}
	switch p.AgentAddr.Version() {
	case a2al.VersionEd25519:
		if len(p.MasterPub) != ed25519.PublicKeySize || len(p.Signature) != ed25519.SignatureSize {
			return fmt.Errorf("%w: bad ed25519 owner field lengths", ErrDelegation)
		}
		in, err := DelegationSigningInput(p)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrDelegation, err)
		}
		if !ed25519.Verify(p.MasterPub, in, p.Signature) {
			return fmt.Errorf("%w: owner signature does not verify", ErrDelegation)
		}
		if a2al.AddressFromEd25519(p.MasterPub) != p.AgentAddr {
			return fmt.Errorf("%w: master_pub does not derive agent_addr", ErrDelegation)
		}
	case a2al.VersionEthereum, a2al.VersionParalism:
		if err := verifySecpDelegation(p); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: unsupported agent address version %#x", ErrDelegation, p.AgentAddr.Version())
	}
	if p.ExpiresAt != 0 {
		t := unixNow(now)
		if t >= p.ExpiresAt && t-p.ExpiresAt >= DelegationExpirySkew {
			return fmt.Errorf("%w: expires_at %d, now %d", ErrDelegationExpired, p.ExpiresAt, t)
		}
	}
	return nil
}

// Authorizes checks that p lets opPub act for addr at now (docs/wire.md §8.4 step 3, docs/wire.md §10.6).
func (p DelegationProof) Authorizes(addr a2al.Address, opPub []byte, now time.Time) error {
	if p.AgentAddr != addr {
		return fmt.Errorf("%w: proof is for %x, not %x", ErrDelegation, p.AgentAddr[:], addr[:])
	}
	if !ed25519.PublicKey(p.OpPub).Equal(ed25519.PublicKey(opPub)) {
		return fmt.Errorf("%w: proof authorises a different operational key", ErrDelegation)
	}
	return p.Verify(now)
}

// VerifyDelegation parses b and checks that it authorises opPub for addr at now.
func VerifyDelegation(b []byte, addr a2al.Address, opPub []byte, now time.Time) (*DelegationProof, error) {
	p, err := ParseDelegation(b)
	if err != nil {
		return nil, err
	}
	if err := p.Authorizes(addr, opPub, now); err != nil {
		return nil, err
	}
	return p, nil
}

// DelegationExtensionOID is the TLS certificate extension carrying a
// delegation (docs/wire.md §11.2).
const DelegationExtensionOID = "1.3.6.1.4.1.999999.1"

type wireDelegationExt struct {
	AgentAddr []byte `cbor:"1,keyasint"`
	Proof     []byte `cbor:"2,keyasint"`
}

// EncodeDelegationExtension returns the CBOR content of the TLS extension:
// {1: agent_addr, 2: proof}. (The caller wraps it in a DER OCTET STRING.)
func EncodeDelegationExtension(agent a2al.Address, proof []byte) ([]byte, error) {
	return marshal(wireDelegationExt{AgentAddr: agent[:], Proof: proof})
}

// DecodeDelegationExtension parses the extension content. Callers must then
// require the proof's agent_addr to equal the returned address and verify
// the proof against the leaf key — the checks the reference omits (docs/wire.md §11.3).
func DecodeDelegationExtension(b []byte) (a2al.Address, []byte, error) {
	var w wireDelegationExt
	if len(b) > MaxDelegationSize {
		return a2al.Address{}, nil, fmt.Errorf("%w: %w: extension %d bytes", ErrDelegation, ErrTooLarge, len(b))
	}
	if err := unmarshal(b, &w, "delegation extension"); err != nil {
		return a2al.Address{}, nil, fmt.Errorf("%w: %w", ErrDelegation, err)
	}
	if len(w.AgentAddr) != a2al.AddressLen {
		return a2al.Address{}, nil, fmt.Errorf("%w: extension agent_addr is %d bytes", ErrDelegation, len(w.AgentAddr))
	}
	return a2al.Address(w.AgentAddr), w.Proof, nil
}
