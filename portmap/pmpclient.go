package portmap

import (
	"context"
	"fmt"
	"net"
	"time"
)

// natpmpClient maps through NAT-PMP.
type natpmpClient struct {
	c       *pmpConn
	intPort int
	now     func() time.Time
}

func (n *natpmpClient) protocol() Protocol { return NATPMP }

// externalIP asks for the gateway's public address (and its epoch).
func (n *natpmpClient) externalIP(ctx context.Context) (net.IP, bool, error) {
	r, err := n.c.exchange(ctx, []byte{pmpVersion, pmpOpExternal}, pmpOpExternal, func(pmpResult) bool { return true })
	if err != nil {
		return nil, false, err
	}
	reset := n.c.epochs.observe(r.epoch, n.now())
	if r.code != 0 {
		return nil, reset, resultError(r)
	}
	return r.extIP, reset, nil
}

func (n *natpmpClient) mapUDP(ctx context.Context, want int, lease time.Duration) (Mapping, error) {
	ip, _, err := n.externalIP(ctx)
	if err != nil {
		return Mapping{}, err
	}
	req := pmpMapRequest(uint16(n.intPort), uint16(want), leaseSeconds(lease))
	r, err := n.c.exchange(ctx, req, pmpOpMapUDP, func(r pmpResult) bool {
		return r.code != 0 || int(r.intPort) == n.intPort
	})
	if err != nil {
		return Mapping{}, err
	}
	n.c.epochs.observe(r.epoch, n.now())
	if r.code != 0 {
		return Mapping{}, resultError(r)
	}
	if r.lifetime == 0 || r.extPort == 0 {
		return Mapping{}, fmt.Errorf("portmap: NAT-PMP granted no mapping (port %d, lifetime %d)", r.extPort, r.lifetime)
	}
	return newMapping(NATPMP, ip, int(r.extPort), n.c.local, n.intPort, time.Duration(r.lifetime)*time.Second, n.now()), nil
}

func (n *natpmpClient) check(ctx context.Context, m Mapping) (bool, error) {
	ip, reset, err := n.externalIP(ctx)
	if err != nil {
		return false, err
	}
	return !reset && ip.Equal(m.External.IP), nil
}

func (n *natpmpClient) unmap(ctx context.Context, m Mapping) error {
	req := pmpMapRequest(uint16(n.intPort), 0, 0)
	r, err := n.c.exchange(ctx, req, pmpOpMapUDP, func(r pmpResult) bool { return true })
	if err != nil {
		return err
	}
	if r.code != 0 {
		return resultError(r)
	}
	return nil
}

// pcpClient maps through PCP (IPv4 only here).
type pcpClient struct {
	c       *pmpConn
	intPort int
	now     func() time.Time
	lastExt net.IP
}

func (p *pcpClient) protocol() Protocol { return PCP }

func (p *pcpClient) mapReq(ctx context.Context, extPort int, extIP net.IP, lifetime uint32) (pmpResult, error) {
	req := pcpMapRequest(p.c.local, p.c.nonce, uint16(p.intPort), uint16(extPort), extIP, lifetime)
	r, err := p.c.exchange(ctx, req, pcpOpMap, func(r pmpResult) bool {
		return r.code != 0 || (r.nonce == p.c.nonce && int(r.intPort) == p.intPort)
	})
	if err != nil {
		return r, err
	}
	p.c.epochs.observe(r.epoch, p.now())
	if r.code != 0 {
		return r, resultError(r)
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
	return newMapping(PCP, r.extIP, int(r.extPort), p.c.local, p.intPort, time.Duration(r.lifetime)*time.Second, p.now()), nil
}

func (p *pcpClient) check(ctx context.Context, _ Mapping) (bool, error) {
	r, err := p.c.exchange(ctx, pcpAnnounceRequest(p.c.local), pcpOpAnnounce, func(pmpResult) bool { return true })
	if err != nil {
		return false, err
	}
	return !p.c.epochs.observe(r.epoch, p.now()), nil
}

func (p *pcpClient) unmap(ctx context.Context, m Mapping) error {
	_, err := p.mapReq(ctx, m.External.Port, m.External.IP, 0)
	return err
}

func leaseSeconds(d time.Duration) uint32 {
	s := d / time.Second
	if s < 1 {
		s = 1
	}
	if s > 1<<31 {
		s = 1 << 31
	}
	return uint32(s)
}
