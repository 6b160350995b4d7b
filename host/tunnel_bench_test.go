package host

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/a2alnode/a2al"
)

// sinkServer reads each connection to EOF and closes it.
func sinkServer(b *testing.B) net.Addr {
	return tcpServer(b, time.Minute, func(c net.Conn) { io.Copy(io.Discard, c) })
}

const benchChunk = 8 << 20 // bytes per TCP connection per iteration

// push sends benchChunk bytes over n parallel TCP connections to addr, each
// half-closed and waited for until the far end closes.
func push(b *testing.B, addr string, n int) {
	buf := make([]byte, 64<<10)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			for sent := 0; sent < benchChunk; sent += len(buf) {
				if _, err := c.Write(buf); err != nil {
					b.Error(err)
					return
				}
			}
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c) // until the far side closes
		}()
	}
	wg.Wait()
}

// BenchmarkTunnelThroughput compares a tunnel (TCP → QUIC stream on loopback
// → service → TCP) with a plain loopback TCP copy, for 1 and 8 parallel
// connections. MB/s is the payload rate (docs/services.md has the numbers).
func BenchmarkTunnelThroughput(b *testing.B) {
	sink := sinkServer(b).String()
	a := loopbackHostCfg(b, Config{})
	s := loopbackHostCfg(b, Config{})
	if err := s.Serve(ServiceConfig{Name: "sink", Target: sink, Allow: []a2al.Address{a.Address()}}); err != nil {
		b.Fatal(err)
	}
	addr, _, stop := startTunnel(b, a, s, s.Address())
	b.Cleanup(stop)
	for _, path := range []struct{ name, addr string }{{"tcp", sink}, {"tunnel", addr}} {
		for _, n := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/conns=%d", path.name, n), func(b *testing.B) {
				b.SetBytes(int64(benchChunk * n))
				for b.Loop() {
					push(b, path.addr, n)
				}
			})
		}
	}
}
