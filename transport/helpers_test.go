package transport

import (
	"runtime"
	"testing"
	"time"
)

// checkGoroutines fails t if the goroutine count does not return to base
// within a deadline.
func checkGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines: %d, baseline %d\n%s", n, base, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type recvResult struct {
	data []byte
	from string
	err  error
}

// receiveWithin runs tr.Receive in a goroutine and waits up to d for it.
func receiveWithin(t *testing.T, tr Transport, d time.Duration) recvResult {
	t.Helper()
	ch := make(chan recvResult, 1)
	go func() {
		b, a, err := tr.Receive()
		r := recvResult{data: b, err: err}
		if a != nil {
			r.from = a.String()
		}
		ch <- r
	}()
	select {
	case r := <-ch:
		return r
	case <-time.After(d):
		_ = tr.Close() // unblocks the receiver so it does not leak
		<-ch
		t.Fatalf("no packet within %v", d)
		return recvResult{}
	}
}
