package portmap

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
)

// NAT-PMP and PCP share the gateway's UDP port 5351, the "seconds since the
// gateway started" epoch and the first reply bytes (version, opcode|0x80,
// result), so one exchange and one epoch check serve both (docs/port-mapping.md).

const (
	pmpVersion = 0
	pcpVersion = 2

	pmpOpExternal = 0
	pmpOpMapUDP   = 1
	pcpOpAnnounce = 0
	pcpOpMap      = 1

	resultUnsuppVersion = 1
	udpProtocolNumber   = 17

	maxPMPReply = 1100 // PCP's largest message
)

// errUnsupportedVersion means the gateway speaks the other protocol on 5351
// (a PCP server answering NAT-PMP or the reverse).
var errUnsupportedVersion = errors.New("gateway does not speak this protocol version")

// pmpResult is a decoded NAT-PMP or PCP response.
type pmpResult struct {
	version  byte
	opcode   byte // without the response bit
	code     uint16
	epoch    uint32
	lifetime uint32
	extIP    net.IP
	intPort  uint16
	extPort  uint16
	nonce    [12]byte
}

// decodePMP parses a NAT-PMP (version 0) or PCP (version 2) response. It
// checks shape only; matching it to the request is the caller's job.
func decodePMP(b []byte) (pmpResult, error) {
	var r pmpResult
	if len(b) < 4 {
		return r, fmt.Errorf("portmap: reply of %d bytes is too short", len(b))
	}
	r.version = b[0]
	if b[1]&0x80 == 0 {
		return r, fmt.Errorf("portmap: reply has no response bit (opcode byte %#x)", b[1])
	}
	r.opcode = b[1] &^ 0x80
	switch r.version {
	case pmpVersion:
		if len(b) < 8 {
			return r, fmt.Errorf("portmap: NAT-PMP reply of %d bytes is too short", len(b))
		}
		r.code = binary.BigEndian.Uint16(b[2:4])
		r.epoch = binary.BigEndian.Uint32(b[4:8])
		if r.code != 0 {
			return r, nil
		}
		switch r.opcode {
		case pmpOpExternal:
			if len(b) < 12 {
				return r, fmt.Errorf("portmap: NAT-PMP address reply of %d bytes", len(b))
			}
			r.extIP = net.IP(append([]byte(nil), b[8:12]...))
		case pmpOpMapUDP:
			if len(b) < 16 {
				return r, fmt.Errorf("portmap: NAT-PMP map reply of %d bytes", len(b))
			}
			r.intPort = binary.BigEndian.Uint16(b[8:10])
			r.extPort = binary.BigEndian.Uint16(b[10:12])
			r.lifetime = binary.BigEndian.Uint32(b[12:16])
		default:
			return r, fmt.Errorf("portmap: NAT-PMP reply to unknown opcode %d", r.opcode)
		}
	case pcpVersion:
		if len(b) < 24 || len(b) > maxPMPReply || len(b)%4 != 0 {
			return r, fmt.Errorf("portmap: PCP reply of %d bytes", len(b))
		}
		r.code = uint16(b[3])
		r.lifetime = binary.BigEndian.Uint32(b[4:8])
		r.epoch = binary.BigEndian.Uint32(b[8:12])
		if r.code != 0 || r.opcode != pcpOpMap {
			return r, nil
		}
		if len(b) < 60 {
			return r, fmt.Errorf("portmap: PCP map reply of %d bytes", len(b))
		}
		copy(r.nonce[:], b[24:36])
		if b[36] != udpProtocolNumber {
			return r, fmt.Errorf("portmap: PCP map reply for protocol %d", b[36])
		}
		r.intPort = binary.BigEndian.Uint16(b[40:42])
		r.extPort = binary.BigEndian.Uint16(b[42:44])
		r.extIP = net.IP(append([]byte(nil), b[44:60]...))
		if v4 := r.extIP.To4(); v4 != nil {
			r.extIP = v4
		}
	default:
		// A NAT-PMP-only gateway answers a PCP request with version 0 and
		// result 1; anything else here is not a 5351 speaker we know.
		return r, fmt.Errorf("portmap: reply has unknown version %d", r.version)
	}
	return r, nil
}

// pmpRequest encodes a NAT-PMP map request (lifetime 0 deletes).
func pmpMapRequest(intPort, extPort uint16, lifetime uint32) []byte {
	b := make([]byte, 12)
	b[0], b[1] = pmpVersion, pmpOpMapUDP
	binary.BigEndian.PutUint16(b[4:6], intPort)
	binary.BigEndian.PutUint16(b[6:8], extPort)
	binary.BigEndian.PutUint32(b[8:12], lifetime)
	return b
}

