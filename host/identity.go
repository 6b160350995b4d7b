package host

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
)

// ALPN protocol names. Mode A (application streams) keeps the upstream name so
// the certificate/ALPN handshake stays recognisable; Mode B (DHT over QUIC) uses
// its own name so a connection can never be confused for the other kind, even
// between the same two nodes.
const (
	ALPNModeA = "a2al-quic-1"
	ALPNModeB = "a2al-dht-1"
)

// ErrIdentity is wrapped by every TLS peer-identity failure.
var ErrIdentity = errors.New("host: peer identity check failed")

// Identity is a node's TLS identity: its Ed25519 key and the self-signed
// certificate over it (host.md §4.1).
type Identity struct {
	Key     ed25519.PrivateKey
	Address a2al.Address
	NodeID  a2al.NodeID
	cert    tls.Certificate
}

// NewIdentity builds the certificate for key. A fresh certificate is made on
// every start; validity runs from now−1h to now+365d so small clock skew on the
// peer does not matter.
func NewIdentity(key ed25519.PrivateKey, now time.Time) (*Identity, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("host: identity: private key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	pub := key.Public().(ed25519.PublicKey)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("host: identity: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"a2al"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("host: identity: create certificate: %w", err)
	}
	addr := a2al.AddressFromEd25519(pub)
	return &Identity{
		Key:     key,
		Address: addr,
		NodeID:  a2al.NodeIDFromAddress(addr),
		cert:    tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
	}, nil
}

// PeerAddressFromCerts derives the peer's Address from its leaf certificate.
// Only a single Ed25519 leaf is accepted; the TLS handshake itself has already
// proven possession of the key. Delegated agents are not supported yet, so a
// certificate carrying the delegation extension is rejected rather than trusted.
func PeerAddressFromCerts(raw [][]byte) (a2al.Address, error) {
	if len(raw) != 1 {
		return a2al.Address{}, fmt.Errorf("%w: want exactly one certificate, got %d", ErrIdentity, len(raw))
	}
	cert, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return a2al.Address{}, fmt.Errorf("%w: parse certificate: %w", ErrIdentity, err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return a2al.Address{}, fmt.Errorf("%w: certificate key is %T, want Ed25519", ErrIdentity, cert.PublicKey)
	}
	for _, ext := range cert.Extensions {
		if ext.Id.String() == "1.3.6.1.4.1.999999.1" {
			return a2al.Address{}, fmt.Errorf("%w: delegated certificates are not supported", ErrIdentity)
		}
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return a2al.Address{}, fmt.Errorf("%w: certificate not self-signed: %w", ErrIdentity, err)
	}
	return a2al.AddressFromEd25519(pub), nil
}

// verifyExpected returns a VerifyPeerCertificate callback that requires the
// peer's derived Address to equal want.
func verifyExpected(want a2al.Address) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		got, err := PeerAddressFromCerts(raw)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%w: peer is %s, expected %s", ErrIdentity, got, want)
		}
		return nil
	}
}

// verifyAny accepts any well-formed single Ed25519 self-signed leaf; the
// verified Address is read back from the connection state afterwards.
func verifyAny(raw [][]byte, _ [][]*x509.Certificate) error {
	_, err := PeerAddressFromCerts(raw)
	return err
}

// ClientTLS is the dialer configuration: present our certificate, expect the
// peer to be exactly `expect`, and negotiate alpn.
func (id *Identity) ClientTLS(expect a2al.Address, alpn string) *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		MaxVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{id.cert},
		ServerName:            expect.String(),
		NextProtos:            []string{alpn},
		InsecureSkipVerify:    true, // chain validation replaced by VerifyPeerCertificate
		VerifyPeerCertificate: verifyExpected(expect),
	}
}

// ServerTLS is the listener configuration: both ALPNs, a client certificate is
// required and checked for shape; the caller then reads the verified identity
// with PeerAddress and compares it with whatever it expects.
func (id *Identity) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		MaxVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{id.cert},
		NextProtos:            []string{ALPNModeA, ALPNModeB},
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: verifyAny,
	}
}

// PeerAddress returns the verified identity of the other side of a completed
// QUIC handshake.
func PeerAddress(c *quic.Conn) (a2al.Address, error) {
	st := c.ConnectionState().TLS
	raw := make([][]byte, 0, len(st.PeerCertificates))
	for _, c := range st.PeerCertificates {
		raw = append(raw, c.Raw)
	}
	return PeerAddressFromCerts(raw)
}
