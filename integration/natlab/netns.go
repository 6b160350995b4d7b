package natlab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 bind-mounts named network namespaces.
const netnsDir = "/var/run/netns"

// cmdTimeout bounds every plumbing command (ip, nft, sysctl, conntrack, tc).
const cmdTimeout = 20 * time.Second

// NetNS is a named network namespace created by `ip netns add`.
type NetNS struct {
	Name string
}

// Path is the bind-mount path of the namespace.
func (n NetNS) Path() string { return netnsDir + "/" + n.Name }

// Do runs fn on an OS thread that has been moved into the namespace. Sockets
// opened inside fn stay in the namespace after Do returns, which lets tests
// probe NAT behaviour in-process without helper binaries. fn must not start
// goroutines that expect to inherit the namespace.
func (n NetNS) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("natlab: open current netns: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(n.Path())
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("natlab: open netns %s: %w", n.Name, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("natlab: enter netns %s: %w", n.Name, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime discards it when this goroutine
		// exits, so no other goroutine ever runs in the wrong namespace.
		return fmt.Errorf("natlab: restore netns after %s: %w", n.Name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Command builds `ip netns exec <ns> name args...`. The child is killed if
// the test process dies (Pdeathsig) and runs in its own process group so
// that Kill reaches everything it spawned.
func (n NetNS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	full := append([]string{"netns", "exec", n.Name, name}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Run executes a short command inside the namespace and returns its
// combined output; the error includes the output.
func (n NetNS) Run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("natlab: %s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// RunStdin is Run with data fed on standard input (used for `nft -f -`).
func (n NetNS) RunStdin(stdin string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := n.Command(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("natlab: %s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Sysctl sets a sysctl inside the namespace (per-netns keys only).
func (n NetNS) Sysctl(key, value string) error {
	_, err := n.Run("sysctl", "-q", "-w", key+"="+value)
	return err
}

// ipCmd runs `ip args...` in the root namespace with a deadline.
func ipCmd(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("natlab: ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ipBatch runs several `ip` commands inside namespace ns in one process
// (`ip -n ns -batch -`), which is much faster than one exec per command.
func ipBatch(ns NetNS, lines ...string) error {
	if len(lines) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "-n", ns.Name, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("natlab: ip -n %s -batch: %w: %s", ns.Name, err, bytes.TrimSpace(out))
	}
	return nil
}

// createNetNS adds a namespace with loopback up.
func createNetNS(name string) (NetNS, error) {
	if err := ipCmd("netns", "add", name); err != nil {
		return NetNS{}, err
	}
	n := NetNS{Name: name}
	if err := ipCmd("-n", name, "link", "set", "lo", "up"); err != nil {
		_ = deleteNetNS(name)
		return NetNS{}, err
	}
	return n, nil
}

// deleteNetNS kills every process left in the namespace, then removes it.
// Interfaces inside it (and their veth peers) disappear with it.
func deleteNetNS(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return ipCmd("netns", "delete", name)
}

// listNetNS returns the names of all named namespaces.
func listNetNS() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("natlab: list %s: %w", netnsDir, err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}
