package transport

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func TestListenNetwork(t *testing.T) {
	for host, want := range map[string]string{
		"": "udp", "::": "udp", "0.0.0.0": "udp4", "127.0.0.1": "udp4", "::ffff:10.0.0.1": "udp4",
		"::1": "udp6", "2001:db8::1": "udp6", "localhost": "udp",
	} {
		if got := ListenNetwork(host); got != want {
			t.Errorf("ListenNetwork(%q) = %q, want %q", host, got, want)
		}
	}
}

// ipv6Loopback skips when the machine has no IPv6 loopback.
func ipv6Loopback(t *testing.T) {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	c.Close()
}

// The listen forms --listen accepts bind the families they name.
func TestListenFamilies(t *testing.T) {
	ipv6Loopback(t)
	for _, tc := range []struct {
		laddr string
		want  Families
	}{
		{":0", Families{V4: true, V6: true}},
		{"[::]:0", Families{V4: true, V6: true}},
		{"[::1]:0", Families{V6: true}},
		{"0.0.0.0:0", Families{V4: true}},
		{"127.0.0.1:0", Families{V4: true}},
	} {
		c, fam, err := Listen(tc.laddr)
		if err != nil {
			t.Fatalf("Listen(%q): %v", tc.laddr, err)
		}
		if fam != tc.want || SocketFamilies(c.LocalAddr()) != tc.want {
			t.Errorf("Listen(%q): families %v / %v from %v, want %v", tc.laddr, fam, SocketFamilies(c.LocalAddr()), c.LocalAddr(), tc.want)
		}
		c.Close()
	}
	if _, _, err := Listen("[::1]"); err == nil {
		t.Error("an address without a port was accepted")
	}
}

// One dual-stack socket behind the demux: DHT datagrams from an IPv4 and an
// IPv6 peer both arrive, the IPv4 one as a plain 4-byte address (never
// IPv4-mapped), and answers sent to either source arrive back; QUIC
// handshakes complete over both families on the one socket.
func TestDualStackDemux(t *testing.T) {
	ipv6Loopback(t)
	t.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	c, fam, err := Listen("[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	if !fam.V4 || !fam.V6 {
		t.Skipf("no dual-stack socket here (%v)", fam)
	}
	d := NewDemux(c, DemuxOptions{})
	defer d.Close()
	port := c.LocalAddr().(*net.UDPAddr).Port

	for _, tc := range []struct {
		network string
		ip      net.IP
		ipLen   int
	}{{"udp4", net.IPv4(127, 0, 0, 1).To4(), 4}, {"udp6", net.IPv6loopback, 16}} {
		peer, err := net.ListenUDP(tc.network, &net.UDPAddr{IP: tc.ip})
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		if _, err := peer.WriteToUDP([]byte{0xa1, 0x01, 0x02}, &net.UDPAddr{IP: tc.ip, Port: port}); err != nil {
			t.Fatal(err)
		}
		r := receiveWithin(t, d.DHT(), 5*time.Second)
		if r.err != nil || r.from != peer.LocalAddr().String() {
			t.Fatalf("%s: from %q, want %s (err %v)", tc.network, r.from, peer.LocalAddr(), r.err)
		}
		if got := len(dhtFrom(t, d, peer, port, tc.ip)); got != tc.ipLen {
			t.Fatalf("%s: source IP is %d bytes, want %d", tc.network, got, tc.ipLen)
		}
		if err := d.DHT().Send(peer.LocalAddr(), []byte{0xa0}); err != nil {
			t.Fatalf("%s: answer: %v", tc.network, err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 16)
		if n, _, err := peer.ReadFromUDP(buf); err != nil || n != 1 || buf[0] != 0xa0 {
			t.Fatalf("%s: answer not received: %d %v", tc.network, n, err)
		}
	}

	tr := &quic.Transport{Conn: d.QUIC()}
	defer tr.Close()
	tlsConf := selfSignedTLS(t)
	ln, err := tr.Listen(tlsConf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, dialIP := range []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback} {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: dialIP})
		if err != nil {
			t.Fatal(err)
		}
		ctr := &quic.Transport{Conn: pc}
		qc, err := ctr.Dial(ctx, &net.UDPAddr{IP: dialIP, Port: port}, tlsConf, &quic.Config{})
		if err != nil {
			t.Fatalf("QUIC over %v: %v", dialIP, err)
		}
		sc, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ra := sc.RemoteAddr().(*net.UDPAddr); len(ra.IP) != len(dialIP) {
			t.Errorf("server sees %v (%d-byte IP) for a %d-byte client", ra, len(ra.IP), len(dialIP))
		}
		_ = qc.CloseWithError(0, "")
		_ = sc.CloseWithError(0, "")
		ctr.Close()
		pc.Close()
	}
}

// dhtFrom sends one more datagram from peer and returns the raw source IP the
// DHT view reports for it.
func dhtFrom(t *testing.T, d *Demux, peer *net.UDPConn, port int, ip net.IP) net.IP {
	t.Helper()
	if _, err := peer.WriteToUDP([]byte{0xa1, 0x03, 0x04}, &net.UDPAddr{IP: ip, Port: port}); err != nil {
		t.Fatal(err)
	}
	ch := make(chan net.IP, 1)
	go func() {
		_, a, err := d.DHT().Receive()
		if err != nil {
			ch <- nil
			return
		}
		ch <- a.(*net.UDPAddr).IP
	}()
	select {
	case ip := <-ch:
		return ip
	case <-time.After(5 * time.Second):
		t.Fatal("no datagram")
		return nil
	}
}
