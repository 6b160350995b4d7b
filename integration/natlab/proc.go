package natlab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a long-running program inside a namespace, with its output in a
// log file. Lab.Close kills it.
type Proc struct {
	Name    string
	LogPath string

	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
	pid    int
}

// Start runs bin with args inside the host's namespace.
func (h *Host) Start(name, bin string, args ...string) (*Proc, error) {
	l := h.Lab
	logPath := filepath.Join(l.logDir, fmt.Sprintf("%s-%s.log", h.Name, name))
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("natlab: log file for %s: %w", name, err)
	}
	fmt.Fprintf(f, "==== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	ctx, cancel := context.WithCancel(context.Background())
	cmd := h.NS.Command(ctx, bin, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		cancel()
		f.Close()
		return nil, fmt.Errorf("natlab: start %s in %s: %w", bin, h.NS.Name, err)
	}
	p := &Proc{Name: h.Name + "/" + name, LogPath: logPath, cancel: cancel, done: make(chan struct{}), pid: cmd.Process.Pid}
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	l.mu.Lock()
	closed := l.closed
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	if closed {
		p.Kill()
		return nil, fmt.Errorf("natlab: lab closed")
	}
	return p, nil
}

// Stop asks the process to exit (SIGTERM to its group) and kills it if it
// has not exited within grace.
func (p *Proc) Stop(grace time.Duration) error {
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
	return p.Err()
}

// Kill stops the process group immediately and waits for it.
func (p *Proc) Kill() {
	p.cancel()
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

// Err is the exit error once the process has ended.
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Tail returns the last n lines of the process log.
func (p *Proc) Tail(n int) string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// ListenUDP opens a UDP socket inside the host's namespace (ip may be nil
// for all addresses). The socket can be used from any goroutine afterwards.
func (h *Host) ListenUDP(ip net.IP, port int) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := h.NS.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: port})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: listen udp %v:%d in %s: %w", ip, port, h.NS.Name, err)
	}
	return c, nil
}

// ListenTCP opens a TCP listener inside the host's namespace.
func (h *Host) ListenTCP(ip net.IP, port int) (*net.TCPListener, error) {
	var ln *net.TCPListener
	err := h.NS.Do(func() error {
		var err error
		ln, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: ip, Port: port})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: listen tcp %v:%d in %s: %w", ip, port, h.NS.Name, err)
	}
	return ln, nil
}

// DialTCP connects from inside the host's namespace. The connect happens on
// the namespace thread, so it is bounded by timeout.
func (h *Host) DialTCP(addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := h.NS.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: dial tcp %s from %s: %w", addr, h.NS.Name, err)
	}
	return c, nil
}
