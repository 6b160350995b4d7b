package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/host"
	"github.com/a2alnode/a2al/protocol"
)

// attackHalfOpen: one IP opens many connections to the hub and sends half
// an HTTP request on each, then holds them; a legitimate client connects
// meanwhile.
func attackHalfOpen(ctx context.Context, e *env, s *Summary) (r Row) {
	h, err := startHub(e.bins)
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer h.stop()
	r.MemBeforeKB = h.rssKB()
	n := max(10, 8000/e.scale)
	partial := []byte("GET /v2/signal HTTP/1.1\r\nHost: " + h.http + "\r\nUpgrade: websocket\r\n")
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 50, 1)}
	d := net.Dialer{LocalAddr: src, Timeout: 2 * time.Second}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	maxFDs, opened := h.fds(), 0
	for i := 0; i < n && ctx.Err() == nil; i++ {
		c, err := d.DialContext(ctx, "tcp", h.http)
		if err != nil {
			continue
		}
		conns = append(conns, c)
		opened++
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(partial); err == nil {
			r.AttackerBytes += int64(len(partial))
		}
		if i%500 == 0 {
			maxFDs = max(maxFDs, h.fds())
		}
	}
	r.AttackerPkts = int64(opened)
	// Hold them; a legitimate client registers in the middle.
	ok := make(chan bool, 1)
	go func() {
		c, err := newCaller(ctx, h.url, srcIP(51, 1))
		if err == nil {
			c.Close()
		}
		ok <- err == nil
	}()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		maxFDs = max(maxFDs, h.fds())
		time.Sleep(200 * time.Millisecond)
	}
	legit := <-ok
	r.MemAfterKB = h.rssKB()
	alive := 0
	buf := make([]byte, 1)
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				alive++
			}
		}
	}
	s.HubHalfOpenLegitOK, s.HubHalfOpenMaxFDs = ptr(legit), ptr(maxFDs)
	r.VictimSent = fmt.Sprintf("hub max %d fds; %d/%d held open after 5 s", maxFDs, alive, opened)
	r.Legit = fmt.Sprintf("legit client registered: %v", legit)
	return r
}

// attackAPIHost: requests to the control API carrying a foreign Host header
// (DNS rebinding) — how many routes answer.
func attackAPIHost(ctx context.Context, e *env, s *Summary) (r Row) {
	v, err := startNode(e.bins, e.dir(), nil)
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer v.stop()
	r.MemBeforeKB = v.rssKB()
	routes := []string{"/api/status", "/api/resolve?addr=" + v.addr.String() + "&timeout=1s", "/debug/host", "/metrics"}
	answered := 0
	for _, p := range routes {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+v.api+p, nil)
		if err != nil {
			continue
		}
		req.Host = "evil.example"
		r.AttackerPkts++
		resp, err := apiClient.Do(req)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			answered++
		}
	}
	r.MemAfterKB = v.rssKB()
	legit := false
	if _, err := v.status(); err == nil {
		legit = true
	}
	s.ControlAPIForeignHostOK = ptr(answered)
	r.VictimSent = fmt.Sprintf("%d/%d routes answered Host: evil.example", answered, len(routes))
	r.Legit = fmt.Sprintf("Host: 127.0.0.1 answered: %v", legit)
	return r
}

// attackModeA: one IP opens 300 Mode A connections from fresh identities and
// keeps them alive; then a legitimate node (in this process, knowing the
// victim's endpoint record) dials it from another address and echoes data.
func attackModeA(ctx context.Context, e *env, s *Summary) (r Row) {
	_, v, stopVictim, err := startHubAndVictim(e)
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer stopVictim()
	legit, err := newLegitHost(v)
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer legit.Close()
	baseline := echoDial(ctx, legit, v.addr)
	r.MemBeforeKB = v.rssKB()
	uc, err := udpFrom(net.IPv4(127, 0, 90, 1))
	if err != nil {
		return Row{Err: err.Error()}
	}
	tr := &quic.Transport{Conn: uc}
	defer tr.Close()
	qconf := &quic.Config{KeepAlivePeriod: 2 * time.Second, MaxIdleTimeout: 30 * time.Second,
		HandshakeIdleTimeout: 3 * time.Second}
	n := max(4, 300/e.scale)
	var conns []*quic.Conn
	defer func() {
		for _, c := range conns {
			_ = c.CloseWithError(0, "")
		}
	}()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		id, err := host.NewIdentity(key, time.Now())
		if err != nil {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		c, err := tr.Dial(dctx, v.udp, id.ClientTLS(v.addr, host.ALPNModeA), qconf)
		cancel()
		r.AttackerPkts++
		if err == nil {
			conns = append(conns, c)
		}
	}
	time.Sleep(2 * time.Second)
	alive := func() int {
		k := 0
		for _, c := range conns {
			if c.Context().Err() == nil {
				k++
			}
		}
		return k
	}
	open := alive()
	ok := echoDial(ctx, legit, v.addr)
	r.MemAfterKB = v.rssKB()
	s.ModeALegitOK = ptr(ok)
	r.VictimSent = fmt.Sprintf("%d/%d attacker conns open after 2 s", open, n)
	r.Legit = fmt.Sprintf("legit dial+echo ok: %v (no attack: %v)", ok, baseline)
	return r
}

// newLegitHost starts an in-process node on its own loopback address that
// holds v's endpoint record (fetched from v), so it dials v directly.
func newLegitHost(v *node) (*host.Host, error) {
	c, err := udpFrom(net.IPv4(127, 0, 91, 1))
	if err != nil {
		return nil, err
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	lh, err := host.New(host.Config{Key: key, PacketConn: c, DisableNAT: true, DisableMaintenance: true,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		c.Close()
		return nil, err
	}
	vid := a2al.NodeIDFromAddress(v.addr)
	hc, err := udpFrom(net.IPv4(127, 0, 91, 2))
	if err != nil {
		lh.Close()
		return nil, err
	}
	defer hc.Close()
	var recs []protocol.SignedRecord
	_ = waitUntil(15*time.Second, func() bool {
		recs = findValue(hc, v.udp, newIdent(), vid, protocol.RecTypeEndpoint)
		return len(recs) > 0
	})
	if len(recs) == 0 {
		lh.Close()
		return nil, fmt.Errorf("victim published no endpoint record")
	}
	if err := lh.Node().LocalStorePut(vid, recs[0]); err != nil {
		lh.Close()
		return nil, fmt.Errorf("legit host: keep victim record: %w", err)
	}
	return lh, nil
}

// echoDial: a Mode A dial to addr whose stream echoes what we write.
func echoDial(ctx context.Context, lh *host.Host, addr a2al.Address) bool {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := lh.Dial(dctx, addr)
	if err != nil {
		return false
	}
	defer c.Close()
	st, err := c.OpenStream(dctx)
	if err != nil {
		return false
	}
	_ = st.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("attackbench echo")
	if _, err := st.Write(msg); err != nil {
		return false
	}
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(st, buf)
	return err == nil && string(buf) == string(msg)
}
