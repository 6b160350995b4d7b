// Package deploy holds the systemd units and the container image; its tests
// check them with the real tools (systemd-analyze, docker) when present.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildBinaries builds both daemons statically into a temporary directory.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-trimpath", "-o", dir+"/", "../cmd/a2al-node", "../cmd/signal-hub")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// TestSystemdUnits: both units pass systemd-analyze verify with no warning
// (pointed at freshly built binaries) and keep their hardening.
func TestSystemdUnits(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze missing under CI: .ci/install-lab-deps.sh installs the systemd package")
		}
		t.Skip("systemd-analyze not installed (Debian package systemd); CI installs it")
	}
	bin := buildBinaries(t)
	dir := t.TempDir()
	for unit, must := range map[string][]string{
		"a2al-node.service":  {"DynamicUser=yes", "StateDirectory=a2al-node", "NoNewPrivileges=yes", "Restart=on-failure", "RestartPreventExitStatus=2", "ProtectSystem=strict"},
		"signal-hub.service": {"DynamicUser=yes", "NoNewPrivileges=yes", "Restart=on-failure", "RestartPreventExitStatus=2", "ProtectSystem=strict"},
	} {
		b, err := os.ReadFile(unit)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range must {
			if !strings.Contains(string(b), "\n"+m+"\n") {
				t.Errorf("%s lacks %s", unit, m)
			}
		}
		local := strings.ReplaceAll(string(b), "/usr/local/bin/", bin+"/")
		if err := os.WriteFile(filepath.Join(dir, unit), []byte(local), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sa, "verify", filepath.Join(dir, unit)).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
		}
	}
}

// TestImage builds the FROM scratch image and runs a2al-node demo, id and
// signal-hub -version in it (deploy/image.sh test), when a docker engine
// answers.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("image build is slow")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("no docker client; make image-test builds the image where one is")
	}
	if err := exec.Command("docker", "info").Run(); err != nil {
		t.Skip("no docker engine answers; make image-test builds the image where one is")
	}
	bin := buildBinaries(t)
	cmd := exec.Command("./image.sh", "test")
	cmd.Env = append(os.Environ(), "BIN_DIR="+bin, "IMAGE=a2al-node:test")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "image test: ok") {
		t.Fatalf("image.sh test: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(string(out)))
}
