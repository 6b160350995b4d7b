package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/signal"
)

// caller is an attacker (or legitimate) identity connected to a hub from
// its own loopback source address.
type caller struct {
	*signal.Client
	drops atomic.Int32 // connection losses after the first connect
	bytes atomic.Int64 // frames sent for calls (see frameCost)
}

func newCaller(ctx context.Context, hubURL string, src net.IP) (*caller, error) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	c := &caller{}
	connected := false
	var mu sync.Mutex
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
	cl, err := signal.NewClient(signal.ClientConfig{HubURL: hubURL, Key: key, Logger: slog.New(slog.DiscardHandler),
		NetDialContext: d.DialContext, BackoffMin: 200 * time.Millisecond, BackoffMax: time.Second,
		OnState: func(up bool) {
			mu.Lock()
			defer mu.Unlock()
			if up {
				connected = true
			} else if connected {
				c.drops.Add(1)
			}
		}})
	if err != nil {
		return nil, err
	}
	c.Client = cl
	if err := waitUntil(10*time.Second, cl.Registered); err != nil {
		cl.Close()
		return nil, fmt.Errorf("caller from %s did not connect to the hub: %v", src, cl.LastError())
	}
	if err := ctx.Err(); err != nil {
		cl.Close()
		return nil, err
	}
	return c, nil
}

// frameCost is what one frame costs on the wire: its JSON plus the
// WebSocket header of a masked client frame.
func frameCost(f signal.Frame) int64 {
	n := int64(len(signal.EncodeFrame(f)))
	switch {
	case n < 126:
		return n + 6
	case n < 1<<16:
		return n + 8
	}
	return n + 14
}

const fakeSID = "0123456789abcdef0123456789abcdef"

// call places one call and sends our credentials and cands; it returns the
// session (caller closes it) after the signals went out.
func (c *caller) call(ctx context.Context, target a2al.NodeID, cands []string) (*signal.Session, error) {
	c.bytes.Add(frameCost(signal.Frame{T: signal.TCall, CID: 1, Target: fmt.Sprintf("%x", target[:])}))
	s, err := c.Call(ctx, target)
	if err != nil {
		return nil, err
	}
	msgs := []signal.Signal{{Kind: signal.KindCred, Ufrag: "atkufrag" + randHex(4), Pwd: "attackerpassword" + randHex(8)}}
	for _, cand := range cands {
		msgs = append(msgs, signal.Signal{Kind: signal.KindCand, Candidate: cand})
	}
	for _, m := range msgs {
		c.bytes.Add(frameCost(signal.Frame{T: signal.TSig, SID: fakeSID, Kind: m.Kind, Ufrag: m.Ufrag, Pwd: m.Pwd, Cand: m.Candidate}))
		if err := s.Send(ctx, m); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// srcIP is a loopback source address per attacker (Linux routes 127/8 to lo).
func srcIP(block, i int) net.IP { return net.IPv4(127, byte(block), byte(i/250), byte(1+i%250)) }

// targetIP is the third party's address: a non-loopback address of this
// machine (a node would not check a loopback candidate from a stranger, so
// aiming at 127.0.0.1 would measure only that rule), else 127.0.0.1.
func targetIP() net.IP {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.To4()
		}
	}
	return net.IPv4(127, 0, 0, 1)
}

// udpCounter counts packets per second received on a set of ports.
type udpCounter struct {
	conns   []net.PacketConn
	mu      sync.Mutex
	perSec  map[int64]int // unix second -> packets (all ports)
	pkts    int64
	bytes   int64
	wg      sync.WaitGroup
	addrStr []string
}

func newUDPCounter(ip net.IP, n int) (*udpCounter, error) {
	u := &udpCounter{perSec: make(map[int64]int)}
	for range n {
		pc, err := net.ListenPacket("udp4", net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			u.close()
			return nil, err
		}
		u.conns = append(u.conns, pc)
		u.addrStr = append(u.addrStr, pc.LocalAddr().String())
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			buf := make([]byte, 2048)
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				u.mu.Lock()
				u.pkts++
				u.bytes += int64(n)
				u.perSec[time.Now().Unix()]++
				u.mu.Unlock()
			}
		}()
	}
	return u, nil
}

func (u *udpCounter) close() {
	for _, c := range u.conns {
		_ = c.Close()
	}
	u.wg.Wait()
}

func (u *udpCounter) stats() (pkts, bytes int64, maxPPS int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, v := range u.perSec {
		maxPPS = max(maxPPS, v)
	}
	return u.pkts, u.bytes, maxPPS
}

