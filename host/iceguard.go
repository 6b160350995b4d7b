package host

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/stun"
)

// maxGuardSessions bounds the ICE sessions the guard tracks (and so the
// sessions a host runs at once): incoming calls (16) and the scheduler's
// attempts run far below it, and the agents kept alive under relayed
// connections are bounded by the pool (64 by default).
const maxGuardSessions = 128

// unprovenBurst is the global bucket's depth: small, so that rate+burst
// bounds the checks to unproven addresses in any one second.
const unprovenBurst = 10

// maxCredit bounds the extra checks an unproven address earns by sending
// authenticated checks (see checkGuard).
const maxCredit = 4

// checkGuard sits between every ICE agent and the shared socket, so its
// budgets hold across all sessions whatever pion schedules (RFC 8445 paces
// per agent; reflection needs a per-host bound).
//
// A connectivity check (a Binding request carrying USERNAME
// "<peer ufrag>:<our ufrag>") to an address the session has not proven is
// charged to the session's per-address and per-session budgets and to the
// global token bucket; over budget it is dropped (pion sees a lost packet).
// An address is proven for a session when it sends a success response with
// the transaction ID of one of our checks: only a host that received our
// check can do that (consent, as in RFC 7675). An authenticated check from
// an unproven address earns it one more check (pion answers every check with
// a triggered check; a spoofed source gets no more than one packet per packet).
// Requests without USERNAME (STUN gathering to configured servers),
// responses and indications pass untouched: they go to configured servers or
// back to a packet's own source.
//
// A relayed local candidate would not write through this socket; a remote
// relay candidate (an address on a TURN server) is checked and proven here
// like any other.
type checkGuard struct {
	net.PacketConn
	lim PunchLimits
	now func() time.Time

	mu       sync.Mutex // guards sessions, pending, tokens, last
	sessions map[string]*guardSession
	pending  map[[stun.TransactionIDSize]byte]pendingCheck
	tokens   float64
	last     time.Time

	sent, dropped atomic.Uint64 // unproven checks passed / dropped
}

type guardSession struct {
	pwd    string
	left   int                         // unproven checks left for the session (UnprovenPerSession)
	allow  map[netip.AddrPort]int      // unproven checks left per address (see addCandidate)
	credit map[netip.AddrPort]int      // checks earned by authenticated requests
	proven map[netip.AddrPort]struct{} // addresses that answered one of our checks
	txs    int                         // entries in pending
}

type pendingCheck struct {
	ufrag string
	dest  netip.AddrPort
}

// maxPendingPerSession bounds the transaction IDs remembered per session;
// budgets keep an honest session far below.
const maxPendingPerSession = 64

var errTooManyICESessions = errors.New("host: too many ICE sessions")

func newCheckGuard(pc net.PacketConn, lim PunchLimits, now func() time.Time) *checkGuard {
	return &checkGuard{PacketConn: pc, lim: lim, now: now, sessions: make(map[string]*guardSession),
		pending: make(map[[stun.TransactionIDSize]byte]pendingCheck), tokens: unprovenBurst, last: now()}
}

// open registers an ICE session by its local credentials.
func (g *checkGuard) open(ufrag, pwd string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.sessions) >= maxGuardSessions {
		return errTooManyICESessions
	}
	if _, dup := g.sessions[ufrag]; dup {
		return fmt.Errorf("host: duplicate ICE ufrag %q", ufrag)
	}
	g.sessions[ufrag] = &guardSession{pwd: pwd, left: g.lim.UnprovenPerSession,
		allow: make(map[netip.AddrPort]int), credit: make(map[netip.AddrPort]int),
		proven: make(map[netip.AddrPort]struct{})}
	return nil
}

