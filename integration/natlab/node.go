package natlab

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
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
	DataDir   string   // default: a directory in the lab's log dir
	Args      []string // extra `a2al-node run` flags (e.g. --turn)
}

// Node is a real `a2al-node run` process in a lab host, driven through its
// local control API (/api/*, see integration/README.md) on 127.0.0.1 inside
// the host's namespace.
type Node struct {
	Host    *Host
	Proc    *Proc
	Opts    NodeOptions
	Address string // a2al address text, known once started
	bin     string
}

const debugPort = 8080

// StartNode runs `a2al-node run` in h and waits until its control API
// answers. The binary is built once per test process, without -race.
func (l *Lab) StartNode(t testing.TB, h *Host, opts NodeOptions) *Node {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(l.logDir, h.Name+"-data")
	}
	n := &Node{Host: h, Opts: opts, bin: Binary(t, "a2al-node")}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	return n
}

// Start (re)starts the node process with the same key and data dir.
func (n *Node) Start() error {
	args := []string{"run", "--listen", fmt.Sprintf(":%d", NodePort), "--data-dir", n.Opts.DataDir,
		"--debug-addr", fmt.Sprintf("127.0.0.1:%d", debugPort), "--log-level", "debug", "--status-interval", "10s"}
	if len(n.Opts.Bootstrap) > 0 {
		args = append(args, "--bootstrap", strings.Join(n.Opts.Bootstrap, ","))
	}
	if n.Opts.Hub != nil {
		args = append(args, "--hub", n.Opts.Hub.URL(), "--stun", n.Opts.Hub.STUN())
	}
	args = append(args, n.Opts.Args...)
	p, err := n.Host.Start("a2al-node", n.bin, args...)
	if err != nil {
		return err
	}
	n.Proc = p
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := n.Status()
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
	return n.call(http.MethodGet, path, 5*time.Second, v)
}

// call sends method to a control path and decodes the JSON answer.
func (n *Node) call(method, path string, timeout time.Duration, v any) error {
	body, err := n.Host.NS.Request(method, fmt.Sprintf("http://127.0.0.1:%d%s", debugPort, path), timeout)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("natlab: %s: decode %q: %w", path, bytes.TrimSpace(body), err)
	}
	return nil
}

// NodeStatus is the part of GET /api/status the lab reads.
type NodeStatus struct {
	Address string `json:"address"`
	NAT     struct {
		Known  bool   `json:"known"`
		Type   string `json:"type"`
		Mapped string `json:"mapped"`
		Relay  string `json:"relay"` // UDP blocked: the TURN server the socket runs over
	} `json:"nat"`
	Hubs struct {
		Registered int `json:"registered"`
	} `json:"hubs"`
	RoutingPeers int `json:"routing_peers"`
	Pool         struct {
		Size  int `json:"size"`
		Peers []struct {
			Peer   string `json:"peer"`
			Remote string `json:"remote"`
		} `json:"peers"`
		SentDatagrams uint64 `json:"sent_datagrams"`
		SentStreams   uint64 `json:"sent_streams"`
		RecvDatagrams uint64 `json:"recv_datagrams"`
		RecvStreams   uint64 `json:"recv_streams"`
	} `json:"pool"`
	DHT struct {
		TxPackets uint64 `json:"tx_packets"`
		RxPackets uint64 `json:"rx_packets"`
	} `json:"dht"`
	Published struct {
		Seq uint64 `json:"seq"`
	} `json:"published"`
}

// ModeBSent and ModeBRecv are the Mode B pool's message counters.
func (s NodeStatus) ModeBSent() uint64 { return s.Pool.SentDatagrams + s.Pool.SentStreams }

// ModeBRecv counts messages received over pooled connections.
func (s NodeStatus) ModeBRecv() uint64 { return s.Pool.RecvDatagrams + s.Pool.RecvStreams }

// Pooled reports whether the node has a Mode B connection to addr.
func (s NodeStatus) Pooled(addr string) bool {
	for _, p := range s.Pool.Peers {
		if strings.EqualFold(p.Peer, addr) {
			return true
		}
	}
	return false
}

