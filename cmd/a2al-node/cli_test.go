package main

// Tests that run the built binary: exit codes, messages, signals.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string // removed by TestMain
)

// nodeBinary builds a2al-node once per test run.
func nodeBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "a2al-node-bin"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "a2al-node")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = errors.New(string(out))
		}
	})
	if binErr != nil {
		t.Fatalf("build a2al-node: %v", binErr)
	}
	return binPath
}

// cliEnv is a clean environment (no A2AL_* from the caller) plus extra.
func cliEnv(t *testing.T, extra ...string) []string {
	env := []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
	return append(env, extra...)
}

type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs the binary to completion (bounded by 60 s).
func runCLI(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBinary(t), args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("a2al-node %v: %v", args, err)
	}
	if strings.Contains(errb.String(), "panic:") || strings.Contains(errb.String(), "goroutine ") {
		t.Fatalf("a2al-node %v panicked:\n%s", args, errb.String())
	}
	return cliResult{code, out.String(), errb.String()}
}

// TestCLIBadConfigExits2: every bad flag or variable is refused before
// anything starts, with exit code 2 and one line naming the flag (or
// variable), the value and what is accepted.
func TestCLIBadConfigExits2(t *testing.T) {
	for _, c := range []struct {
		env  []string
		args []string
		want []string // substrings of the one stderr line
	}{
		{nil, []string{"run", "--status-interval", "0"}, []string{"--status-interval", `"0"`, "at least 1s"}},
		{[]string{"A2AL_STATUS_INTERVAL=-5s"}, []string{"run"}, []string{"A2AL_STATUS_INTERVAL", `"-5s"`, "at least"}},
		{nil, []string{"run", "--log-level", "bogus"}, []string{"--log-level", `"bogus"`, "debug, info, warn, error"}},
		{nil, []string{"run", "--log-format", "xml"}, []string{"--log-format", "text, json"}},
		{[]string{"A2AL_TIMEOUT=abc"}, []string{"resolve", "a0aa"}, []string{"A2AL_TIMEOUT", `"abc"`, "duration"}},
		{[]string{"A2AL_ECHO=yes"}, []string{"run"}, []string{"A2AL_ECHO", `"yes"`, "true or false"}},
		{nil, []string{"run", "--hub", "http://hub.example:4122"}, []string{"--hub", "ws:// or wss://"}},
		{nil, []string{"run", "--hub", "hub.example:4122"}, []string{"--hub", "ws:// or wss://"}},
		{nil, []string{"run", "--bootstrap", "1.2.3.4:99999"}, []string{"--bootstrap", "1-65535"}},
		{nil, []string{"run", "--listen", "nonsense"}, []string{"--listen", "host:port"}},
		{nil, []string{"run", "--debug-addr", "localhost"}, []string{"--debug-addr", "host:port"}},
		{nil, []string{"run", "--port-mapping", "igd"}, []string{"--port-mapping", "auto, upnp, natpmp, pcp, off"}},
		{[]string{"A2AL_PORT_MAPPING=on"}, []string{"run"}, []string{"A2AL_PORT_MAPPING", "auto, upnp"}},
		{nil, []string{"run", "--public-addr", "192.0.2.1"}, []string{"--public-addr", "IPv4:port"}},
		{nil, []string{"run", "--public-addr", "[2001:db8::1]:4121"}, []string{"--public-addr", "IPv4:port"}},
		{nil, []string{"run", "--foo"}, []string{"unknown flag --foo"}},
		{nil, []string{"run", "extra"}, []string{"no arguments"}},
		{nil, []string{"id", "--listen", ":1"}, []string{"unknown flag --listen"}},
		{nil, []string{"resolve"}, []string{"exactly one address"}},
		{nil, []string{"resolve", "not-an-address"}, []string{"not-an-address"}},
		{nil, []string{"ping", "-c", "0", "a0aa"}, []string{"-c", "1 to 1000"}},
		{nil, []string{"status", "--timeout", "soon"}, []string{"--timeout", "duration"}},
		{nil, []string{"bogus"}, []string{"unknown command"}},
	} {
		r := runCLI(t, cliEnv(t, c.env...), c.args...)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if r.code != 2 || len(lines) != 1 || r.stdout != "" {
			t.Errorf("%v %v: exit %d, stdout %q, stderr %q; want exit 2 and one line", c.env, c.args, r.code, r.stdout, r.stderr)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(lines[0], w) {
				t.Errorf("%v %v: %q lacks %q", c.env, c.args, lines[0], w)
			}
		}
	}
}

