package portmap

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/soap"
	"golang.org/x/net/ipv4"
)

// igdService is what we need from a WANIPConnection (v1 or v2) or
// WANPPPConnection service; goupnp generates the same methods for each.
type igdService interface {
	AddPortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string, intPort uint16,
		intClient string, enabled bool, desc string, lease uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string) error
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
	GetSpecificPortMappingEntryCtx(ctx context.Context, remoteHost string, extPort uint16, proto string) (
		intPort uint16, intClient string, enabled bool, desc string, lease uint32, err error)
}

// UPnP error codes we act on.
const (
	upnpNoSuchEntry        = 714
	upnpConflict           = 718
	upnpOnlyPermanentLease = 725
)

// upnpTries bounds how many external ports we try when others hold ours.
const upnpTries = 8

// upnpClient maps through a UPnP Internet Gateway Device.
type upnpClient struct {
	svc       igdService
	local     net.IP
	intPort   int
	desc      string
	now       func() time.Time
	permanent bool // the IGD only accepts lease 0
}

func (u *upnpClient) protocol() Protocol { return UPnP }

const ssdpMaxReply = 4096

// discoverUPnP finds an IGD on the LAN: an SSDP M-SEARCH to target (the
// multicast group, TTL 2, sent from our LAN address), then the device
// description, whose URLs must stay on the LAN host that answered.
func discoverUPnP(ctx context.Context, target *net.UDPAddr, local net.IP) (igdService, string, error) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: local})
	if err != nil {
		return nil, "", fmt.Errorf("portmap: SSDP socket: %w", err)
	}
	defer conn.Close()
	if target.IP.IsMulticast() {
		setMulticastTTL(conn, 2)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	sts := []string{"urn:schemas-upnp-org:device:InternetGatewayDevice:2", "urn:schemas-upnp-org:device:InternetGatewayDevice:1"}
	for _, st := range sts {
		msg := "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: " + st + "\r\n\r\n"
		if _, err := conn.WriteToUDP([]byte(msg), target); err != nil {
			return nil, "", fmt.Errorf("portmap: SSDP search: %w", err)
		}
	}
	buf := make([]byte, ssdpMaxReply)
	tried := map[string]bool{}
	var lastErr error
	for len(tried) < 8 {
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			if lastErr != nil {
				return nil, "", lastErr
			}
			return nil, "", fmt.Errorf("portmap: no UPnP gateway answered: %w", errNoGateway)
		}
		loc, err := ssdpLocation(buf[:n], from.IP)
		if err != nil {
			lastErr = err
			continue
		}
		if tried[loc.String()] {
			continue
		}
		tried[loc.String()] = true
		svc, kind, err := igdFromLocation(ctx, loc)
		if err != nil {
			lastErr = err
			continue
		}
		return svc, kind, nil
	}
	return nil, "", lastErr
}

// ssdpLocation parses an M-SEARCH answer and returns its LOCATION if it
// points at the LAN host that sent the answer (never elsewhere: a LAN device
// must not make us fetch URLs on the internet).
func ssdpLocation(b []byte, from net.IP) (*url.URL, error) {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		return nil, fmt.Errorf("portmap: bad SSDP answer from %v: %w", from, err)
	}
	_ = resp.Body.Close()
	if !strings.Contains(resp.Header.Get("ST"), "InternetGatewayDevice") {
		return nil, fmt.Errorf("portmap: SSDP answer from %v is not an IGD (%q)", from, resp.Header.Get("ST"))
	}
	loc, err := url.Parse(resp.Header.Get("LOCATION"))
	if err != nil || loc.Scheme != "http" {
		return nil, fmt.Errorf("portmap: SSDP answer from %v has unusable LOCATION %q", from, resp.Header.Get("LOCATION"))
	}
	if ip := net.ParseIP(loc.Hostname()); ip == nil || !ip.Equal(from) {
		return nil, fmt.Errorf("portmap: SSDP answer from %v points at another host (%s)", from, loc.Host)
	}
	return loc, nil
}

// igdFromLocation reads the device description and picks the WAN connection
// service, preferring IGDv2's WANIPConnection2.
func igdFromLocation(ctx context.Context, loc *url.URL) (igdService, string, error) {
	root, err := goupnp.DeviceByURLCtx(ctx, loc)
	if err != nil {
		return nil, "", fmt.Errorf("portmap: UPnP device description %s: %w", loc, err)
	}
	onHost := func(sc goupnp.ServiceClient) bool {
		if sc.SOAPClient == nil || sc.SOAPClient.EndpointURL.Host != loc.Host {
			return false
		}
		sc.SOAPClient.HTTPClient.CheckRedirect = noRedirect
		return true
	}
	if cs, err := internetgateway2.NewWANIPConnection2ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range cs {
			if onHost(c.ServiceClient) {
				return c, "WANIPConnection:2", nil
			}
		}
	}
	if cs, err := internetgateway2.NewWANIPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range cs {
			if onHost(c.ServiceClient) {
				return c, "WANIPConnection:1", nil
			}
		}
	}
	if cs, err := internetgateway2.NewWANPPPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range cs {
			if onHost(c.ServiceClient) {
				return c, "WANPPPConnection:1", nil
			}
		}
	}
	return nil, "", fmt.Errorf("portmap: %s offers no WAN connection service on its own host", loc)
}

