package dht

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
)

// Seen-peers window (docs/dht.md §14.1–14.2).
const (
	seenTTL        = 7 * 24 * time.Hour
	seenFlushEvery = time.Hour
	maxSeenPeers   = 65536
	maxSeenFile    = 8 << 20
)

// seenEntry is 16 bytes (a stamp, not a time.Time): the window may hold
// tens of thousands.
type seenEntry struct {
	last stamp
	boot bool // seen first-hand by this process
}

type seenPeers struct {
	mu     sync.Mutex
	path   string
	self   a2al.NodeID
	m      map[a2al.NodeID]seenEntry
	unique uint64
	// lastFlush: node-clock time of the last periodic write; only the
	// maintenance tick (ticks never overlap) touches it.
	lastFlush time.Time
}

func (s *seenPeers) init(path string, self a2al.NodeID) {
	s.path, s.self = path, self
	s.m = make(map[a2al.NodeID]seenEntry)
}

func (s *seenPeers) record(id a2al.NodeID, now time.Time) {
	if id == s.self {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[id]
	if !ok && len(s.m) >= maxSeenPeers {
		s.pruneLocked(now)
	}
	if !e.boot {
		s.unique++
		e.boot = true
	}
	e.last = stampOf(now)
	s.m[id] = e
}

// pruneLocked drops expired entries; if still full, the oldest of a sample.
func (s *seenPeers) pruneLocked(now time.Time) {
	for id, e := range s.m {
		if now.Sub(e.last.Time()) > seenTTL {
			delete(s.m, id)
		}
	}
	for len(s.m) >= maxSeenPeers {
		var victim a2al.NodeID
		var oldest stamp
		i := 0
		for id, e := range s.m {
			if i == 0 || e.last < oldest {
				victim, oldest = id, e.last
			}
			if i++; i >= 16 {
				break
			}
		}
		delete(s.m, victim)
	}
}

func (s *seenPeers) reach(now time.Time) (h1, h24, d7 int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range s.m {
		age := now.Sub(e.last.Time())
		if age > seenTTL {
			delete(s.m, id)
			continue
		}
		d7++
		if age <= 24*time.Hour {
			h24++
		}
		if age <= time.Hour {
			h1++
		}
	}
	return
}

func (s *seenPeers) uniqueCount() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unique
}

// load reads the persisted window; bad lines are skipped, loaded entries
// never override in-memory ones nor count as seen by this process.
func (s *seenPeers) load(now time.Time, log *slog.Logger) {
	if s.path == "" {
		return
	}
	f, err := os.Open(s.path)
	if err != nil {
		if !os.IsNotExist(err) {
			log.Debug("dht: seen-peers load", "err", err)
		}
		return
	}
	defer f.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := bufio.NewScanner(&limitedReader{f: f, left: maxSeenFile})
	for sc.Scan() && len(s.m) < maxSeenPeers {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) != 2 || len(fs[0]) != 64 {
			continue
		}
		b, err := hex.DecodeString(fs[0])
		if err != nil {
			continue
		}
		sec, err := strconv.ParseInt(fs[1], 10, 64)
		if err != nil {
			continue
		}
		t := time.Unix(sec, 0)
		if now.Sub(t) > seenTTL {
			continue
		}
		var id a2al.NodeID
		copy(id[:], b)
		if id == s.self {
			continue
		}
		if _, ok := s.m[id]; !ok {
			s.m[id] = seenEntry{last: stampOf(t)}
		}
	}
}

type limitedReader struct {
	f    *os.File
	left int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, fmt.Errorf("dht: seen-peers file larger than %d bytes", maxSeenFile)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.f.Read(p)
	l.left -= int64(n)
	return n, err
}

// flush writes the window atomically: temp file (0600), fsync, rename,
// fsync of the directory (docs/reference-defects.md W-31).
func (s *seenPeers) flush(now time.Time) error {
	if s.path == "" {
		return nil
	}
	var sb strings.Builder
	s.mu.Lock()
	for id, e := range s.m {
		if now.Sub(e.last.Time()) > seenTTL {
			delete(s.m, id)
			continue
		}
		fmt.Fprintf(&sb, "%s %d\n", hex.EncodeToString(id[:]), e.last.Time().Unix())
	}
	s.mu.Unlock()
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("dht: seen-peers create %s: %w", tmp, err)
	}
	_, werr := f.WriteString(sb.String())
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, s.path)
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("dht: seen-peers write %s: %w", s.path, werr)
	}
	if d, err := os.Open(filepath.Dir(s.path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// maybeFlushSeen writes the seen-peers window once seenFlushEvery has
// passed since the last write (called from the maintenance tick; the write
// runs as a background task, so file I/O never delays the tick).
func (n *Node) maybeFlushSeen(now time.Time) {
	if n.seen.path == "" {
		return
	}
	if n.seen.lastFlush.IsZero() {
		n.seen.lastFlush = now // first tick: start the period
		return
	}
	if now.Sub(n.seen.lastFlush) < seenFlushEvery {
		return
	}
	if n.submit(func() {
		if err := n.seen.flush(n.now()); err != nil {
			n.log.Debug("dht: seen-peers flush", "err", err)
		}
	}) {
		n.seen.lastFlush = now // a write dropped by a full task queue is tried at the next tick
	}
}
