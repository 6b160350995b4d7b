package host

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/a2alnode/a2al/portmap"
	"github.com/a2alnode/a2al/protocol"
)

// Router port mapping in the host (docs/port-mapping.md): the portmap.Mapper
// keeps a mapping of our socket's port on the home router; we publish the
// mapped address only after a DHT peer proved that a packet sent to it
// reaches us, and first in the record. A manually forwarded PublicAddr is
// published as the user states it.

const (
	mapVerifyPeers   = 3                // DHT peers asked to echo to the mapped address
	mapVerifyTimeout = 5 * time.Second  // per echo
	mapVerifyEvery   = 30 * time.Second // retry while unproven
	firstMappingWait = 8 * time.Second  // the first publish waits this long at most for a mapping
)

// mappingState is guarded by Host.mu.
type mappingState struct {
	mapper     *portmap.Mapper // nil when mapping is off
	cur        portmap.Mapping
	has        bool
	verified   bool      // a peer's echo reached cur.External
	lastVerify time.Time // last attempt for cur (zero: none yet)
	toldFail   bool      // the failed proof of cur was logged at info once
	public     *net.UDPAddr
}

// portMappingMode resolves Config.PortMapping's default.
func (c *Config) portMappingMode() (string, error) {
	mode, err := portmap.ParseMode(c.PortMapping)
	if err != nil {
		return "", err
	}
	if host, _, err := net.SplitHostPort(c.ListenAddr); err == nil && c.PacketConn == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return portmap.ModeOff, nil // no router forwards to loopback
		}
	}
	if c.PortMapping == "" && (c.PacketConn != nil || c.DisableMaintenance) {
		return portmap.ModeOff, nil
	}
	return mode, nil
}

// parsePublicAddr validates Config.PublicAddr ("ip:port", IPv4).
func parsePublicAddr(s string) (*net.UDPAddr, error) {
	if s == "" {
		return nil, nil
	}
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return nil, fmt.Errorf("host: public address %q: %w", s, err)
	}
	ip := net.ParseIP(h).To4()
	port, err := strconv.Atoi(p)
	if ip == nil || ip.IsUnspecified() || err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("host: public address %q: want IPv4:port", s)
	}
	return &net.UDPAddr{IP: ip, Port: port}, nil
}

// newMapper builds (but does not start) the mapper for our socket's port.
func (h *Host) newMapper(mode string) error {
	if mode == portmap.ModeOff {
		return nil
	}
	la, ok := h.demux.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil
	}
	pc := h.cfg.PortMap
	pc.Mode, pc.InternalPort, pc.Logger, pc.Now, pc.OnChange = mode, la.Port, h.log, h.cfg.Clock.Now, h.onMapping
	m, err := portmap.New(pc)
	if err != nil {
		return fmt.Errorf("host: port mapping: %w", err)
	}
	h.pm.mapper = m
	return nil
}

// onMapping is the mapper's OnChange: a new or moved mapping must be proven
// again before it is published; a lost one is withdrawn at once.
func (h *Host) onMapping(m portmap.Mapping, ok bool) {
	h.mu.Lock()
	same := ok && h.pm.has && addrEqual(m.External, h.pm.cur.External)
	h.pm.cur, h.pm.has = m, ok
	if !same {
		h.pm.verified, h.pm.lastVerify, h.pm.toldFail = false, time.Time{}, false
	}
	h.mu.Unlock()
	if !same {
		h.kickPublish()
	}
}

// publishedMapping returns what goes first in the record: the manual public
// address, then a proven router mapping.
func (h *Host) publishedMapping() []*net.UDPAddr {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*net.UDPAddr
	if h.pm.public != nil {
		out = append(out, h.pm.public)
	}
	if h.pm.has && h.pm.verified {
		out = append(out, h.pm.cur.External)
	}
	return out
}