// TestCLIHelpAndVersion: help for every command on stdout with exit 0, in
// the Go tool's shape (description, usage, flags, example).
func TestCLIHelpAndVersion(t *testing.T) {
	env := cliEnv(t)
	for _, c := range commands() {
		for _, args := range [][]string{{c.name, "-h"}, {"help", c.name}} {
			r := runCLI(t, env, args...)
			if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "Usage:\n  a2al-node "+c.name) ||
				!strings.Contains(r.stdout, "Example:") || !strings.HasPrefix(r.stdout, strings.SplitN(c.long, "\n", 2)[0]) {
				t.Errorf("%v: exit %d stderr %q stdout:\n%s", args, r.code, r.stderr, r.stdout)
			}
		}
	}
	if r := runCLI(t, env, "id", "-h"); strings.Contains(r.stdout, "--bootstrap") || strings.Contains(r.stdout, "--hub") {
		t.Errorf("id -h lists network flags:\n%s", r.stdout)
	}
	if r := runCLI(t, env, "help"); r.code != 0 || !strings.Contains(r.stdout, "Commands:") {
		t.Errorf("help: exit %d\n%s", r.code, r.stdout)
	}
	if r := runCLI(t, env); r.code != 2 || !strings.Contains(r.stderr, "Commands:") {
		t.Errorf("no arguments: exit %d\n%s", r.code, r.stderr)
	}
	r := runCLI(t, env, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "a2al-node ") || !strings.Contains(r.stdout, "go1.") {
		t.Errorf("version: exit %d %q", r.code, r.stdout)
	}
}

// TestCLIIDJSON: id --json is one object with the documented fields, and
// the same identity each time.
func TestCLIIDJSON(t *testing.T) {
	env := cliEnv(t)
	dir := t.TempDir()
	var first IDView
	for i := 0; i < 2; i++ {
		r := runCLI(t, env, "id", "--json", "--data-dir", dir)
		var v IDView
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || r.code != 0 {
			t.Fatalf("id --json: exit %d %v\n%s", r.code, err, r.stdout)
		}
		if i == 0 {
			first = v
			if !v.Created || len(v.NodeID) != 64 || v.KeyFile != filepath.Join(dir, "node.key") {
				t.Fatalf("first id: %+v", v)
			}
		} else if v.Address != first.Address || v.NodeID != first.NodeID || v.Created {
			t.Fatalf("second id %+v, first %+v", v, first)
		}
	}
}