// noRedirect keeps every UPnP HTTP request on the LAN host that answered.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func init() {
	// goupnp fetches device descriptions with this client; ours follows no
	// redirect (deadlines come from the contexts we pass).
	goupnp.HTTPClientDefault = &http.Client{CheckRedirect: noRedirect}
}

// setMulticastTTL keeps the SSDP search on the LAN.
func setMulticastTTL(c *net.UDPConn, ttl int) {
	_ = ipv4.NewPacketConn(c).SetMulticastTTL(ttl)
}

func upnpCode(err error) int {
	var f *soap.SOAPFaultError
	if errors.As(err, &f) {
		return f.Detail.UPnPError.Errorcode
	}
	return 0
}

func (u *upnpClient) externalIP(ctx context.Context) (net.IP, error) {
	s, err := u.svc.GetExternalIPAddressCtx(ctx)
	if err != nil {
		return nil, fmt.Errorf("portmap: UPnP GetExternalIPAddress: %w", err)
	}
	ip := net.ParseIP(strings.TrimSpace(s)).To4()
	if ip == nil || ip.IsUnspecified() {
		return nil, fmt.Errorf("portmap: UPnP gateway has no external IPv4 address (%q)", s)
	}
	return ip, nil
}

// holder reports who holds ext on the gateway: ok=false when nobody does.
func (u *upnpClient) holder(ctx context.Context, ext int) (client string, port int, ok bool, err error) {
	ip, c, _, _, _, err := u.svc.GetSpecificPortMappingEntryCtx(ctx, "", uint16(ext), "UDP")
	if err != nil {
		if upnpCode(err) == upnpNoSuchEntry {
			return "", 0, false, nil
		}
		return "", 0, false, fmt.Errorf("portmap: UPnP GetSpecificPortMappingEntry %d: %w", ext, err)
	}
	return c, int(ip), true, nil
}

func (u *upnpClient) ours(client string, port int) bool {
	return net.ParseIP(client).Equal(u.local) && port == u.intPort
}

func (u *upnpClient) mapUDP(ctx context.Context, want int, lease time.Duration) (Mapping, error) {
	ip, err := u.externalIP(ctx)
	if err != nil {
		return Mapping{}, err
	}
	ext := want
	var lastErr error
	for try := 0; try < upnpTries; try++ {
		if try > 0 {
			ext = 1024 + rand.IntN(65535-1024)
		}
		c, p, held, err := u.holder(ctx, ext)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				break
			}
		} else if held && !u.ours(c, p) {
			lastErr = fmt.Errorf("portmap: UPnP external port %d is held by %s:%d", ext, c, p)
			continue
		}
		secs := leaseSeconds(lease)
		if u.permanent {
			secs = 0
		}
		err = u.svc.AddPortMappingCtx(ctx, "", uint16(ext), "UDP", uint16(u.intPort), u.local.String(), true, u.desc, secs)
		if err != nil && upnpCode(err) == upnpOnlyPermanentLease && !u.permanent {
			u.permanent, secs = true, 0
			err = u.svc.AddPortMappingCtx(ctx, "", uint16(ext), "UDP", uint16(u.intPort), u.local.String(), true, u.desc, 0)
		}
		if err != nil {
			lastErr = fmt.Errorf("portmap: UPnP AddPortMapping %d: %w", ext, err)
			if upnpCode(err) == upnpConflict {
				continue
			}
			break
		}
		granted := time.Duration(secs) * time.Second
		if secs == 0 {
			// A permanent mapping: we still re-assert it as if it had our lease,
			// so a router that rebooted gets it back.
			granted = lease
		}
		return newMapping(UPnP, ip, ext, u.local, u.intPort, granted, u.now()), nil
	}
	return Mapping{}, lastErr
}

func (u *upnpClient) check(ctx context.Context, m Mapping) (bool, error) {
	c, p, held, err := u.holder(ctx, m.External.Port)
	if err != nil {
		return false, err
	}
	if !held || !u.ours(c, p) {
		return false, nil
	}
	ip, err := u.externalIP(ctx)
	if err != nil {
		return false, err
	}
	return ip.Equal(m.External.IP), nil
}

func (u *upnpClient) unmap(ctx context.Context, m Mapping) error {
	if err := u.svc.DeletePortMappingCtx(ctx, "", uint16(m.External.Port), "UDP"); err != nil {
		return fmt.Errorf("portmap: UPnP DeletePortMapping %d: %w", m.External.Port, err)
	}
	return nil
}
