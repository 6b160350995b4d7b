package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// noEnv is an empty environment: tests do not depend on A2AL_* variables.
func noEnv(string) (string, bool) { return "", false }

// testExec runs command c in-process with an empty environment.
func testExec(ctx context.Context, c *command, args []string, in io.Reader, out, errw io.Writer) error {
	return execute(ctx, c, args, stdio{in: in, out: out, err: errw, env: noEnv})
}

// TestRunResolveConnect: a first node with no bootstrap, a second joining it,
// then resolve/ping/connect against the first through the second.
func TestRunResolveConnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	runNode := func(dir, listen string, extra ...string) (string, chan error) {
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		args := append([]string{"--data-dir", dir, "--listen", listen, "--status-interval", "1h", "--debug-addr", ""}, extra...)
		go func() { done <- testExec(ctx, runCmd, args, nil, pw, io.Discard); pw.Close() }()
		line, err := bufio.NewReader(pr).ReadString('\n')
		if err != nil {
			t.Fatalf("no address line: %v", err)
		}
		go io.Copy(io.Discard, pr)
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "a2al" {
			t.Fatalf("unexpected first line %q", line)
		}
		return f[2], done
	}
	addr1, done1 := runNode(t.TempDir(), "127.0.0.1:4191")
	_, done2 := runNode(t.TempDir(), "127.0.0.1:4192", "--bootstrap", "127.0.0.1:4191")

	var out bytes.Buffer
	var err error
	for i := 0; i < 20; i++ { // the first node publishes right after start; retry briefly
		out.Reset()
		if err = testExec(ctx, resolveCmd, []string{addr1, "--bootstrap", "127.0.0.1:4192", "--timeout", "5s"}, nil, &out, io.Discard); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	if !strings.Contains(out.String(), addr1) || !strings.Contains(out.String(), "quic://127.0.0.1:4191") {
		t.Fatalf("resolve output:\n%s", out.String())
	}
	out.Reset()
	if err := testExec(ctx, pingCmd, []string{addr1, "--bootstrap", "127.0.0.1:4192"}, nil, &out, io.Discard); err != nil {
		t.Fatalf("ping: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := testExec(ctx, connectCmd, []string{addr1, "--bootstrap", "127.0.0.1:4192"}, strings.NewReader("hello a2al\n"), &out, io.Discard); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if out.String() != "hello a2al\n" {
		t.Fatalf("echo returned %q", out.String())
	}
	cancel()
	for _, d := range []chan error{done1, done2} {
		select {
		case err := <-d:
			if err != nil {
				t.Fatalf("run returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("run did not shut down")
		}
	}
}

func TestIDCreatesKey(t *testing.T) {
	dir := t.TempDir()
	var out1, out2 bytes.Buffer
	if err := testExec(context.Background(), idCmd, []string{"--data-dir", dir}, nil, &out1, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := testExec(context.Background(), idCmd, []string{"--data-dir", dir}, nil, &out2, io.Discard); err != nil {
		t.Fatal(err)
	}
	if out1.String() != out2.String() || !strings.HasPrefix(out1.String(), "address  A") && !strings.HasPrefix(out1.String(), "address  a") {
		t.Fatalf("id not stable:\n%s\n%s", out1.String(), out2.String())
	}
	st, err := os.Stat(dir + "/node.key")
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v err %v", st.Mode(), err)
	}
}

func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("demo takes ~10 s")
	}
	var out bytes.Buffer
	if err := testExec(context.Background(), demoCmd, []string{"--latency", "0"}, nil, &out, io.Discard); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "punched") || !strings.Contains(out.String(), "done:") {
		t.Fatalf("demo output:\n%s", out.String())
	}
	t.Log("\n" + out.String())
}

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := realMain(nil, stdio{out: &out, err: &errb, env: noEnv}); code != 2 {
		t.Fatalf("no args: exit %d", code)
	}
	if code := realMain([]string{"bogus"}, stdio{out: &out, err: &errb, env: noEnv}); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
}

func TestDataDirLockRefusesSecondNode(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("first lock: %v", err)
	}
	if _, err := lockDataDir(dir); err == nil || !strings.Contains(err.Error(), "in use by another running a2al-node") {
		t.Fatalf("second lock: got %v, want in-use error", err)
	}
	unlock()
	unlock2, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}

// TestAddressArgUppercase: people may type an address all in capitals; the
// CLI reads it as the unchecksummed lowercase form (the wire parser keeps
// refusing it).
func TestAddressArgUppercase(t *testing.T) {
	for _, s := range []string{"a0aabbccddeeff00112233445566778899aabbccdd", "0x52908400098527886E0F7030069857D2E4169EE7"} {
		want, err := parseAddressArg(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseAddressArg(strings.ToUpper(s))
		if err != nil || got != want {
			t.Fatalf("%s: %v %v, want %v", strings.ToUpper(s), got, err, want)
		}
	}
	if _, err := parseAddressArg("a0aaBBccddeeff00112233445566778899aabbccdd"); err == nil {
		t.Fatal("mixed case with a wrong checksum accepted")
	}
}

func TestHostPortDefault(t *testing.T) {
	norm := hostPortDefault(4121)
	for in, want := range map[string]string{"127.0.0.1": "127.0.0.1:4121", "127.0.0.1:9": "127.0.0.1:9", "::1": "[::1]:4121",
		"[::1]": "[::1]:4121", "[::1]:7": "[::1]:7", "node.example": "node.example:4121", "node.example:5": "node.example:5"} {
		if got, err := norm(in); err != nil || got != want {
			t.Errorf("%q -> %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{":4121", "host:0", "host:x", "host:70000", "a/b"} {
		if got, err := norm(bad); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
	for _, u := range []string{"ws://h:4122", "WSS://h/v2/signal"} {
		if _, err := hubURL(u); err != nil {
			t.Errorf("hub %q refused: %v", u, err)
		}
	}
	for _, u := range []string{"http://h", "h:4122", "ws://", "ws://u@h"} {
		if _, err := hubURL(u); err == nil {
			t.Errorf("hub %q accepted", u)
		}
	}
}
