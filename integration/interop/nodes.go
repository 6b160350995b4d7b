package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/a2alnode/a2al/integration/natlab"
)

// Ports of the REST APIs; each node listens on its own IP.
const (
	refAPIPort  = 2121
	oursAPIPort = 8080
)

// startTimeout bounds how long a node may take to answer its API.
const startTimeout = 20 * time.Second

// RefOptions configures a reference daemon.
type RefOptions struct {
	Bootstrap []string // seeds "ip:port"; empty for a first node
	// Config holds extra top-level TOML lines for config.toml.
	Config string
}

// RefNode is a reference `a2ald` in the world, driven through its REST API.
type RefNode struct {
	Name string
	IP   string
	UDP  string // ip:port of its DHT and QUIC socket
	AID  string // its node address text
	Proc *Proc
	w    *World
}

// StartRef writes a loopback-only config (no UPnP, no update check, its
// own signaling hub off, auto-publish on) and starts the reference daemon
// through run-reference; it returns once /status names the node.
func (w *World) StartRef(name string, opts RefOptions) *RefNode {
	w.t.Helper()
	ipAddr := w.NextIP()
	dir := filepath.Join(w.Dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		w.t.Fatal(err)
	}
	seeds := make([]string, len(opts.Bootstrap))
	for i, s := range opts.Bootstrap {
		seeds[i] = fmt.Sprintf("%q", s)
	}
	cfg := fmt.Sprintf(`listen_addr = "%[1]s:%[2]d"
api_addr = "%[1]s:%[3]d"
bootstrap = [%[4]s]
disable_upnp = true
fallback_host = "%[1]s"
log_level = "debug"
log_format = "text"
open_browser = false
auto_publish = true
signal_listen_addr = "off"
%[5]s
[update]
auto = false
`, ipAddr, NodePort, refAPIPort, strings.Join(seeds, ", "), opts.Config)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		w.t.Fatal(err)
	}
	r := &RefNode{Name: name, IP: ipAddr, UDP: fmt.Sprintf("%s:%d", ipAddr, NodePort), w: w}
	r.Proc = w.Start(name, runReference(), "a2ald", "--data-dir", dir)
	deadline := time.Now().Add(startTimeout)
	for {
		var st RefStatus
		err := r.Call(http.MethodGet, "/status", nil, &st)
		if err == nil && st.NodeAID != "" {
			r.AID = st.NodeAID
			return r
		}
		if r.Proc.Exited() || time.Now().After(deadline) {
			w.t.Fatalf("interop: reference %s did not come up (%v); log:\n%s", name, err, r.Proc.Tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RefStatus is the part of the reference's GET /status the suite reads.
type RefStatus struct {
	NodeAID       string `json:"node_aid"`
	DHTPeers      int    `json:"dht_peers"`
	NodePublished bool   `json:"node_published"`
	NodeSeq       uint64 `json:"node_seq"`
}

// Status reads GET /status.
func (r *RefNode) Status() (RefStatus, error) {
	var st RefStatus
	err := r.Call(http.MethodGet, "/status", nil, &st)
	return st, err
}

// Call sends a JSON request to the reference's REST API and decodes the
// JSON answer into out (when non-nil).
func (r *RefNode) Call(method, path string, in, out any) error {
	return r.w.call(method, fmt.Sprintf("http://%s:%d%s", r.IP, refAPIPort, path), in, out)
}

// OurNode is our `a2al-node run` in the world, driven through its control
// API (/api/*, integration/README.md).
type OurNode struct {
	Name    string
	IP      string
	UDP     string
	Address string // its node address text
	Proc    *Proc
	w       *World
}

// OurOptions configures our node.
type OurOptions struct {
	Bootstrap []string // seeds "ip:port"
	Args      []string // extra `a2al-node run` flags
}

// StartOurs runs our node, built once per test process, and returns once
// its control API answers.
func (w *World) StartOurs(name string, opts OurOptions) *OurNode {
	w.t.Helper()
	bin := natlab.Binary(w.t, "a2al-node")
	ipAddr := w.NextIP()
	o := &OurNode{Name: name, IP: ipAddr, UDP: fmt.Sprintf("%s:%d", ipAddr, NodePort), w: w}
	args := []string{"run", "--listen", o.UDP, "--data-dir", filepath.Join(w.Dir, name),
		"--debug-addr", fmt.Sprintf("%s:%d", ipAddr, oursAPIPort), "--log-level", "debug", "--status-interval", "5s"}
	if len(opts.Bootstrap) > 0 {
		args = append(args, "--bootstrap", strings.Join(opts.Bootstrap, ","))
	}
	args = append(args, opts.Args...)
	o.Proc = w.Start(name, bin, args...)
	deadline := time.Now().Add(startTimeout)
	for {
		st, err := o.Status()
		if err == nil && st.Address != "" {
			o.Address = st.Address
			return o
		}
		if o.Proc.Exited() || time.Now().After(deadline) {
			w.t.Fatalf("interop: our node %s did not come up (%v); log:\n%s", name, err, o.Proc.Tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Status reads GET /api/status.
func (o *OurNode) Status() (natlab.NodeStatus, error) {
	var st natlab.NodeStatus
	err := o.Call(http.MethodGet, "/api/status", nil, &st)
	return st, err
}

// Call sends a request to our node's control API.
func (o *OurNode) Call(method, path string, in, out any) error {
	return o.w.call(method, fmt.Sprintf("http://%s:%d%s", o.IP, oursAPIPort, path), in, out)
}

// callTimeout bounds one REST call (a resolve may run a full lookup).
const callTimeout = 30 * time.Second

// call performs one HTTP request from inside the namespace.
func (w *World) call(method, url string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return fmt.Errorf("interop: %s %s: %w", method, url, err)
	}
	if in != nil || method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := w.NS.HTTPClient(callTimeout).Do(req)
	if err != nil {
		return fmt.Errorf("interop: %s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("interop: %s %s: read body: %w", method, url, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("interop: %s %s: HTTP %s: %s", method, url, resp.Status, strings.TrimSpace(string(data)))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("interop: %s %s: decode %q: %w", method, url, bytes.TrimSpace(data), err)
	}
	return nil
}

// Eventually retries cond every 200 ms until it returns nil or d passes,
// and returns the last error.
func Eventually(d time.Duration, cond func() error) error {
	end := time.Now().Add(d)
	for {
		err := cond()
		if err == nil || time.Now().After(end) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}
