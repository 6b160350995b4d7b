package natlab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Binaries built once per test process (go build into a temp dir).
var (
	binMu    sync.Mutex
	binDir   string
	binCache = map[string]binResult{}
)

type binResult struct {
	path string
	err  error
}

// buildTimeout bounds one `go build` (cold caches on a busy 2-core CI box).
const buildTimeout = 5 * time.Minute

// moduleRoot finds the directory of go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("natlab: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Binary returns the path of cmd/<name> built for this test process
// (static, CGO off, so it runs in any namespace). A build failure fails the
// test with the compiler output; a missing command skips it (fails under
// CI=true).
func Binary(t testing.TB, name string) string {
	t.Helper()
	return BuildPackage(t, name, "./cmd/"+name)
}

// BuildPackage builds the main package pkg (relative to the module root)
// once per test process as name.
func BuildPackage(t testing.TB, name, pkg string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	r, ok := binCache[name]
	if !ok {
		r = buildBinary(name, pkg)
		binCache[name] = r
	}
	if r.err != nil {
		if strings.Contains(r.err.Error(), "no Go files") || strings.Contains(r.err.Error(), "not exist") ||
			strings.Contains(r.err.Error(), "matched no packages") {
			skipOrFail(t, fmt.Sprintf("natlab: %s is not buildable yet (%v)", pkg, r.err))
		}
		t.Fatalf("natlab: build %s: %v", pkg, r.err)
	}
	return r.path
}

func buildBinary(name, pkg string) binResult {
	root, err := moduleRoot()
	if err != nil {
		return binResult{err: err}
	}
	if binDir == "" {
		binDir, err = os.MkdirTemp("", "natlab-bin-")
		if err != nil {
			return binResult{err: err}
		}
	}
	out := filepath.Join(binDir, name)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return binResult{err: fmt.Errorf("%w: %s", err, strings.TrimSpace(string(msg)))}
	}
	return binResult{path: out}
}

// RemoveBinaries deletes the build directory (call from TestMain).
func RemoveBinaries() {
	binMu.Lock()
	defer binMu.Unlock()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
		binDir = ""
	}
}
