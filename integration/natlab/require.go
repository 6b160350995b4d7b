package natlab

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// HowToRun is appended to every skip message.
const HowToRun = "run as root on Linux with iproute2, nftables and conntrack installed " +
	"(.ci/install-lab-deps.sh installs them): sudo go test ./integration/natlab/..."

var (
	probeOnce sync.Once
	probeErr  error
	netemOnce sync.Once
	netemErr  error
)

// Available reports why the lab cannot run here, or nil if it can: root,
// the ip/nft/conntrack/sysctl tools, and a kernel that can create a network
// namespace with a veth pair and load an nftables NAT ruleset in it.
func Available() error {
	probeOnce.Do(func() { probeErr = probeKernel() })
	return probeErr
}

func probeKernel() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("not root")
	}
	for _, tool := range []string{"ip", "nft", "conntrack", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not installed", tool)
		}
	}
	name := fmt.Sprintf("a2l%dx0-probe", os.Getpid())
	ns, err := createNetNS(name)
	if err != nil {
		return fmt.Errorf("cannot create a network namespace: %w", err)
	}
	defer func() { _ = deleteNetNS(name) }()
	if _, err := ns.Run("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"); err != nil {
		return fmt.Errorf("cannot create a veth pair: %w", err)
	}
	rules := "table ip t {\n chain p {\n  type nat hook postrouting priority srcnat;\n  oifname \"v0\" masquerade random,fully-random\n }\n}\n"
	if _, err := ns.RunStdin(rules, "nft", "-f", "-"); err != nil {
		return fmt.Errorf("nftables NAT unavailable: %w", err)
	}
	return nil
}

// Require skips the test (or fails it when CI=true) with one line saying why
// the lab cannot run and how to run it.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		skipOrFail(t, fmt.Sprintf("natlab unavailable (%v); %s", err, HowToRun))
	}
}

// skipOrFail skips, except under CI=true where a skipped lab is a failure.
func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if strings.EqualFold(os.Getenv("CI"), "true") {
		t.Fatal(msg + " [CI=true: skipping is a failure]")
	}
	t.Skip(msg)
}

// NetemAvailable reports whether the kernel has the netem qdisc (latency and
// loss emulation); many minimal kernels are built without sch_netem.
func NetemAvailable() error {
	netemOnce.Do(func() {
		if _, err := exec.LookPath("tc"); err != nil {
			netemErr = fmt.Errorf("tc not installed")
			return
		}
		name := fmt.Sprintf("a2l%dx0-netem", os.Getpid())
		ns, err := createNetNS(name)
		if err != nil {
			netemErr = err
			return
		}
		defer func() { _ = deleteNetNS(name) }()
		if _, err := ns.Run("ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"); err != nil {
			netemErr = err
			return
		}
		if _, err := ns.Run("tc", "qdisc", "add", "dev", "d0", "root", "netem", "delay", "1ms"); err != nil {
			netemErr = fmt.Errorf("kernel lacks the netem qdisc (CONFIG_NET_SCH_NETEM / sch_netem module): %w", err)
		}
	})
	return netemErr
}

// RequireNetem skips (never fails, even in CI: it is a kernel build option
// that CI machines may lack) when netem is missing.
func RequireNetem(t testing.TB) {
	t.Helper()
	if err := NetemAvailable(); err != nil {
		t.Skipf("netem latency/loss cases need sch_netem: %v; run on a kernel with CONFIG_NET_SCH_NETEM (modprobe sch_netem)", err)
	}
}