// startedNode is an "a2al-node run" process.
type startedNode struct {
	cmd     *exec.Cmd
	addr    string
	stderr  *syncBuffer
	waitErr chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startNode runs the binary's "run" and waits for its address line.
func startNode(t *testing.T, env []string, args ...string) *startedNode {
	t.Helper()
	cmd := exec.Command(nodeBinary(t), append([]string{"run"}, args...)...)
	cmd.Env = env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	n := &startedNode{cmd: cmd, stderr: &syncBuffer{}, waitErr: make(chan error, 1)}
	cmd.Stderr = n.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		first := true
		for sc.Scan() {
			if first {
				lines <- sc.Text()
				first = false
			}
		}
		close(lines)
		n.waitErr <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.waitErr:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	select {
	case l, ok := <-lines:
		f := strings.Fields(l)
		if !ok || len(f) != 3 || f[0] != "a2al" {
			t.Fatalf("node did not start: %q\n%s", l, n.stderr.String())
		}
		n.addr = f[2]
	case <-time.After(30 * time.Second):
		t.Fatalf("node did not print its address\n%s", n.stderr.String())
	}
	return n
}

func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := apiClient.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCLIStatusHealthMetricsJSON: a first node with a (dead) hub; status
// --json, status, resolve --json, ping -c 2 --json through a second node,
// /healthz and runtime metrics. The dead hub shows as down with its reason
// and is logged as a warning; the NAT type is never udp-blocked.
func TestCLIStatusHealthMetricsJSON(t *testing.T) {
	env := cliEnv(t)
	api1, api2 := freeTCPAddr(t), freeTCPAddr(t)
	udp1 := freeUDPPort(t)
	deadHub := "ws://" + freeTCPAddr(t) + "/v2/signal"     // nothing listens
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0") // a STUN server that never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	n1 := startNode(t, env, "--data-dir", t.TempDir(), "--listen", udp1, "--debug-addr", api1, "--hub", deadHub,
		"--stun", silent.LocalAddr().String())
	startNode(t, env, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--debug-addr", api2, "--bootstrap", udp1)

	if code, body := httpGet(t, "http://"+api1+"/healthz"); code != 200 || !strings.Contains(body, `"status":"ok"`) {
		t.Fatalf("first node /healthz: %d %s", code, body)
	}
	if code, body := httpGet(t, "http://"+api1+"/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") ||
		!strings.Contains(body, "process_resident_memory_bytes") || !strings.Contains(body, "a2al_") {
		t.Fatalf("/metrics lacks runtime or node metrics: %d", code)
	}
	// Wait for the hub failure to be seen and the second node to join.
	var st StatusView
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := runCLI(t, env, "status", "--json", "--debug-addr", api1)
		if r.code != 0 {
			t.Fatalf("status --json: exit %d %s", r.code, r.stderr)
		}
		st = StatusView{}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, r.stdout)
		}
		if len(st.Hubs.List) == 1 && st.Hubs.List[0].Error != "" && st.LivePeers > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed the hub down and a live peer: %+v", st)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if st.Address != n1.addr || st.Hubs.Configured != 1 || st.Hubs.Registered != 0 || st.Hubs.List[0].URL != deadHub ||
		st.NAT.Type == "udp-blocked" {
		t.Fatalf("status: %+v", st)
	}
	if r := runCLI(t, env, "status", "--debug-addr", api1); r.code != 0 || !strings.Contains(r.stdout, n1.addr) ||
		!strings.Contains(r.stdout, deadHub+"  down: ") {
		t.Fatalf("status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(n1.stderr.String(), "level=WARN msg=\"signaling hub unreachable") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning for the dead hub:\n%s", n1.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(n1.stderr.String(), "udp-blocked") {
		t.Fatalf("the node reported udp-blocked:\n%s", n1.stderr.String())
	}

	// resolve --json and ping --json through the second node.
	api2Status := runCLI(t, env, "status", "--json", "--debug-addr", api2)
	var st2 StatusView
	_ = json.Unmarshal([]byte(api2Status.stdout), &st2)
	var rec RecordView
	deadline = time.Now().Add(30 * time.Second)
	for {
		r := runCLI(t, env, "resolve", "--json", "--bootstrap", st2.Local, "--timeout", "5s", n1.addr)
		rec = RecordView{}
		_ = json.Unmarshal([]byte(r.stdout), &rec)
		if r.code == 0 && rec.OK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("resolve --json: exit %d %s %s", r.code, r.stdout, r.stderr)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if rec.Address != n1.addr || rec.Seq == 0 || len(rec.Endpoints) == 0 || len(rec.Hubs) != 1 || rec.Hubs[0] != deadHub {
		t.Fatalf("resolve --json: %+v", rec)
	}
	r := runCLI(t, env, "ping", "--json", "-c", "2", "--bootstrap", st2.Local, n1.addr)
	var pr PingReport
	if err := json.Unmarshal([]byte(r.stdout), &pr); err != nil || r.code != 0 || !pr.OK {
		t.Fatalf("ping --json: exit %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	for _, e := range pr.Endpoints {
		if strings.Contains(e.Endpoint, udp1) && (e.Sent != 2 || e.Received != 2 || len(e.RTTMS) != 2) {
			t.Fatalf("ping %s: %+v", udp1, e)
		}
	}
	if r := runCLI(t, env, "status", "--debug-addr", freeTCPAddr(t)); r.code != 1 || !strings.Contains(r.stderr, "is \"a2al-node run\" running") {
		t.Fatalf("status without a node: exit %d %s", r.code, r.stderr)
	}
}

// TestCLIFailedStartPublishesNothing: a node whose control port is taken
// fails before its first packet: exit 1 naming --debug-addr, and its record
// never reaches the network.
func TestCLIFailedStartPublishesNothing(t *testing.T) {
	env := cliEnv(t)
	udp1, api1 := freeUDPPort(t), freeTCPAddr(t)
	startNode(t, env, "--data-dir", t.TempDir(), "--listen", udp1, "--debug-addr", api1)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	var id IDView
	_ = json.Unmarshal([]byte(runCLI(t, env, "id", "--json", "--data-dir", dir).stdout), &id)
	r := runCLI(t, env, "run", "--data-dir", dir, "--listen", "127.0.0.1:0", "--bootstrap", udp1, "--debug-addr", busy.Addr().String())
	if r.code != 1 || !strings.Contains(r.stderr, "--debug-addr "+busy.Addr().String()) || r.stdout != "" {
		t.Fatalf("run with a busy control port: exit %d\nstdout %q\nstderr %s", r.code, r.stdout, r.stderr)
	}
	code, body := httpGet(t, "http://"+api1+"/api/resolve?timeout=3s&addr="+id.Address)
	var rec RecordView
	if err := json.Unmarshal([]byte(body), &rec); err != nil || code != 200 || rec.OK {
		t.Fatalf("the failed node's record is in the network: %d %s", code, body)
	}
	if code, body := httpGet(t, "http://"+api1+"/debug/routing"); code != 200 || strings.Contains(body, strings.ToLower(id.NodeID)) {
		t.Fatalf("the failed node reached the first node's routing table: %s", body)
	}
}

// TestCLIConnectEndsOnSIGTERM: connect blocked on a peer that never answers
// (echo off) with stdin open, and connect blocked resolving an address that
// joins through a bootstrap node that never answers, both end within 2 s of
// SIGTERM with a clear message.
func TestCLIConnectEndsOnSIGTERM(t *testing.T) {
	env := cliEnv(t)
	udp1 := freeUDPPort(t)
	n := startNode(t, env, "--data-dir", t.TempDir(), "--listen", udp1, "--debug-addr", "", "--echo=false")
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0") // a bootstrap node that never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	for _, c := range []struct {
		name, boot, waitFor string
	}{
		{"silent peer", udp1, "connected to"},
		{"silent bootstrap", silent.LocalAddr().String(), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(nodeBinary(t), "connect", "--timeout", "2m", "--bootstrap", c.boot, n.addr)
			cmd.Env = env
			stdin, err := cmd.StdinPipe() // stays open
			if err != nil {
				t.Fatal(err)
			}
			defer stdin.Close()
			errb := &syncBuffer{}
			cmd.Stderr = errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			if c.waitFor != "" {
				deadline := time.Now().Add(30 * time.Second)
				for !strings.Contains(errb.String(), c.waitFor) {
					if time.Now().After(deadline) {
						_ = cmd.Process.Kill()
						t.Fatalf("connect never printed %q: %s", c.waitFor, errb.String())
					}
					time.Sleep(50 * time.Millisecond)
				}
			} else {
				time.Sleep(time.Second) // inside the bootstrap
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(errb.String(), "a2al-node connect: interrupted") {
					t.Fatalf("connect after SIGTERM: %v\n%s", err, errb.String())
				}
			case <-time.After(2 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("connect still running 2 s after SIGTERM:\n%s", errb.String())
			}
		})
	}
}

