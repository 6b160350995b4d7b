package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	natpmp "github.com/jackpal/go-nat-pmp"
)

// natpmpClient maps through NAT-PMP. The library encodes, sends (always to
// the gateway's port 5351, retransmitting after 250 ms, 500 ms, 1 s...) and
// checks the replies; we bound each request by our deadline, watch the epoch
// and check what was granted.
type natpmpClient struct {
	gw, local net.IP
	intPort   int
	now       func() time.Time
	epochs    epochTracker
}

func (n *natpmpClient) protocol() Protocol { return NATPMP }

// lib returns a library client whose retransmissions stop at ctx's deadline.
// The library does not watch ctx, so a request ends at that deadline, not at
// cancellation (Close waits at most Config.Timeout for it).
func (n *natpmpClient) lib(ctx context.Context) (*natpmp.Client, error) {
	dl, ok := ctx.Deadline()
	if !ok {
		// Its default schedule retries for about two minutes.
		return nil, errors.New("portmap: NAT-PMP request without a deadline")
	}
	left := time.Until(dl)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("portmap: no time left to ask %v: %w", n.gw, err)
	}
	if left <= 0 {
		return nil, fmt.Errorf("portmap: no time left to ask %v: %w", n.gw, context.DeadlineExceeded)
	}
	return natpmp.NewClientWithLocalAndTimeout(n.gw, n.local, left), nil
}

// externalIP asks for the gateway's public address and reports whether its
// epoch shows a restart.
func (n *natpmpClient) externalIP(ctx context.Context) (net.IP, bool, error) {
	c, err := n.lib(ctx)
	if err != nil {
		return nil, false, err
	}
	r, err := c.GetExternalAddress()
	if err != nil {
		return nil, false, fmt.Errorf("portmap: NAT-PMP external address from %v: %w", n.gw, err)
	}
	reset := n.epochs.observe(r.SecondsSinceStartOfEpoc, n.now())
	a := r.ExternalIPAddress
	return net.IPv4(a[0], a[1], a[2], a[3]).To4(), reset, nil
}

// request maps (lifetime > 0) or deletes (lifetime 0) our UDP port.
func (n *natpmpClient) request(ctx context.Context, want int, lifetime uint32) (*natpmp.AddPortMappingResult, error) {
	c, err := n.lib(ctx)
	if err != nil {
		return nil, err
	}
	r, err := c.AddPortMapping("udp", n.intPort, want, int(lifetime))
	if err != nil {
		return nil, fmt.Errorf("portmap: NAT-PMP map request to %v: %w", n.gw, err)
	}
	n.epochs.observe(r.SecondsSinceStartOfEpoc, n.now())
	if int(r.InternalPort) != n.intPort {
		return nil, fmt.Errorf("portmap: NAT-PMP reply for internal port %d, asked for %d", r.InternalPort, n.intPort)
	}
	return r, nil
}

func (n *natpmpClient) mapUDP(ctx context.Context, want int, lease time.Duration) (Mapping, error) {
	ip, _, err := n.externalIP(ctx)
	if err != nil {
		return Mapping{}, err
	}
	r, err := n.request(ctx, want, leaseSeconds(lease))
	if err != nil {
		return Mapping{}, err
	}
	if r.PortMappingLifetimeInSeconds == 0 || r.MappedExternalPort == 0 {
		return Mapping{}, fmt.Errorf("portmap: NAT-PMP granted no mapping (port %d, lifetime %d)",
			r.MappedExternalPort, r.PortMappingLifetimeInSeconds)
	}
	lease = time.Duration(r.PortMappingLifetimeInSeconds) * time.Second
	return newMapping(NATPMP, ip, int(r.MappedExternalPort), n.local, n.intPort, lease, n.now()), nil
}

func (n *natpmpClient) check(ctx context.Context, m Mapping) (bool, error) {
	ip, reset, err := n.externalIP(ctx)
	if err != nil {
		return false, err
	}
	return !reset && ip.Equal(m.External.IP), nil
}

func (n *natpmpClient) unmap(ctx context.Context, _ Mapping) error {
	_, err := n.request(ctx, 0, 0)
	return err
}
