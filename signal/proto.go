// Package signal implements the a2al signaling hub and its client.
//
// The hub lets a node behind a NAT be reachable: a callee keeps one
// authenticated WebSocket open to the hub; a caller asks the hub to reach a
// NodeID, and the hub relays ICE credentials and trickled candidates between
// the two until both sides have finished. Unlike the reference hub, every
// connection proves ownership of its Ed25519 key with a challenge-response
// before it can register or call (see docs/signaling.md for the protocol).
package signal

import (
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/a2alnode/a2al"
)

// Protocol constants. The subprotocol name differs from the reference hub's
// "a2al.ice.v1" on purpose, so a reference node fails at the upgrade.
const (
	Subprotocol = "a2al.signal.v2"
	SignalPath  = "/v2/signal"
	// AuthLabel domain-separates the auth signature from every other
	// signature a node makes with its key.
	AuthLabel = "a2al-signal-auth-v2"
	NonceLen  = 32
)

// Frame types.
const (
	TChallenge = "challenge" // hub → node: nonce to sign
	TAuth      = "auth"      // node → hub: signed answer
	TWelcome   = "welcome"   // hub → node: authenticated (and registered)
	TReplaced  = "replaced"  // hub → node: another authenticated connection took over the registration
	TCall      = "call"      // caller → hub
	TNoAgent   = "noagent"   // hub → caller: target not registered
	TRinging   = "ringing"   // hub → caller: session created, callee notified
	TIncoming  = "incoming"  // hub → callee
	TAccept    = "accept"    // callee → hub
	TReject    = "reject"    // callee → hub
	TAccepted  = "accepted"  // hub → caller: callee accepted; relay is open
	TSig       = "sig"       // both ways: relayed signal
	THangup    = "hangup"    // node → hub: leave a session
	TEnd       = "end"       // hub → node: session over
	TError     = "error"     // hub → node
	TTURNReq   = "turn_req"  // node → hub: ask for relay credentials
	TTURN      = "turn"      // hub → node: relay credentials for the authenticated NodeID
)

// Signal kinds.
const (
	KindCred = "cred"
	KindCand = "cand"
	KindDone = "done"
)

// Error codes carried in error frames and as WebSocket close reasons.
const (
	CodeBadFrame        = "bad_frame"
	CodeAuthFailed      = "auth_failed"
	CodeNotAuthed       = "not_authenticated"
	CodeRateLimited     = "rate_limited"
	CodeTooManySessions = "too_many_sessions"
	CodeCalleeBusy      = "callee_busy" // the callee's call limits refused this call; retry later
	CodeUnknownSession  = "unknown_session"
	CodeBadState        = "bad_state"
	CodeBadTarget       = "bad_target"
	CodeQueueFull       = "queue_full"
	CodeShutdown        = "shutting_down"
	CodeIdle            = "idle"
	CodeNoTURN          = "no_turn" // in a turn frame: the hub serves no TURN
)

// Session end reasons.
const (
	ReasonDone     = "done"     // both sides sent done
	ReasonHangup   = "hangup"   // the peer hung up
	ReasonReject   = "rejected" // the callee refused
	ReasonTimeout  = "timeout"  // callee did not accept within the pairing timeout
	ReasonLifetime = "lifetime" // session lived longer than allowed
	ReasonLimit    = "limit"    // relayed bytes exceeded
	ReasonGone     = "gone"     // the peer's connection went away
	ReasonBusy     = "busy"     // the hub could not queue a relayed frame: the receiver reads too slowly
	// ReasonRateLimited: the callee sent more answers than its reply budget allows.
	ReasonRateLimited = "rate_limited"
)

// Field length limits (validated on decode, independent of the frame size limit).
const (
	maxURLLen   = 512
	maxUfragLen = 256
	maxPwdLen   = 256
	maxCandLen  = 1024
	maxTextLen  = 256
	sidLen      = 32 // hex chars
)