func hostCands(addrs []string) []string {
	out := make([]string, 0, len(addrs))
	for i, a := range addrs {
		h, p, _ := net.SplitHostPort(a)
		out = append(out, fmt.Sprintf("candidate:%d 1 udp 2130706431 %s %s typ host", 100+i, h, p))
	}
	return out
}

// attackReflection: callers trickle 32 candidates aimed at a third party;
// the victim's connectivity checks land there.
func attackReflection(ctx context.Context, e *env, s *Summary) Row {
	r, amp, pps := reflection(ctx, e, 32, 10)
	if r.Err == "" {
		s.ReflectionAmplification, s.ReflectionMaxPPS = ptr(amp), ptr(pps)
	}
	return r
}

// attackReflection1: the same with one candidate per call, where the
// attacker's fixed cost per call is the largest share.
func attackReflection1(ctx context.Context, e *env, s *Summary) Row {
	r, amp, _ := reflection(ctx, e, 1, 11)
	if r.Err == "" {
		s.ReflectionAmplification1 = ptr(amp)
	}
	return r
}

func reflection(ctx context.Context, e *env, ncands, srcBlock int) (r Row, amp, pps float64) {
	h, err := startHub(e.bins)
	if err != nil {
		return Row{Err: err.Error()}, 0, 0
	}
	defer h.stop()
	v, err := startNode(e.bins, e.dir(), h)
	if err != nil {
		return Row{Err: err.Error()}, 0, 0
	}
	defer v.stop()
	tgt, err := newUDPCounter(targetIP(), ncands)
	if err != nil {
		return Row{Err: err.Error()}, 0, 0
	}
	defer tgt.close()
	cands := hostCands(tgt.addrStr)
	r.MemBeforeKB = v.rssKB()
	callers := max(1, 10/e.scale)
	var wg sync.WaitGroup
	var spent atomic.Int64
	var failed atomic.Int32
	for i := range callers {
		c, err := newCaller(ctx, h.url, srcIP(srcBlock, i))
		if err != nil {
			return Row{Err: err.Error()}, 0, 0
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { spent.Add(c.bytes.Load()) }()
			cctx, cancel := context.WithTimeout(ctx, 8*time.Second)
			defer cancel()
			sess, err := c.call(cctx, v.id(), cands)
			if err != nil {
				failed.Add(1)
				return
			}
			defer sess.Close()
			for { // read until the victim gives up or our time is over
				if _, err := sess.Recv(cctx); err != nil {
					return
				}
			}
		}()
		time.Sleep(300 * time.Millisecond)
	}
	wg.Wait()
	time.Sleep(time.Second)
	pkts, bytes, maxPPS := tgt.stats()
	r.MemAfterKB = v.rssKB()
	r.AttackerBytes, r.AttackerPkts = spent.Load(), int64(callers*(len(cands)+2))
	amp = float64(bytes) / float64(max(1, r.AttackerBytes))
	r.VictimSent = fmt.Sprintf("%d pkts %d B to 3rd party (%.1fx, max %d pkt/s)", pkts, bytes, amp, maxPPS)
	r.Legit = fmt.Sprintf("%d/%d calls answered", callers-int(failed.Load()), callers)
	return r, amp, float64(maxPPS)
}

// pollRegistered counts the victim's hub registration losses until stop.
func pollRegistered(v *node, stop <-chan struct{}) func() int {
	var drops atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		was := true
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			st, err := v.status()
			if err != nil {
				continue
			}
			up := st.Hubs.Registered > 0
			if was && !up {
				drops.Add(1)
			}
			was = up
		}
	}()
	return func() int { <-done; return int(drops.Load()) }
}

// legitCall calls the victim and waits for its ICE credentials: the victim
// is reachable and answers. Like a node's punch scheduler it tries up to
// three times, a second apart.
func legitCall(ctx context.Context, hubURL string, target a2al.NodeID) bool {
	c, err := newCaller(ctx, hubURL, srcIP(30, 1))
	if err != nil {
		return false
	}
	defer c.Close()
	for range 3 {
		if legitCallOnce(ctx, c, target) {
			return true
		}
		time.Sleep(time.Second)
	}
	return false
}

func legitCallOnce(ctx context.Context, c *caller, target a2al.NodeID) bool {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	sess, err := c.Call(cctx, target)
	if err != nil {
		return false
	}
	defer sess.Close()
	for {
		m, err := sess.Recv(cctx)
		if err != nil {
			return false
		}
		if m.Kind == signal.KindCred {
			return true
		}
	}
}

