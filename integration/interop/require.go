package interop

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// ReferenceDirEnv names the directory holding the reference binaries and
// their run-reference wrapper. Without it the suite looks for
// shared/interop next to the module or one of its parent directories.
const ReferenceDirEnv = "A2AL_REFERENCE_DIR"

var (
	availOnce sync.Once
	availErr  error
	refDir    string
)

// Available reports why the suite cannot run here, or nil: it needs root,
// ip(8), the reference binaries and a kernel that creates namespaces.
func Available() error {
	availOnce.Do(func() { refDir, availErr = probe() })
	return availErr
}

func probe() (string, error) {
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("not root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "", fmt.Errorf("ip (iproute2) not installed")
	}
	dir, err := findReferenceDir()
	if err != nil {
		return "", err
	}
	sweepStale()
	name := fmt.Sprintf("%s%d-probe", nsPrefix, os.Getpid())
	if err := ip("netns", "add", name); err != nil {
		return "", fmt.Errorf("cannot create a network namespace: %w", err)
	}
	_ = deleteNS(name)
	return dir, nil
}

func findReferenceDir() (string, error) {
	ok := func(d string) bool {
		for _, f := range []string{"run-reference", "a2ald.bin"} {
			if _, err := os.Stat(filepath.Join(d, f)); err != nil {
				return false
			}
		}
		return true
	}
	if d := os.Getenv(ReferenceDirEnv); d != "" {
		if !ok(d) {
			return "", fmt.Errorf("%s=%s holds no run-reference and a2ald.bin", ReferenceDirEnv, d)
		}
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if c := filepath.Join(d, "shared", "interop"); ok(c) {
			return c, nil
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	return "", fmt.Errorf("reference binaries not found (set %s to the directory with run-reference)", ReferenceDirEnv)
}

// runReference is the path of the wrapper that starts a reference binary.
func runReference() string { return filepath.Join(refDir, "run-reference") }

// Require skips the test with one line saying why the suite cannot run, or
// fails it under CI=true, where a skipped interop suite is a failure.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		msg := fmt.Sprintf("interop suite unavailable (%v); run as root on Linux with iproute2 and the reference binaries: sudo %s=DIR go test -v ./integration/interop/", err, ReferenceDirEnv)
		if strings.EqualFold(os.Getenv("CI"), "true") {
			t.Fatal(msg + " [CI=true: skipping is a failure]")
		}
		t.Skip(msg)
	}
}
