// Package testserve runs the small TCP servers tests stand behind a service
// or tunnel: an accept loop that hands every connection to a handler.
package testserve

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Serve accepts on ln until the test ends and runs handle on each
// connection with the given deadline, closing it afterwards. The listener
// is closed and every handler waited for at cleanup.
func Serve(t testing.TB, ln net.Listener, deadline time.Duration, handle func(net.Conn)) net.Addr {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(deadline))
				handle(c)
			}()
		}
	}()
	return ln.Addr()
}
