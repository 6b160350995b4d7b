package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/a2alnode/a2al/host"
)

// monitorSample is how often the monitor looks at the host; a line is
// logged only when something an operator cares about changed, or when the
// status interval passed.
const monitorSample = 2 * time.Second

// monitor watches a running host: it logs "joined" once the node has live
// routing peers, warns when a hub is unreachable (with the reason) and when
// it comes back, logs a status line on change or at the status interval,
// and says when the node is ready for /healthz.
type monitor struct {
	h     *host.Host
	log   *slog.Logger
	ready atomic.Bool // joined the DHT (or first node with no seeds)
	first bool        // no seeds: ready at once

	last     statusKey
	lastAt   time.Time
	joined   bool
	hubState map[string]string // url -> "" (registered) or the error last warned about
}

// statusKey is what makes a status line worth logging before its interval.
type statusKey struct {
	nat, public string
	mapping     string
	live        bool // has live routing peers
	hubsUp      int
	seq         uint64
}

func newMonitor(h *host.Host, log *slog.Logger, firstNode bool) *monitor {
	m := &monitor{h: h, log: log, first: firstNode, hubState: map[string]string{}}
	m.ready.Store(firstNode)
	return m
}

// loop samples until ctx ends.
func (m *monitor) loop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(monitorSample)
	defer t.Stop()
	m.step(every)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.step(every)
		}
	}
}

func (m *monitor) step(every time.Duration) {
	st := m.h.Status()
	if st.LivePeers > 0 && !m.joined {
		m.joined = true
		m.ready.Store(true)
		m.log.Info("joined the DHT", "live_peers", st.LivePeers, "network_size_estimate", st.NetworkSize)
	}
	for _, hs := range st.HubStates {
		prev, seen := m.hubState[hs.URL]
		switch {
		case hs.Registered && (prev != "" || !seen):
			m.hubState[hs.URL] = ""
			m.log.Info("signaling hub registered", "url", hs.URL)
		case !hs.Registered && hs.Error != "" && hs.Error != prev:
			m.hubState[hs.URL] = hs.Error
			m.log.Warn("signaling hub unreachable; peers behind NATs cannot punch to this node until it is back", "url", hs.URL, "err", hs.Error)
		}
	}
	mapping := "-"
	if len(st.PortMapping) > 0 {
		pm := st.PortMapping[0]
		mapping = pm.Protocol + " " + pm.External
		if !pm.Verified {
			mapping += " (unproven)"
		}
	}
	k := statusKey{nat: st.NAT, public: st.Public, mapping: mapping, live: st.LivePeers > 0, hubsUp: st.HubsRegistered, seq: st.Seq}
	now := time.Now()
	if k == m.last && now.Sub(m.lastAt) < every {
		return
	}
	m.last, m.lastAt = k, now
	pub := st.Public
	if pub == "" {
		pub = "-"
	}
	m.log.Info("status", "nat", st.NAT, "public", pub, "mapping", mapping, "live_peers", st.LivePeers, "routing_peers", st.RoutingPeers,
		"hubs", fmt.Sprintf("%d/%d registered", st.HubsRegistered, st.Hubs), "pool", len(st.Pool), "published_seq", st.Seq)
}
