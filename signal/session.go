package signal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/a2alnode/a2al"
)

// Errors returned by the client.
var (
	ErrNoAgent         = errors.New("signal: target not registered at the hub")
	ErrSessionClosed   = errors.New("signal: session closed")
	ErrRejected        = errors.New("signal: call rejected by the callee")
	ErrCallTimeout     = errors.New("signal: callee did not answer within the hub's pairing timeout")
	ErrTooManySessions = errors.New("signal: session limit reached")
	ErrClientClosed    = errors.New("signal: client closed")
	ErrHub             = errors.New("signal: hub error")
)

// EndError reports why a session ended. It matches both io.EOF and
// ErrSessionClosed with errors.Is, so callers may test either.
type EndError struct{ Reason string }

func (e *EndError) Error() string { return "signal: session ended: " + e.Reason }

// Is makes EndError match io.EOF and ErrSessionClosed.
func (e *EndError) Is(target error) bool { return target == io.EOF || target == ErrSessionClosed }

// Role says which side of a call a Session is.
type Role int

// Roles.
const (
	RoleCaller Role = iota + 1
	RoleCallee
)

func (r Role) String() string {
	switch r {
	case RoleCaller:
		return "caller"
	case RoleCallee:
		return "callee"
	}
	return "unknown"
}

// Session is one call relayed by the hub. Send and Recv may be used from
// different goroutines.
type Session struct {
	cc   *clientConn
	role Role
	cid  uint64

	// set before the session is handed to the user (ringing precedes accepted)
	id   string
	peer a2al.Address

	recv     chan Signal
	accepted chan struct{} // caller: closed when the callee accepted
	done     chan struct{} // closed when the session ended
	endOnce  sync.Once
	err      error // valid after done is closed
	acceptOK bool  // guarded by client.mu
}

func newSession(cc *clientConn, role Role, queue int) *Session {
	return &Session{cc: cc, role: role, recv: make(chan Signal, queue), accepted: make(chan struct{}), done: make(chan struct{})}
}

// ID is the hub-assigned session id.
func (s *Session) ID() string { return s.id }

// Peer is the hub-verified address of the other side.
func (s *Session) Peer() a2al.Address { return s.peer }

// PeerID is the NodeID of Peer.
func (s *Session) PeerID() a2al.NodeID { return a2al.NodeIDFromAddress(s.peer) }

// Role reports whether we placed or received the call.
func (s *Session) Role() Role { return s.role }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// end marks the session finished; the first reason wins.
func (s *Session) end(err error) {
	s.endOnce.Do(func() {
		s.err = err
		close(s.done)
	})
}

// Send relays m to the peer. It fails with ErrSessionClosed (or an EndError)
// once the session has ended.
func (s *Session) Send(ctx context.Context, m Signal) error {
	if err := m.validate(); err != nil {
		return fmt.Errorf("signal: send: %w", err)
	}
	select {
	case <-s.done:
		return s.err
	default:
	}
	if err := s.cc.write(ctx, sigFrame(s.id, m)); err != nil {
		return fmt.Errorf("signal: send %s: %w", m.Kind, err)
	}
	return nil
}

// Recv returns the next signal from the peer. Signals received before the
// session ended are still delivered; then it returns an error matching io.EOF
// and ErrSessionClosed.
func (s *Session) Recv(ctx context.Context) (Signal, error) {
	select {
	case m := <-s.recv:
		return m, nil
	default:
	}
	select {
	case m := <-s.recv:
		return m, nil
	case <-s.done:
		select {
		case m := <-s.recv:
			return m, nil
		default:
			return Signal{}, s.err
		}
	case <-ctx.Done():
		return Signal{}, fmt.Errorf("signal: recv: %w", ctx.Err())
	}
}

// Close leaves the session (the peer sees reason "hangup").
func (s *Session) Close() error {
	s.cc.c.abandon(s)
	return nil
}

// deliver queues a signal without blocking the connection's reader; a peer
// that floods a session we do not drain loses the session.
func (s *Session) deliver(m Signal) bool {
	select {
	case s.recv <- m:
		return true
	default:
		return false
	}
}
