package host

import (
	"net"
	"sort"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
)

// Our public address from what DHT peers see (docs/public-address.md): every
// PONG and FIND_*_RESP carries observed_addr, the address the answer was sent
// to. An address is trusted once peers in voteQuorum distinct networks (/24
// for IPv4, /48 for IPv6) reported it within voteTTL, so one network cannot
// plant a false address.
const (
	voteTTL         = 15 * time.Minute
	voteQuorum      = 3
	maxVoteAddrs    = 32 // observed addresses remembered
	maxVotesPerAddr = 64 // reporter networks per observed address
)

// addrVotes counts reports per observed address; its own lock guards it
// (never held while taking Host.mu).
type addrVotes struct {
	mu sync.Mutex
	by map[string]*addrTally
}

type addrTally struct {
	addr *net.UDPAddr
	nets map[string]time.Time // reporter network -> last report
}

// reporterNet is the network a reporter counts for.
func reporterNet(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		return v4.Mask(net.CIDRMask(24, 32)).String()
	}
	return ip.Mask(net.CIDRMask(48, 128)).String()
}

// add records that a reporter at reporter saw us as observed.
func (v *addrVotes) add(reporter net.IP, observed *net.UDPAddr, now time.Time) {
	if !protocol.IsPublicIP(reporter) || !protocol.IsPublicIP(observed.IP) || observed.Port == 0 {
		return // a LAN peer says nothing about our public side
	}
	key, rn := observed.String(), reporterNet(reporter)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.by == nil {
		v.by = make(map[string]*addrTally)
	}
	t := v.by[key]
	if t == nil {
		if len(v.by) >= maxVoteAddrs {
			v.pruneLocked(now)
		}
		if len(v.by) >= maxVoteAddrs {
			return
		}
		t = &addrTally{addr: observed, nets: make(map[string]time.Time)}
		v.by[key] = t
	}
	if _, ok := t.nets[rn]; !ok && len(t.nets) >= maxVotesPerAddr {
		v.pruneLocked(now)
		if len(t.nets) >= maxVotesPerAddr {
			return
		}
	}
	// A network's latest report is its vote: when our router's outside
	// address or port changes, reporters move their votes to the new one.
	for k, o := range v.by {
		if o != t {
			delete(o.nets, rn)
			if len(o.nets) == 0 {
				delete(v.by, k)
			}
		}
	}
	t.nets[rn] = now
	v.by[key] = t // a prune above may have dropped it while empty
}

// pruneLocked drops expired reports and emptied addresses.
func (v *addrVotes) pruneLocked(now time.Time) {
	for k, t := range v.by {
		for n, at := range t.nets {
			if now.Sub(at) >= voteTTL {
				delete(t.nets, n)
			}
		}
		if len(t.nets) == 0 {
			delete(v.by, k)
		}
	}
}

