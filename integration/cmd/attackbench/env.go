package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
)

// bins are the binaries under test.
type bins struct{ node, hub string }

// buildBins builds a2al-node and signal-hub from the module at src into dir.
func buildBins(ctx context.Context, src, dir string) (bins, error) {
	b := bins{node: filepath.Join(dir, "a2al-node"), hub: filepath.Join(dir, "signal-hub")}
	for out, pkg := range map[string]string{b.node: "./cmd/a2al-node", b.hub: "./cmd/signal-hub"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		cmd.Dir = src
		if msg, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("build %s in %s: %w\n%s", pkg, src, err, msg)
		}
	}
	return b, nil
}

// proc is one started binary; stop kills it and waits.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuf
	done chan struct{}
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 1<<20 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func start(name, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, cmd: exec.Command(bin, args...), out: &lockedBuf{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) stop() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// rssKB is the process's resident memory (0 if unknown).
func (p *proc) rssKB() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// fds is the process's open file descriptors (-1 if unknown).
func (p *proc) fds() int {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	return len(es)
}

func freeTCP() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// freeUDP returns a UDP port free on 127.0.0.1 with port+1 free too.
func freeUDP() int {
	for range 50 {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			continue
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		c2, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port+1))
		c.Close()
		if err == nil {
			c2.Close()
			return port
		}
	}
	return 0
}

// hub is a running signal-hub with its STUN server.
type hub struct {
	*proc
	url  string // ws:// base URL
	http string // host:port
	stun string // host:port
}

func startHub(b bins, extra ...string) (*hub, error) {
	hp, sp := freeTCP(), freeUDP()
	h := &hub{http: fmt.Sprintf("127.0.0.1:%d", hp), stun: fmt.Sprintf("127.0.0.1:%d", sp)}
	h.url = "ws://" + h.http
	args := append([]string{"-listen", h.http, "-stun-addr", h.stun, "-stun-alt-port", strconv.Itoa(sp + 1),
		"-log-level", "error"}, extra...)
	p, err := start("signal-hub", b.hub, args...)
	if err != nil {
		return nil, err
	}
	h.proc = p
	err = waitUntil(10*time.Second, func() bool {
		r, err := http.Get("http://" + h.http + "/healthz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	})
	if err != nil {
		h.stop()
		return nil, fmt.Errorf("hub did not come up: %w\n%s", err, p.out.String())
	}
	return h, nil
}

// node is a running a2al-node with its control API.
type node struct {
	*proc
	addr a2al.Address
	udp  *net.UDPAddr
	api  string // host:port
}

// startNode runs "a2al-node run" on a loopback UDP port; with hub set it
// waits for the hub registration.
func startNode(b bins, dir string, h *hub, extra ...string) (*node, error) {
	up, ap := freeUDP(), freeTCP()
	n := &node{udp: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: up}, api: fmt.Sprintf("127.0.0.1:%d", ap)}
	args := []string{"run", "--data-dir", dir, "--listen", n.udp.String(), "--debug-addr", n.api,
		"--log-level", "error", "--status-interval", "1h"}
	if h != nil {
		args = append(args, "--hub", h.url, "--stun", h.stun)
	}
	args = append(args, extra...)
	p, err := start("a2al-node", b.node, args...)
	if err != nil {
		return nil, err
	}
	n.proc = p
	err = waitUntil(15*time.Second, func() bool {
		st, err := n.status()
		if err != nil {
			return false
		}
		if n.addr == (a2al.Address{}) {
			a, err := a2al.ParseAddress(st.Address)
			if err != nil {
				return false
			}
			n.addr = a
		}
		return h == nil || st.Hubs.Registered > 0
	})
	if err != nil {
		n.stop()
		return nil, fmt.Errorf("node did not come up: %w\n%s", err, p.out.String())
	}
	return n, nil
}

func (n *node) id() a2al.NodeID { return a2al.NodeIDFromAddress(n.addr) }

// nodeStatus is the part of /api/status the bench reads.
type nodeStatus struct {
	Address string `json:"address"`
	Hubs    struct {
		Registered int `json:"registered"`
	} `json:"hubs"`
}

var apiClient = &http.Client{Timeout: 3 * time.Second}

func (n *node) status() (nodeStatus, error) {
	var st nodeStatus
	r, err := apiClient.Get("http://" + n.api + "/api/status")
	if err != nil {
		return st, err
	}
	defer r.Body.Close()
	if r.StatusCode != 200 {
		return st, fmt.Errorf("status %d", r.StatusCode)
	}
	return st, json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&st)
}

// metric reads one counter/gauge from /metrics (sum over labels).
func metric(hostport, name string) (float64, error) {
	r, err := apiClient.Get("http://" + hostport + "/metrics")
	if err != nil {
		return 0, err
	}
	defer r.Body.Close()
	sum, found := 0.0, false
	sc := bufio.NewScanner(io.LimitReader(r.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name) || (len(l) > len(name) && l[len(name)] != ' ' && l[len(name)] != '{') {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return 0, fmt.Errorf("metric %s not found", name)
	}
	return sum, nil
}

func waitUntil(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// debugHealth reads the node's DHT counters (/debug/health), best effort.
func (n *node) debugHealth() map[string]any {
	out := map[string]any{}
	r, err := apiClient.Get("http://" + n.api + "/debug/health")
	if err != nil {
		return out
	}
	defer r.Body.Close()
	_ = json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&out)
	return out
}

// dial asks n's control API for a Mode A dial to addr (resolve, then direct
// or punched) and reports whether it connected.
func (n *node) dial(addr a2al.Address) bool {
	c := &http.Client{Timeout: 20 * time.Second}
	r, err := c.Post("http://"+n.api+"/api/dial?timeout=12s&addr="+addr.String(), "", nil)
	if err != nil {
		return false
	}
	defer r.Body.Close()
	var res struct {
		OK bool `json:"ok"`
	}
	return json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&res) == nil && res.OK
}

// startHubAndVictim starts a hub and a victim node registered at it; stop
// ends both (node first).
func startHubAndVictim(e *env) (*hub, *node, func(), error) {
	h, err := startHub(e.bins)
	if err != nil {
		return nil, nil, nil, err
	}
	v, err := startNode(e.bins, e.dir(), h)
	if err != nil {
		h.stop()
		return nil, nil, nil, err
	}
	return h, v, func() { v.stop(); h.stop() }, nil
}
