package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al/clock"
	"github.com/a2alnode/a2al/portmap"
)

func mustPool(tb testing.TB, cfg PoolConfig) *Pool {
	tb.Helper()
	p, err := NewPool(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func mustSched(tb testing.TB, cfg SchedConfig, run func(context.Context, PunchJob) Outcome, reject func(PunchJob, RejectReason)) *Scheduler {
	tb.Helper()
	s, err := NewScheduler(cfg, run, reject)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// A zero Config (with a key) fills to exactly DefaultConfig's tunables.
func TestConfigFillDefaults(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	c := Config{Key: key, ListenAddr: "127.0.0.1:0"}
	if err := c.fill(); err != nil {
		t.Fatal(err)
	}
	d := DefaultConfig()
	d.Key, d.ListenAddr, d.Logger, d.PortMapping = key, c.ListenAddr, c.Logger, portmap.ModeOff
	got := c
	got.Clock, got.Sched.Clock = nil, nil
	if c.Clock == nil || c.Sched.Clock != c.Clock || c.Logger == nil {
		t.Fatal("Clock or Logger left unfilled, or the scheduler not on the host's clock")
	}
	if !reflect.DeepEqual(got, d) {
		t.Fatalf("filled config\n%+v\nwant DefaultConfig\n%+v", got, d)
	}
	// Filling again changes nothing.
	again := c
	if err := again.fill(); err != nil || again.PortMapping != c.PortMapping || again.PoolSize != c.PoolSize {
		t.Fatalf("second fill: %v", err)
	}
}

// Invalid values are refused before anything is bound or started.
func TestConfigValidation(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	for name, mod := range map[string]func(*Config){
		"no key":          func(c *Config) { c.Key = nil },
		"negative pool":   func(c *Config) { c.PoolSize = -1 },
		"negative idle":   func(c *Config) { c.PoolIdle = -time.Second },
		"negative punch":  func(c *Config) { c.PunchTimeout = -time.Second },
		"negative ICE":    func(c *Config) { c.ICE.Connect = -time.Second },
		"negative sched":  func(c *Config) { c.Sched.MaxConcurrent = -1 },
		"negative Mode A": func(c *Config) { c.ModeA.MaxPerIP = -1 },
		"negative limits": func(c *Config) { c.Limits.CallsConcurrent = -1 },
		"negative relay":  func(c *Config) { c.RelayWait = -time.Second },
		"bad hub":         func(c *Config) { c.HubURLs = []string{"ftp://hub"} },
		"bad public":      func(c *Config) { c.PublicAddr = "nowhere" },
		"bad mapping":     func(c *Config) { c.PortMapping = "sometimes" },
	} {
		c := Config{Key: key, ListenAddr: "127.0.0.1:0", DisableMaintenance: true, DisableNAT: true}
		mod(&c)
		if h, err := New(c); err == nil {
			h.Close()
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewPool(PoolConfig{SendQueueLen: -1}); !errors.Is(err, errConfig) {
		t.Errorf("pool with a negative queue: %v", err)
	}
	if _, err := NewScheduler(SchedConfig{QueueLen: -1}, nil, nil); !errors.Is(err, errConfig) {
		t.Errorf("scheduler with a negative queue: %v", err)
	}
}

// Switches: without back-off a failed peer is punched again at once; with
// DisableIdleExpiry nothing is expired for idleness.
func TestConfigSwitches(t *testing.T) {
	g := &gatedRun{release: make(chan struct{}), out: OutcomeFailure}
	close(g.release)
	s := mustSched(t, SchedConfig{DisableBackoff: true}, g.run, nil)
	defer s.Close()
	id := nid(7)
	s.Enqueue(id, nil, PrioHigh)
	waitFor(t, "first attempt ends", func() bool { return len(g.startedIDs()) == 1 && !s.Pending(id) })
	if s.InBackoff(id) {
		t.Fatal("failed peer backed off with DisableBackoff")
	}
	s.Enqueue(id, nil, PrioHigh)
	waitFor(t, "second attempt", func() bool { return len(g.startedIDs()) == 2 })

	a, b := newTestPeer(t, 4), newTestPeer(t, 4)
	a.pool.Close()
	fc := clock.NewFake(time.Now())
	a.pool = mustPool(t, PoolConfig{Self: a.id.NodeID, IdleTimeout: time.Minute, DisableIdleExpiry: true, Clock: fc})
	a.pool.SetInjector(a.rec)
	connect(t, a, b)
	fc.Advance(time.Hour)
	if n := a.pool.ExpireIdle(); n != 0 || !a.pool.HasConn(b.id.NodeID) {
		t.Fatalf("expired %d entries with DisableIdleExpiry", n)
	}
}

// ModeAConfig.DisableIdleTimeout: on one clock, the host with the default
// idle timeout closes its idle connection, the one with it switched off
// keeps its own.
func TestModeAIdleTimeoutDisabled(t *testing.T) {
	fc := clock.NewFake(time.Now())
	on := loopbackHostCfg(t, Config{Clock: fc, ModeA: ModeAConfig{IdleTimeout: time.Minute}})
	off := loopbackHostCfg(t, Config{Clock: fc, ModeA: ModeAConfig{IdleTimeout: time.Minute, DisableIdleTimeout: true}})
	var conns []*quic.Conn
	for _, h := range []*Host{on, off} {
		go func() {
			for {
				if _, err := h.Accept(context.Background()); err != nil {
					return
				}
			}
		}()
		qc := newRawPeer(t, "127.0.0.1", nil).dial(t, h)
		if _, err := sendRoute(t, qc, dialerRouteBytes(h.Address(), 0)); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, qc)
	}
	waitFor(t, "idle close on the default host", func() bool {
		fc.Advance(time.Minute)
		return conns[0].Context().Err() != nil
	})
	for range 5 {
		fc.Advance(time.Hour)
	}
	if err := conns[1].Context().Err(); err != nil {
		t.Fatalf("connection closed with DisableIdleTimeout: %v", context.Cause(conns[1].Context()))
	}
}
