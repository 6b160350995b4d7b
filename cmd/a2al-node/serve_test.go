package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
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
		if code := realMain(append(args, "--data-dir", dir), stdio{out: &out, err: &errb, env: noEnv}); code != 0 {
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
	if code := realMain([]string{"agent", "add", "bad", "--proof", "00", "--data-dir", dir}, stdio{out: &out, err: &errb, env: noEnv}); code == 0 {
		t.Fatal("garbage proof accepted")
	}
}

func TestServePlan(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	caller := a2al.AddressFromEd25519(k.Public().(ed25519.PublicKey))
	id := newTestAgent(t)
	agents := []namedAgent{{"web", id}}
	sf := serveFlags{serve: []string{"web=tcp:127.0.0.1:8080", "ssh=tcp:127.0.0.1:22"},
		allow: []string{"ssh=" + caller.String()}, public: []string{"web"}}
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
		"not tcp":        {serve: []string{"x=udp:1.2.3.4:5"}},
		"no name":        {serve: []string{"tcp:127.0.0.1:1"}},
		"twice":          {serve: []string{"x=tcp:a:1", "x=tcp:a:2"}},
		"two on node":    {serve: []string{"x=tcp:a:1", "y=tcp:a:2"}},
		"allow unknown":  {serve: []string{"x=tcp:a:1"}, allow: []string{"y=" + caller.String()}},
		"allow garbage":  {serve: []string{"x=tcp:a:1"}, allow: []string{"x=nonsense"}},
		"public unknown": {serve: []string{"x=tcp:a:1"}, public: []string{"y"}},
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

// TestRunServeTunnel: "run --serve" on one node, "tunnel" from a client that
// joins through it: TCP bytes reach the service and come back, with the
// half-close carried through; a tunnel from a caller not allowed is refused
// with the reason.
func TestRunServeTunnel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	svc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	go func() {
		for {
			c, err := svc.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				c.Write(bytes.ToUpper(b))
			}()
		}
	}()
	clientKey := filepath.Join(t.TempDir(), "client.key")
	ck, err := crypto.GenerateKeyFile(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	client := a2al.AddressFromEd25519(ck.Public().(ed25519.PublicKey))

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- testExec(ctx, runCmd, []string{"--data-dir", t.TempDir(), "--listen", "127.0.0.1:4193", "--status-interval", "1h",
			"--debug-addr", "", "--serve", "up=tcp:" + svc.Addr().String(), "--allow", "up=" + client.String()}, nil, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no address line: %v", err)
	}
	go io.Copy(io.Discard, pr)
	server := strings.Fields(line)[2]

	tunnel := func(listen string, extra ...string) (chan error, context.CancelFunc) {
		tctx, tcancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		args := append([]string{server, "--bootstrap", "127.0.0.1:4193", "--at", "127.0.0.1:4193", "--listen", listen, "--data-dir", t.TempDir()}, extra...)
		go func() { errc <- testExec(tctx, tunnelCmd, args, nil, io.Discard, io.Discard) }()
		return errc, tcancel
	}
	errc, stop := tunnel("127.0.0.1:4194", "--key", clientKey)
	var got string
	for i := 0; i < 50; i++ { // until the tunnel listens and has joined
		if got, err = tcpRoundTrip("127.0.0.1:4194", "through the tunnel"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got != "THROUGH THE TUNNEL" {
		t.Fatalf("tunnel answered %q, err %v", got, err)
	}
	stop()
	if err := <-errc; err != nil {
		t.Fatalf("tunnel stop: %v", err)
	}
	// A throw-away identity is not on the allow-list.
	errc2, stop2 := tunnel("127.0.0.1:4195")
	defer stop2()
	select {
	case err := <-errc2:
		if err == nil || !strings.Contains(err.Error(), "not on the allow-list") {
			t.Fatalf("stranger's tunnel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("stranger's tunnel was not refused")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func tcpRoundTrip(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(msg))
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	return string(b), err
}
