package natlab

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NodePort is the UDP port lab nodes listen on.
const NodePort = 4121

// NodeOptions configures a lab node.
type NodeOptions struct {
	Bootstrap []string // seeds "ip:port"
	Hub       *Hub
	DataDir   string // default: a directory in the lab's log dir
}

// Node is a node daemon (integration/natlab/internal/labnode over the
// product's host package) running in a lab host.
type Node struct {
	Host    *Host
	Proc    *Proc
	Opts    NodeOptions
	Address string // a2al address text, known once started
	bin     string
}

const debugPort = 8080

// StartNode runs a node in h and waits until its control API answers.
func (l *Lab) StartNode(t testing.TB, h *Host, opts NodeOptions) *Node {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(l.logDir, h.Name+"-data")
	}
	n := &Node{Host: h, Opts: opts, bin: BuildPackage(t, "labnode", "./integration/natlab/internal/labnode")}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	return n
}

// Start (re)starts the node process with the same key and data dir.
func (n *Node) Start() error {
	args := []string{"-listen", fmt.Sprintf(":%d", NodePort), "-data-dir", n.Opts.DataDir,
		"-debug-addr", fmt.Sprintf("127.0.0.1:%d", debugPort)}
	if len(n.Opts.Bootstrap) > 0 {
		args = append(args, "-bootstrap", strings.Join(n.Opts.Bootstrap, ","))
	}
	if n.Opts.Hub != nil {
		args = append(args, "-hub", n.Opts.Hub.URL(), "-stun", n.Opts.Hub.STUN())
	}
	p, err := n.Host.Start("node", n.bin, args...)
	if err != nil {
		return err
	}
	n.Proc = p
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st NodeStatus
		err := n.JSON("/lab/status", &st)
		if err == nil {
			n.Address = st.Address
			return nil
		}
		if p.Exited() || time.Now().After(deadline) {
			return fmt.Errorf("natlab: node in %s did not come up (%v); log:\n%s", n.Host.Name, err, p.Tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the node process.
func (n *Node) Stop() { _ = n.Proc.Stop(5 * time.Second) }

// JSON GETs a control/debug path and decodes it.
func (n *Node) JSON(path string, v any) error {
	return n.JSONTimeout(path, 5*time.Second, v)
}

// JSONTimeout is JSON with a custom deadline (for long operations).
func (n *Node) JSONTimeout(path string, timeout time.Duration, v any) error {
	body, err := n.Host.NS.Get(fmt.Sprintf("http://127.0.0.1:%d%s", debugPort, path), timeout)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("natlab: %s: decode %q: %w", path, bytes.TrimSpace(body), err)
	}
	return nil
}

// NodeStatus is /lab/status.
type NodeStatus struct {
	Address  string `json:"address"`
	Hubs     int    `json:"hubs"`
	NATKnown bool   `json:"nat_known"`
	NAT      string `json:"nat"`
	Mapped   string `json:"mapped"`
}

// Status reads /lab/status.
func (n *Node) Status() (NodeStatus, error) {
	var st NodeStatus
	err := n.JSON("/lab/status", &st)
	return st, err
}

// Metrics returns the node's Prometheus samples as "name{labels}" -> value.
func (n *Node) Metrics() (map[string]float64, error) {
	body, err := n.Host.NS.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", debugPort), 5*time.Second)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// WaitReady waits until the node has classified its NAT, registered at a
// hub (if it has one) and published its endpoint record at least once.
func (n *Node) WaitReady(timeout time.Duration) (NodeStatus, error) {
	deadline := time.Now().Add(timeout)
	var st NodeStatus
	var why string
	for {
		var err error
		st, err = n.Status()
		switch {
		case err != nil:
			why = err.Error()
		case !st.NATKnown:
			why = "NAT not classified"
		case n.Opts.Hub != nil && st.Hubs < 1 && st.NAT != "udp-blocked":
			why = "not registered at the hub"
		default:
			m, err := n.Metrics()
			if err == nil && m["a2al_endpoint_publish_total"] >= 1 {
				return st, nil
			}
			why = "endpoint record not published"
		}
		if n.Proc.Exited() {
			return st, fmt.Errorf("natlab: node %s exited: %v", n.Host.Name, n.Proc.Err())
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("natlab: node %s not ready after %v: %s", n.Host.Name, timeout, why)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// DialResult is /lab/dial.
type DialResult struct {
	OK     bool   `json:"ok"`
	TookMS int64  `json:"took_ms"`
	Error  string `json:"error"`
	Remote string `json:"remote"`
}

// Dial asks the node to open an application connection to addr (resolve,
// direct dial, then punch via the hub) and reports the outcome.
func (n *Node) Dial(addr string, timeout time.Duration) (DialResult, error) {
	var r DialResult
	err := n.JSONTimeout(fmt.Sprintf("/lab/dial?addr=%s&timeout=%s", addr, timeout), timeout+10*time.Second, &r)
	return r, err
}

// PunchRecord mirrors host.PunchRecord in /lab/punches.
type PunchRecord struct {
	Peer     string        `json:"peer"`
	Role     string        `json:"role"`
	OK       bool          `json:"ok"`
	Reason   string        `json:"reason"`
	Duration time.Duration `json:"duration_ns"`
	Path     string        `json:"path"`
	Remote   string        `json:"remote"`
	Direct   bool          `json:"direct"`
}

// Punches reads the node's recent punch outcomes.
func (n *Node) Punches() ([]PunchRecord, error) {
	var ps []PunchRecord
	err := n.JSON("/lab/punches", &ps)
	return ps, err
}

// Held is one entry of /lab/held.
type Held struct {
	Alive  bool   `json:"alive"`
	Remote string `json:"remote"`
	Error  string `json:"error"`
}

// Hold dials addr and keeps the connection open and idle in the node.
func (n *Node) Hold(addr string) (DialResult, error) {
	var r DialResult
	err := n.JSONTimeout("/lab/hold?addr="+addr, 50*time.Second, &r)
	return r, err
}

// HeldConn reports the state of the connection held to addr.
func (n *Node) HeldConn(addr string) (Held, error) {
	var m map[string]Held
	if err := n.JSON("/lab/held", &m); err != nil {
		return Held{}, err
	}
	h, ok := m[addr]
	if !ok {
		return Held{}, fmt.Errorf("natlab: node %s holds no connection to %s", n.Host.Name, addr)
	}
	return h, nil
}
