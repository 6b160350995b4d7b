package dht

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
	"github.com/a2alnode/a2al/transport"
)

func udpNode(t *testing.T, ip string, seed uint64, mod func(*Config)) *Node {
	t.Helper()
	tr, err := transport.ListenUDP("udp4", ip+":0")
	if err != nil {
		t.Skipf("cannot bind %s: %v", ip, err)
	}
	cfg := Config{Transport: tr, Keystore: newTestKeys(seed), Logger: quietLogger()}
	if mod != nil {
		mod(&cfg)
	}
	n, err := NewNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func TestNATProbe(t *testing.T) {
	a := udpNode(t, "127.50.1.1", 1, nil)
	b := udpNode(t, "127.51.1.1", 2, nil)
	la := a.LocalAddr().(*net.UDPAddr)
	claimed := protocol.EncodeUDPAddr(la.IP, uint16(la.Port))
	short := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 300*time.Millisecond)
	}
	// Loopback is not a public address: the responder refuses.
	ctx, cancel := short()
	ok, err := a.SendNATProbeReq(ctx, b.LocalAddr(), claimed)
	cancel()
	if ok || err != nil {
		t.Fatalf("private claimed address echoed: %v %v", ok, err)
	}
	b.nat.allowPrivate.Store(true)
	for i := 0; i < natEchoBudget; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ok, err := a.SendNATProbeReq(ctx, b.LocalAddr(), claimed)
		cancel()
		if !ok || err != nil {
			t.Fatalf("probe %d: %v %v", i, ok, err)
		}
	}
	// Budget exhausted within the window.
	ctx, cancel = short()
	if ok, _ := a.SendNATProbeReq(ctx, b.LocalAddr(), claimed); ok {
		t.Fatal("echo budget not enforced")
	}
	cancel()
	// A claimed IP other than the requester's is never echoed (no reflection).
	ctx, cancel = short()
	if ok, _ := a.SendNATProbeReq(ctx, b.LocalAddr(), protocol.EncodeUDPAddr(net.IPv4(127, 52, 1, 1), 9)); ok {
		t.Fatal("echoed to a third party")
	}
	cancel()
	if _, err := a.SendNATProbeReq(context.Background(), b.LocalAddr(), []byte{1, 2}); err == nil {
		t.Fatal("bad claimed address accepted")
	}
}

