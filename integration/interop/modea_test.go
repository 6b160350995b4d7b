package interop

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/a2alnode/a2al/integration/natlab"
	"github.com/a2alnode/a2al/internal/testserve"
)

// modeaScenarios: application connections with the agent-route frame, and
// services reached through tunnels, delegated agents on both sides.
var modeaScenarios = []Scenario{
	{"modea echo (route frame)", dirRefToOurs, func(t *testing.T, n *Net) {
		// The reference dials our node (a2r2 route stream first, then the
		// data stream) and our echo must return exactly the data: the route
		// stream never reaches our application.
		before := routeFrames(t, n.Ours, "a2r2")
		port := refConnect(t, n.Ref1, n.Ours.Address)
		msg := "echo through the reference's tunnel"
		if got := tcpRoundTripNS(t, n.W, fmt.Sprintf("127.0.0.1:%s", port), msg, false); got != msg {
			t.Fatalf("echo returned %q", got)
		}
		if after := routeFrames(t, n.Ours, "a2r2"); after <= before {
			t.Fatalf("our node answered no a2r2 route frame (%v before, %v after)", before, after)
		}
	}},
	{"tunnel to delegated agent", dirOursToRef, func(t *testing.T, n *Net) {
		// A reference agent (delegated by a fresh owner) with a TCP service;
		// our tunnel resolves its record, checks its delegated certificate,
		// speaks the route frame and carries a half-closed TCP exchange.
		svc := upperServerNS(t, n.W, n.Ref1.IP)
		var gen struct {
			OpKey string `json:"operational_private_key_hex"`
			Proof string `json:"delegation_proof_hex"`
		}
		if err := n.Ref1.Call(http.MethodPost, "/identity/generate", struct{}{}, &gen); err != nil {
			t.Fatal(err)
		}
		var reg struct {
			AID string `json:"aid"`
		}
		if err := n.Ref1.Call(http.MethodPost, "/agents", map[string]string{"operational_private_key_hex": gen.OpKey,
			"delegation_proof_hex": gen.Proof, "service_tcp": svc}, &reg); err != nil {
			t.Fatal(err)
		}
		if err := n.Ref1.Call(http.MethodPost, "/agents/"+reg.AID+"/publish", struct{}{}, nil); err != nil {
			t.Fatal(err)
		}
		ip := n.W.NextIP()
		listen := ip + ":9000"
		p := n.W.Start("tunnel-to-ref", natlab.Binary(t, "a2al-node"), "tunnel", reg.AID, "--listen", listen,
			"--udp", ip+":0", "--bootstrap", n.Ref1.UDP, "--data-dir", filepath.Join(n.W.Dir, "tunnel-to-ref"))
		defer p.Stop(5 * time.Second)
		msg := "our tunnel to a reference agent"
		var got string
		if err := Eventually(30*time.Second, func() error {
			got = tcpRoundTripNS(t, n.W, listen, msg, true)
			if got != strings.ToUpper(msg) {
				return fmt.Errorf("service answered %q; tunnel log:\n%s", got, p.Tail(5))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}},
	{"tunnel to delegated agent", dirRefToOurs, func(t *testing.T, n *Net) {
		// Our node hosts a delegated agent with a public service and an
		// allow-listed one; the reference's /connect reaches the first and
		// is refused by the second, with the reason in our log.
		s := newServingNode(t, n)
		port := Eventually2(t, 30*time.Second, func() (string, error) { return refConnectErr(n.Ref1, s.pub) })
		msg := "the reference to our delegated agent"
		if got := tcpRoundTripNS(t, n.W, "127.0.0.1:"+port, msg, true); got != strings.ToUpper(msg) {
			t.Fatalf("service answered %q", got)
		}
		if port, err := refConnectErr(n.Ref1, s.private); err == nil {
			tcpRoundTripNS(t, n.W, "127.0.0.1:"+port, "refused", true)
		}
		if err := Eventually(10*time.Second, func() error {
			if !strings.Contains(s.node.Proc.Tail(200), "is not on the allow-list") {
				return fmt.Errorf("no allow-list refusal in our log")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}},
}

// routeFrames reads a2al_modea_route_frames_total{magic} from our node's
// /metrics (0 when the series does not exist yet).
func routeFrames(t *testing.T, o *OurNode, magic string) float64 {
	t.Helper()
	body, err := o.w.NS.Get(fmt.Sprintf("http://%s:%d/metrics", o.IP, oursAPIPort), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("a2al_modea_route_frames_total{magic=%q} ", magic)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", l, err)
			}
			return f
		}
	}
	return 0
}

type servingNode struct {
	node         *OurNode
	pub, private string // delegated agent addresses
}

// newServingNode starts a second node of ours with two delegated agents:
// "pub" (public service) and "priv" (allow-list without the reference).
func newServingNode(t *testing.T, n *Net) servingNode {
	bin := natlab.Binary(t, "a2al-node")
	dir := filepath.Join(n.W.Dir, "svc")
	agent := func(name string) string {
		owner := filepath.Join(n.W.Dir, name+"-owner.key")
		// Local key operations only: no network, so outside the namespace.
		if out, err := exec.Command(bin, "id", "--key", owner, "--data-dir", dir).CombinedOutput(); err != nil {
			t.Fatalf("owner key: %v\n%s", err, out)
		}
		out, err := exec.Command(bin, "agent", "delegate", name, "--owner-key", owner, "--data-dir", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("agent delegate: %v\n%s", err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if a, ok := strings.CutPrefix(l, "address "); ok {
				return strings.TrimSpace(a)
			}
		}
		t.Fatalf("no address in %q", out)
		return ""
	}
	s := servingNode{pub: agent("pub"), private: agent("priv")}
	pubSvc := upperServerNS(t, n.W, "127.0.0.1")
	privSvc := upperServerNS(t, n.W, "127.0.0.1")
	s.node = n.W.StartOurs("svc", OurOptions{Bootstrap: []string{n.Ref1.UDP}, Args: []string{
		"--serve", "pub=tcp:" + pubSvc, "--public", "pub",
		"--serve", "priv=tcp:" + privSvc, "--allow", "priv=" + n.Ours.Address}})
	return s
}

// refConnect asks ref for a one-shot tunnel to aid and returns its port.
func refConnect(t *testing.T, ref *RefNode, aid string) string {
	t.Helper()
	return Eventually2(t, 30*time.Second, func() (string, error) { return refConnectErr(ref, aid) })
}

func refConnectErr(ref *RefNode, aid string) (string, error) {
	var out struct {
		Tunnel string `json:"tunnel"`
	}
	if err := ref.Call(http.MethodPost, "/connect/"+aid, struct{}{}, &out); err != nil {
		return "", err
	}
	_, port, err := net.SplitHostPort(out.Tunnel)
	return port, err
}

// Eventually2 retries f until it succeeds or d passes, and returns its value.
func Eventually2(t *testing.T, d time.Duration, f func() (string, error)) string {
	t.Helper()
	var v string
	if err := Eventually(d, func() error {
		var err error
		v, err = f()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// upperServerNS listens on ip inside the namespace and answers each TCP
// connection, after its EOF, with the bytes upper-cased; it returns the
// address.
func upperServerNS(t *testing.T, w *World, ip string) string {
	t.Helper()
	ln, err := w.ListenTCP(ip + ":0")
	if err != nil {
		t.Fatal(err)
	}
	return testserve.Serve(t, ln, 20*time.Second, func(c net.Conn) {
		b, _ := io.ReadAll(io.LimitReader(c, 1<<20))
		c.Write(bytes.ToUpper(b))
	}).String()
}

// tcpRoundTripNS connects to addr inside the namespace, sends msg and reads
// the answer: after a write shutdown (halfClose) until EOF, else len(msg)
// bytes. It returns what came back ("" on any error).
func tcpRoundTripNS(t *testing.T, w *World, addr, msg string, halfClose bool) string {
	t.Helper()
	c, err := w.DialTCP(addr, 5*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return ""
	}
	if halfClose {
		_ = c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		return string(b)
	}
	b := make([]byte, len(msg))
	n, _ := io.ReadFull(c, b)
	return string(b[:n])
}
