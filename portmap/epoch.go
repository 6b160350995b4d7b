package portmap

import "time"

// epochTracker notices a gateway that lost its mapping state. PCP and NAT-PMP
// replies both carry the gateway's epoch (seconds since it started), which
// must advance about as fast as our clock does (docs/port-mapping.md).
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