// Status reads GET /api/status.
func (n *Node) Status() (NodeStatus, error) {
	var st NodeStatus
	err := n.JSON("/api/status", &st)
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
		case !st.NAT.Known:
			why = "NAT not classified"
		case n.Opts.Hub != nil && st.Hubs.Registered < 1 && st.NAT.Type != "udp-blocked":
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

// DialResult is POST /api/dial.
type DialResult struct {
	OK     bool       `json:"ok"`
	Path   string     `json:"path"` // direct | punched | relayed
	Remote string     `json:"remote"`
	TookMS int64      `json:"took_ms"`
	Punch  *PunchView `json:"punch"`
	Kept   bool       `json:"kept"`
	Reason string     `json:"reason"`
	Error  string     `json:"error"`
}

// PunchView is the punch a dial ran or waited for.
type PunchView struct {
	OK         bool   `json:"ok"`
	Role       string `json:"role"`
	TookMS     int64  `json:"took_ms"`
	Candidates string `json:"candidates"`
	Reason     string `json:"reason"`
}

// Dial asks the node to open an application connection to addr (resolve,
// direct dial, then punch via the hub) and reports the outcome.
func (n *Node) Dial(addr string, timeout time.Duration) (DialResult, error) {
	var r DialResult
	err := n.call(http.MethodPost, fmt.Sprintf("/api/dial?addr=%s&timeout=%s", addr, timeout), timeout+10*time.Second, &r)
	return r, err
}

// Punch asks the node to make sure a Mode B (DHT) connection to addr exists.
func (n *Node) Punch(addr string, timeout time.Duration) (DialResult, error) {
	var r DialResult
	err := n.call(http.MethodPost, fmt.Sprintf("/api/punch?addr=%s&timeout=%s", addr, timeout), timeout+10*time.Second, &r)
	return r, err
}

// PunchRecord mirrors host.PunchRecord in GET /api/punches.
type PunchRecord struct {
	Peer     string        `json:"peer"`
	Role     string        `json:"role"`
	OK       bool          `json:"ok"`
	Reason   string        `json:"reason"`
	Duration time.Duration `json:"duration_ns"`
	Path     string        `json:"path"` // ICE candidate types local->remote
	Remote   string        `json:"remote"`
	Direct   bool          `json:"direct"`
}

// Punches reads the node's recent punch outcomes.
func (n *Node) Punches() ([]PunchRecord, error) {
	var ps []PunchRecord
	err := n.JSON("/api/punches", &ps)
	return ps, err
}

// FindNodeResult is POST /api/findnode.
type FindNodeResult struct {
	OK        bool   `json:"ok"`
	Transport string `json:"transport"` // modeB | udp
	Remote    string `json:"remote"`
	Contacts  int    `json:"contacts"`
	Error     string `json:"error"`
}

// FindNode makes the node send one FIND_NODE RPC to addr.
func (n *Node) FindNode(addr string) (FindNodeResult, error) {
	var r FindNodeResult
	err := n.call(http.MethodPost, "/api/findnode?addr="+addr, 20*time.Second, &r)
	return r, err
}

// Record is GET /api/resolve.
type Record struct {
	OK        bool     `json:"ok"`
	Seq       uint64   `json:"seq"`
	NAT       string   `json:"nat"`
	Endpoints []string `json:"endpoints"`
	Turns     []string `json:"turns"`
	Reason    string   `json:"reason"`
	Error     string   `json:"error"`
}

// Resolve looks addr's endpoint record up through the node's DHT.
func (n *Node) Resolve(addr string) (Record, error) {
	var r Record
	err := n.call(http.MethodGet, "/api/resolve?addr="+addr, 20*time.Second, &r)
	return r, err
}

// Held is one entry of GET /api/conns.
type Held struct {
	Peer   string `json:"peer"`
	Path   string `json:"path"`
	Alive  bool   `json:"alive"`
	Remote string `json:"remote"`
	Error  string `json:"error"`
}

// Hold dials addr and keeps the connection open and idle in the node.
func (n *Node) Hold(addr string) (DialResult, error) {
	var r DialResult
	err := n.call(http.MethodPost, "/api/dial?keep=1&timeout=40s&addr="+addr, 50*time.Second, &r)
	return r, err
}

// HeldConn reports the state of the connection kept to addr.
func (n *Node) HeldConn(addr string) (Held, error) {
	var hs []Held
	if err := n.JSON("/api/conns", &hs); err != nil {
		return Held{}, err
	}
	for _, h := range hs {
		if strings.EqualFold(h.Peer, addr) {
			return h, nil
		}
	}
	return Held{}, fmt.Errorf("natlab: node %s keeps no connection to %s", n.Host.Name, addr)
}
