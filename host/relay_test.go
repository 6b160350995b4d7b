package host

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pion/turn/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/signal"
)

// punchRelayed punches a symmetric-to-symmetric pair and checks the
// connection is relayed on both sides and carries a FIND_NODE over Mode B.
func punchRelayed(t *testing.T, a, b *Host, erB *protocol.EndpointRecord) PunchRecord {
	t.Helper()
	n := len(a.Punches())
	a.sched.Enqueue(b.NodeID(), erB, PrioHigh)
	waitFor(t, "punch outcome", func() bool { return len(a.Punches()) > n })
	p := a.Punches()[n]
	if !p.OK || p.PathType != PathRelayed {
		t.Fatalf("punch %+v, want a relayed connection", p)
	}
	waitFor(t, "callee pooled", func() bool { return b.pool.HasConn(a.NodeID()) })
	for _, h := range []*Host{a, b} {
		peer := b.NodeID()
		if h == b {
			peer = a.NodeID()
		}
		if pt, _, _ := h.pool.Path(peer); pt != PathRelayed {
			t.Fatalf("pool path %q on %s, want relayed", pt, h.Address().String())
		}
	}
	findNodeOverPool(t, a, b)
	return p
}

func findNodeOverPool(t *testing.T, a, b *Host) {
	t.Helper()
	remote, _ := a.pool.RemoteAddr(b.NodeID())
	before := a.pool.Stats().SentDatagrams.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.node.FindNode(ctx, remote, a.NodeID()); err != nil {
		t.Fatalf("FIND_NODE over the relayed pool connection: %v", err)
	}
	if a.pool.Stats().SentDatagrams.Load() == before {
		t.Fatal("FIND_NODE did not travel over Mode B")
	}
}

// learnRecord gives a b's signed endpoint record. (In the sim a DHT
// resolve involving a symmetric node finds no record: a known gap of the
// DHT layer, not of the relay, so the relay tests hand records over.)
func learnRecord(t *testing.T, a, b *Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec, err := b.Publish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.node.LocalStorePut(b.NodeID(), rec); err != nil {
		t.Fatal(err)
	}
}

// echoAccept serves one Mode A connection on h, echoing its first stream.
func echoAccept(ctx context.Context, h *Host) {
	c, err := h.Accept(ctx)
	if err != nil {
		return
	}
	st, err := c.AcceptStream(ctx)
	if err != nil {
		return
	}
	io.Copy(st, st)
	st.Close()
}

func echoOver(t *testing.T, ctx context.Context, c *Conn, msg string) {
	t.Helper()
	st, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte(msg))
	st.Close()
	got, err := io.ReadAll(st)
	if err != nil || string(got) != msg {
		t.Fatalf("echo %q err %v", got, err)
	}
}

// TestVNetRelayModeA: Mode A works over a relayed path in both directions
// (the caller's allocation carries it; the callee dials the relay address).
func TestVNetRelayModeA(t *testing.T) {
	s := newSim(t, 0)
	a, _ := s.addNode(natprobe.TypeSymmetric)
	b, _ := s.addNode(natprobe.TypeSymmetric)
	learnRecord(t, a, b)
	learnRecord(t, b, a)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go echoAccept(ctx, b)
	c, err := a.Dial(ctx, b.Address())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if c.Path != string(PathRelayed) {
		t.Fatalf("path %q, want relayed", c.Path)
	}
	echoOver(t, ctx, c, "through the relay")
	// And back: b has the pooled relayed path too (as callee, without its own
	// allocation); its Mode A dial goes to a's relay address.
	go echoAccept(ctx, a)
	c2, err := b.Dial(ctx, a.Address())
	if err != nil {
		t.Fatalf("reverse dial: %v", err)
	}
	defer c2.Close()
	echoOver(t, ctx, c2, "and back")
}

// TestVNetRelayExternalTURN: with no hub relay, nodes use a TURN server they
// were configured with: static credentials (a plain pion server, as coturn
// with lt-cred-mech) or a coturn-style shared secret (REST credentials).
func TestVNetRelayExternalTURN(t *testing.T) {
	s := newSim(t, 0)
	static := startStaticTURN(t, s)
	secretURL := s.turn.URLs()[0]
	for name, ts := range map[string]TURNServer{
		"static": {URL: static, Username: "alice", Password: "wonderland"},
		"secret": {URL: secretURL, Secret: simTURNSecret},
	} {
		t.Run(name, func(t *testing.T) {
			mod := func(c *Config) { c.NoHubTURN, c.TURN = true, []TURNServer{ts} }
			a, _ := s.addNodeCfg(natprobe.TypeSymmetric, mod)
			b, erB := s.addNodeCfg(natprobe.TypeSymmetric, mod)
			punchRelayed(t, a, b, erB)
			for _, h := range a.hubs {
				if n := h.TURNRenewals(); n != 0 {
					t.Fatalf("asked the hub for %d credentials with NoHubTURN", n)
				}
			}
			if rec := a.Payload(); len(rec.Turns) != 1 || rec.Turns[0] != "turn://"+ts.URL[len("turn:"):] {
				t.Fatalf("record turn hints %v, want the configured relay without credentials", rec.Turns)
			}
		})
	}
}