// verifyMapping asks up to mapVerifyPeers DHT peers to send a NAT_PROBE_ECHO
// to the mapped address; one echo arriving proves the mapping forwards to
// us. Peers only echo to an address with our source IP, so this works when
// the router's external IP is the one our traffic leaves with (no double NAT).
func (h *Host) verifyMapping(ctx context.Context) {
	h.mu.Lock()
	m, has, done := h.pm.cur, h.pm.has, h.pm.verified
	due := h.pm.lastVerify.IsZero() || h.cfg.Clock.Now().Sub(h.pm.lastVerify) >= mapVerifyEvery
	h.mu.Unlock()
	if !has || done || !due {
		return
	}
	if !protocol.IsPublicIP(m.External.IP) {
		h.logProofFailed("port mapping: the router's external address is not public (another NAT in front?); not publishing it",
			"external", m.External)
		return
	}
	var peers []net.Addr
	for _, a := range h.node.BootstrapCandidateAddrs(15) {
		if u, ok := a.(*net.UDPAddr); ok && protocol.IsPublicIP(u.IP) && len(peers) < mapVerifyPeers {
			peers = append(peers, a)
		}
	}
	if len(peers) == 0 {
		h.log.Debug("port mapping: no DHT peer to prove the mapping yet", "external", m.External)
		return
	}
	// Only the maintenance loop calls this, so attempts never overlap.
	h.mu.Lock()
	h.pm.lastVerify = h.cfg.Clock.Now()
	h.mu.Unlock()
	claimed := protocol.EncodeUDPAddr(m.External.IP, uint16(m.External.Port))
	vctx, cancel := context.WithTimeout(ctx, mapVerifyTimeout)
	defer cancel()
	var wg sync.WaitGroup
	got := make(chan net.Addr, len(peers))
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, _ := h.node.SendNATProbeReq(vctx, p, claimed); ok {
				got <- p
				cancel()
			}
		}()
	}
	wg.Wait()
	close(got)
	by, ok := <-got
	if !ok {
		h.logProofFailed("port mapping: no peer could reach the mapped address yet; not publishing it",
			"protocol", m.Protocol, "external", m.External, "asked", len(peers))
		return
	}
	h.mu.Lock()
	still := h.pm.has && addrEqual(h.pm.cur.External, m.External)
	if still {
		h.pm.verified = true
	}
	h.mu.Unlock()
	if still {
		h.log.Info("port mapping: a peer reached us through the mapping; publishing it", "protocol", m.Protocol,
			"external", m.External, "proved_by", by.String())
	}
}

// logProofFailed logs at info once per mapping, then at debug (the proof is
// retried about every minute).
func (h *Host) logProofFailed(msg string, args ...any) {
	h.mu.Lock()
	told := h.pm.toldFail
	h.pm.toldFail = true
	h.mu.Unlock()
	if told {
		h.log.Debug(msg, args...)
		return
	}
	h.log.Info(msg, args...)
}

// MappingStatus is the port mapping part of Status.
type MappingStatus struct {
	Protocol   string `json:"protocol"`
	External   string `json:"external"`
	Internal   string `json:"internal,omitempty"`
	LeaseLeftS int64  `json:"lease_left_s"`
	Verified   bool   `json:"verified"`
	Manual     bool   `json:"manual,omitempty"`
}

// mappingStatus describes the mappings in force (manual first).
func (h *Host) mappingStatus() []MappingStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []MappingStatus
	if h.pm.public != nil {
		out = append(out, MappingStatus{Protocol: "manual", External: h.pm.public.String(), Verified: true, Manual: true})
	}
	if h.pm.has {
		out = append(out, MappingStatus{Protocol: string(h.pm.cur.Protocol), External: h.pm.cur.External.String(),
			Internal: h.pm.cur.Internal.String(), LeaseLeftS: int64(h.pm.cur.LeaseLeft(h.cfg.Clock.Now()) / time.Second),
			Verified: h.pm.verified})
	}
	return out
}

var mappingDesc = prometheus.NewDesc("a2al_port_mapping_lease_seconds",
	"Seconds left on the router port mapping, by protocol, external address and whether a peer proved it (manual forwards: 0).",
	[]string{"protocol", "external", "verified"}, nil)

// mappingCollector reports the mapping at scrape time.
type mappingCollector struct{ h *Host }

func (c mappingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- mappingDesc }

func (c mappingCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.h.mappingStatus() {
		ch <- prometheus.MustNewConstMetric(mappingDesc, prometheus.GaugeValue, float64(m.LeaseLeftS),
			m.Protocol, m.External, strconv.FormatBool(m.Verified))
	}
}
