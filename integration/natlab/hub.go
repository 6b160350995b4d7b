package natlab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// HTTPClient returns a client whose connections are opened inside the
// namespace (lab addresses are unreachable from the root namespace).
func (n NetNS) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				d := timeout
				if dl, ok := ctx.Deadline(); ok {
					d = time.Until(dl)
				}
				var c net.Conn
				err := n.Do(func() error {
					var err error
					c, err = net.DialTimeout(network, addr, d)
					return err
				})
				return c, err
			},
		},
	}
}

// Get fetches url from inside the namespace (bounded by timeout and 8 MiB).
func (n NetNS) Get(url string, timeout time.Duration) ([]byte, error) {
	return n.Request(http.MethodGet, url, timeout)
}

// Request sends a body-less request from inside the namespace; a non-2xx
// answer is an error that still returns the body.
func (n NetNS) Request(method, url string, timeout time.Duration) ([]byte, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return nil, fmt.Errorf("natlab: %s %s: %w", method, url, err)
	}
	resp, err := n.HTTPClient(timeout).Do(req)
	if err != nil {
		return nil, fmt.Errorf("natlab: %s %s from %s: %w", method, url, n.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("natlab: %s %s: read body: %w", method, url, err)
	}
	if resp.StatusCode/100 != 2 {
		return body, fmt.Errorf("natlab: %s %s: HTTP %s: %s", method, url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// Ports used by the lab's signal-hub.
const (
	HubWSPort   = 4122
	HubSTUNPort = 3478
	HubTURNPort = 3480 // TURN over UDP and TCP (docs/relay.md)
)

// Hub is a signal-hub (WebSocket signaling + RFC 5780 STUN on two IPs) on
// the WAN.
type Hub struct {
	Host *Host
	Proc *Proc
	// Args are extra signal-hub flags (e.g. "-turn-addr", "off" or TURN
	// limits), applied on the next Start.
	Args  []string
	bin   string
	oneIP bool // STUN on HubIP only (change-port, no change-IP)
}

// URL is the WebSocket base URL nodes use.
func (h *Hub) URL() string { return fmt.Sprintf("ws://%s:%d", HubIP, HubWSPort) }

// STUN is the primary STUN server address.
func (h *Hub) STUN() string { return fmt.Sprintf("%s:%d", HubIP, HubSTUNPort) }

// StartHub builds cmd/signal-hub, runs it on the WAN at HubIP (STUN change-IP
// on HubAltIP) and waits until /healthz answers.
func (l *Lab) StartHub(t testing.TB) *Hub {
	t.Helper()
	h := &Hub{bin: Binary(t, "signal-hub")}
	h.Host = l.AddWANHost("hub", HubIP, HubAltIP)
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	return h
}

// StartHubOneIP is StartHub with a single IP: its STUN server can change
// port but not IP, so filtering needs the DHT NAT probe.
func (l *Lab) StartHubOneIP(t testing.TB) *Hub {
	t.Helper()
	h := &Hub{bin: Binary(t, "signal-hub"), oneIP: true}
	h.Host = l.AddWANHost("hub", HubIP)
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	return h
}

// Start (re)starts the hub process and waits for /healthz.
func (h *Hub) Start() error {
	args := []string{"-listen", fmt.Sprintf("%s:%d", HubIP, HubWSPort),
		"-stun-addr", fmt.Sprintf("%s:%d", HubIP, HubSTUNPort),
		"-turn-addr", fmt.Sprintf("%s:%d", HubIP, HubTURNPort),
		"-log-level", "debug"}
	if !h.oneIP {
		args = append(args, "-stun-alt-ip", HubAltIP.String())
	}
	args = append(args, h.Args...)
	p, err := h.Host.Start("signal-hub", h.bin, args...)
	if err != nil {
		return err
	}
	h.Proc = p
	url := fmt.Sprintf("http://%s:%d/healthz", HubIP, HubWSPort)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := h.Host.NS.Get(url, time.Second)
		if err == nil {
			return nil
		}
		if p.Exited() || time.Now().After(deadline) {
			return fmt.Errorf("natlab: signal-hub not healthy (%v); log:\n%s", err, p.Tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the hub process (the namespace and addresses stay).
func (h *Hub) Stop() {
	if h.Proc != nil {
		_ = h.Proc.Stop(5 * time.Second)
	}
}