// trusted returns the address most reporter networks agree on, if at least
// voteQuorum of them do (ties: the lexically smaller address, so the answer
// does not flap).
func (v *addrVotes) trusted(now time.Time) *net.UDPAddr {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.pruneLocked(now)
	keys := make([]string, 0, len(v.by))
	for k := range v.by {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var best *net.UDPAddr
	bestN := voteQuorum - 1
	for _, k := range keys {
		if n := len(v.by[k].nets); n > bestN {
			best, bestN = v.by[k].addr, n
		}
	}
	return best
}

// trustedIP returns the IP that voteQuorum reporter networks agree on,
// whatever ports they saw (behind a symmetric NAT every peer sees another
// port, but the same IP).
func (v *addrVotes) trustedIP(now time.Time) net.IP {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.pruneLocked(now)
	nets := map[string]map[string]bool{}
	for _, t := range v.by {
		ip := t.addr.IP.String()
		if nets[ip] == nil {
			nets[ip] = map[string]bool{}
		}
		for n := range t.nets {
			nets[ip][n] = true
		}
	}
	ips := make([]string, 0, len(nets))
	for ip := range nets {
		ips = append(ips, ip)
	}
	sort.Strings(ips)
	var best net.IP
	bestN := voteQuorum - 1
	for _, ip := range ips {
		if n := len(nets[ip]); n > bestN {
			best, bestN = net.ParseIP(ip), n
		}
	}
	return best
}

// mapping judges the NAT's mapping behaviour from the votes for the trusted
// IP (docs/public-address.md): one port that voteQuorum networks agree on is
// endpoint-independent mapping; voteQuorum networks that each saw another
// port is endpoint-dependent (symmetric). Anything in between (a mapping
// that just moved) is unknown until the votes settle. sample is an address
// with the trusted IP (the agreed one when there is one).
func (v *addrVotes) mapping(now time.Time) (b natprobe.Behavior, ip net.IP, sample *net.UDPAddr) {
	ip = v.trustedIP(now)
	if ip == nil {
		return natprobe.BehaviorUnknown, nil, nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	ports, maxPerPort := 0, 0
	var best, newest *net.UDPAddr
	var newestAt time.Time
	for _, t := range v.by {
		if !t.addr.IP.Equal(ip) {
			continue
		}
		ports++
		if len(t.nets) > maxPerPort {
			best, maxPerPort = t.addr, len(t.nets)
		}
		for _, at := range t.nets {
			if at.After(newestAt) {
				newest, newestAt = t.addr, at
			}
		}
	}
	sample = newest
	if maxPerPort >= voteQuorum {
		sample = best
	}
	switch {
	case maxPerPort >= voteQuorum:
		return natprobe.BehaviorEndpointIndependent, ip, sample
	case maxPerPort == 1 && ports >= voteQuorum:
		return natprobe.BehaviorAddressPortDep, ip, sample
	}
	return natprobe.BehaviorUnknown, ip, sample
}

// reset forgets every report (the network changed).
func (v *addrVotes) reset() {
	v.mu.Lock()
	v.by = nil
	v.mu.Unlock()
}

// onObserved is the DHT's OnObservedAddr. When peers agree on a new public
// address it feeds the DHT's hairpin check and the endpoint record (unless
// STUN already told us), and a change of our public IP drops paths that were
// punched from the old one.
func (h *Host) onObserved(_ a2al.NodeID, from net.Addr, wire []byte) {
	u, ok := from.(*net.UDPAddr)
	if !ok {
		return
	}
	obs, err := protocol.DecodeUDPAddr(wire)
	if err != nil {
		return
	}
	if obs.IP.To4() == nil && h.fam.V4 {
		// No NAT66: our IPv6 outside address is an interface address we
		// already publish (docs/host.md §6.1). Counted next to IPv4 reports,
		// the winner could flip between families and evict punched paths
		// each time.
		return
	}
	now := h.cfg.Clock.Now()
	h.votes.add(u.IP, obs, now)
	addr, ip := h.votes.trusted(now), h.votes.trustedIP(now)
	h.mu.Lock()
	prevAddr, prevIP := h.peerPublic, h.peerIP
	h.peerPublic, h.peerIP = addr, ip
	stun := h.natKnown && !h.sense.byPeers && h.nat.PublicIP != nil
	h.mu.Unlock()
	if ip != nil && (!ip.Equal(prevIP) || !addrEqual(prevAddr, addr) || !stun) {
		h.kickSense() // the votes say something new: re-judge the NAT type
	}
	if ip != nil && !ip.Equal(prevIP) {
		h.log.Info("public IP from DHT peers", "ip", ip.String(), "min_reporter_networks", voteQuorum)
		if !stun {
			h.node.SetSelfExtIP(ip)
		}
		if prevIP != nil {
			// Our router got a new outside address: punched paths are stale.
			h.log.Info("public IP changed: evicting punched paths", "old", prevIP, "new", ip)
			h.pool.EvictAll("public IP changed")
			h.sched.ResetAll()
		}
	}
	if !addrEqual(prevAddr, addr) {
		h.kickPublish()
	}
}

// PeerPublic is what DHT peers agree our public address is: the address
// (nil when their ports differ, e.g. behind a symmetric NAT) and the IP (nil
// before a quorum).
func (h *Host) PeerPublic() (*net.UDPAddr, net.IP) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.peerPublic, h.peerIP
}

// votedPublic is the peers' consensus address when no STUN result is known
// (with STUN, the classification's mapping is published instead).
func (h *Host) votedPublic() *net.UDPAddr {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.natKnown && h.nat.MappedAddr != nil {
		return nil
	}
	return h.peerPublic
}