// startStaticTURN runs a plain pion TURN server with one static user on an
// open host of the sim.
func startStaticTURN(t *testing.T, s *sim) string {
	th, err := s.w.AddOpenHost()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := th.Net.ListenPacket("udp4", th.Bind(3478))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm: "static.example",
		AuthHandler: func(user, realm string, _ net.Addr) ([]byte, bool) {
			if user != "alice" {
				return nil, false
			}
			return turn.GenerateAuthKey(user, realm, "wonderland"), true
		},
		PacketConnConfigs: []turn.PacketConnConfig{{PacketConn: pc, RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{
			RelayAddress: th.IP, Address: th.IP.String(), Net: th.Net}}},
		LoggerFactory: quietPion(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return "turn:" + th.Bind(3478) + "?transport=udp"
}

// TestVNetRelayCredentialRenewal: hub credentials live 2 s. A relayed
// connection made with the first one keeps working after it expired, and
// the next relayed punch fetches a fresh credential over signaling.
func TestVNetRelayCredentialRenewal(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a credential to expire")
	}
	s := newSimTURN(t, 0, signal.TURNAuthConfig{TTL: 2 * time.Second}, signal.TURNLimits{})
	a, _ := s.addNode(natprobe.TypeSymmetric)
	b, erB := s.addNode(natprobe.TypeSymmetric)
	c, erC := s.addNode(natprobe.TypeSymmetric)
	punchRelayed(t, a, b, erB)
	if n := a.hubs[0].TURNRenewals(); n != 1 {
		t.Fatalf("credentials fetched %d times, want 1", n)
	}
	time.Sleep(2500 * time.Millisecond) // the first credential has expired
	punchRelayed(t, a, c, erC)
	if n := a.hubs[0].TURNRenewals(); n != 2 {
		t.Fatalf("credentials fetched %d times, want 2 (renewed)", n)
	}
	findNodeOverPool(t, a, b) // made with the expired credential, still relayed
}

// TestVNetRelayBandwidthLimit: the hub polices a relayed allocation at
// 64 KiB/s; a 384 KiB Mode A transfer still completes (QUIC adapts to the
// drops) and the drops are counted.
func TestVNetRelayBandwidthLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("bulk transfer")
	}
	s := newSimTURN(t, 0, signal.TURNAuthConfig{}, signal.TURNLimits{AllocBandwidth: 64 << 10})
	a, _ := s.addNode(natprobe.TypeSymmetric)
	b, _ := s.addNode(natprobe.TypeSymmetric)
	learnRecord(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		c, err := b.Accept(ctx)
		if err != nil {
			return
		}
		st, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		n, _ := io.Copy(io.Discard, st)
		st.Write([]byte{byte(n >> 16)})
		st.Close()
	}()
	c, err := a.Dial(ctx, b.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Path != string(PathRelayed) {
		t.Fatalf("path %q, want relayed", c.Path)
	}
	st, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	const size = 384 << 10
	if _, err := st.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	ack, err := io.ReadAll(st)
	if err != nil || len(ack) != 1 || int(ack[0]) != size>>16 {
		t.Fatalf("transfer ack %v err %v", ack, err)
	}
	t.Logf("384 KiB through a relay policed at 64 KiB/s: %v", time.Since(start).Round(time.Millisecond))
	if d := counterValue(t, s.relayReg, "a2al_turn_dropped_bytes_total", "allocation"); d == 0 {
		t.Fatal("no bytes dropped by the allocation limit")
	}
}

// counterValue reads one counter from reg: the sample with a label of value
// label, or the unlabelled one for "".
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" && len(m.GetLabel()) == 0 {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestVNetRelayUpgrade: a punchable pair that ended up relayed (forced here:
// the caller offered only relay candidates) is punched again later and the
// direct connection replaces the relayed one in both pools.
func TestVNetRelayUpgrade(t *testing.T) {
	s := newSim(t, 0)
	a, _ := s.addNodeCfg(natprobe.TypePortRestricted, func(c *Config) { c.RelayUpgrade = 300 * time.Millisecond })
	b, erB := s.addNode(natprobe.TypePortRestricted)
	a.env.relayOnly.Store(true)
	punchRelayed(t, a, b, erB)
	a.env.relayOnly.Store(false)
	waitFor(t, "upgrade to a punched path", func() bool {
		pa, _, _ := a.pool.Path(b.NodeID())
		pb, _, _ := b.pool.Path(a.NodeID())
		return pa == PathPunched && pb == PathPunched
	})
	findNodeOverPool(t, a, b)
	if got := counterValue(t, a.m.reg, "a2al_relay_upgrades_total", ""); got != 1 {
		t.Fatalf("upgrades counted %v, want 1", got)
	}
}
