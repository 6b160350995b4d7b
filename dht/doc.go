// Package dht is the A2AL Kademlia node: routing table, signed UDP RPCs,
// iterative lookups, the local record store, replication of published
// records, peer health, NAT-punch integration and a read-only debug API
// (docs/dht.md, docs/decisions.md D1/D2/D6/D10). The wire behaviour is that of the
// reference v0.1.8; internally the node fixes the defects listed in
// docs/reference-defects.md:
//
//   - Contacts enter the routing table only when NodeID == SHA-256(Address)
//     and the IP is usable; at most 2 contacts of one IPv4 /24 (IPv6 /64) per
//     bucket and 10 per table, 4 of one /16 (/48) per bucket and 24 per
//     table. Loopback simulations give every node its own 127.A.B.0/24,
//     spread over the /16s. In-memory transports are keyed per endpoint name.
//   - Dial addresses carry a rank (hearsay < punch < inbound request <
//     answered < pinned): hearsay never redirects a known peer, a punch never
//     overrides a verified address, datagrams from a punched channel never
//     rebind, and a request from a new address (possibly a replay) moves
//     nothing until the peer answers our challenge there. Replayed requests
//     (same sender and tx_id) are dropped (docs/dht-security.md).
//   - Responses are accepted only from the peer asked (its NodeID when
//     known, else the address we sent to) and only for a live tx_id.
//   - Eviction pings for full buckets run on a bounded worker queue, never on
//     the receive path; hearsay never evicts or reorders entries.
//   - Every datagram passes a per-source token bucket before signature
//     verification; STOREs and FIND answers (larger than their requests)
//     have their own, tighter buckets. Unknown message types are counted.
//   - Record TTLs above 24 h are refused as a policy decision (Store,
//     MaxRecordTTL); per-key caps, a key limit and per-address quotas bound
//     store flooding.
//   - Lookups keep a few RPCs in flight and launch the next the moment an
//     answer arrives; per-RPC timeouts follow the measured RTT, and a slow
//     peer is handed off (slot freed, RPC kept) instead of stalling the
//     lookup. FindNode and bucket refills end once the 3 closest candidates
//     answered (the rest of the K returned are vouched for by them); the
//     bootstrap self-lookup, replica selection and value lookups without a
//     hit wait for all K closest live candidates. Peers already known Bad
//     get one slot and never hold a lookup open.
//   - Responders send the answer first and do their bookkeeping (address
//     book, routing table) afterwards.
//   - EstimatedNetworkSize uses the density of the K nearest verified
//     contacts and of recent lookups, not the power-of-two bucket estimate
//     (which /debug/stats keeps, as specified).
//   - Local outages (no success for 45 s with several peers failing, or four
//     peers failing within 15 s) are not charged to peers; a peer that sent
//     us anything in the last 5 minutes is never reported Bad.
//   - HEAD push subscriptions (docs/dht-push.md): as a replica the node
//     keeps bounded, expiring subscriber lists and pushes new records only to
//     addresses the subscriber proved by answering us there; as a client
//     (FindValueSubscribe, SetPushHandler) it accepts pushes only from
//     replicas it subscribed at. Records are ordered by the HEAD rule, with
//     a delegation counted only when it authorises the record.
//   - Every goroutine is owned by the node and stopped by Close; every map
//     and queue is bounded. Timers use Config.Clock (docs/decisions.md D10).
package dht