func TestSeenPeersPersistence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "seen")
	c := newMemCluster(t)
	a := c.newNode(1, func(cfg *Config) { cfg.SeenPeersPath = path })
	a.Start()
	for i := 2; i <= 4; i++ {
		p := c.newNode(uint64(i), nil)
		p.Start()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := a.Ping(ctx, p.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	if st := a.DebugStatsData(); st.UniqueNodesSinceStart != 3 || st.Reach1h != 3 {
		t.Fatalf("stats %+v", st)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("seen-peers file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if lines := strings.Count(string(data), "\n"); lines != 3 {
		t.Fatalf("%d lines:\n%s", lines, data)
	}
	// Garbage and expired lines are skipped on load.
	old := fmt.Sprintf("%064x %d\n", 5, time.Now().Add(-8*24*time.Hour).Unix())
	if err := os.WriteFile(path, append(data, []byte("# comment\nzz 1\n"+old)...), 0o600); err != nil {
		t.Fatal(err)
	}
	tr, _ := c.net.NewTransport("reloaded")
	b, err := NewNode(Config{Transport: tr, Keystore: newTestKeys(1), Logger: quietLogger(), SeenPeersPath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if st := b.DebugStatsData(); st.Reach7d != 3 || st.UniqueNodesSinceStart != 0 {
		t.Fatalf("reloaded stats %+v", st)
	}
}

func TestDebugHTTP(t *testing.T) {
	c := newMemCluster(t)
	c.build(5, nil)
	n := c.nodes[2]
	k := newTestKeys(77)
	if err := n.LocalStorePut(a2al.NodeID{}, endpointRecord(t, k, 1, time.Now(), 600, "")); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(n.DebugHTTPHandler())
	defer srv.Close()
	get := func(path string) map[string]any {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
			t.Fatalf("%s content type %q", path, ct)
		}
		body, _ := io.ReadAll(resp.Body)
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("%s: %v\n%s", path, err, body)
		}
		if m, ok := v.(map[string]any); ok {
			return m
		}
		return map[string]any{"list": v}
	}
	id := get("/debug/identity")
	if id["node_id_hex"] == "" || id["local_addr"] != n.LocalAddr().String() {
		t.Fatalf("identity %v", id)
	}
	rt := get("/debug/routing")
	if rt["total_peers"].(float64) < 1 || rt["peers"] == nil {
		t.Fatalf("routing %v", rt)
	}
	st := get("/debug/stats")
	for _, key := range []string{"rx_packets_verified", "tx_packets", "rpc_completed", "total_peers", "reach_7d", "estimated_network_size", "unique_nodes_since_start"} {
		if _, ok := st[key]; !ok {
			t.Fatalf("stats lacks %s: %v", key, st)
		}
	}
	if rows := get("/debug/store")["list"].([]any); len(rows) != 1 {
		t.Fatalf("store rows %v", rows)
	}
	if h := get("/debug/health"); h["pending_rpcs"] == nil {
		t.Fatalf("health %v", h)
	}
	resp, err := http.Post(srv.URL+"/debug/stats", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST status %d", resp.StatusCode)
	}
	stop, err := n.StartDebugHTTP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop()
	stop()
	var nilNode *Node
	if _, err := nilNode.StartDebugHTTP("127.0.0.1:0"); err == nil {
		t.Fatal("nil node served")
	}
}

func TestBootstrapVariantsAndUDPHelpers(t *testing.T) {
	seed := udpNode(t, "127.60.1.1", 1, nil)
	a := udpNode(t, "127.61.1.1", 2, nil)
	b := udpNode(t, "127.62.1.1", 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.StartWithBootstrap(ctx, []net.Addr{seed.LocalAddr()}); err != nil {
		t.Fatalf("StartWithBootstrap: %v", err)
	}
	sa := seed.LocalAddr().(*net.UDPAddr)
	info := protocol.NodeInfo{Address: seed.Address(), NodeID: seed.NodeID(), IP: sa.IP.To4(), Port: uint16(sa.Port)}
	if err := b.Bootstrap(ctx, []BootstrapSeed{{Addr: seed.LocalAddr(), Info: info}}); err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	waitFor(t, 5*time.Second, "b learns a via the seed", func() bool {
		for _, ad := range b.BootstrapCandidateAddrs(10) {
			if ad.String() == a.LocalAddr().String() {
				return true
			}
		}
		return false
	})
	if got := b.BootstrapCandidateAddrs(1); len(got) != 1 {
		t.Fatalf("max not honoured: %v", got)
	}
	if b.BootstrapCandidateAddrs(0) != nil {
		t.Fatal("max 0")
	}
	dead := &net.UDPAddr{IP: net.IPv4(127, 63, 1, 1), Port: 9}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel2()
	if err := b.BootstrapAddrs(ctx2, []net.Addr{dead}); err == nil {
		t.Fatal("unreachable seeds reported success")
	}
	if b.EstimatedNetworkSize() <= 0 {
		t.Fatal("size estimate 0 with peers")
	}
	if est, _ := b.EstimatedNetworkSizeFiltered(time.Now().Add(time.Hour)); est != 0 {
		t.Fatalf("future cutoff estimate %d", est)
	}
	// Hairpin: our public IP with another port.
	if b.SelfExtIP() != nil {
		t.Fatal("ext IP set")
	}
	b.SetSelfExtIP(net.IPv4(198, 51, 100, 7))
	if !b.SelfExtIP().Equal(net.IPv4(198, 51, 100, 7)) {
		t.Fatal("SelfExtIP")
	}
	if !b.isHairpin(&net.UDPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 1}) || b.isHairpin(&net.UDPAddr{IP: net.IPv4(198, 51, 100, 8), Port: 1}) {
		t.Fatal("hairpin classification")
	}
	b.SetSelfExtIP(nil)
}

func TestPassiveRoutingPublishesFromTable(t *testing.T) {
	c := newMemCluster(t)
	c.build(12, nil)
	p := c.nodes[3]
	p.SetPassiveRouting(true)
	if !p.passive.Load() {
		t.Fatal("passive flag")
	}
	key := p.NodeID()
	rec := endpointRecord(t, c.keys[3], 1, time.Now(), 600, "")
	if err := p.PublishEndpointRecord(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "replicas from the local table", func() bool { return p.RepSetSize(key, key) > 0 })
	// Re-publishing the identical record restarts replication instead of
	// failing with ErrStaleRecord (docs/reference-defects.md W-38); an older one is refused.
	if err := p.PublishEndpointRecord(context.Background(), rec); err != nil {
		t.Fatalf("identical re-publish: %v", err)
	}
	newer := endpointRecord(t, c.keys[3], 2, time.Now(), 600, "")
	if err := p.PublishEndpointRecord(context.Background(), newer); err != nil {
		t.Fatal(err)
	}
	if err := p.PublishEndpointRecord(context.Background(), rec); err == nil {
		t.Fatal("older record accepted")
	}
}
