package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
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
	var mu sync.Mutex
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
			mu.Lock()
			answered++
			mu.Unlock()
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
