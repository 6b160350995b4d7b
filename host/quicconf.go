package host

import (
	"time"

	"github.com/quic-go/quic-go"
)

// QUIC timers. Keepalive stays well below the shortest NAT timer we care about
// (Linux conntrack forgets an unreplied UDP mapping after 30 s, D6), so a pooled
// connection keeps its hole open; a dead path is noticed after quicMaxIdle.
const (
	quicMaxIdle   = 30 * time.Second
	quicKeepAlive = 10 * time.Second
)

// quicConfig is shared by Mode A and Mode B: the server cannot know the ALPN
// before the handshake, and both modes want datagrams off (A) / on (B) cheaply,
// so datagrams are enabled for both and Mode A simply does not use them.
// handshake is Config.HandshakeLimit.
func quicConfig(handshake time.Duration) *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:  handshake,
		MaxIdleTimeout:        quicMaxIdle,
		KeepAlivePeriod:       quicKeepAlive,
		EnableDatagrams:       true,
		MaxIncomingStreams:    100,
		MaxIncomingUniStreams: 100,
	}
}
