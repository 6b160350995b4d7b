package host

import (
	"fmt"

	"github.com/a2alnode/a2al/internal/defaults"
)

// PunchLimits bound what a peer, through the hub, can make this host send or
// run (docs/security.md, "ICE reflection"). Zero fields take the defaults.
type PunchLimits struct {
	// RemoteCandidates is how many candidates one peer may add to one ICE
	// session (default 8; honest peers trickle 2-4). Zero = default.
	RemoteCandidates int
	// UnprovenPerSession caps the connectivity checks one ICE session may
	// send to addresses not yet proven to be the peer's (default 24). Each
	// remote candidate the peer sent lets its address receive 3 (see
	// checkGuard). Zero = default.
	UnprovenPerSession int
	// UnprovenPerDest caps the checks one session may send to one unproven
	// address, however many candidates name it (default 8). Zero = default.
	UnprovenPerDest int
	// UnprovenRate is the global pacing of checks to unproven addresses, per
	// second, across all ICE sessions of the host (default 40; with the
	// fixed burst of unprovenBurst, at most 50 in any one second). Zero =
	// default.
	UnprovenRate float64
	// CallsConcurrent caps incoming calls handled at once (default 16).
	// Zero = default.
	CallsConcurrent int
	// CallsPerMinute caps incoming calls accepted per minute from everyone
	// (default 1200, burst 40): bounds the ICE agents started per second, a
	// CPU limit, at what our hub rings through to one callee by default, so
	// the node is not the tighter limit for legitimate callers during a
	// flood; reflection is bounded by the check budgets whatever the call
	// rate. Zero = default.
	CallsPerMinute float64
	// CallsPerCallerPerMinute caps incoming calls accepted per minute from
	// one caller identity (default 4, burst 2). Zero = default.
	CallsPerCallerPerMinute float64
}

// DefaultPunchLimits are the limits documented in docs/security.md.
func DefaultPunchLimits() PunchLimits {
	return PunchLimits{RemoteCandidates: 8, UnprovenPerSession: 24, UnprovenPerDest: 8, UnprovenRate: 40,
		CallsConcurrent: 16, CallsPerMinute: 1200, CallsPerCallerPerMinute: 4}
}

// fill replaces zero fields by their defaults and refuses negative ones
// (called by Config.fill).
func (l *PunchLimits) fill() error {
	if l.RemoteCandidates < 0 || l.UnprovenPerSession < 0 || l.UnprovenPerDest < 0 || l.UnprovenRate < 0 ||
		l.CallsConcurrent < 0 || l.CallsPerMinute < 0 || l.CallsPerCallerPerMinute < 0 {
		return fmt.Errorf("%w: negative punch limit", errConfig)
	}
	d := DefaultPunchLimits()
	defaults.Or(&l.RemoteCandidates, d.RemoteCandidates)
	defaults.Or(&l.UnprovenPerSession, d.UnprovenPerSession)
	defaults.Or(&l.UnprovenPerDest, d.UnprovenPerDest)
	defaults.Or(&l.UnprovenRate, d.UnprovenRate)
	defaults.Or(&l.CallsConcurrent, d.CallsConcurrent)
	defaults.Or(&l.CallsPerMinute, d.CallsPerMinute)
	defaults.Or(&l.CallsPerCallerPerMinute, d.CallsPerCallerPerMinute)
	return nil
}
