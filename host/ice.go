package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/logging"
	"github.com/pion/stun"
	"github.com/pion/transport/v2"

	"github.com/a2alnode/a2al/clock"
	"github.com/a2alnode/a2al/signal"
)

// Punch failure classes, folded into dht.PunchFailReason by the caller.
var (
	ErrICETimeout = errors.New("host: ICE connectivity checks timed out")
	ErrICEFailed  = errors.New("host: ICE failed")
	ErrSignaling  = errors.New("host: signaling failed")
	// ErrNoHub: none of the peer's hubs that we could use is connected.
	ErrNoHub = fmt.Errorf("%w: no signaling hub connected", ErrSignaling)
)

// signaler is the part of *signal.Session an ICE run needs (an interface so the
// ICE layer can be tested with an in-memory pair).
type signaler interface {
	Send(ctx context.Context, m signal.Signal) error
	Recv(ctx context.Context) (signal.Signal, error)
}

// iceEnv is what every ICE run on one host shares: the UDPMux over the shared
// socket (so host and server-reflexive candidates are the DHT/QUIC socket's own
// address and NAT mapping), STUN servers, and the network (vnet in tests).
type iceEnv struct {
	mux      *ice.UniversalUDPMuxDefault
	urls     []*stun.URI
	net      transport.Net
	timers   ICETimers
	loopback bool
	logf     logging.LoggerFactory
	// relayOnly makes a caller offer relay candidates only (tests and
	// benchmarks that need the relayed path between hosts that could talk
	// directly).
	relayOnly atomic.Bool
	guard     *checkGuard // budgets for checks to unproven addresses (wraps the mux's socket)
	limits    PunchLimits
	clk       clock.Clock // times the wait for the peer's credentials (pion's timers are its own)
}

// icePath is a working path found by ICE: the remote address QUIC is dialed
// to (from the shared socket) and the candidate types, for logs.
type icePath struct {
	remote     *net.UDPAddr
	localType  ice.CandidateType
	remoteType ice.CandidateType
}

func (p *icePath) String() string {
	if p == nil {
		return ""
	}
	return p.localType.String() + "->" + p.remoteType.String()
}

// iceSession is one ICE negotiation in progress. The agent only does
// connectivity checks; no data flows through ice.Conn.
//
// Latency (design decision): the first authenticated Binding request from the
// peer already proves the path in both directions: it crossed the peer's NAT
// and ours, and our success response goes back on the same 5-tuple, so the
// peer's NAT lets our packets through. QUIC is dialed to that address at
// once (first), without waiting for ICE nomination, and the agent is closed
// when QUIC is up. Nomination (done) is only the fallback. Acceptance waits are
// zero: QUIC needs a working pair, not the best one.
type iceSession struct {
	agent *ice.Agent
	first chan struct{} // closed when the first peer check arrived (firstPath)
	done  chan struct{} // closed when Dial/Accept returned
	res   *icePath      // nominated pair, valid after done (nil on error)
	err   error         // valid after done

	mu        sync.Mutex
	firstPath *icePath
	conn      *ice.Conn           // pion's conn after Dial/Accept (relayed paths carry QUIC over it)
	relayIPs  map[string]struct{} // addresses of the peer's relay candidates (bounded by Limits.RemoteCandidates)
	sendsOff  bool
	sendWG    sync.WaitGroup
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closed    sync.Once

	guard *checkGuard // nil when the session is not registered with it
	ufrag string      // our local ufrag, the session's key in guard

	candsDropped atomic.Uint64 // remote candidates refused (over the cap or by candidateAllowed)
}

