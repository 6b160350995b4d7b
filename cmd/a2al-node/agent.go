package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/a2alnode/a2al/crypto"
	"github.com/a2alnode/a2al/host"
	"github.com/a2alnode/a2al/protocol"
)

// Agents live in <data-dir>/agents: NAME.key (an Ed25519 key file, like the
// node key) and, for a delegated agent, NAME.proof (the delegation proof as
// hex CBOR). See docs/services.md.
const agentsDir = "agents"

var agentName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// maxProofFile bounds a proof file (hex of at most MaxDelegationSize bytes).
const maxProofFile = 2*protocol.MaxDelegationSize + 2

type namedAgent struct {
	name string
	id   *host.Identity
}

var agentCmd = &command{
	name:  "agent",
	args:  "add|delegate|list [NAME]",
	short: "create, delegate or list the agent identities this node hosts",
	long: `Manage the agent identities "a2al-node run" hosts besides the node's own.
Each agent has a key in <data-dir>/agents/NAME.key; a delegated agent also has
a proof (NAME.proof) that lets its key act for an owner's address (Ed25519,
Ethereum or Paralism owner). "run --serve NAME=..." exposes a service on
agent NAME's address. See docs/services.md.

  agent add NAME [--proof HEX|@FILE]      create NAME's key; with --proof, act for the proof's owner
  agent delegate NAME --owner-key FILE    sign a delegation for NAME with an Ed25519 owner key file
  agent list                              names, addresses and operational keys (to sign proofs for)`,
	example: `  a2al-node agent add web
  a2al-node agent delegate api --owner-key owner.key --valid 720h
  a2al-node run --serve web=tcp:127.0.0.1:8080 --public web`,
	flags: func(fs *flagSet) func(context.Context, stdio, []string) error {
		var o agentOptions
		fs.String(&o.dataDir, "data-dir", defaultDataDir(), "data directory (agents live in <data-dir>/agents)")
		fs.String(&o.proof, "proof", "", "add: delegation proof for the agent's key, hex CBOR or @FILE")
		fs.String(&o.ownerKey, "owner-key", "", "delegate: Ed25519 owner key file that signs the delegation")
		fs.Duration(&o.valid, "valid", 365*24*time.Hour, time.Minute, "delegate: how long the delegation is valid")
		fs.noEnv["proof"], fs.noEnv["owner-key"], fs.noEnv["valid"] = true, true, true
		return func(_ context.Context, std stdio, args []string) error { return o.run(std, args) }
	},
}

type agentOptions struct {
	dataDir, proof, ownerKey string
	valid                    time.Duration
}

func (o *agentOptions) run(std stdio, args []string) error {
	if len(args) == 0 {
		return usagef("agent wants add, delegate or list")
	}
	dir := filepath.Join(o.dataDir, agentsDir)
	switch args[0] {
	case "list":
		if len(args) != 1 {
			return usagef("agent list takes no more arguments")
		}
		agents, err := loadAgents(dir, time.Now())
		if err != nil {
			return err
		}
		for _, a := range agents {
			kind := "plain"
			if a.id.Delegation != nil {
				kind = "delegated"
			}
			fmt.Fprintf(std.out, "%-16s %s  %-9s op key %x\n", a.name, a.id.Address.String(), kind, a.id.Key.Public())
		}
		return nil
	case "add", "delegate":
	default:
		return usagef("agent %q: want add, delegate or list", args[0])
	}
	if len(args) != 2 || !agentName.MatchString(args[1]) {
		return usagef("agent %s wants one NAME (letters, digits, _ or -, at most 32)", args[0])
	}
	if args[0] == "delegate" && o.ownerKey == "" {
		return usagef("agent delegate needs --owner-key")
	}
	var p []byte
	var err error
	if args[0] == "add" && o.proof != "" {
		if p, err = readProof(o.proof); err != nil {
			return usagef("--proof: %v", err)
		}
	}
	name := args[1]
	key, created, err := crypto.LoadOrCreateKeyFile(filepath.Join(dir, name+".key"))
	if err != nil {
		return fmt.Errorf("agent key: %w", err)
	}
	if created {
		fmt.Fprintf(std.err, "created %s\n", filepath.Join(dir, name+".key"))
	}
	if args[0] == "delegate" {
		if p, err = signDelegation(o.ownerKey, key, o.valid); err != nil {
			return err
		}
	}
	if p != nil {
		if _, err := host.NewDelegatedIdentity(key, p, time.Now()); err != nil {
			return fmt.Errorf("proof does not authorise agent %s's key: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".proof"), []byte(hex.EncodeToString(p)+"\n"), 0o600); err != nil {
			return fmt.Errorf("write proof: %w", err)
		}
	}
	id, err := agentIdentity(dir, name, key, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(std.out, "agent %s\naddress %s\nop key  %x\n", name, id.Address.String(), key.Public())
	return nil
}

// signDelegation makes an Ed25519 owner's proof for op, valid from now.
func signDelegation(ownerFile string, op ed25519.PrivateKey, valid time.Duration) ([]byte, error) {
	owner, err := crypto.LoadKeyFile(ownerFile)
	if err != nil {
		return nil, fmt.Errorf("owner key: %w", err)
	}
	now := time.Now()
	p := protocol.DelegationProof{OpPub: op.Public().(ed25519.PublicKey), IssuedAt: uint64(now.Unix()),
		ExpiresAt: uint64(now.Add(valid).Unix())}
	sign := func(m []byte) ([]byte, error) { return ed25519.Sign(owner, m), nil }
	if err := protocol.SignDelegation(&p, owner.Public().(ed25519.PublicKey), sign); err != nil {
		return nil, err
	}
	return protocol.EncodeDelegation(p)
}

func readProof(arg string) ([]byte, error) {
	text := arg
	if strings.HasPrefix(arg, "@") {
		b, err := readLimited(arg[1:], maxProofFile)
		if err != nil {
			return nil, fmt.Errorf("proof file: %w", err)
		}
		text = string(b)
	}
	p, err := hex.DecodeString(strings.TrimSpace(text))
	if err != nil {
		return nil, fmt.Errorf("proof is not hex: %w", err)
	}
	return p, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// agentIdentity is agent name's identity: delegated if NAME.proof exists.
func agentIdentity(dir, name string, key ed25519.PrivateKey, now time.Time) (*host.Identity, error) {
	b, err := readLimited(filepath.Join(dir, name+".proof"), maxProofFile)
	if errors.Is(err, fs.ErrNotExist) {
		return host.NewIdentity(key, now)
	}
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", name, err)
	}
	p, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("agent %s: proof file is not hex: %w", name, err)
	}
	id, err := host.NewDelegatedIdentity(key, p, now)
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", name, err)
	}
	return id, nil
}

// loadAgents reads every agent in dir (none if dir does not exist), sorted
// by name; at most host.MaxAgents.
func loadAgents(dir string, now time.Time) ([]namedAgent, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agents: %w", err)
	}
	var out []namedAgent
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".key")
		if !ok || !agentName.MatchString(name) {
			continue
		}
		if len(out) == host.MaxAgents {
			return nil, fmt.Errorf("agents: more than %d in %s", host.MaxAgents, dir)
		}
		key, err := crypto.LoadKeyFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("agent %s: %w", name, err)
		}
		id, err := agentIdentity(dir, name, key, now)
		if err != nil {
			return nil, err
		}
		out = append(out, namedAgent{name, id})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}
