package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/a2alnode/a2al/signal"
	"github.com/pion/stun"
)

func TestRunServesHubSTUNHealthMetrics(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-stun-addr", "127.0.0.1:0", "-stun-alt-port", "0", "-turn-addr", "127.0.0.1:0", "-log-level", "warn"}, io.Discard, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	get := func(path string) string {
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	if h := get("/healthz"); !strings.Contains(h, `"status":"ok"`) {
		t.Fatalf("healthz: %s", h)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cl, err := signal.NewClient(signal.ClientConfig{HubURL: "ws://" + addr, Key: key, OnCall: func(*signal.Session) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !cl.Registered() {
		if time.Now().After(deadline) {
			t.Fatal("client did not register")
		}
		time.Sleep(10 * time.Millisecond)
	}
	m := get("/metrics")
	for _, want := range []string{"a2al_signal_registered_nodes 1", "a2al_stun_requests_total", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(m, want) {
			t.Fatalf("metrics lack %q", want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no graceful shutdown")
	}
}

func TestSTUNAnswersBinding(t *testing.T) {
	o := &options{stunAddr: "127.0.0.1:0", stunSlack: 12}
	s, err := startSTUN(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := net.DialUDP("udp4", nil, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	c.Write(req.Raw)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	resp := &stun.Message{Raw: buf[:n]}
	if err := resp.Decode(); err != nil {
		t.Fatal(err)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(resp); err != nil || xor.Port != c.LocalAddr().(*net.UDPAddr).Port {
		t.Fatalf("mapped %v %v, want our port", xor, err)
	}
}

func TestFlagsFromEnv(t *testing.T) {
	t.Setenv("A2AL_LISTEN", "127.0.0.1:9999")
	t.Setenv("A2AL_MAX_CONNS_PER_IP", "7")
	t.Setenv("A2AL_PUBLIC_URL", "wss://a/v2/signal, wss://b/v2/signal")
	o, err := parseFlags([]string{"-max-conns-per-ip", "9"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.listen != "127.0.0.1:9999" || o.hub.MaxConnsPerIP != 9 || len(o.hub.PublicURLs) != 2 {
		t.Fatalf("got listen %q perIP %d urls %v", o.listen, o.hub.MaxConnsPerIP, o.hub.PublicURLs)
	}
	t.Setenv("A2AL_MSG_RATE", "fast")
	if _, err := parseFlags(nil, io.Discard); err == nil {
		t.Fatal("bad env value accepted")
	}
}

// TestBinaryExitCodes runs the built hub: help exits 0 on stdout, bad
// configuration exits 2 with one line before anything listens.
func TestBinaryExitCodes(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "signal-hub")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	run := func(env []string, args ...string) (int, string, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String(), errb.String()
	}
	if code, out, errs := run(nil, "-h"); code != 0 || errs != "" || !strings.Contains(out, "Usage:") || !strings.Contains(out, "Example:") || !strings.Contains(out, "-public-url") {
		t.Errorf("-h: exit %d stderr %q stdout:\n%s", code, errs, out)
	}
	if code, out, _ := run(nil, "-version"); code != 0 || !strings.HasPrefix(out, "signal-hub ") {
		t.Errorf("-version: exit %d %q", code, out)
	}
	for _, c := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{"-foo"}, "-foo"},
		{nil, []string{"-tls-cert", "/nonexistent.pem", "-tls-key", "/nonexistent.key", "-listen", "127.0.0.1:0", "-stun-addr", "off"}, "/nonexistent.pem"},
		{nil, []string{"-tls-cert", "/nonexistent.pem"}, "go together"},
		{[]string{"A2AL_MSG_RATE=fast"}, nil, "A2AL_MSG_RATE"},
		{nil, []string{"-max-conns", "0"}, "-max-conns"},
		{nil, []string{"-idle-timeout", "-1s"}, "-idle-timeout"},
		{nil, []string{"-public-url", "http://hub.example/v2/signal"}, "-public-url"},
		{nil, []string{"-log-format", "xml"}, "-log-format"},
		{nil, []string{"-stun-advertise-ip", "nope"}, "-stun-advertise-ip"},
		{nil, []string{"extra"}, "unexpected arguments"},
	} {
		code, out, errs := run(c.env, c.args...)
		lines := strings.Split(strings.TrimSpace(errs), "\n")
		if code != 2 || out != "" || len(lines) != 1 || !strings.Contains(lines[0], c.want) || strings.Contains(errs, "listening") {
			t.Errorf("%v %v: exit %d stdout %q stderr %q; want exit 2 and one line naming %q", c.env, c.args, code, out, errs, c.want)
		}
	}

	// JSON logs, and SIGTERM ends the hub cleanly within 2 s.
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-stun-addr", "off", "-turn-addr", "off", "-log-format", "json")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var first map[string]any
	select {
	case l := <-lines:
		if err := json.Unmarshal([]byte(l), &first); err != nil || first["msg"] != "signal-hub listening" {
			t.Fatalf("first log line %q: %v", l, err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("hub printed nothing")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() {
		for range lines {
		}
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("hub after SIGTERM: %v", err)
		}
	case <-time.After(2 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("hub still running 2 s after SIGTERM")
	}
}
