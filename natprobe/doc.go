// Package natprobe classifies the NAT in front of a UDP socket (docs/decisions.md D7)
// and provides the RFC 5780 STUN server that makes the classification
// possible.
//
// The server answers Binding requests on a grid of sockets: a primary and an
// alternate port on one IP, and the same two ports on a second IP when the
// host has one. Replies carry XOR-MAPPED-ADDRESS, MAPPED-ADDRESS,
// RESPONSE-ORIGIN and OTHER-ADDRESS, and honour CHANGE-REQUEST by sending
// the reply from the socket on the other port and/or IP.
//
// Anti-amplification rule: a reply is never larger than the request that
// caused it (plus ServerConfig.ReplySlack, default 0). The server first tries
// the full reply, then a minimal one (XOR-MAPPED-ADDRESS only); if even that
// does not fit, the request is dropped and counted. Our own client pads every
// request with a PADDING attribute to RequestSize (128) bytes, which is
// enough room for the largest full reply (124 bytes with IPv6 addresses), so
// spoofed requests can never be used to amplify traffic towards a victim.
//
// The classifier runs on a caller-supplied net.PacketConn, normally the
// node's shared socket, so the mapping it measures is the one the DHT and
// ICE use. It never closes that socket, ignores packets that are not answers
// to its own transactions, and can receive answers through a demultiplexer
// hook instead of reading the socket itself (ClassifyConfig.InstallHook).
//
// Test order matters on a single socket: the filtering tests (CHANGE-REQUEST
// replies from another port / IP) run before the mapping test, because the
// mapping test contacts the server's second IP and would open an
// address-restricted NAT's filter for it.
package natprobe
