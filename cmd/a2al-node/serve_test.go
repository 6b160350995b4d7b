package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/crypto"
	"github.com/a2alnode/a2al/host"
)

// TestAgentCommands: agent add makes a plain agent, agent delegate turns an
// agent into a delegated one acting for the owner's address, and run loads
// both.
func TestAgentCommands(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	run := func(args ...string) string {
		t.Helper()
		out.Reset()
		errb.Reset()
		if code := realMain(append(args, "--data-dir", dir), nil, &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		return out.String()
	}
	run("agent", "add", "web")
	owner := filepath.Join(t.TempDir(), "owner.key")
	_, ok, _ := ed25519.GenerateKey(rand.Reader)
	if err := crypto.WriteKeyFile(owner, ok); err != nil {
		t.Fatal(err)
	}
	got := run("agent", "delegate", "api", "--owner-key", owner)
	ownerAddr := a2al.AddressFromEd25519(ok.Public().(ed25519.PublicKey))
	if !strings.Contains(got, ownerAddr.String()) {
		t.Fatalf("delegated agent output %q lacks the owner address %s", got, ownerAddr)
	}
	agents, err := loadAgents(filepath.Join(dir, agentsDir), time.Now())
	if err != nil || len(agents) != 2 {
		t.Fatalf("agents %v err %v", agents, err)
	}
	if agents[0].name != "api" || agents[0].id.Address != ownerAddr || agents[0].id.Delegation == nil {
		t.Fatalf("api agent %+v", agents[0])
	}
	if agents[1].name != "web" || agents[1].id.Delegation != nil {
		t.Fatalf("web agent %+v", agents[1])
	}
	if code := realMain([]string{"agent", "add", "bad", "--proof", "00", "--data-dir", dir}, nil, &out, &errb); code == 0 {
		t.Fatal("garbage proof accepted")
	}
}

func TestServePlan(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	caller := a2al.AddressFromEd25519(k.Public().(ed25519.PublicKey))
	id := newTestAgent(t)
	agents := []namedAgent{{"web", id}}
	sf := serveFlags{serve: listFlag{"web=tcp:127.0.0.1:8080", "ssh=tcp:127.0.0.1:22"},
		allow: listFlag{"ssh=" + caller.String()}, public: listFlag{"web"}}
	svcs, err := sf.plan(agents)
	if err != nil {
		t.Fatal(err)
	}
	if svcs[0].Address != id.Address || !svcs[0].Public || svcs[0].Target != "127.0.0.1:8080" {
		t.Fatalf("web %+v", svcs[0])
	}
	if !svcs[1].Address.IsZero() || len(svcs[1].Allow) != 1 || svcs[1].Allow[0] != caller || svcs[1].Public {
		t.Fatalf("ssh %+v", svcs[1])
	}
	for name, bad := range map[string]serveFlags{
		"not tcp":        {serve: listFlag{"x=udp:1.2.3.4:5"}},
		"no name":        {serve: listFlag{"tcp:127.0.0.1:1"}},
		"twice":          {serve: listFlag{"x=tcp:a:1", "x=tcp:a:2"}},
		"two on node":    {serve: listFlag{"x=tcp:a:1", "y=tcp:a:2"}},
		"allow unknown":  {serve: listFlag{"x=tcp:a:1"}, allow: listFlag{"y=" + caller.String()}},
		"allow garbage":  {serve: listFlag{"x=tcp:a:1"}, allow: listFlag{"x=nonsense"}},
		"public unknown": {serve: listFlag{"x=tcp:a:1"}, public: listFlag{"y"}},
	} {
		if _, err := bad.plan(nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func newTestAgent(t *testing.T) *host.Identity {
	t.Helper()
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	id, err := host.NewIdentity(k, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id
}
