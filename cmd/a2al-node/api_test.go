package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/a2alnode/a2al/host"
)

// freeTCPAddr returns a loopback address with a port free right now.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// apiNode runs "a2al-node run" with the control API on a loopback port.
type apiNode struct {
	addr string // a2al address text
	base string // http://127.0.0.1:port
	done chan error
}

func startAPINode(t *testing.T, ctx context.Context, listen string, extra ...string) *apiNode {
	t.Helper()
	debug := freeTCPAddr(t)
	pr, pw := io.Pipe()
	n := &apiNode{base: "http://" + debug, done: make(chan error, 1)}
	args := append([]string{"--data-dir", t.TempDir(), "--listen", listen, "--status-interval", "1h", "--debug-addr", debug}, extra...)
	ctx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() { n.done <- testExec(ctx, runCmd, args, nil, pw, io.Discard); pw.Close(); close(stopped) }()
	t.Cleanup(func() { // also on a failed test: stop before TempDir removal
		cancel()
		select {
		case <-stopped:
		case <-time.After(15 * time.Second):
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no address line: %v", err)
	}
	go io.Copy(io.Discard, pr)
	f := strings.Fields(line)
	if len(f) != 3 {
		t.Fatalf("unexpected first line %q", line)
	}
	n.addr = f[2]
	return n
}

var apiClient = &http.Client{Timeout: 40 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// call does one request and decodes the JSON body into v; it returns the
// HTTP status.
func (n *apiNode) call(t *testing.T, method, path string, hdr map[string]string, v any) int {
	t.Helper()
	var resp *http.Response
	deadline := time.Now().Add(5 * time.Second)
	for {
		req, err := http.NewRequest(method, n.base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, val := range hdr {
			req.Header.Set(k, val)
		}
		resp, err = apiClient.Do(req)
		if err == nil {
			break
		}
		if time.Now().After(deadline) { // the server may still be starting
			t.Fatalf("%s %s: %v", method, path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: content type %q, body %s", method, path, ct, body)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, body, err)
		}
	}
	return resp.StatusCode
}

// TestAPI drives two real nodes through the control API: status, a dial
// kept open and closed again, a FIND_NODE, the punch log, and every class
// of bad request. Both nodes must shut down without leaking goroutines.
func TestAPI(t *testing.T) {
	base := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n1 := startAPINode(t, ctx, "127.0.0.1:4193")
	n2 := startAPINode(t, ctx, "127.0.0.1:4194", "--bootstrap", "127.0.0.1:4193")

	var st StatusView
	if code := n2.call(t, "GET", "/api/status", nil, &st); code != 200 {
		t.Fatalf("status: HTTP %d", code)
	}
	if st.Address != n2.addr || st.Local != "127.0.0.1:4194" || st.Pool.Peers == nil {
		t.Fatalf("status = %+v, want address %s on 127.0.0.1:4194", st, n2.addr)
	}

	// Dial n1 from n2 and keep the connection (n1 publishes right after
	// start; retry a missing record briefly).
	var d DialResult
	for i := 0; ; i++ {
		d = DialResult{}
		if code := n2.call(t, "POST", "/api/dial?keep=1&timeout=10s&addr="+n1.addr, nil, &d); code != 200 {
			t.Fatalf("dial: HTTP %d %+v", code, d)
		}
		if d.OK || d.Reason != "no-endpoint-record" || i == 40 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !d.OK || d.Path != "direct" || d.Remote != "127.0.0.1:4193" || !d.Kept || d.Peer != n1.addr {
		t.Fatalf("dial = %+v, want a kept direct connection to %s at 127.0.0.1:4193", d, n1.addr)
	}
	var kept []KeptView
	n2.call(t, "GET", "/api/conns", nil, &kept)
	if len(kept) != 1 || !kept[0].Alive || kept[0].Peer != n1.addr || kept[0].Path != "direct" {
		t.Fatalf("conns = %+v, want one live direct connection to %s", kept, n1.addr)
	}
	n2.call(t, "GET", "/api/status", nil, &st)
	if st.Kept != 1 || st.RoutingPeers < 1 || st.DHT.TxPackets == 0 || st.DHT.RPCsOK == 0 {
		t.Fatalf("status after dial = %+v, want 1 kept conn and DHT traffic", st)
	}
	var ok map[string]any
	if code := n2.call(t, "POST", "/api/close?addr="+n1.addr, nil, &ok); code != 200 || ok["ok"] != true {
		t.Fatalf("close: HTTP %d %v", code, ok)
	}
	n2.call(t, "GET", "/api/conns", nil, &kept)
	if len(kept) != 0 {
		t.Fatalf("conns after close = %+v", kept)
	}

	// FIND_NODE straight to n1: no pooled connection on loopback, so UDP.
	var fn FindNodeResult
	n2.call(t, "POST", "/api/findnode?addr="+n1.addr, nil, &fn)
	if !fn.OK || fn.Transport != "udp" || fn.Remote != "127.0.0.1:4193" {
		t.Fatalf("findnode = %+v, want ok over udp to 127.0.0.1:4193", fn)
	}
	var rec RecordView
	n2.call(t, "GET", "/api/resolve?addr="+n1.addr, nil, &rec)
	if !rec.OK || rec.Address != n1.addr || rec.Seq == 0 || len(rec.Endpoints) == 0 || rec.Endpoints[0] != "quic://127.0.0.1:4193" {
		t.Fatalf("resolve = %+v, want n1's record with endpoint quic://127.0.0.1:4193", rec)
	}
	var ps []json.RawMessage
	if code := n2.call(t, "GET", "/api/punches?peer="+n1.addr, nil, &ps); code != 200 || ps == nil || len(ps) != 0 {
		t.Fatalf("punches: HTTP %d %s (direct dials punch nothing)", code, ps)
	}

	// Failures that are outcomes, not bad requests.
	d = DialResult{}
	n2.call(t, "POST", "/api/dial?addr="+n2.addr, nil, &d)
	if d.OK || d.Reason != "self" || d.Error == "" {
		t.Fatalf("dial self = %+v, want reason self", d)
	}
	stranger := startAPINode(t, ctx, "127.0.0.1:4195") // never joins n1/n2's network
	d = DialResult{}
	n2.call(t, "POST", "/api/dial?timeout=20s&addr="+stranger.addr, nil, &d)
	if d.OK || d.Reason != "no-endpoint-record" || !strings.Contains(d.Error, "no endpoint record") {
		t.Fatalf("dial unknown = %+v, want reason no-endpoint-record", d)
	}
	rec = RecordView{}
	n2.call(t, "GET", "/api/resolve?timeout=20s&addr="+stranger.addr, nil, &rec)
	if rec.OK || rec.Reason != "no-endpoint-record" {
		t.Fatalf("resolve unknown = %+v, want reason no-endpoint-record", rec)
	}
	fn = FindNodeResult{}
	n2.call(t, "POST", "/api/findnode?addr="+stranger.addr, nil, &fn)
	if fn.OK || !strings.Contains(fn.Error, "dial or punch it first") {
		t.Fatalf("findnode unknown = %+v", fn)
	}

	// Bad requests.
	for _, c := range []struct {
		method, path string
		hdr          map[string]string
		status       int
		code         string
	}{
		{"POST", "/api/dial", nil, 400, "bad-request"},
		{"POST", "/api/dial?addr=not-an-address", nil, 400, "bad-request"},
		{"POST", "/api/dial?addr=" + n1.addr + "&timeout=1h", nil, 400, "bad-request"},
		{"POST", "/api/dial?addr=" + n1.addr + "&timeout=-1s", nil, 400, "bad-request"},
		{"POST", "/api/findnode?addr=" + n1.addr + "&target=abc", nil, 400, "bad-request"},
		{"GET", "/api/punches?peer=zz", nil, 400, "bad-request"},
		{"GET", "/api/resolve?addr=" + n1.addr + "&timeout=soon", nil, 400, "bad-request"},
		{"GET", "/api/dial?addr=" + n1.addr, nil, 405, "method"},
		{"POST", "/api/status", nil, 405, "method"},
		{"GET", "/api/status", map[string]string{"Origin": "http://evil.example"}, 403, "forbidden"},
		{"POST", "/api/close?addr=" + n1.addr, nil, 404, "not-found"},
		{"GET", "/api/nope", nil, 404, "not-found"},
	} {
		var e apiErr
		if got := n2.call(t, c.method, c.path, c.hdr, &e); got != c.status || e.Code != c.code || e.Error == "" {
			t.Errorf("%s %s: HTTP %d %+v, want %d %s with a message", c.method, c.path, got, e, c.status, c.code)
		}
	}

	cancel()
	for _, n := range []*apiNode{n1, n2, stranger} {
		select {
		case err := <-n.done:
			if err != nil {
				t.Fatalf("run returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("run did not shut down")
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+2 { // +2: io.Copy readers end with the pipes
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, baseline %d:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEndpointUDPAddr(t *testing.T) {
	for in, want := range map[string]string{"quic://192.0.2.1:4121": "192.0.2.1:4121", "[2001:db8::1]:9": "[2001:db8::1]:9"} {
		a, err := endpointUDPAddr(in)
		if err != nil || a.String() != want {
			t.Errorf("%q -> %v, %v; want %s", in, a, err, want)
		}
	}
	for _, bad := range []string{"", "quic://", "quic://host-without-port", "quic://:0", fmt.Sprintf("quic://1.2.3.4:%d", 70000)} {
		if a, err := endpointUDPAddr(bad); err == nil {
			t.Errorf("%q -> %v, want an error", bad, a)
		}
	}
}

// TestDialReasonTyped: reason codes come from the host's typed errors, and a
// no-hub failure names no-hub exactly once (no wording added by the API).
func TestDialReasonTyped(t *testing.T) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := host.New(host.Config{Key: key, ListenAddr: "127.0.0.1:0", HubURLs: []string{"ws://127.0.0.1:1"},
		DisableNAT: true, DisableMaintenance: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	a := newAPI(h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer a.Close()
	noHub := fmt.Errorf("%w: x: direct: skipped; punch: %w", host.ErrNoRoute,
		&host.PunchError{Code: "no-hub", Err: fmt.Errorf("%w (ws://hub: refused)", host.ErrNoHub)})
	for _, c := range []struct {
		err  error
		want string
	}{
		{noHub, "no-hub"},
		{fmt.Errorf("%w: x: punch: %w", host.ErrNoRoute, &host.PunchError{Code: "ice-timeout", Err: host.ErrICETimeout}), "punch-failed"},
		{fmt.Errorf("%w: x: punch: %w", host.ErrNoRoute, &host.PunchError{Code: "timeout", Err: context.DeadlineExceeded}), "punch-failed"},
		{fmt.Errorf("resolve: %w", host.ErrNoEndpointRecord), "no-endpoint-record"},
		{fmt.Errorf("host: dial: %w", host.ErrSelf), "self"},
		{host.ErrClosed, "closed"},
		{fmt.Errorf("waiting: %w", context.DeadlineExceeded), "timeout"},
		{fmt.Errorf("%w: x: direct: refused", host.ErrNoRoute), "unreachable"},
		{errors.New("something else"), "error"},
	} {
		if got := dialReason(c.err); got != c.want {
			t.Errorf("dialReason(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	res := DialResult{Reason: dialReason(noHub), Error: noHub.Error()}
	a.explain(&res)
	if res.Reason != "no-hub" || strings.Count(res.Error, "no-hub") != 1 || strings.Contains(res.Error, "no live signaling hub") {
		t.Fatalf("explain = %+v, want no-hub named once", res)
	}

	// After Close, long-running endpoints refuse instead of starting work.
	mux := http.NewServeMux()
	a.mount(mux)
	a.Close()
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("POST", "/api/dial?addr="+(h.Address()).String(), nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"code":"closed"`) {
		t.Fatalf("dial after Close: %d %s", rec.Code, rec.Body.String())
	}
}

// TestControlAPIRefusesForeignHost (DNS rebinding): a page on evil.example
// whose name resolves to 127.0.0.1 reaches the control port with its own
// Host header. Every route must refuse it (403) and keep serving requests
// that name the loopback interface.
func TestControlAPIRefusesForeignHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := startAPINode(t, ctx, "127.0.0.1:0")
	port := n.base[strings.LastIndex(n.base, ":")+1:]
	get := func(path, hostHdr string) int {
		t.Helper()
		req, err := http.NewRequest("GET", n.base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = hostHdr
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, err := apiClient.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v", path, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	routes := []string{"/api/status", "/api/punches", "/api/conns", "/api/resolve?timeout=1s&addr=" + n.addr,
		"/healthz", "/metrics", "/debug/host", "/debug/routing", "/debug/store", "/debug/stats", "/api/nope", "/"}
	for _, r := range routes {
		for _, h := range []string{"evil.example", "evil.example:" + port, "127.0.0.1.evil.example:" + port, "localhost.evil.example", "10.0.0.1:" + port} {
			if code := get(r, h); code != http.StatusForbidden {
				t.Errorf("GET %s with Host %q: HTTP %d, want 403", r, h, code)
			}
		}
	}
	for _, h := range []string{"127.0.0.1:" + port, "localhost:" + port, "[::1]:" + port, "LOCALHOST", "127.0.0.2", "node.localhost:" + port} {
		if code := get("/api/status", h); code != http.StatusOK {
			t.Errorf("GET /api/status with Host %q: HTTP %d, want 200", h, code)
		}
		if code := get("/metrics", h); code != http.StatusOK {
			t.Errorf("GET /metrics with Host %q: HTTP %d, want 200", h, code)
		}
	}
}
