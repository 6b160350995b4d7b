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

// PCP (docs/port-mapping.md) is spoken here; NAT-PMP, on the same gateway
// port, goes through a library (natpmp.go).

const (
	pmpPort = 5351 // the gateway's PCP and NAT-PMP port

	pcpVersion    = 2
	pcpOpAnnounce = 0
	pcpOpMap      = 1

	resultUnsuppVersion = 1
	udpProtocolNumber   = 17

	maxPCPReply = 1100 // PCP's largest message
)

// errUnsupportedVersion means a NAT-PMP-only gateway answered our PCP request.
var errUnsupportedVersion = errors.New("gateway speaks NAT-PMP, not PCP")

// pcpResult is a decoded PCP response.
type pcpResult struct {
	opcode   byte // without the response bit
	code     uint16
	epoch    uint32
	lifetime uint32
	extIP    net.IP
	intPort  uint16
	extPort  uint16
	nonce    [12]byte
}

// decodePCP parses a PCP response. It checks shape only; matching it to the
// request is the caller's job. A NAT-PMP "unsupported version" answer (a
// gateway without PCP) is errUnsupportedVersion.
func decodePCP(b []byte) (pcpResult, error) {
	var r pcpResult
	if len(b) < 4 {
		return r, fmt.Errorf("portmap: reply of %d bytes is too short", len(b))
	}
	if b[1]&0x80 == 0 {
		return r, fmt.Errorf("portmap: reply has no response bit (opcode byte %#x)", b[1])
	}
	r.opcode = b[1] &^ 0x80
	switch b[0] {
	case 0: // NAT-PMP's version: its result code sits in bytes 2-3
		if binary.BigEndian.Uint16(b[2:4]) == resultUnsuppVersion {
			return r, errUnsupportedVersion
		}
		return r, errors.New("portmap: NAT-PMP reply to a PCP request")
	case pcpVersion:
	default:
		return r, fmt.Errorf("portmap: reply has unknown version %d", b[0])
	}
	if len(b) < 24 || len(b) > maxPCPReply || len(b)%4 != 0 {
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
	return r, nil
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

var pcpCodes = map[uint16]string{1: "unsupported version", 2: "not authorized", 3: "malformed request",
	4: "unsupported opcode", 5: "unsupported option", 6: "malformed option", 7: "network failure",
	8: "no resources", 9: "unsupported protocol", 10: "user quota exceeded", 11: "cannot provide external address",
	12: "address mismatch", 13: "excessive remote peers"}

func pcpResultError(r pcpResult) error {
	n := pcpCodes[r.code]
	if n == "" {
		n = "unknown"
	}
	return fmt.Errorf("portmap: PCP result %d (%s)", r.code, n)
}

// pcpClient maps through PCP (IPv4 only here).
type pcpClient struct {
	gw      *net.UDPAddr
	local   net.IP
	nonce   [12]byte
	intPort int
	now     func() time.Time
	epochs  epochTracker
	lastExt net.IP
}

func newPCPClient(gw, local net.IP, intPort int, now func() time.Time) *pcpClient {
	p := &pcpClient{gw: &net.UDPAddr{IP: gw, Port: pmpPort}, local: local, intPort: intPort, now: now}
	_, _ = rand.Read(p.nonce[:])
	return p
}

func (p *pcpClient) protocol() Protocol { return PCP }

// exchange sends req and waits for a matching reply, retransmitting after
// 250 ms, 500 ms, 1 s... until ctx ends. Replies from anyone but the gateway
// are ignored.
func (p *pcpClient) exchange(ctx context.Context, req []byte, match func(pcpResult) bool) (pcpResult, error) {
	conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: p.local}, p.gw)
	if err != nil {
		return pcpResult{}, fmt.Errorf("portmap: dial gateway %v: %w", p.gw, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, maxPCPReply+1)
	wait := 250 * time.Millisecond
	for {
		if _, err := conn.Write(req); err != nil {
			return pcpResult{}, fmt.Errorf("portmap: send to gateway %v: %w", p.gw, err)
		}
		next := time.Now().Add(wait)
		wait *= 2
		for {
			if ctx.Err() != nil {
				return pcpResult{}, fmt.Errorf("portmap: no answer from %v: %w", p.gw, ctx.Err())
			}
			_ = conn.SetReadDeadline(next)
			n, err := conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // retransmit
				}
				// An ICMP port unreachable surfaces here: nothing listens.
				return pcpResult{}, fmt.Errorf("portmap: gateway %v: %w", p.gw, err)
			}
			r, err := decodePCP(buf[:n])
			if errors.Is(err, errUnsupportedVersion) {
				return r, err
			}
			if err != nil || r.opcode != req[1] || !match(r) {
				continue
			}
			return r, nil
		}
	}
}

func (p *pcpClient) mapReq(ctx context.Context, extPort int, extIP net.IP, lifetime uint32) (pcpResult, error) {
	req := pcpMapRequest(p.local, p.nonce, uint16(p.intPort), uint16(extPort), extIP, lifetime)
	r, err := p.exchange(ctx, req, func(r pcpResult) bool {
		return r.code != 0 || (r.nonce == p.nonce && int(r.intPort) == p.intPort)
	})
	if err != nil {
		return r, err
	}
	p.epochs.observe(r.epoch, p.now())
	if r.code != 0 {
		return r, pcpResultError(r)
	}
	return r, nil
}

func (p *pcpClient) mapUDP(ctx context.Context, want int, lease time.Duration) (Mapping, error) {
	r, err := p.mapReq(ctx, want, p.lastExt, leaseSeconds(lease))
	if err != nil {
		return Mapping{}, err
	}
	if r.lifetime == 0 || r.extPort == 0 || r.extIP.To4() == nil {
		return Mapping{}, fmt.Errorf("portmap: PCP granted no IPv4 mapping (%v port %d, lifetime %d)", r.extIP, r.extPort, r.lifetime)
	}
	p.lastExt = r.extIP
	return newMapping(PCP, r.extIP, int(r.extPort), p.local, p.intPort, time.Duration(r.lifetime)*time.Second, p.now()), nil
}

func (p *pcpClient) check(ctx context.Context, _ Mapping) (bool, error) {
	r, err := p.exchange(ctx, pcpAnnounceRequest(p.local), func(pcpResult) bool { return true })
	if err != nil {
		return false, err
	}
	return !p.epochs.observe(r.epoch, p.now()), nil
}

func (p *pcpClient) unmap(ctx context.Context, m Mapping) error {
	_, err := p.mapReq(ctx, m.External.Port, m.External.IP, 0)
	return err
}
