package protocol

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/crypto"
)

// DelegationMessage returns the text a secp256k1 owner signs (docs/wire.md §10.3, docs/wire.md §10.5).
func DelegationMessage(p DelegationProof) (string, error) {
	var chain, agent string
	switch p.AgentAddr.Version() {
	case a2al.VersionEthereum:
		chain, agent = "Ethereum", p.AgentAddr.String()
	case a2al.VersionParalism:
		chain, agent = "Paralism", p.AgentAddr.String()
	default:
		return "", fmt.Errorf("%w: no text form for version %#x", ErrDelegation, p.AgentAddr.Version())
	}
	return "A2AL Delegation Authorization\n" +
		"Authorize this Ed25519 key to operate on behalf of your " + chain + " address.\n\n" +
		"op_key:" + hex.EncodeToString(p.OpPub) + "\n" +
		"agent:" + agent + "\n" +
		"scope:" + strconv.FormatUint(uint64(p.Scope), 10) + "\n" +
		"issued_at:" + strconv.FormatUint(p.IssuedAt, 10) + "\n" +
		"expires_at:" + strconv.FormatUint(p.ExpiresAt, 10) + "\n", nil
}

// verifySecpDelegation verifies Ethereum (0xA3) and Paralism (0xA2) owners:
// recover the key, bind it to agent_addr, then check the message fields.
func verifySecpDelegation(p DelegationProof) error {
	if len(p.Signature) != 65 || p.Message == "" {
		return fmt.Errorf("%w: secp256k1 proof needs a 65-byte signature and a message", ErrDelegation)
	}
	switch p.AgentAddr.Version() {
	case a2al.VersionEthereum:
		owner, err := crypto.RecoverEthereumAddress([]byte(p.Message), p.Signature)
		if err != nil {
			return fmt.Errorf("%w: recover ethereum key: %w", ErrDelegation, err)
		}
		if !bytes.Equal(owner[:], p.AgentAddr[1:]) {
			return fmt.Errorf("%w: recovered key is not the ethereum owner", ErrDelegation)
		}
	case a2al.VersionParalism:
		owner, _, err := crypto.RecoverBitcoinHash160([]byte(p.Message), p.Signature)
		if err != nil {
			return fmt.Errorf("%w: recover paralism key: %w", ErrDelegation, err)
		}
		if !bytes.Equal(owner[:], p.AgentAddr[1:]) {
			return fmt.Errorf("%w: recovered key is not the paralism owner", ErrDelegation)
		}
	default:
		return fmt.Errorf("%w: unsupported agent address version %#x", ErrDelegation, p.AgentAddr.Version())
	}
	return checkDelegationMessage(p)
}

// checkDelegationMessage parses the signed text (docs/wire.md §10.4) and compares it with
// the proof's fields.
func checkDelegationMessage(p DelegationProof) error {
	fields := map[string]string{}
	for _, line := range strings.Split(p.Message, "\n") {
		line = strings.TrimSpace(line)
		k, v, ok := strings.Cut(line, ":")
		if line == "" || !ok {
			continue
		}
		fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	for _, k := range []string{"op_key", "agent", "scope", "issued_at", "expires_at"} {
		if _, ok := fields[k]; !ok {
			return fmt.Errorf("%w: message lacks %q", ErrDelegation, k)
		}
	}
	opHex := strings.TrimPrefix(strings.TrimPrefix(fields["op_key"], "0x"), "0X")
	op, err := hex.DecodeString(opHex)
	if err != nil || len(op) != 32 {
		return fmt.Errorf("%w: message op_key is not 32 hex bytes", ErrDelegation)
	}
	if !bytes.Equal(op, p.OpPub) {
		return fmt.Errorf("%w: message op_key differs from op_pub", ErrDelegation)
	}
	agent, err := a2al.ParseAddress(fields["agent"])
	if err != nil || agent != p.AgentAddr {
		return fmt.Errorf("%w: message agent does not name agent_addr", ErrDelegation)
	}
	scope, err1 := strconv.ParseUint(fields["scope"], 10, 8)
	issued, err2 := strconv.ParseUint(fields["issued_at"], 10, 64)
	expires, err3 := strconv.ParseUint(fields["expires_at"], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return fmt.Errorf("%w: message has malformed numbers", ErrDelegation)
	}
	if uint8(scope) != p.Scope || issued != p.IssuedAt || expires != p.ExpiresAt {
		return fmt.Errorf("%w: message scope/issued_at/expires_at differ from the proof", ErrDelegation)
	}
	return nil
}
