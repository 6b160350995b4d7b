// Package interop runs our node against the reference A2AL binaries inside
// a network namespace that has nothing but loopback (docs/interop.md).
//
// A World is one such namespace. It starts reference daemons (only through
// the reference's run-reference wrapper, which refuses to run anywhere with
// a route out), our `a2al-node` binary, and in-process nodes of our dht
// package whose sockets live in the namespace. Every node gets its own
// loopback address 127.0.N.1 (the whole 127/8 is local on Linux).
package interop

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/a2alnode/a2al/crypto"
	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/integration/natlab"
	"github.com/a2alnode/a2al/transport"
)

// NodePort is the UDP port of every node (each has its own IP).
const NodePort = 4121

// nsPrefix names the namespaces: a2interop-<pid>-<n>. A run that was killed
// leaves one behind; the next run removes those whose PID is gone.
const nsPrefix = "a2interop-"

// cmdTimeout bounds every ip(8) command.
const cmdTimeout = 20 * time.Second

// World is one loopback-only namespace and the nodes running in it.
type World struct {
	t   testing.TB
	NS  natlab.NetNS
	Dir string // per-world scratch: node data dirs and logs

	mu     sync.Mutex // guards nextIP, procs, dhts, logs
	nextIP int
	procs  []*Proc
	dhts   []*dht.Node
	logs   []*os.File // of the in-process nodes, closed after them
}

var worldSeq struct {
	sync.Mutex
	n int
}

// NewWorld creates the namespace (loopback up, nothing else) and registers
// its teardown with t.Cleanup: every process killed, every in-process node
// closed, the namespace deleted — also when the test fails.
func NewWorld(t testing.TB) *World {
	t.Helper()
	Require(t)
	worldSeq.Lock()
	worldSeq.n++
	name := fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), worldSeq.n)
	worldSeq.Unlock()
	if err := ip("netns", "add", name); err != nil {
		t.Fatal(err)
	}
	w := &World{t: t, NS: natlab.NetNS{Name: name}, Dir: t.TempDir(), nextIP: 1}
	t.Cleanup(w.close)
	if err := ip("-n", name, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	return w
}

// NextIP hands out the next loopback address 127.0.N.1.
func (w *World) NextIP() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	a := fmt.Sprintf("127.0.%d.1", w.nextIP)
	w.nextIP++
	return a
}

func (w *World) close() {
	w.mu.Lock()
	procs, dhts, logs := w.procs, w.dhts, w.logs
	w.procs, w.dhts, w.logs = nil, nil, nil
	w.mu.Unlock()
	for _, n := range dhts {
		_ = n.Close()
	}
	for _, f := range logs {
		_ = f.Close()
	}
	if w.t.Failed() {
		for _, p := range procs {
			w.t.Logf("interop: last lines of %s:\n%s", p.Name, p.Tail(15))
		}
	}
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop(3 * time.Second) }()
	}
	wg.Wait()
	if err := deleteNS(w.NS.Name); err != nil {
		w.t.Errorf("interop: delete namespace: %v", err)
	}
}

// DHTNode starts an in-process node of our dht package on ip:NodePort
// inside the namespace (the socket is opened there; the node's goroutines
// run anywhere) with a fresh key and the secure record policy. It is closed
// with the world.
func (w *World) DHTNode(ipAddr string) *dht.Node {
	w.t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		w.t.Fatal(err)
	}
	ks, err := crypto.NewMemKeyStoreFromPrivateKey(priv)
	if err != nil {
		w.t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(w.Dir, "dht-"+ipAddr+".log"))
	if err != nil {
		w.t.Fatal(err)
	}
	var conn *net.UDPConn
	err = w.NS.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ipAddr), Port: NodePort})
		return err
	})
	if err != nil {
		logf.Close()
		w.t.Fatalf("interop: listen udp %s: %v", ipAddr, err)
	}
	n, err := dht.NewNode(dht.Config{
		Transport:  transport.NewUDPTransport(conn),
		Keystore:   ks,
		RecordAuth: dht.SecureRecordAuth,
		Logger:     slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		conn.Close()
		logf.Close()
		w.t.Fatal(err)
	}
	w.mu.Lock()
	w.dhts = append(w.dhts, n)
	w.logs = append(w.logs, logf)
	w.mu.Unlock()
	n.Start()
	return n
}

// Proc is a program running inside the namespace with its output in a log
// file under World.Dir.
type Proc struct {
	Name    string
	LogPath string
	pid     int
	done    chan struct{}
	mu      sync.Mutex
	err     error
}

// Start runs bin with args inside the namespace (through `ip netns exec`,
// which execs, so the PID is the program's). The process is killed if the
// test process dies, and stopped with the world.
func (w *World) Start(name, bin string, args ...string) *Proc {
	w.t.Helper()
	logPath := filepath.Join(w.Dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		w.t.Fatal(err)
	}
	fmt.Fprintf(f, "==== %s %s\n", bin, strings.Join(args, " "))
	cmd := exec.Command("ip", append([]string{"netns", "exec", w.NS.Name, bin}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		w.t.Fatalf("interop: start %s: %v", name, err)
	}
	p := &Proc{Name: name, LogPath: logPath, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	w.mu.Lock()
	w.procs = append(w.procs, p)
	w.mu.Unlock()
	return p
}

// Stop sends SIGTERM to the process group, then SIGKILL after grace, and
// waits (bounded) for the exit.
func (p *Proc) Stop(grace time.Duration) {
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Tail returns the last n lines of the process log.
func (p *Proc) Tail(n int) string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func ip(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("interop: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// deleteNS kills what is left in the namespace (only our processes run in
// it) and deletes it.
func deleteNS(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return ip("netns", "delete", name)
}

// sweepStale deletes namespaces of earlier runs whose test process is gone.
func sweepStale() {
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = deleteNS(e.Name())
		}
	}
}

// ListenTCP opens a TCP listener inside the namespace (e.g. a local service
// a node exposes); the caller closes it.
func (w *World) ListenTCP(addr string) (net.Listener, error) {
	var ln net.Listener
	err := w.NS.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	return ln, err
}

// DialTCP connects to addr from inside the namespace (e.g. a tunnel's local
// end).
func (w *World) DialTCP(addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := w.NS.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	return c, err
}
