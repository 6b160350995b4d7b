// Package host is the node layer above the DHT: it makes a node behind a home
// NAT a full, reachable member of the network.
//
// # One socket
//
// A Host owns exactly one UDP socket, wrapped in transport.Demux (docs/decisions.md D5):
// DHT datagrams go to the dht.Node, STUN packets to pion/ice's
// UniversalUDPMux (and, while a classification runs, to natprobe through the
// demux STUN hook), QUIC packets to a single quic.Transport that both listens
// and dials for Mode A and Mode B. So the address the DHT learns, the one STUN
// reports, the server-reflexive ICE candidate and the published endpoint are
// the same NAT mapping.
//
// # Punching (design decision)
//
// ICE is used only for connectivity checks: the agent runs on the shared socket
// through the UDPMux, trickling candidates over an authenticated signal.Session.
// QUIC is then dialed from the shared quic.Transport straight to the peer's
// address; the hole ICE opened belongs to that same socket, so no
// per-connection PacketConn adapter exists. The caller is the ICE controlling
// side.
//
// Latency: nothing on the critical path waits for something it does not need.
// Each side sends its credentials, then the STUN mapping it already knows as a
// server-reflexive candidate, then gathers and trickles, all before the peer's
// credentials arrive; checks run every 50 ms while connecting (each pair is
// kept for about 3 s of checks so a late peer still meets it). The caller does
// not wait for ICE nomination: the first authenticated Binding request from
// the peer proves the path both ways (it crossed both NATs, and our response
// leaves on the same 5-tuple), so QUIC is dialed to its source address at once
// and the nominated pair is only a fallback. Acceptance waits are zero. The
// callee waits for the caller's QUIC connection alongside ICE. On vnet a punch
// takes 1.5 round trips plus a few ms (integration/cmd/punchbench). Once QUIC is
// up both agents are closed: QUIC keepalives (every 10 s, below the 30 s
// conntrack timer) keep the mapping alive, and a closed agent holds no
// goroutines or timers.
//
// Signaling: a punch uses our own connection to one of the peer's hubs when we
// have one (a connected one first), else a temporary client. If our hubs are
// down the attempt fails at once with ErrNoHub, naming the hub and its last
// connection error, without charging the peer any back-off; the signal client
// reconnects with back-off capped at 10 s, and the next punch succeeds as soon
// as it is registered again.
//
// # Identity (D4)
//
// Every QUIC connection is TLS 1.3 with mutual authentication. Each side
// presents a self-signed certificate over its Ed25519 node key; the verifier
// derives the a2al.Address from the certificate key. Dialers require it to equal
// the expected Address. The listener records the verified identity, and a Mode B
// connection is only pooled when that identity is the one a callee punch is
// expecting, so a hub that lies about who is calling cannot get a connection
// pooled. ALPNs:
//
//	a2al-quic-1  Mode A: application streams (Host.Dial / Host.Accept)
//	a2al-dht-1   Mode B: DHT messages to NAT-bound peers (the pool)
//
// # Mode B framing
//
// A DHT message (the exact signed CBOR datagram) that fits into one QUIC
// DATAGRAM frame (RFC 9221) is sent as a datagram: the DHT is datagram-oriented,
// tolerates loss, and needs no stream state. A message too large for the path's
// datagram size goes on its own unidirectional stream ended by FIN (≤ 64 KiB).
// Sending never blocks the DHT: SendTo enqueues into a bounded per-connection
// queue drained by one sender goroutine; a full queue makes SendTo report
// ok=false with ErrSendQueueFull, and the DHT sends the message over UDP
// instead and counts it (punch_send_fallback in its /debug/health).
//
// # Pool and scheduler
//
// The pool is bounded (LRU), expires idle entries, and eviction really closes
// the QUIC connection. A connection that dies (peer gone, path broken, idle
// timeout) is removed as soon as its context ends, so HasConn is exact and the
// DHT can fall back and punch again. Dead paths are found two ways: QUIC
// keepalives every 10 s with a 30 s idle timeout cover idle connections, and a
// silence check covers the case that matters to the DHT, RPCs over a path
// that died: everything we send makes the peer's QUIC ACK within about one
// RTT, so if no packet at all arrives within 5 s of a send, the entry is
// closed and removed (PoolStats.Silent) and the DHT's next RPC goes over UDP
// or triggers a new punch. No DHT-level timeout guessing is needed, and a
// peer that simply does not answer a DHT request still ACKs it. Punches go through a Scheduler: priority
// High > Low > Lowest, a global concurrency cap, at most one speculative
// (Lowest) attempt, per-peer de-duplication and exponential back-off. Glare
// (both sides punching at once) is settled by NodeID: the smaller NodeID keeps
// its outgoing attempt, the other side answers; if two connections still come
// up, both pools keep the one dialed by the smaller NodeID.
//
// isDirect is reported only on evidence: a DHT PING over plain UDP from the
// main socket to the peer's published endpoint. It must not be answered
// through a hole the punch opened, so for a peer whose record says "unknown"
// it completes before the call is placed or answered; a peer that publishes
// full cone accepts unsolicited packets whatever holes exist, so its PING runs
// alongside the punch; peers behind filtering NATs are never direct.
//
// # Configuration and time
//
// config.go holds Config and the configs it nests, each field stating its
// default and what zero means, with one Default… constructor and one fill
// per struct that validates before New binds or starts anything. Config.Clock
// (docs/decisions.md D10) drives timestamps, back-off, expiry and the host's
// timers and is passed on to the DHT node, the hub clients, the NAT
// classifier and the port mapper; context and socket deadlines, pion's ICE
// timers and short polls of other components' state stay on the wall clock.
package host
