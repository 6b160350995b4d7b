package natlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// newRelayWorld is newWorld with extra signal-hub flags.
func newRelayWorld(t *testing.T, hubArgs ...string) *world {
	l := New(t)
	h := &Hub{bin: Binary(t, "signal-hub"), Args: hubArgs}
	h.Host = l.AddWANHost("hub", HubIP, HubAltIP)
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	w := &world{lab: l, hub: h}
	bh := l.AddWANHost("boot", mustIP(WANNet+".5"))
	w.boot = l.StartNode(t, bh, NodeOptions{Hub: h})
	return w
}

func (w *world) nodeWith(t *testing.T, name string, typ NATType, args ...string) *Node {
	h := w.lab.AddNATHost(name, typ)
	return w.lab.StartNode(t, h, NodeOptions{Hub: w.hub, Bootstrap: []string{fmt.Sprintf("%s.5:%d", WANNet, NodePort)}, Args: args})
}

// relayedDial dials b from a and requires a relayed connection that carries
// a FIND_NODE over Mode B.
func relayedDial(t *testing.T, a, b *Node) DialResult {
	t.Helper()
	for _, n := range []*Node{a, b} {
		if _, err := n.WaitReady(90 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	var res DialResult
	var err error
	for until := time.Now().Add(30 * time.Second); ; {
		res, err = a.Dial(b.Address, 40*time.Second)
		if err != nil || res.OK || res.Reason != "no-endpoint-record" || time.Now().After(until) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.Path != "relayed" {
		t.Fatalf("dial %+v, want a relayed connection", res)
	}
	took := time.Duration(res.TookMS) * time.Millisecond
	if res.Punch != nil && res.Punch.OK {
		took = time.Duration(res.Punch.TookMS) * time.Millisecond
	}
	t.Logf("relayed connection in %v (%v)", took, res.Punch)
	fn, err := a.FindNode(b.Address)
	if err != nil || !fn.OK || fn.Transport != "modeB" {
		t.Fatalf("FIND_NODE after the relayed dial: %+v %v, want over modeB", fn, err)
	}
	return res
}

// hubMetric reads one sample from the hub's /metrics ("" labels: unlabelled).
func (w *world) hubMetric(t *testing.T, series string) float64 {
	t.Helper()
	body, err := w.hub.Host.NS.Get(fmt.Sprintf("http://%s:%d/metrics", HubIP, HubWSPort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+]+)$`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestRelayCoturn: the hub serves no TURN; two symmetric nodes configured
// with a coturn server (shared-secret credentials) connect through it.
func TestRelayCoturn(t *testing.T) {
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		t.Skip("coturn's turnserver is not installed (.ci/install-lab-deps.sh installs it)")
	}
	w := newRelayWorld(t, "-turn-addr", "off")
	ct := w.lab.AddWANHost("coturn", mustIP(WANNet+".7"))
	// Like any server on the internet, coturn has a default route: ICE also
	// checks peers' private host candidates through the relay, and coturn
	// ends the whole allocation when a send fails with "network unreachable".
	if out, err := ct.NS.Run("ip", "route", "add", "default", "dev", "eth0"); err != nil {
		t.Fatalf("default route: %v %s", err, out)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "turnserver.conf")
	const secret = "natlab-coturn-secret"
	cfg := fmt.Sprintf(`listening-ip=%[1]s
relay-ip=%[1]s
listening-port=3478
min-port=49152
max-port=49500
use-auth-secret
static-auth-secret=%[2]s
realm=natlab.example
no-tls
no-dtls
no-cli
fingerprint
no-multicast-peers
log-file=stdout
simple-log
userdb=%[3]s/turndb
pidfile=%[3]s/turnserver.pid
`, ct.IP, secret, dir)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := ct.Start("coturn", bin, "-c", conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(5 * time.Second) })
	turn := fmt.Sprintf("turn:%s:3478?transport=udp&secret=%s", ct.IP, secret)
	a := w.nodeWith(t, "sy1", Symmetric, "--turn", turn)
	b := w.nodeWith(t, "sy2", Symmetric, "--turn", turn)
	relayedDial(t, a, b)
	if p.Exited() {
		t.Fatalf("coturn exited; log:\n%s", p.Tail(30))
	}
}

// TestRelayCredentialRenewal: hub credentials live 6 s. A relayed
// connection outlives its credential, and the next relayed dial after the
// expiry gets a fresh one over signaling.
func TestRelayCredentialRenewal(t *testing.T) {
	w := newRelayWorld(t, "-turn-cred-ttl", "6s")
	a := w.nodeWith(t, "sy1", Symmetric)
	b := w.nodeWith(t, "sy2", Symmetric)
	c := w.nodeWith(t, "pr3", PortRestricted)
	relayedDial(t, a, b)
	issued := w.hubMetric(t, "a2al_turn_credentials_issued_total")
	time.Sleep(7 * time.Second) // a's credential has expired
	relayedDial(t, a, c)
	if now := w.hubMetric(t, "a2al_turn_credentials_issued_total"); now <= issued {
		t.Fatalf("credentials issued %v -> %v: not renewed", issued, now)
	}
	fn, err := a.FindNode(b.Address)
	if err != nil || !fn.OK || fn.Transport != "modeB" {
		t.Fatalf("first relayed connection after its credential expired: %+v %v", fn, err)
	}
	if allocs := w.hubMetric(t, "a2al_turn_allocations"); allocs < 2 {
		t.Fatalf("hub shows %v allocations, want both relayed paths", allocs)
	}
}

// TestRelayBandwidthLimit: the hub polices each allocation at 128 KiB/s. A
// 512 KiB echo (a2al-node connect from behind a symmetric NAT to a node
// behind another) goes through the relay intact, slowed down, and the hub
// counts the dropped bytes.
func TestRelayBandwidthLimit(t *testing.T) {
	w := newRelayWorld(t, "-turn-alloc-bw", "131072")
	b := w.nodeWith(t, "sy2", Symmetric)
	if _, err := b.WaitReady(90 * time.Second); err != nil {
		t.Fatal(err)
	}
	ch := w.lab.AddNATHost("sy3", Symmetric)
	data := make([]byte, 512<<10)
	rand.Read(data)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := ch.NS.Command(ctx, Binary(t, "a2al-node"), "connect", "--data-dir", t.TempDir(), "--timeout", "80s",
		"--bootstrap", fmt.Sprintf("%s.5:%d", WANNet, NodePort), "--hub", w.hub.URL(), "--stun", w.hub.STUN(), b.Address)
	cmd.Stdin = bytes.NewReader(data)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("connect: %v\n%s", err, errOut.String())
	}
	took := time.Since(start)
	if !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("echo through the relay: got %d bytes, want the %d sent\n%s", out.Len(), len(data), errOut.String())
	}
	dropped := w.hubMetric(t, `a2al_turn_dropped_bytes_total{limit="allocation"}`)
	t.Logf("512 KiB echoed through a relay policed at 128 KiB/s in %v (join and dial included); %v bytes dropped by the limit",
		took.Round(time.Millisecond), dropped)
	if dropped == 0 {
		t.Fatal("the allocation limit dropped nothing")
	}
}
