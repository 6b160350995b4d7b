package signal

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// readLoop is the connection's only reader. It returns when the socket fails.
func (c *Client) readLoop(cc *clientConn) error {
	for {
		f, err := readFrame(cc.ws)
		if errors.Is(err, ErrBadFrame) {
			// A newer hub may send frames we do not know; skip them.
			c.log.Debug("signal: ignoring frame", "err", err)
			continue
		}
		if err != nil {
			return err
		}
		cc.ws.SetReadDeadline(time.Now().Add(cc.readTimeout))
		c.dispatch(cc, f)
	}
}

func (c *Client) dispatch(cc *clientConn, f Frame) {
	switch f.T {
	case TIncoming:
		c.onIncoming(cc, f)
	case TRinging:
		peer, _ := ParseAddress(f.Peer)
		c.mu.Lock()
		s := cc.pending[f.CID]
		hangup, dup := s == nil, false
		if s != nil {
			delete(cc.pending, f.CID)
			s.id, s.peer = f.SID, peer
			select {
			case <-s.done: // abandoned before the hub answered
				hangup = true
			default:
				if cc.sessions[f.SID] != nil {
					// A hub reusing a live session id would orphan that
					// session (never ended, its user never released).
					dup = true
				} else {
					cc.sessions[f.SID] = s
				}
			}
		}
		c.mu.Unlock()
		if dup {
			s.end(fmt.Errorf("%w: ringing reused live session id %s", ErrHub, f.SID))
			return
		}
		if hangup {
			c.writeFromReader(cc, Frame{T: THangup, SID: f.SID})
		}
	case TAccepted:
		c.mu.Lock()
		s := cc.sessions[f.SID]
		if s != nil && s.role == RoleCaller && !s.acceptOK {
			s.acceptOK = true
			close(s.accepted)
		}
		c.mu.Unlock()
	case TNoAgent:
		if s := c.takePending(cc, f.CID); s != nil {
			s.end(ErrNoAgent)
		}
	case TError:
		switch {
		case f.CID != 0:
			if s := c.takePending(cc, f.CID); s != nil {
				if f.Code == CodeTooManySessions {
					s.end(fmt.Errorf("%w (hub): %s", ErrTooManySessions, f.Msg))
				} else {
					s.end(fmt.Errorf("%w: %s: %s", ErrHub, f.Code, f.Msg))
				}
			}
		case f.SID != "":
			c.log.Debug("signal: hub session error", "sid", f.SID, "code", f.Code, "msg", f.Msg)
		default:
			c.log.Warn("signal: hub error", "code", f.Code, "msg", f.Msg)
		}
	case TSig:
		c.mu.Lock()
		s := cc.sessions[f.SID]
		c.mu.Unlock()
		if s == nil {
			return
		}
		m, _ := f.Signal() // validated by DecodeFrame
		if !s.deliver(m) {
			c.log.Warn("signal: session receive queue full, hanging up", "sid", f.SID)
			c.mu.Lock()
			delete(cc.sessions, f.SID)
			c.mu.Unlock()
			s.end(&EndError{Reason: "receive queue full"})
			c.writeFromReader(cc, Frame{T: THangup, SID: f.SID})
		}
	case TEnd:
		c.mu.Lock()
		s := cc.sessions[f.SID]
		delete(cc.sessions, f.SID)
		accepted := s != nil && (s.role == RoleCallee || s.acceptOK)
		c.mu.Unlock()
		if s == nil {
			return
		}
		switch {
		case accepted:
			s.end(&EndError{Reason: f.Reason})
		case f.Reason == ReasonReject:
			s.end(ErrRejected)
		case f.Reason == ReasonTimeout:
			s.end(ErrCallTimeout)
		default:
			s.end(&EndError{Reason: f.Reason})
		}
	case TTURN:
		c.onTURN(f)
	case TReplaced:
		cc.replaced = true
		c.log.Warn("signal: another connection registered our node id at this hub; backing off")
	}
}

func (c *Client) takePending(cc *clientConn, cid uint64) *Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := cc.pending[cid]
	delete(cc.pending, cid)
	return s
}

func (c *Client) writeFromReader(cc *clientConn, f Frame) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.WriteTimeout)
	defer cancel()
	if err := cc.write(ctx, f); err != nil {
		c.log.Debug("signal: write failed", "frame", f.T, "err", err)
	}
}

func (c *Client) onIncoming(cc *clientConn, f Frame) {
	peer, _ := ParseAddress(f.Peer)
	if c.cfg.OnCall == nil {
		c.writeFromReader(cc, Frame{T: TReject, SID: f.SID})
		return
	}
	c.mu.Lock()
	if cc.sessions[f.SID] != nil {
		// A hub reusing a live session id: replacing the entry would orphan
		// the running session and its OnCall (Close would wait on it forever).
		c.mu.Unlock()
		c.log.Debug("signal: hub reused a live session id; ignoring incoming", "sid", f.SID)
		return
	}
	if len(cc.pending)+len(cc.sessions) >= c.cfg.MaxSessions || c.ctx.Err() != nil {
		c.mu.Unlock()
		c.writeFromReader(cc, Frame{T: TReject, SID: f.SID})
		return
	}
	s := newSession(cc, RoleCallee, c.cfg.RecvQueue)
	s.id, s.peer = f.SID, peer
	cc.sessions[f.SID] = s
	c.wg.Add(1)
	c.mu.Unlock()
	c.writeFromReader(cc, Frame{T: TAccept, SID: f.SID})
	go func() {
		defer c.wg.Done()
		c.cfg.OnCall(s)
	}()
}