// pcpMapRequest encodes a PCP MAP request for UDP from client (IPv4).
func pcpMapRequest(client net.IP, nonce [12]byte, intPort, extPort uint16, extIP net.IP, lifetime uint32) []byte {
	b := make([]byte, 60)
	b[0], b[1] = pcpVersion, pcpOpMap
	binary.BigEndian.PutUint32(b[4:8], lifetime)
	copy(b[8:24], client.To16())
	copy(b[24:36], nonce[:])
	b[36] = udpProtocolNumber
	binary.BigEndian.PutUint16(b[40:42], intPort)
	binary.BigEndian.PutUint16(b[42:44], extPort)
	if extIP == nil {
		extIP = net.IPv4zero // "any IPv4 address" in mapped form
	}
	copy(b[44:60], extIP.To16())
	return b
}

// pcpAnnounceRequest asks only for the epoch (cheap liveness/reboot check).
func pcpAnnounceRequest(client net.IP) []byte {
	b := make([]byte, 24)
	b[0], b[1] = pcpVersion, pcpOpAnnounce
	copy(b[8:24], client.To16())
	return b
}

// epochTracker notices a gateway that lost its mapping state: its epoch (in
// seconds) must advance about as fast as our clock does.
type epochTracker struct {
	have  bool
	epoch uint32
	at    time.Time
}

// observe records a new epoch and reports whether the gateway restarted (or
// otherwise lost state) since the previous observation.
func (e *epochTracker) observe(epoch uint32, now time.Time) (reset bool) {
	if e.have {
		client := now.Sub(e.at).Seconds()
		server := float64(epoch) - float64(e.epoch)
		// Allow 2 s of jitter and 1/16 drift between the two clocks.
		if server < -2 || server+2 < client-client/16 {
			reset = true
		}
	}
	e.have, e.epoch, e.at = true, epoch, now
	return reset
}

// pmpConn exchanges requests with the gateway's 5351 port.
type pmpConn struct {
	gw     *net.UDPAddr
	local  net.IP
	nonce  [12]byte
	epochs epochTracker
}

func newPMPConn(gw *net.UDPAddr, local net.IP) *pmpConn {
	c := &pmpConn{gw: gw, local: local}
	_, _ = rand.Read(c.nonce[:])
	return c
}

// exchange sends req and waits for a matching reply, retransmitting after
// 250 ms, 500 ms, 1 s... until ctx ends. Replies from anyone but the gateway
// are ignored.
func (c *pmpConn) exchange(ctx context.Context, req []byte, op byte, match func(pmpResult) bool) (pmpResult, error) {
	conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: c.local}, c.gw)
	if err != nil {
		return pmpResult{}, fmt.Errorf("portmap: dial gateway %v: %w", c.gw, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, maxPMPReply+1)
	wait := 250 * time.Millisecond
	for {
		if _, err := conn.Write(req); err != nil {
			return pmpResult{}, fmt.Errorf("portmap: send to gateway %v: %w", c.gw, err)
		}
		next := time.Now().Add(wait)
		wait *= 2
		for {
			if ctx.Err() != nil {
				return pmpResult{}, fmt.Errorf("portmap: no answer from %v: %w", c.gw, ctx.Err())
			}
			_ = conn.SetReadDeadline(next)
			n, err := conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // retransmit
				}
				// An ICMP port unreachable surfaces here: nothing listens.
				return pmpResult{}, fmt.Errorf("portmap: gateway %v: %w", c.gw, err)
			}
			r, err := decodePMP(buf[:n])
			if err != nil {
				continue
			}
			if r.code == resultUnsuppVersion && r.version != req[0] {
				return r, errUnsupportedVersion
			}
			if r.version != req[0] || r.opcode != op || !match(r) {
				continue
			}
			return r, nil
		}
	}
}

// Result codes in our words; NAT-PMP and PCP number them differently.
var (
	pmpCodes = map[uint16]string{1: "unsupported version", 2: "refused", 3: "network failure", 4: "out of resources",
		5: "unsupported opcode"}
	pcpCodes = map[uint16]string{1: "unsupported version", 2: "not authorized", 3: "malformed request",
		4: "unsupported opcode", 5: "unsupported option", 6: "malformed option", 7: "network failure",
		8: "no resources", 9: "unsupported protocol", 10: "user quota exceeded", 11: "cannot provide external address",
		12: "address mismatch", 13: "excessive remote peers"}
)

func resultError(r pmpResult) error {
	names, proto := pmpCodes, "NAT-PMP"
	if r.version == pcpVersion {
		names, proto = pcpCodes, "PCP"
	}
	n := names[r.code]
	if n == "" {
		n = "unknown"
	}
	return fmt.Errorf("portmap: %s result %d (%s)", proto, r.code, n)
}