// unprovenPerCandidate is what one remote candidate the peer sent (and
// candidateAllowed accepted) adds to the unproven checks its address may
// receive, up to UnprovenPerDest per address and UnprovenPerSession per
// session. Each address has its own allowance, so checks to a candidate
// that never answers (a symmetric NAT's reflexive port) cannot use up what
// a later one needs; an address no candidate named (peer-reflexive) gets
// only credit. A caller pays ~230 bytes of hub frames per call and ~140 per
// candidate, a check is ~110 bytes: for host and reflexive candidates what a
// session may send unproven stays under twice what the peer spent on it.
//
// A relay candidate gets UnprovenPerDest: its TURN server drops our checks
// until the peer's permission for our IP exists, which comes with the
// peer's own first checks from the relay; 3 checks (150 ms) sometimes end
// before that, and then neither side learns the other's address. A caller
// may label any address a relay candidate, so this is the bound to use for
// the worst case: 24 checks (~2.7 KB) per call, under the global pacing.
const unprovenPerCandidate = 3

// addCandidate gives the address of one accepted remote candidate of
// session ufrag its allowance (relay: see unprovenPerCandidate).
func (g *checkGuard) addCandidate(ufrag string, dest netip.AddrPort, relay bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.sessions[ufrag]
	if s == nil || (s.allow[dest] == 0 && len(s.allow) >= maxPendingPerSession) {
		return
	}
	add := unprovenPerCandidate
	if relay {
		add = g.lim.UnprovenPerDest
	}
	s.allow[dest] = min(s.allow[dest]+add, g.lim.UnprovenPerDest)
}

// close forgets a session and its pending checks.
func (g *checkGuard) close(ufrag string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.sessions[ufrag]
	if s == nil {
		return
	}
	delete(g.sessions, ufrag)
	if s.txs > 0 {
		for id, p := range g.pending {
			if p.ufrag == ufrag {
				delete(g.pending, id)
			}
		}
	}
}

// WriteTo drops connectivity checks over budget (see checkGuard).
func (g *checkGuard) WriteTo(p []byte, addr net.Addr) (int, error) {
	if !g.allow(p, addr) {
		return len(p), nil
	}
	return g.PacketConn.WriteTo(p, addr)
}

// ReadFrom learns proofs and credits from what arrives, then hands the
// packet on unchanged.
func (g *checkGuard) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := g.PacketConn.ReadFrom(p)
	if err == nil && n > 0 {
		g.observe(p[:n], addr)
	}
	return n, addr, err
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
}

