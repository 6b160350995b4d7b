package natprobe

import (
	"net/netip"
	"sync"
	"time"
)

// maxSources bounds the limiter's table (about 64 bytes an entry).
const maxSources = 16384

// sourceLimiter is a token bucket per source address (IPv4 address, IPv6
// /64). A STUN request's source can be forged, so the limit is what bounds
// the replies the server can be made to send to any one victim. The table is
// bounded: when it is full an arbitrary entry is forgotten, which only ever
// gives that source a fresh bucket; an attacker rotating forged sources to
// reset a victim's entry must send about maxSources requests per reset.
type sourceLimiter struct {
	rate, burst float64
	now         func() time.Time

	mu      sync.Mutex
	buckets map[netip.Addr]*srcBucket
}

type srcBucket struct {
	tokens float64
	last   time.Time
}

func newSourceLimiter(rate float64, burst int, now func() time.Time) *sourceLimiter {
	return &sourceLimiter{rate: rate, burst: float64(burst), now: now, buckets: map[netip.Addr]*srcBucket{}}
}

// allow spends one token of src's bucket.
func (l *sourceLimiter) allow(src netip.Addr) bool {
	src = src.Unmap().WithZone("")
	if src.Is6() {
		src = netip.PrefixFrom(src, 64).Masked().Addr()
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[src]
	if b == nil {
		if len(l.buckets) >= maxSources {
			for k := range l.buckets { // map order: an arbitrary entry
				delete(l.buckets, k)
				break
			}
		}
		b = &srcBucket{tokens: l.burst, last: now}
		l.buckets[src] = b
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
