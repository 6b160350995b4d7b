package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/logging"
	"github.com/pion/stun"
	"github.com/pion/transport/v2"

	"github.com/a2alnode/a2al/signal"
)

// Punch failure classes, folded into dht.PunchFailReason by the caller.
var (
	ErrICETimeout = errors.New("host: ICE connectivity checks timed out")
	ErrICEFailed  = errors.New("host: ICE failed")
	ErrSignaling  = errors.New("host: signaling failed")
)

// signaler is the part of *signal.Session an ICE run needs (an interface so the
// ICE layer can be tested with an in-memory pair).
type signaler interface {
	Send(ctx context.Context, m signal.Signal) error
	Recv(ctx context.Context) (signal.Signal, error)
}

// ICETimers are the pion timers, set explicitly so behaviour does not drift with
// the library version; short values suit vnet tests.
type ICETimers struct {
	CredWait     time.Duration // wait for the peer's ufrag/pwd
	Connect      time.Duration // connectivity checks until a pair is selected
	Check        time.Duration // pion CheckInterval
	Disconnected time.Duration
	Failed       time.Duration
	Keepalive    time.Duration
}

// DefaultICETimers suit the internet: generous connect budget, pion-like checks.
func DefaultICETimers() ICETimers {
	return ICETimers{CredWait: 15 * time.Second, Connect: 20 * time.Second, Check: 200 * time.Millisecond,
		Disconnected: 5 * time.Second, Failed: 15 * time.Second, Keepalive: 2 * time.Second}
}

func (t ICETimers) withDefaults() ICETimers {
	d := DefaultICETimers()
	if t.CredWait <= 0 {
		t.CredWait = d.CredWait
	}
	if t.Connect <= 0 {
		t.Connect = d.Connect
	}
	if t.Check <= 0 {
		t.Check = d.Check
	}
	if t.Disconnected <= 0 {
		t.Disconnected = d.Disconnected
	}
	if t.Failed <= 0 {
		t.Failed = d.Failed
	}
	if t.Keepalive <= 0 {
		t.Keepalive = d.Keepalive
	}
	return t
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
}

// iceResult is a finished ICE run: the selected remote address (to which QUIC is
// then dialed from the shared socket) and the agent, closed by the caller.
type iceResult struct {
	remote     *net.UDPAddr
	localType  ice.CandidateType
	remoteType ice.CandidateType
	agent      *ice.Agent
}

