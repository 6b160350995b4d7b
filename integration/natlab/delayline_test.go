package natlab

import (
	"fmt"
	"net"
	"sort"
	"testing"
	"time"
)

// TestDelayLine checks the userspace netem substitute: RTT through a router
// grows by twice the configured one-way delay, 100% loss blocks traffic, and
// TCP (GSO-sized frames) still flows through it.
func TestDelayLine(t *testing.T) {
	l := New(t)
	r := l.AddRouter("r", PortRestricted, RouterOptions{DelayLine: true})
	h := r.AddHost("h")
	echo := l.AddWANHost("echo")
	srv, err := echo.ListenUDP(nil, 7000)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteToUDP(buf[:n], from)
		}
	}()
	c, err := h.ListenUDP(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to := &net.UDPAddr{IP: echo.IP, Port: 7000}
	medianRTT := func(n int) (time.Duration, int) {
		var rtts []time.Duration
		buf := make([]byte, 64)
		for i := 0; i < n; i++ {
			start := time.Now()
			msg := fmt.Sprintf("p%d", i)
			if _, err := c.WriteToUDP([]byte(msg), to); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			for {
				m, _, err := c.ReadFromUDP(buf)
				if err != nil {
					break
				}
				if string(buf[:m]) == msg {
					rtts = append(rtts, time.Since(start))
					break
				}
			}
		}
		if len(rtts) == 0 {
			return 0, 0
		}
		sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
		return rtts[len(rtts)/2], len(rtts)
	}
	base, got := medianRTT(10)
	if got == 0 {
		t.Fatal("no echo through the delay line")
	}
	if err := r.SetDelay(20*time.Millisecond, 0); err != nil {
		t.Fatal(err)
	}
	delayed, got := medianRTT(10)
	if got == 0 {
		t.Fatal("no echo with 20 ms delay")
	}
	if delayed < 40*time.Millisecond {
		t.Errorf("median RTT with 2x20 ms one-way delay is %v, want >= 40ms", delayed)
	}
	t.Logf("median RTT: %v without delay, %v with 20 ms one-way", base, delayed)

	// TCP through the delay line (large GSO frames must survive).
	ln, err := echo.ListenTCP(nil, 7001)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 1 << 20
	done := make(chan int, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- -1
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		total := 0
		buf := make([]byte, 64<<10)
		for total < size {
			n, err := conn.Read(buf)
			total += n
			if err != nil {
				break
			}
		}
		done <- total
	}()
	conn, err := h.DialTCP(fmt.Sprintf("%s:7001", echo.IP), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(make([]byte, size)); err != nil {
		t.Fatalf("TCP write through delay line: %v", err)
	}
	conn.Close()
	if n := <-done; n != size {
		t.Fatalf("TCP through delay line delivered %d of %d bytes", n, size)
	}

	if err := r.SetDelay(0, 1); err != nil {
		t.Fatal(err)
	}
	if _, got := medianRTT(3); got != 0 {
		t.Errorf("%d echoes arrived with 100%% loss", got)
	}
}