// startICE begins an ICE negotiation over sig; controlling is the caller side.
// own, if known, is our public mapping of the shared socket: it is sent as a
// server-reflexive candidate together with the credentials, so the peer can
// start checking before our STUN gathering finishes. The session runs until
// Close, which the caller must call.
//
// relay, if not nil, adds relay candidates from its TURN servers; ICE may
// nominate a relayed pair only after relay.wait (direct paths win).
func startICE(ctx context.Context, env *iceEnv, sig signaler, controlling bool, own *net.UDPAddr, relay *iceRelay) (*iceSession, error) {
	t := env.timers
	zero := time.Duration(0)
	// Keep each pair checked for about checkWindow, whatever the interval: a
	// short interval must not make pairs fail before the peer starts checking.
	maxReq := uint16(min(max(int(checkWindow/t.Check), 7), 1000))
	s := &iceSession{first: make(chan struct{}), done: make(chan struct{})}
	cfg := &ice.AgentConfig{
		Urls:                   env.urls,
		NetworkTypes:           iceNetworkTypes(env.mux.LocalAddr()),
		CandidateTypes:         []ice.CandidateType{ice.CandidateTypeHost, ice.CandidateTypeServerReflexive},
		UDPMux:                 env.mux,
		UDPMuxSrflx:            env.mux,
		Net:                    env.net,
		MulticastDNSMode:       ice.MulticastDNSModeDisabled,
		CheckInterval:          &t.Check,
		DisconnectedTimeout:    &t.Disconnected,
		FailedTimeout:          &t.Failed,
		KeepaliveInterval:      &t.Keepalive,
		MaxBindingRequests:     &maxReq,
		HostAcceptanceMinWait:  &zero,
		SrflxAcceptanceMinWait: &zero,
		PrflxAcceptanceMinWait: &zero,
		RelayAcceptanceMinWait: &zero,
		IncludeLoopback:        env.loopback,
		LoggerFactory:          env.logf,
		// Runs inside the agent's loop (after the request's integrity check):
		// record the path, never call back into the agent.
		BindingRequestHandler: func(_ *stun.Message, local, remote ice.Candidate, _ *ice.CandidatePair) bool {
			s.found(local, remote)
			return false
		},
	}
	if len(env.urls) == 0 {
		cfg.CandidateTypes = []ice.CandidateType{ice.CandidateTypeHost}
	}
	if relay != nil && len(relay.urls) > 0 {
		cfg.Urls = append(append([]*stun.URI(nil), env.urls...), relay.urls...)
		cfg.CandidateTypes = append(cfg.CandidateTypes, ice.CandidateTypeRelay)
		cfg.RelayAcceptanceMinWait = &relay.wait
		if env.relayOnly.Load() {
			cfg.CandidateTypes = []ice.CandidateType{ice.CandidateTypeRelay}
		}
	}
	agent, err := ice.NewAgent(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: new agent: %w", ErrICEFailed, err)
	}
	s.agent = agent
	runCtx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()

	sendErr := make(chan error, 1)
	if err := agent.OnCandidate(func(c ice.Candidate) {
		m := signal.Signal{Kind: signal.KindDone}
		if c != nil {
			m = signal.Signal{Kind: signal.KindCand, Candidate: c.Marshal()}
		}
		s.send(runCtx, sig, m, sendErr)
	}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrICEFailed, err)
	}
	failed := make(chan struct{})
	var failOnce sync.Once
	if err := agent.OnConnectionStateChange(func(st ice.ConnectionState) {
		if st == ice.ConnectionStateFailed {
			failOnce.Do(func() { close(failed) })
		}
	}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrICEFailed, err)
	}
	ufrag, pwd, err := agent.GetLocalUserCredentials()
	if err != nil {
		return nil, fmt.Errorf("%w: credentials: %w", ErrICEFailed, err)
	}
	if env.guard != nil {
		if err := env.guard.open(ufrag, pwd); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrICEFailed, err)
		}
		s.guard, s.ufrag = env.guard, ufrag
	}
	// Credentials first, then our known mapping, then trickled candidates as
	// pion finds them: nothing waits for the peer.
	if err := s.sendNow(runCtx, sig, signal.Signal{Kind: signal.KindCred, Ufrag: ufrag, Pwd: pwd}); err != nil {
		return nil, fmt.Errorf("%w: sending credentials: %w", ErrSignaling, err)
	}
	if own != nil && own.IP.To4() != nil && own.Port > 0 {
		if c, err := ice.NewCandidateServerReflexive(&ice.CandidateServerReflexiveConfig{
			Network: "udp", Address: own.IP.String(), Port: own.Port, Component: ice.ComponentRTP,
		}); err == nil {
			_ = s.sendNow(runCtx, sig, signal.Signal{Kind: signal.KindCand, Candidate: c.Marshal()})
		}
	}
	if err := agent.GatherCandidates(); err != nil {
		return nil, fmt.Errorf("%w: gather: %w", ErrICEFailed, err)
	}

	// Reader: remote credentials once, then trickled candidates (added before
	// the checks start are paired and checked as soon as they do). At most
	// limits.RemoteCandidates are taken, and only those candidateAllowed
	// accepts (docs/security.md).
	maxCands, prefixes := env.limits.RemoteCandidates, env.localPrefixes()
	creds := make(chan iceCred, 1)
	readErr := make(chan error, 1)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		gotCred, added := false, 0
		for {
			m, err := sig.Recv(runCtx)
			if err != nil {
				readErr <- err
				return
			}
			switch m.Kind {
			case signal.KindCred:
				if !gotCred {
					gotCred = true
					creds <- iceCred{m.Ufrag, m.Pwd}
				}
			case signal.KindCand:
				if added >= maxCands {
					s.candsDropped.Add(1)
					continue
				}
				c, err := ice.UnmarshalCandidate(m.Candidate)
				if err != nil {
					continue // a bad candidate is skipped, not fatal
				}
				added++
				if !candidateAllowed(c, prefixes, env.loopback) {
					s.candsDropped.Add(1)
					continue
				}
				if s.guard != nil {
					if ip, err := netip.ParseAddr(c.Address()); err == nil {
						s.guard.addCandidate(ufrag, netip.AddrPortFrom(ip.Unmap(), uint16(c.Port())), c.Type() == ice.CandidateTypeRelay)
					}
				}
				if c.Type() == ice.CandidateTypeRelay {
					s.noteRelay(c.Address(), c.Port())
				}
				_ = agent.AddRemoteCandidate(c)
			}
		}
	}()
	go func() {
		defer s.wg.Done()
		defer close(s.done)
		s.res, s.err = s.connect(runCtx, ctx, env.clk, t, controlling, creds, readErr, sendErr, failed)
	}()
	ok = true
	return s, nil
}

