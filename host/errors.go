package host

import (
	"errors"
	"fmt"

	"github.com/a2alnode/a2al/dht"
)

// Typed dial and punch failures, so callers (the a2al-node API) can map them to
// their own codes with errors.Is / errors.As instead of matching text.
var (
	// ErrNoEndpointRecord: the peer's endpoint record could not be found.
	ErrNoEndpointRecord = dht.ErrNoEndpoint
	// ErrPunchFailed: a hole punch to the peer was needed and failed; the
	// error is a *PunchError carrying the reason.
	ErrPunchFailed = errors.New("host: hole punch failed")
	// ErrSelf: the dial target is this node.
	ErrSelf = errors.New("host: that is our own address")
	// ErrClosed: the host is shut down.
	ErrClosed = errors.New("host: closed")
)

// PunchError is a failed punch. Reason is the class the DHT sees; Code is the
// stable short name also used in PunchRecord.Reason ("ice-timeout",
// "no-agent", "no-hub", "signaling", "tls-identity", "timeout", "other",
// "rejected-backoff", ...). errors.Is(err, ErrPunchFailed) holds, and the
// cause (e.g. ErrNoHub) stays reachable through Unwrap.
type PunchError struct {
	Reason dht.PunchFailReason
	Code   string
	Err    error
}

func (e *PunchError) Error() string { return fmt.Sprintf("punch failed (%s): %v", e.Code, e.Err) }

// Unwrap returns the cause.
func (e *PunchError) Unwrap() error { return e.Err }

// Is makes every PunchError match ErrPunchFailed.
func (e *PunchError) Is(target error) bool { return target == ErrPunchFailed }

// newPunchError classifies err (see failReason).
func newPunchError(err error) *PunchError {
	var pe *PunchError
	if errors.As(err, &pe) {
		return pe
	}
	r, code := failReason(err)
	return &PunchError{Reason: r, Code: code, Err: err}
}
