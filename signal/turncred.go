package signal

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/a2alnode/a2al"
)

// TURN credentials in the "TURN REST" style that coturn's use-auth-secret
// mode also understands (see docs/relay.md):
//
//	username = "<unix expiry>:<node id, 64 lowercase hex>"
//	password = base64(HMAC-SHA1(secret, username))
//
// The hub issues them only over an authenticated signaling connection, for
// that connection's NodeID, so a credential names the node that may use it;
// its relay quota and bandwidth are charged to that NodeID.

// TURNCredentials are what a node needs to allocate on a TURN server.
type TURNCredentials struct {
	Username string
	Password string
	Expires  time.Time
	URLs     []string // turn:/turns: URIs, e.g. "turn:203.0.113.1:3480?transport=udp"
}

// TURNAuth issues and checks hub TURN credentials. The hub and its TURN
// server share one (so one secret).
type TURNAuth struct {
	secret []byte
	ttl    time.Duration
	urls   []string
	now    func() time.Time
	issued atomic.Uint64
}

// TURNAuthConfig configures a TURNAuth.
type TURNAuthConfig struct {
	// Secret is the HMAC key. Default (nil): 32 random bytes, so credentials
	// die with the process; set it to share credentials with coturn or
	// another hub process.
	Secret []byte
	// TTL is how long an issued credential may create allocations. Default
	// (0): 10 minutes. Allocations made before expiry live on (see docs/relay.md).
	TTL time.Duration
	// URLs are the turn:/turns: URIs handed out with credentials. Empty
	// means the hub serves no TURN and refuses credential requests.
	URLs []string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Errors from credential checks.
var (
	ErrTURNUsername = errors.New("signal: turn: malformed username")
	ErrTURNExpired  = errors.New("signal: turn: credential expired")
)

// NewTURNAuth validates cfg.
func NewTURNAuth(cfg TURNAuthConfig) (*TURNAuth, error) {
	if cfg.TTL < 0 {
		return nil, errors.New("signal: turn: negative credential TTL")
	}
	if cfg.TTL == 0 {
		cfg.TTL = 10 * time.Minute
	}
	if cfg.Secret == nil {
		cfg.Secret = make([]byte, 32)
		if _, err := rand.Read(cfg.Secret); err != nil {
			return nil, fmt.Errorf("signal: turn: secret: %w", err)
		}
	}
	if len(cfg.Secret) < 16 {
		return nil, errors.New("signal: turn: secret shorter than 16 bytes")
	}
	for _, u := range cfg.URLs {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			return nil, fmt.Errorf("signal: turn: url %q: want turn: or turns:", u)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &TURNAuth{secret: cfg.Secret, ttl: cfg.TTL, urls: cfg.URLs, now: cfg.Now}, nil
}

// Issue makes a credential for id, valid for the configured TTL.
func (a *TURNAuth) Issue(id a2al.NodeID) TURNCredentials {
	a.issued.Add(1)
	exp := a.now().Add(a.ttl).Truncate(time.Second)
	user := strconv.FormatInt(exp.Unix(), 10) + ":" + hex.EncodeToString(id[:])
	return TURNCredentials{Username: user, Password: TURNPassword(a.secret, user), Expires: exp,
		URLs: append([]string(nil), a.urls...)}
}

// TURNPassword is base64(HMAC-SHA1(secret, username)), the coturn
// use-auth-secret password for username.
func TURNPassword(secret []byte, username string) string {
	m := hmac.New(sha1.New, secret)
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// TURNUsername builds a REST-style username for id expiring at exp (used by
// nodes that hold a coturn shared secret themselves).
func TURNUsername(id a2al.NodeID, exp time.Time) string {
	return strconv.FormatInt(exp.Unix(), 10) + ":" + hex.EncodeToString(id[:])
}

// ParseTURNUsername splits "<unix expiry>:<node id hex>".
func ParseTURNUsername(user string) (time.Time, a2al.NodeID, error) {
	var id a2al.NodeID
	ts, rest, ok := strings.Cut(user, ":")
	if !ok || len(ts) == 0 || len(ts) > 12 {
		return time.Time{}, id, ErrTURNUsername
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, id, ErrTURNUsername
	}
	if len(rest) != 2*len(id) || strings.ToLower(rest) != rest {
		return time.Time{}, id, ErrTURNUsername
	}
	if _, err := hex.Decode(id[:], []byte(rest)); err != nil {
		return time.Time{}, id, ErrTURNUsername
	}
	return time.Unix(sec, 0), id, nil
}

// Check verifies that user is well formed and returns its password and
// NodeID; expired credentials fail with ErrTURNExpired (still returning the
// password: a live allocation may keep using its credential).
func (a *TURNAuth) Check(user string) (pass string, id a2al.NodeID, err error) {
	exp, id, err := ParseTURNUsername(user)
	if err != nil {
		return "", id, err
	}
	pass = TURNPassword(a.secret, user)
	if !a.now().Before(exp) {
		return pass, id, ErrTURNExpired
	}
	return pass, id, nil
}

// URLs are the advertised TURN URIs.
func (a *TURNAuth) URLs() []string { return append([]string(nil), a.urls...) }

// Bounds of a turn frame.
const (
	maxTURNURLs    = 8
	maxTURNURLLen  = 512
	maxTURNCredLen = 256
)

// validTURNFrame: either credentials, or only code no_turn.
func validTURNFrame(f *Frame) error {
	if f.Code == CodeNoTURN {
		if f.TURNUser != "" || f.TURNPass != "" || len(f.TURNURLs) > 0 {
			return errors.New("no_turn carries no credentials")
		}
		return nil
	}
	if f.TURNUser == "" || f.TURNPass == "" || len(f.TURNUser) > maxTURNCredLen || len(f.TURNPass) > maxTURNCredLen {
		return errors.New("turn needs user and pass (<=256 bytes)")
	}
	if f.TURNExp <= 0 {
		return errors.New("turn needs an expiry")
	}
	if len(f.TURNURLs) == 0 || len(f.TURNURLs) > maxTURNURLs {
		return errors.New("turn needs 1-8 urls")
	}
	for _, u := range f.TURNURLs {
		if len(u) > maxTURNURLLen || !(strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:")) {
			return fmt.Errorf("turn url %q: want turn: or turns:, <=512 bytes", u)
		}
	}
	return nil
}