// checkWindow is how long each candidate pair keeps being checked.
const checkWindow = 3 * time.Second

// iceCred is the peer's ufrag and password.
type iceCred struct{ u, p string }

// connect waits for the peer's credentials and runs the checks until pion
// selects a pair. runCtx ends with Close, ctx is the caller's.
func (s *iceSession) connect(runCtx, ctx context.Context, clk clock.Clock, t ICETimers, controlling bool, creds <-chan iceCred,
	readErr, sendErr <-chan error, failed <-chan struct{}) (*icePath, error) {
	var rc iceCred
	credTimer := clk.NewTimer(t.CredWait)
	defer credTimer.Stop()
	select {
	case rc = <-creds:
	case err := <-readErr:
		// The reader hands over the credentials before it can see the
		// session end (a quick pair sends all its candidates and "done"
		// at once, and the hub then ends the session): both channels may
		// be ready, and select picks either.
		select {
		case rc = <-creds:
		default:
			return nil, fmt.Errorf("%w: waiting for credentials: %w", ErrSignaling, err)
		}
	case err := <-sendErr:
		return nil, fmt.Errorf("%w: sending: %w", ErrSignaling, err)
	case <-credTimer.C():
		return nil, fmt.Errorf("%w: no credentials from peer within %v", ErrICETimeout, t.CredWait)
	case <-runCtx.Done():
		return nil, ctxErr(ctx, runCtx)
	}
	connCtx, connCancel := context.WithTimeout(runCtx, t.Connect)
	defer connCancel()
	watchDone := make(chan struct{})
	defer close(watchDone)
	go func() {
		select {
		case <-failed:
			connCancel()
		case <-watchDone:
		}
	}()
	var err error
	var conn *ice.Conn
	if controlling {
		conn, err = s.agent.Dial(connCtx, rc.u, rc.p)
	} else {
		conn, err = s.agent.Accept(connCtx, rc.u, rc.p)
	}
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	if err != nil {
		select {
		case <-failed:
			return nil, fmt.Errorf("%w: connectivity checks failed: %w", ErrICETimeout, err)
		default:
		}
		if runCtx.Err() != nil {
			return nil, ctxErr(ctx, runCtx)
		}
		return nil, fmt.Errorf("%w: no pair within %v: %w", ErrICETimeout, t.Connect, err)
	}
	pair, err := s.agent.GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return nil, fmt.Errorf("%w: no selected pair: %v", ErrICEFailed, err)
	}
	ip := net.ParseIP(pair.Remote.Address())
	if ip == nil {
		return nil, fmt.Errorf("%w: selected remote %q is not an IP", ErrICEFailed, pair.Remote.Address())
	}
	return &icePath{remote: &net.UDPAddr{IP: ip, Port: pair.Remote.Port()}, localType: pair.Local.Type(),
		remoteType: pair.Remote.Type()}, nil
}

