package protocol

import (
	"errors"
	"testing"
)

func TestParseEndpointURL(t *testing.T) {
	type hp struct {
		host string
		port uint16
	}
	good := map[string]hp{
		"quic://203.0.113.5:4121":     {"203.0.113.5", 4121},
		"udp://[2001:db8::20]:7":      {"2001:db8::20", 7},
		"quic://node.example:65535":   {"node.example", 65535},
		"quic://[::ffff:192.0.2.1]:1": {"::ffff:192.0.2.1", 1},
	}
	for in, want := range good {
		h, p, err := ParseEndpointURL(in)
		if err != nil || h != want.host || p != want.port {
			t.Errorf("%q -> %q, %d, %v; want %q, %d", in, h, p, err, want.host, want.port)
		}
	}
	for _, bad := range []string{"", "quic://", "tcp://203.0.113.5:1", "203.0.113.5:1", "quic://203.0.113.5",
		"quic://:4121", "quic://203.0.113.5:0", "quic://203.0.113.5:99999", "quic://203.0.113.5:http", "QUIC://203.0.113.5:1"} {
		if h, p, err := ParseEndpointURL(bad); !errors.Is(err, ErrEndpointURL) {
			t.Errorf("%q -> %q, %d, %v; want ErrEndpointURL", bad, h, p, err)
		}
	}
}
