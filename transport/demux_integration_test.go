package transport

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/logging"
	"github.com/quic-go/quic-go"
)

func selfSignedTLS(t *testing.T) *tls.Config {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates:       []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}},
		InsecureSkipVerify: true, // test only: identity is not under test here
		NextProtos:         []string{"a2al-test"},
		MinVersion:         tls.VersionTLS13,
	}
}

// TestDemuxCarriesQUICAndDHT runs a quic-go connection between two demuxed
// sockets while DHT datagrams flow on the same sockets.
func TestDemuxCarriesQUICAndDHT(t *testing.T) {
	t.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	base := runtime.NumGoroutine()
	newDemux := func() *Demux {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		return NewDemux(c, DemuxOptions{})
	}
	da, db := newDemux(), newDemux()
	ta := &quic.Transport{Conn: da.QUIC()}
	tb := &quic.Transport{Conn: db.QUIC()}
	tlsConf := selfSignedTLS(t)
	ln, err := tb.Listen(tlsConf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	serverDone := make(chan error, 1)
	go func() {
		conn, err := ln.Accept(ctx)
		if err != nil {
			serverDone <- err
			return
		}
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			serverDone <- err
			return
		}
		data, err := io.ReadAll(st)
		if err == nil {
			_, err = st.Write(bytes.ToUpper(data))
		}
		_ = st.Close()
		serverDone <- err
		<-conn.Context().Done()
	}()

	// DHT traffic on the same sockets, in both directions.
	if err := da.DHT().Send(db.LocalAddr(), []byte{0xa4, 1}); err != nil {
		t.Fatal(err)
	}
	if r := receiveWithin(t, db.DHT(), 5*time.Second); !bytes.Equal(r.data, []byte{0xa4, 1}) {
		t.Fatalf("DHT got % x", r.data)
	}

	conn, err := ta.Dial(ctx, db.LocalAddr(), tlsConf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("hello over quic")); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	reply, err := io.ReadAll(st)
	if err != nil || string(reply) != "HELLO OVER QUIC" {
		t.Fatalf("reply %q, err %v", reply, err)
	}
	if err := <-serverDone; err != nil {
		t.Fatal(err)
	}
	if err := db.DHT().Send(da.LocalAddr(), []byte{0xa4, 2}); err != nil {
		t.Fatal(err)
	}
	if r := receiveWithin(t, da.DHT(), 5*time.Second); !bytes.Equal(r.data, []byte{0xa4, 2}) {
		t.Fatalf("DHT got % x", r.data)
	}
	_ = conn.CloseWithError(0, "done")
	_ = ln.Close()
	// quic-go stops reading the views via a read deadline; the demux keeps the sockets.
	if err := ta.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	if s := da.Stats(); s.QUIC.Received == 0 || s.DHT.Received != 1 {
		t.Fatalf("stats a %+v", s)
	}
	_ = da.Close()
	_ = db.Close()
	checkGoroutines(t, base)
}

// TestDemuxSTUNViewWithICEMux checks that pion's UDPMuxDefault can run on the
// STUN view and that closing the mux stops its reader without closing the socket.
func TestDemuxSTUNViewWithICEMux(t *testing.T) {
	base := runtime.NumGoroutine()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d := NewDemux(c, DemuxOptions{})
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	mux := ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: d.STUN(), Logger: lf.NewLogger("mux")})
	if _, err := mux.GetConn("ufrag", d.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := mux.Close(); err != nil {
		t.Fatal(err)
	}
	// The socket still works for the DHT after the ICE mux went away.
	p, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.WriteTo([]byte{0xa4, 3}, d.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if r := receiveWithin(t, d.DHT(), 5*time.Second); !bytes.Equal(r.data, []byte{0xa4, 3}) {
		t.Fatalf("DHT got % x", r.data)
	}
	_ = d.Close()
	checkGoroutines(t, base)
}
