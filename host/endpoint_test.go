package host

import (
	"context"
	"errors"
	"net"
	"testing"
)

// A record's endpoint names are resolved under the dial's context, so a
// cancelled (or expired) dial does not wait on DNS.
func TestParseEndpointHonoursContext(t *testing.T) {
	parseEndpoint := func(ctx context.Context, _ any, ep string) (*net.UDPAddr, error) {
		as, err := endpointAddrs(ctx, nil, ep)
		if err != nil {
			return nil, err
		}
		return as[0], nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := parseEndpoint(ctx, nil, "quic://localhost:4121"); !errors.Is(err, context.Canceled) {
		t.Fatalf("hostname with a cancelled context: err = %v, want context.Canceled", err)
	}
	// Literals need no lookup and parse whatever the context.
	a, err := parseEndpoint(ctx, nil, "quic://203.0.113.5:4121")
	if err != nil || a.String() != "203.0.113.5:4121" {
		t.Fatalf("literal: %v, %v", a, err)
	}
	a, err = parseEndpoint(ctx, nil, "udp://[::ffff:203.0.113.5]:7")
	if err != nil || a.String() != "203.0.113.5:7" {
		t.Fatalf("mapped literal: %v, %v", a, err)
	}
	a, err = parseEndpoint(ctx, nil, "quic://[2001:db8::1]:4121")
	if err != nil || a.String() != "[2001:db8::1]:4121" {
		t.Fatalf("IPv6 literal: %v, %v", a, err)
	}
	for _, bad := range []string{"quic://[fe80::1%eth0]:4121", "quic://203.0.113.5:0", "tcp://203.0.113.5:1", "quic://203.0.113.5", "quic://203.0.113.5:99999"} {
		if _, err := parseEndpoint(context.Background(), nil, bad); err == nil {
			t.Errorf("%q: parsed, want an error", bad)
		}
	}
}
