package host

import (
	"time"

	"github.com/a2alnode/a2al/clock"
)

// ticker is a periodic timer on the host's clock (clock.Clock has timers
// only): after each tick taken from C, next arms the following one, so ticks
// are d apart from the end of the previous one's handling.
type ticker struct {
	t clock.Timer
	d time.Duration
}

func newTicker(clk clock.Clock, d time.Duration) *ticker { return &ticker{t: clk.NewTimer(d), d: d} }

func (t *ticker) C() <-chan time.Time { return t.t.C() }
func (t *ticker) next()               { t.t.Reset(t.d) }
func (t *ticker) stop()               { t.t.Stop() }
