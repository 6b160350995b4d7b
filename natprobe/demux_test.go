package natprobe_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/transport"
)

// The host's wiring: the shared socket behind transport.Demux, requests
// written through the STUN view, answers taken by the STUN hook, and the
// echo arriving as a DHT datagram - with a single-IP server, so filtering
// depends on the echo.
func TestClassifyThroughDemux(t *testing.T) {
	for _, kind := range []natprobe.NATType{natprobe.TypeFullCone, natprobe.TypeAddressRestricted, natprobe.TypePortRestricted, natprobe.TypeSymmetric} {
		t.Run(string(kind), func(t *testing.T) {
			h, peer, servers, conn := echoWorld(t, kind)
			d := transport.NewDemux(conn, transport.DemuxOptions{})
			t.Cleanup(func() { _ = d.Close() })

			echo := func(ctx context.Context, claimed *net.UDPAddr) (bool, error) {
				pc, err := peer.Net.ListenPacket("udp4", peer.Bind(0))
				if err != nil {
					return false, err
				}
				defer pc.Close()
				if _, err := pc.WriteTo([]byte{0xa1, 0x01, 0x02}, claimed); err != nil { // a CBOR map: DHT class
					return false, err
				}
				got := make(chan bool, 1)
				go func() {
					_, _, err := d.DHT().Receive()
					got <- err == nil
				}()
				tm := time.NewTimer(300 * time.Millisecond)
				defer tm.Stop()
				select {
				case ok := <-got:
					return ok, nil
				case <-tm.C:
					// Unblock the receiver by sending to ourselves over loopback-free path:
					// a datagram from the host's own LAN address always arrives.
					self, err := h.Net.ListenPacket("udp4", h.Bind(0))
					if err == nil {
						_, _ = self.WriteTo([]byte{0xa0}, conn.LocalAddr())
						<-got
						_ = self.Close()
					}
					return false, nil
				case <-ctx.Done():
					return false, ctx.Err()
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := natprobe.Classify(ctx, natprobe.ClassifyConfig{
				Conn:      d.STUN(),
				Servers:   servers,
				Timeout:   testTimeout,
				EchoProbe: echo,
				InstallHook: func(hook func([]byte, net.Addr) bool) (func(), error) {
					return d.AddSTUNHook(hook)
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s\n  trace: %q", kind, res, res.Trace)
			if res.Type != kind {
				t.Fatalf("classified %s as %s", kind, res)
			}
			// Late answers to retransmissions may miss the hook; the rest must use it.
			// The demux counts after the hook returns, so poll briefly.
			deadline := time.Now().Add(2 * time.Second)
			for st := d.Stats(); st.STUNHooked < 2; st = d.Stats() {
				if time.Now().After(deadline) {
					t.Fatalf("answers did not go through the hook: %+v", st)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				t.Fatal("ran into the test deadline")
			}
		})
	}
}