// Frame is the single JSON object carried in every WebSocket text message.
// Fields not used by a frame type are omitted. Binary fields are standard
// base64 (encoding/json's []byte form); identities are lowercase hex.
type Frame struct {
	T        string `json:"t"`
	Nonce    []byte `json:"nonce,omitempty"`
	PingMS   int64  `json:"ping_ms,omitempty"`
	MaxMsg   int    `json:"max_msg,omitempty"`
	Pub      []byte `json:"pub,omitempty"`
	NodeID   string `json:"node_id,omitempty"`
	URL      string `json:"url,omitempty"`
	Sig      []byte `json:"sig,omitempty"`
	Register bool   `json:"register,omitempty"`
	Addr     string `json:"addr,omitempty"`
	CID      uint64 `json:"cid,omitempty"`
	SID      string `json:"sid,omitempty"`
	Target   string `json:"target,omitempty"`
	Peer     string `json:"peer,omitempty"`
	Kind     string `json:"kind,omitempty"`
	Ufrag    string `json:"ufrag,omitempty"`
	Pwd      string `json:"pwd,omitempty"`
	Cand     string `json:"cand,omitempty"`
	Code     string `json:"code,omitempty"`
	Msg      string `json:"msg,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// turn frames (docs/relay.md)
	TURNUser string   `json:"turn_user,omitempty"`
	TURNPass string   `json:"turn_pass,omitempty"`
	TURNExp  int64    `json:"turn_exp,omitempty"` // unix seconds
	TURNURLs []string `json:"turn_urls,omitempty"`
}

// ErrBadFrame is wrapped by every DecodeFrame error.
var ErrBadFrame = errors.New("signal: bad frame")

// DecodeFrame parses and validates one frame. Unknown fields are ignored;
// unknown frame types are rejected (the receiver decides what to do).
func DecodeFrame(b []byte) (Frame, error) {
	var f Frame
	if err := json.Unmarshal(b, &f); err != nil {
		return Frame{}, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	if err := f.validate(); err != nil {
		return Frame{}, fmt.Errorf("%w: %s: %v", ErrBadFrame, f.T, err)
	}
	return f, nil
}

// EncodeFrame serialises f. It never fails for frames built by this package.
func EncodeFrame(f Frame) []byte {
	b, err := json.Marshal(f)
	if err != nil { // impossible: only strings, ints, bools and []byte
		panic(fmt.Sprintf("signal: encode frame: %v", err))
	}
	return b
}

func (f *Frame) validate() error {
	if len(f.URL) > maxURLLen || len(f.Msg) > maxTextLen || len(f.Code) > maxTextLen ||
		len(f.Reason) > maxTextLen || len(f.NodeID) > 64 || len(f.Target) > 64 ||
		len(f.Addr) > 42 || len(f.Peer) > 42 || len(f.SID) > sidLen {
		return errors.New("field too long")
	}
	switch f.T {
	case TChallenge:
		if len(f.Nonce) != NonceLen {
			return errors.New("nonce must be 32 bytes")
		}
	case TAuth:
		if len(f.Pub) != ed25519.PublicKeySize {
			return errors.New("pub must be 32 bytes")
		}
		if len(f.Sig) != ed25519.SignatureSize {
			return errors.New("sig must be 64 bytes")
		}
		if _, err := a2al.ParseNodeID(f.NodeID); err != nil {
			return err
		}
		if f.URL == "" {
			return errors.New("missing url")
		}
	case TWelcome:
		if _, err := ParseAddress(f.Addr); err != nil {
			return err
		}
	case TCall:
		if f.CID == 0 {
			return errors.New("missing cid")
		}
		if _, err := a2al.ParseNodeID(f.Target); err != nil {
			return err
		}
	case TNoAgent:
		if f.CID == 0 {
			return errors.New("missing cid")
		}
	case TRinging, TAccepted:
		if f.CID == 0 {
			return errors.New("missing cid")
		}
		if err := checkSID(f.SID); err != nil {
			return err
		}
		if _, err := ParseAddress(f.Peer); err != nil {
			return err
		}
	case TIncoming:
		if err := checkSID(f.SID); err != nil {
			return err
		}
		if _, err := ParseAddress(f.Peer); err != nil {
			return err
		}
	case TAccept, TReject, THangup, TEnd:
		if err := checkSID(f.SID); err != nil {
			return err
		}
	case TSig:
		if err := checkSID(f.SID); err != nil {
			return err
		}
		if _, err := f.Signal(); err != nil {
			return err
		}
	case TTURN:
		return validTURNFrame(f)
	case TReplaced, TError, TTURNReq:
	default:
		return errors.New("unknown frame type")
	}
	return nil
}

// Signal extracts the relayed payload of a sig frame, validating its fields.
func (f *Frame) Signal() (Signal, error) {
	s := Signal{Kind: f.Kind, Ufrag: f.Ufrag, Pwd: f.Pwd, Candidate: f.Cand}
	return s, s.validate()
}

func sigFrame(sid string, s Signal) Frame {
	return Frame{T: TSig, SID: sid, Kind: s.Kind, Ufrag: s.Ufrag, Pwd: s.Pwd, Cand: s.Candidate}
}

// Signal is one relayed signaling message of a session.
type Signal struct {
	Kind      string // "cred" (Ufrag+Pwd), "cand" (Candidate), "done" (end of candidates)
	Ufrag     string
	Pwd       string
	Candidate string // ICE candidate string, as from ice.Candidate.Marshal()
}

func (s Signal) validate() error {
	switch s.Kind {
	case KindCred:
		if s.Ufrag == "" || s.Pwd == "" || len(s.Ufrag) > maxUfragLen || len(s.Pwd) > maxPwdLen || s.Candidate != "" {
			return errors.New("cred needs ufrag and pwd (<=256 bytes) and no candidate")
		}
	case KindCand:
		if s.Candidate == "" || len(s.Candidate) > maxCandLen || s.Ufrag != "" || s.Pwd != "" {
			return errors.New("cand needs a candidate (<=1024 bytes) and nothing else")
		}
	case KindDone:
		if s.Ufrag != "" || s.Pwd != "" || s.Candidate != "" {
			return errors.New("done carries no fields")
		}
	default:
		return fmt.Errorf("unknown signal kind %q", s.Kind)
	}
	return nil
}

// size is the relayed payload size counted against the per-session byte limit.
func (s Signal) size() int { return len(s.Kind) + len(s.Ufrag) + len(s.Pwd) + len(s.Candidate) }

func checkSID(s string) error {
	if len(s) != sidLen {
		return errors.New("sid must be 32 hex chars")
	}
	if _, err := hex.DecodeString(s); err != nil {
		return fmt.Errorf("sid: %w", err)
	}
	return nil
}

// ParseAddress parses 42 hex characters.
func ParseAddress(s string) (a2al.Address, error) {
	var a a2al.Address
	if len(s) != 2*a2al.AddressLen {
		return a, errors.New("address must be 42 hex chars")
	}
	if _, err := hex.Decode(a[:], []byte(s)); err != nil {
		return a, fmt.Errorf("address: %w", err)
	}
	return a, nil
}

// AuthMessage is the byte string a node signs to authenticate:
// label ‖ 0x00 ‖ nonce(32) ‖ uint16be(len(url)) ‖ url ‖ nodeID(32).
// The URL binds the signature to one hub (a hub cannot replay it at another
// hub that checks its own public URL); the nonce binds it to one connection.
func AuthMessage(nonce []byte, hubURL string, id a2al.NodeID) []byte {
	m := make([]byte, 0, len(AuthLabel)+1+len(nonce)+2+len(hubURL)+len(id))
	m = append(m, AuthLabel...)
	m = append(m, 0)
	m = append(m, nonce...)
	m = binary.BigEndian.AppendUint16(m, uint16(len(hubURL)))
	m = append(m, hubURL...)
	m = append(m, id[:]...)
	return m
}

// CanonicalURL normalises a hub URL for signing and comparison: lowercase
// scheme and host, default port removed, no query or fragment, empty path
// becomes "/". Only ws and wss are accepted.
func CanonicalURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("hub url %q: %w", raw, err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "ws" && scheme != "wss" {
		return "", fmt.Errorf("hub url %q: scheme must be ws or wss", raw)
	}
	if u.Host == "" || u.User != nil {
		return "", fmt.Errorf("hub url %q: needs a host and no user info", raw)
	}
	host := strings.ToLower(u.Host)
	if (scheme == "ws" && strings.HasSuffix(host, ":80")) || (scheme == "wss" && strings.HasSuffix(host, ":443")) {
		host = host[:strings.LastIndexByte(host, ':')]
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, nil
}

// SignalURL turns a hub base URL (e.g. ws://hub:4122) into the canonical URL
// of its signaling endpoint: SignalPath is appended unless already present.
func SignalURL(base string) (string, error) {
	c, err := CanonicalURL(base)
	if err != nil {
		return "", err
	}
	u, _ := url.Parse(c) // c is canonical, so it parses
	if !strings.HasSuffix(u.Path, SignalPath) {
		u.Path = strings.TrimSuffix(u.Path, "/") + SignalPath
		u.RawPath = ""
	}
	return CanonicalURL(u.String())
}