// runICE performs one ICE negotiation over sig. controlling is the caller side.
// The agent only does connectivity checks; no data flows through ice.Conn.
func runICE(ctx context.Context, env *iceEnv, sig signaler, controlling bool) (*iceResult, error) {
	t := env.timers
	maxReq := uint16(7)
	// pion waits up to 0.5 s (srflx) / 1 s (prflx) for a better pair before
	// nominating; for hole punching the first working pair is good enough,
	// so only a short grace period is kept.
	hostWait, srflxWait, prflxWait := time.Duration(0), 100*time.Millisecond, 200*time.Millisecond
	cfg := &ice.AgentConfig{
		Urls:                   env.urls,
		NetworkTypes:           []ice.NetworkType{ice.NetworkTypeUDP4},
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
		HostAcceptanceMinWait:  &hostWait,
		SrflxAcceptanceMinWait: &srflxWait,
		PrflxAcceptanceMinWait: &prflxWait,
		IncludeLoopback:        env.loopback,
		LoggerFactory:          env.logf,
	}
	if len(env.urls) == 0 {
		cfg.CandidateTypes = []ice.CandidateType{ice.CandidateTypeHost}
	}
	agent, err := ice.NewAgent(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: new agent: %w", ErrICEFailed, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = agent.Close()
		}
	}()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Candidate callbacks may still fire after we return (the agent lives on
	// until the caller closes it); sendsDone stops them from racing sendWG.Wait.
	var sendWG sync.WaitGroup
	var sendMu sync.Mutex
	sendsDone := false
	defer func() {
		sendMu.Lock()
		sendsDone = true
		sendMu.Unlock()
		sendWG.Wait()
	}()
	sendErr := make(chan error, 1)
	send := func(m signal.Signal) {
		sctx, c := context.WithTimeout(runCtx, 5*time.Second)
		defer c()
		if err := sig.Send(sctx, m); err != nil {
			select {
			case sendErr <- err:
			default:
			}
		}
	}
	if err := agent.OnCandidate(func(c ice.Candidate) {
		sendMu.Lock()
		if sendsDone || runCtx.Err() != nil {
			sendMu.Unlock()
			return
		}
		sendWG.Add(1)
		sendMu.Unlock()
		defer sendWG.Done()
		m := signal.Signal{Kind: signal.KindDone}
		if c != nil {
			m = signal.Signal{Kind: signal.KindCand, Candidate: c.Marshal()}
		}
		send(m)
	}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrICEFailed, err)
	}
	failed := make(chan struct{})
	var failOnce sync.Once
	if err := agent.OnConnectionStateChange(func(s ice.ConnectionState) {
		if s == ice.ConnectionStateFailed {
			failOnce.Do(func() { close(failed) })
		}
	}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrICEFailed, err)
	}

	ufrag, pwd, err := agent.GetLocalUserCredentials()
	if err != nil {
		return nil, fmt.Errorf("%w: credentials: %w", ErrICEFailed, err)
	}
	send(signal.Signal{Kind: signal.KindCred, Ufrag: ufrag, Pwd: pwd})

	// Reader: remote credentials once, then trickled candidates.
	type cred struct{ u, p string }
	creds := make(chan cred, 1)
	readErr := make(chan error, 1)
	var readWG sync.WaitGroup
	readWG.Add(1)
	defer readWG.Wait()
	defer cancel() // runs before readWG.Wait: stops the reader
	go func() {
		defer readWG.Done()
		gotCred := false
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
					creds <- cred{m.Ufrag, m.Pwd}
				}
			case signal.KindCand:
				c, err := ice.UnmarshalCandidate(m.Candidate)
				if err != nil {
					continue // a bad candidate is skipped, not fatal
				}
				_ = agent.AddRemoteCandidate(c)
			}
		}
	}()

	var rc cred
	credTimer := time.NewTimer(t.CredWait)
	defer credTimer.Stop()
	select {
	case rc = <-creds:
	case err := <-readErr:
		return nil, fmt.Errorf("%w: waiting for credentials: %w", ErrSignaling, err)
	case err := <-sendErr:
		return nil, fmt.Errorf("%w: sending: %w", ErrSignaling, err)
	case <-credTimer.C:
		return nil, fmt.Errorf("%w: no credentials from peer within %v", ErrICETimeout, t.CredWait)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := agent.GatherCandidates(); err != nil {
		return nil, fmt.Errorf("%w: gather: %w", ErrICEFailed, err)
	}

	connCtx, connCancel := context.WithTimeout(runCtx, t.Connect)
	defer connCancel()
	go func() {
		select {
		case <-failed:
			connCancel()
		case <-connCtx.Done():
		}
	}()
	if controlling {
		_, err = agent.Dial(connCtx, rc.u, rc.p)
	} else {
		_, err = agent.Accept(connCtx, rc.u, rc.p)
	}
	if err != nil {
		select {
		case <-failed:
			return nil, fmt.Errorf("%w: connectivity checks failed: %w", ErrICETimeout, err)
		default:
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: no pair within %v: %w", ErrICETimeout, t.Connect, err)
	}
	pair, err := agent.GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return nil, fmt.Errorf("%w: no selected pair: %v", ErrICEFailed, err)
	}
	ip := net.ParseIP(pair.Remote.Address())
	if ip == nil {
		return nil, fmt.Errorf("%w: selected remote %q is not an IP", ErrICEFailed, pair.Remote.Address())
	}
	ok = true
	return &iceResult{
		remote:     &net.UDPAddr{IP: ip, Port: pair.Remote.Port()},
		localType:  pair.Local.Type(),
		remoteType: pair.Remote.Type(),
		agent:      agent,
	}, nil
}