// TestCLIConnectEndsWhenPeerCloses: the peer (echo) closes its side after
// our input ends; connect exits 0 with the echoed data.
func TestCLIConnectEndsWhenPeerCloses(t *testing.T) {
	env := cliEnv(t)
	udp1 := freeUDPPort(t)
	n := startNode(t, env, "--data-dir", t.TempDir(), "--listen", udp1, "--debug-addr", "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBinary(t), "connect", "--bootstrap", udp1, n.addr)
	cmd.Env = env
	cmd.Stdin = strings.NewReader("hello\n")
	out, err := cmd.Output()
	if err != nil || string(out) != "hello\n" {
		t.Fatalf("connect: %v %q", err, out)
	}
}

// TestCLIRunEndsOnSIGTERMWithJSONLogs: run with --log-format json writes
// one JSON object per line, and SIGTERM ends it cleanly (exit 0) within 2 s.
func TestCLIRunEndsOnSIGTERMWithJSONLogs(t *testing.T) {
	n := startNode(t, cliEnv(t), "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--debug-addr", "127.0.0.1:0",
		"--log-format", "json")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(n.stderr.String(), `"msg":"status"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no JSON status line:\n%s", n.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-n.waitErr:
		if err != nil {
			t.Fatalf("run after SIGTERM: %v\n%s", err, n.stderr.String())
		}
		n.waitErr <- err // for the cleanup
	case <-time.After(2 * time.Second):
		t.Fatalf("run still running 2 s after SIGTERM:\n%s", n.stderr.String())
	}
	for _, l := range strings.Split(strings.TrimSpace(n.stderr.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["level"] == nil || m["msg"] == nil {
			t.Fatalf("not a JSON log line: %q (%v)", l, err)
		}
	}
}
