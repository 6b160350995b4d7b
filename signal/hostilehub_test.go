package signal

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// A hub that sends two incoming calls with the same session id must not
// orphan the first session: before the fix the second replaced the first in
// the client's table, the first never ended, and Close waited forever for
// its OnCall handler.
func TestClientIgnoresReusedSessionID(t *testing.T) {
	who := newIdent(t)
	const sid = "0123456789abcdef0123456789abcdef"
	hubDone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{Subprotocols: []string{Subprotocol}}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		send := func(f Frame) {
			ws.SetWriteDeadline(time.Now().Add(testWait))
			ws.WriteMessage(websocket.TextMessage, EncodeFrame(f))
		}
		ws.SetReadDeadline(time.Now().Add(testWait))
		send(Frame{T: TChallenge, Nonce: make([]byte, NonceLen), PingMS: 1000})
		if _, _, err := ws.ReadMessage(); err != nil { // auth; not checked
			return
		}
		send(Frame{T: TWelcome, Addr: who.addrHex(), Register: true})
		other := newIdent(t)
		send(Frame{T: TIncoming, SID: sid, Peer: other.addrHex()})
		send(Frame{T: TIncoming, SID: sid, Peer: other.addrHex()})
		for { // drain until the client goes away
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	defer close(hubDone)

	calls := make(chan *Session, 4)
	c, err := NewClient(ClientConfig{HubURL: "ws" + strings.TrimPrefix(srv.URL, "http"), Key: who.priv,
		OnCall: func(s *Session) {
			calls <- s
			select {
			case <-s.Done():
			case <-hubDone:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-calls:
	case <-time.After(testWait):
		t.Fatal("no incoming call")
	}
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(testWait):
		t.Fatal("Close hung: a session replaced by a reused id was never ended")
	}
	if n := len(calls); n != 0 {
		t.Fatalf("OnCall ran for the reused session id (%d extra calls)", n)
	}
}