// parseSTUN decodes b if it is a STUN message of type t.
func parseSTUN(b []byte, t stun.MessageType) (*stun.Message, bool) {
	if !stun.IsMessage(b) {
		return nil, false
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil || m.Type != t {
		return nil, false
	}
	return m, true
}

// ufrags splits a USERNAME attribute into its two ufrags.
func ufrags(m *stun.Message) (first, second string, ok bool) {
	var u stun.Username
	if u.GetFrom(m) != nil {
		return "", "", false
	}
	return strings.Cut(u.String(), ":")
}

func (g *checkGuard) allow(p []byte, addr net.Addr) bool {
	m, ok := parseSTUN(p, stun.BindingRequest)
	if !ok {
		return true
	}
	_, local, ok := ufrags(m)
	if !ok {
		return true // gathering towards a configured STUN server
	}
	dest, ok := addrPort(addr)
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.sessions[local]
	if s == nil || !ok {
		g.dropped.Add(1) // a check from no session we run: never ours to send
		return false
	}
	if _, ok := s.proven[dest]; ok {
		return true
	}
	credited := s.credit[dest] > 0
	if !credited && (s.left <= 0 || s.allow[dest] <= 0) {
		g.dropped.Add(1)
		return false
	}
	if !g.takeToken() {
		g.dropped.Add(1)
		return false
	}
	if credited {
		s.credit[dest]--
	} else {
		s.left--
		s.allow[dest]--
	}
	if s.txs < maxPendingPerSession {
		g.pending[m.TransactionID] = pendingCheck{ufrag: local, dest: dest}
		s.txs++
	}
	g.sent.Add(1)
	return true
}

// takeToken spends one token of the global bucket (g.mu held).
func (g *checkGuard) takeToken() bool {
	now := g.now()
	if el := now.Sub(g.last).Seconds(); el > 0 {
		g.tokens = min(unprovenBurst, g.tokens+el*g.lim.UnprovenRate)
	}
	g.last = now
	if g.tokens < 1 {
		return false
	}
	g.tokens--
	return true
}

func (g *checkGuard) observe(b []byte, addr net.Addr) {
	src, ok := addrPort(addr)
	if !ok || !stun.IsMessage(b) {
		return
	}
	if m, ok := parseSTUN(b, stun.BindingSuccess); ok {
		g.mu.Lock()
		defer g.mu.Unlock()
		pc, ok := g.pending[m.TransactionID]
		if !ok || pc.dest != src {
			return
		}
		delete(g.pending, m.TransactionID)
		if s := g.sessions[pc.ufrag]; s != nil {
			s.txs--
			if len(s.proven) < maxPendingPerSession {
				s.proven[src] = struct{}{}
			}
		}
		return
	}
	m, ok := parseSTUN(b, stun.BindingRequest)
	if !ok {
		return
	}
	local, _, ok := ufrags(m)
	if !ok {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.sessions[local]
	if s == nil {
		return
	}
	if _, ok := s.proven[src]; ok {
		return
	}
	if stun.NewShortTermIntegrity(s.pwd).Check(m) != nil {
		return
	}
	if s.credit[src] < maxCredit && len(s.credit) < maxPendingPerSession {
		s.credit[src]++
	}
}

// candidateAllowed is the rule for which remote candidates a session checks
// at all (docs/security.md): the address must be an IP literal (no name
// lookups on a peer's behalf); a global unicast address is allowed; a
// private, shared (100.64/10), link-local or loopback address only when it
// lies in a subnet of one of our own interfaces — that is the only way a peer
// can really be there — and loopback only when the host runs with loopback
// candidates (tests). Without this rule any caller could point our checks at
// hosts on our own LAN.
func candidateAllowed(c ice.Candidate, local []netip.Prefix, loopback bool) bool {
	ip, err := netip.ParseAddr(c.Address())
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	switch {
	case ip.IsUnspecified(), ip.IsMulticast(), !ip.Is4() && !ip.Is6():
		return false
	case ip.IsLoopback() && !loopback:
		return false
	}
	if !nonGlobal(ip) {
		return true
	}
	for _, p := range local {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

var sharedSpace = netip.MustParsePrefix("100.64.0.0/10")

// nonGlobal: addresses only meaningful on some local network.
func nonGlobal(ip netip.Addr) bool {
	return ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || sharedSpace.Contains(ip)
}

// localPrefixes lists the subnets of our interfaces (on the network ICE
// uses: vnet in tests).
func (e *iceEnv) localPrefixes() []netip.Prefix {
	var out []netip.Prefix
	add := func(addrs []net.Addr) {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					ones, _ := n.Mask.Size()
					if ip.Unmap().Is4() && ones > 32 {
						ones -= 96
					}
					if p, err := ip.Unmap().Prefix(ones); err == nil {
						out = append(out, p)
					}
				}
			}
		}
	}
	if e.net != nil {
		ifs, err := e.net.Interfaces()
		if err != nil {
			return nil
		}
		for _, i := range ifs {
			if as, err := i.Addrs(); err == nil {
				add(as)
			}
		}
		return out
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	for _, i := range ifs {
		if as, err := i.Addrs(); err == nil {
			add(as)
		}
	}
	return out
}

// productive reports whether session ufrag has a proven address or has
// received an authenticated check.
func (g *checkGuard) productive(ufrag string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.sessions[ufrag]
	return s != nil && (len(s.proven) > 0 || len(s.credit) > 0)
}
