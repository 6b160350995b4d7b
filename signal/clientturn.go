package signal

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrNoTURN: the hub serves no TURN relay.
var ErrNoTURN = errors.New("signal: hub serves no TURN")

// turnState caches this client's relay credentials. One request is in flight
// at a time (req serialises them); the reader hands replies over reply.
type turnState struct {
	req   sync.Mutex
	reply chan Frame // capacity 1; a stale reply is drained before asking

	mu      sync.Mutex
	cur     TURNCredentials
	got     time.Time // when cur arrived
	noTURN  time.Time // when the hub last said no_turn
	renewed int       // credentials fetched (tests, debug)
}

// noTURNRetry is how long a hub's "no TURN" answer is believed.
const noTURNRetry = time.Minute

// TURNCredentials returns relay credentials for this node from the hub,
// fetched over the authenticated connection and renewed once two thirds of
// their lifetime has passed, so a credential handed out is never about to expire.
func (c *Client) TURNCredentials(ctx context.Context) (TURNCredentials, error) {
	ts := &c.turn
	now := time.Now()
	if cr, ok := ts.fresh(now); ok {
		return cr, nil
	}
	ts.mu.Lock()
	no := !ts.noTURN.IsZero() && now.Sub(ts.noTURN) < noTURNRetry
	ts.mu.Unlock()
	if no {
		return TURNCredentials{}, ErrNoTURN
	}
	ts.req.Lock()
	defer ts.req.Unlock()
	if cr, ok := ts.fresh(time.Now()); ok { // fetched while we waited
		return cr, nil
	}
	cc, err := c.waitConn(ctx)
	if err != nil {
		return TURNCredentials{}, err
	}
	select {
	case <-ts.reply:
	default:
	}
	if err := cc.write(ctx, Frame{T: TTURNReq}); err != nil {
		return TURNCredentials{}, fmt.Errorf("signal: turn request: %w", err)
	}
	t := time.NewTimer(c.cfg.DialTimeout)
	defer t.Stop()
	select {
	case f := <-ts.reply:
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if f.Code == CodeNoTURN {
			ts.noTURN = time.Now()
			return TURNCredentials{}, ErrNoTURN
		}
		ts.cur = TURNCredentials{Username: f.TURNUser, Password: f.TURNPass, Expires: time.Unix(f.TURNExp, 0),
			URLs: append([]string(nil), f.TURNURLs...)}
		ts.got, ts.noTURN = time.Now(), time.Time{}
		ts.renewed++
		return ts.cur, nil
	case <-t.C:
		return TURNCredentials{}, fmt.Errorf("signal: turn request: no answer within %v", c.cfg.DialTimeout)
	case <-ctx.Done():
		return TURNCredentials{}, fmt.Errorf("signal: turn request: %w", ctx.Err())
	case <-c.ctx.Done():
		return TURNCredentials{}, ErrClientClosed
	}
}

// fresh returns the cached credential while less than two thirds of its
// lifetime has passed.
func (ts *turnState) fresh(now time.Time) (TURNCredentials, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.cur.Username == "" {
		return TURNCredentials{}, false
	}
	life := ts.cur.Expires.Sub(ts.got)
	if now.Sub(ts.got) >= life*2/3 {
		return TURNCredentials{}, false
	}
	return ts.cur, true
}

// TURNRenewals counts credentials fetched from the hub so far.
func (c *Client) TURNRenewals() int {
	c.turn.mu.Lock()
	defer c.turn.mu.Unlock()
	return c.turn.renewed
}

// onTURN hands a turn frame to the waiting request (reader goroutine).
func (c *Client) onTURN(f Frame) {
	select {
	case c.turn.reply <- f:
	default: // nobody asked, or a reply is already waiting
	}
}

// CachedTURNURLs are the relay URLs of the last credential the hub gave us
// (nil before the first), for the endpoint record's relay hints.
func (c *Client) CachedTURNURLs() []string {
	c.turn.mu.Lock()
	defer c.turn.mu.Unlock()
	return append([]string(nil), c.turn.cur.URLs...)
}