// ctxErr is the caller's context error, or "session closed" when only the
// session was closed.
func ctxErr(ctx, runCtx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("%w: session closed", ErrICEFailed)
}

// found records the first peer check (see iceSession). A check that came
// through our relay is no early path: a relayed pair is used only once ICE
// nominates it, after the direct paths had their chance.
func (s *iceSession) found(local, remote ice.Candidate) {
	ip := net.ParseIP(remote.Address())
	if ip == nil || local.Type() == ice.CandidateTypeRelay {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.firstPath != nil {
		return
	}
	s.firstPath = &icePath{remote: &net.UDPAddr{IP: ip, Port: remote.Port()}, localType: local.Type(), remoteType: remote.Type()}
	close(s.first)
}

func (s *iceSession) firstFound() *icePath {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstPath
}

// iceRelay are the relay servers (with credentials) of one session.
type iceRelay struct {
	urls []*stun.URI
	wait time.Duration
}

// noteRelay remembers one of the peer's relay addresses.
func (s *iceSession) noteRelay(ip string, port int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.relayIPs == nil {
		s.relayIPs = map[string]struct{}{}
	}
	s.relayIPs[net.JoinHostPort(ip, fmt.Sprint(port))] = struct{}{}
}

// viaPeerRelay reports whether a is one of the peer's relay candidates.
func (s *iceSession) viaPeerRelay(a net.Addr) bool {
	if a == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.relayIPs[a.String()]
	return ok
}

// iceConn is pion's connection once ICE has selected a pair (nil before).
func (s *iceSession) iceConn() *ice.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

// send relays one signal from a pion callback, unless the session is closing.
func (s *iceSession) send(ctx context.Context, sig signaler, m signal.Signal, errc chan<- error) {
	s.mu.Lock()
	if s.sendsOff || ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	s.sendWG.Add(1)
	s.mu.Unlock()
	defer s.sendWG.Done()
	if err := s.sendNow(ctx, sig, m); err != nil {
		select {
		case errc <- err:
		default:
		}
	}
}

func (s *iceSession) sendNow(ctx context.Context, sig signaler, m signal.Signal) error {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return sig.Send(sctx, m)
}

// Path waits for a usable path: the first peer check, else the nominated pair.
func (s *iceSession) Path(ctx context.Context) (*icePath, error) {
	select {
	case <-s.first:
		return s.firstFound(), nil
	case <-s.done:
		if s.err != nil {
			return nil, s.err
		}
		return s.res, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Selected waits for pion's nominated pair (the fallback when the first path
// did not carry QUIC).
func (s *iceSession) Selected(ctx context.Context) (*icePath, error) {
	select {
	case <-s.done:
		return s.res, s.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Known is the best path known so far (for logs), nil if none.
func (s *iceSession) Known() *icePath {
	select {
	case <-s.done:
		if s.res != nil {
			return s.res
		}
	default:
	}
	return s.firstFound()
}

// Close stops the checks, closes the agent and waits for every goroutine the
// session started (pion's callbacks included).
func (s *iceSession) Close() {
	s.closed.Do(func() {
		s.cancel()
		s.mu.Lock()
		s.sendsOff = true
		s.mu.Unlock()
		_ = s.agent.Close()
		s.wg.Wait()
		s.sendWG.Wait()
		if s.guard != nil {
			s.guard.close(s.ufrag)
		}
	})
}

// productive: the peer has shown it is at one of its candidates (see
// checkGuard.productive).
func (s *iceSession) productive() bool {
	return s.guard != nil && s.guard.productive(s.ufrag)
}