// attackCallFlood: 100 identities call one victim at 100 calls/s for 3 s; a
// legitimate caller calls in the middle.
func attackCallFlood(ctx context.Context, e *env, s *Summary) (r Row) {
	h, v, stopVictim, err := startHubAndVictim(e)
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer stopVictim()
	n := max(2, 100/e.scale)
	var cs []*caller
	for i := range n {
		c, err := newCaller(ctx, h.url, srcIP(20, i%4)) // 4 source IPs
		if err != nil {
			return Row{Err: err.Error()}
		}
		defer c.Close()
		cs = append(cs, c)
	}
	r.MemBeforeKB = v.rssKB()
	stop := make(chan struct{})
	drops := pollRegistered(v, stop)
	var answered, placed atomic.Int64
	var wg sync.WaitGroup
	legit := make(chan bool, 1)
	go func() {
		time.Sleep(1500 * time.Millisecond)
		legit <- legitCall(ctx, h.url, v.id())
	}()
	cand := []string{fmt.Sprintf("candidate:1 1 udp 2130706431 %s 9 typ host", targetIP())}
	tick := time.NewTicker(10 * time.Millisecond) // 100 calls/s
	for i := 0; i < 3*n; i++ {
		<-tick.C
		c := cs[i%n]
		placed.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			sess, err := c.call(cctx, v.id(), cand)
			if err != nil {
				return
			}
			answered.Add(1)
			sess.Close()
		}()
	}
	tick.Stop()
	wg.Wait()
	ok := <-legit
	time.Sleep(time.Second)
	close(stop)
	d := drops()
	r.MemAfterKB = v.rssKB()
	for _, c := range cs {
		r.AttackerBytes += c.bytes.Load()
	}
	r.AttackerPkts = placed.Load()
	s.HubVictimDisconnects, s.HubVictimLegitCallOK = ptr(d), ptr(ok)
	r.VictimSent = fmt.Sprintf("%d/%d calls accepted; %d hub disconnects", answered.Load(), placed.Load(), d)
	r.Legit = fmt.Sprintf("legit call answered: %v", ok)
	return r
}

// attackHubBurst: one caller sends 53 calls at once, inside the hub's
// advertised frame burst.
func attackHubBurst(ctx context.Context, e *env, s *Summary) (r Row) {
	h, v, stopVictim, err := startHubAndVictim(e)
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer stopVictim()
	c, err := newCaller(ctx, h.url, srcIP(40, 1))
	if err != nil {
		return Row{Err: err.Error()}
	}
	defer c.Close()
	r.MemBeforeKB = h.rssKB()
	const burst = 53
	var wg sync.WaitGroup
	var outcomes sync.Map
	var mu sync.Mutex
	var sessions []*signal.Session // hung up only after the measurement: hangups are frames too
	for range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.bytes.Add(frameCost(signal.Frame{T: signal.TCall, CID: 1, Target: fmt.Sprintf("%x", v.id())}))
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			sess, err := c.Call(cctx, v.id())
			key := "accepted"
			if err != nil {
				key = shortErr(err)
			} else {
				mu.Lock()
				sessions = append(sessions, sess)
				mu.Unlock()
			}
			n, _ := outcomes.LoadOrStore(key, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
		}()
	}
	wg.Wait()
	time.Sleep(500 * time.Millisecond)
	dropped := c.drops.Load() > 0
	why := ""
	if err := c.LastError(); dropped && err != nil {
		why = fmt.Sprintf(" (%v)", err)
	}
	time.Sleep(3 * time.Second) // let the frame budget refill before hanging up
	for _, sess := range sessions {
		sess.Close()
	}
	r.MemAfterKB = h.rssKB()
	r.AttackerBytes, r.AttackerPkts = c.bytes.Load(), burst
	s.HubBurstCallerDropped = ptr(dropped)
	var parts []string
	outcomes.Range(func(k, n any) bool {
		parts = append(parts, fmt.Sprintf("%s:%d", k, n.(*atomic.Int32).Load()))
		return true
	})
	sort.Strings(parts)
	r.VictimSent = fmt.Sprintf("calls %v", parts)
	r.Legit = fmt.Sprintf("caller disconnected by hub: %v%s", dropped, why)
	return r
}

func shortErr(err error) string {
	msg := err.Error()
	if len(msg) > 24 {
		msg = msg[:24]
	}
	return msg
}
