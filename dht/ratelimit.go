package dht

import (
	"net"
	"sync"
	"time"
)

// Rate-limit classes, per source IP (docs/reference-defects.md W-24, W-25).
const (
	classPacket  = iota // every datagram, checked before signature verification
	classStore          // STORE: record + delegation verification
	classAmplify        // FIND_* answers, several times larger than the request
	// classAmplifyUnproven: FIND_* answers to a source not yet proven to be
	// the sender's address (docs/dht-security.md, "Answers to unproven sources").
	classAmplifyUnproven
	numClasses
)

type rateSpec struct {
	rate  float64 // tokens per second
	burst float64
}

var defaultRateLimits = [numClasses]rateSpec{
	classPacket:  {rate: 400, burst: 800},
	classStore:   {rate: 20, burst: 40},
	classAmplify: {rate: 100, burst: 200},
	// classAmplifyUnproven comes from Config.UnprovenAnswerRate.
}

const limiterCap = 4096 // entries per generation (two generations kept)

// tokenBucket is a single budget (the address challenges'); the per-source
// limiter packs its buckets in srcBuckets.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

// srcBuckets are one source's token buckets, packed (24 bytes): one refill
// stamp for all classes, float32 token counts (whole tokens up to 2^24).
type srcBuckets struct {
	last   int64 // UnixNano of the last refill
	tokens [numClasses]float32
}

// take refills every class for the time since the last call, then spends
// one token of class; false when it has none.
func (b *srcBuckets) take(spec *[numClasses]rateSpec, class int, now time.Time) bool {
	t := now.UnixNano()
	if dt := time.Duration(t - b.last).Seconds(); dt > 0 {
		for i := range b.tokens {
			b.tokens[i] = float32(min(spec[i].burst, float64(b.tokens[i])+dt*spec[i].rate))
		}
		b.last = t
	}
	if b.tokens[class] < 1 {
		return false
	}
	b.tokens[class]--
	return true
}

// rateLimiter keeps token buckets per source in two generations: when the
// current map is full it becomes the previous one and the oldest is dropped,
// so memory is bounded without scanning.
type rateLimiter struct {
	mu        sync.Mutex
	spec      [numClasses]rateSpec
	cur, prev map[string]srcBuckets
}

func (l *rateLimiter) init(spec [numClasses]rateSpec) {
	l.spec = spec
	l.cur = make(map[string]srcBuckets)
	l.prev = make(map[string]srcBuckets)
}

func (l *rateLimiter) setSpec(class int, s rateSpec) {
	l.mu.Lock()
	l.spec[class] = s
	l.mu.Unlock()
}

// sourceKey identifies the sender for rate limiting: its IP for UDP, the
// address string otherwise.
func sourceKey(a net.Addr) string {
	if u, ok := a.(*net.UDPAddr); ok {
		return string(u.IP.To16())
	}
	if a == nil {
		return ""
	}
	return a.Network() + ":" + a.String()
}

func (l *rateLimiter) allow(key string, class int, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.cur[key]
	if !ok {
		if b, ok = l.prev[key]; ok {
			delete(l.prev, key)
		} else {
			b.last = now.UnixNano()
			for i := range b.tokens {
				b.tokens[i] = float32(l.spec[i].burst)
			}
		}
		if len(l.cur) >= limiterCap {
			l.prev = l.cur
			l.cur = make(map[string]srcBuckets)
		}
	}
	allowed := b.take(&l.spec, class, now)
	l.cur[key] = b
	return allowed
}

// rotate ages the generations: sources idle for two rotations are dropped.
// Their buckets would have refilled anyway (burst/rate is a few seconds),
// so dropping them only frees memory.
func (l *rateLimiter) rotate() {
	l.mu.Lock()
	l.prev = l.cur
	l.cur = make(map[string]srcBuckets)
	l.mu.Unlock()
}
