package host

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
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

// Identity is a TLS identity the host presents: the node itself, or an agent
// it hosts. For a delegated agent Key is the operational key, Address the
// owner's agent address and Delegation the proof (docs/modea.md).
type Identity struct {
	Key        ed25519.PrivateKey
	Address    a2al.Address
	NodeID     a2al.NodeID
	Delegation []byte // CBOR DelegationProof; nil for a plain identity
	cert       tls.Certificate
	now        func() time.Time // verification clock (peer delegation expiry)
}

// NewIdentity builds the certificate for key. A fresh certificate is made on
// every start; validity runs from now−1h to now+365d so small clock skew on the
// peer does not matter.
func NewIdentity(key ed25519.PrivateKey, now time.Time) (*Identity, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("host: identity: private key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	cert, err := makeCert(key, nil, now)
	if err != nil {
		return nil, err
	}
	addr := a2al.AddressFromEd25519(key.Public().(ed25519.PublicKey))
	return &Identity{Key: key, Address: addr, NodeID: a2al.NodeIDFromAddress(addr), cert: cert, now: time.Now}, nil
}

// NewDelegatedIdentity builds the identity of a delegated agent: opKey acts
// for the agent address named in proof, which must authorise opKey at now.
// The certificate carries the delegation extension so peers can check it.
func NewDelegatedIdentity(opKey ed25519.PrivateKey, proof []byte, now time.Time) (*Identity, error) {
	if len(opKey) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("host: delegated identity: private key has %d bytes, want %d", len(opKey), ed25519.PrivateKeySize)
	}
	p, err := protocol.ParseDelegation(proof)
	if err != nil {
		return nil, fmt.Errorf("host: delegated identity: %w", err)
	}
	if err := p.Authorizes(p.AgentAddr, opKey.Public().(ed25519.PublicKey), now); err != nil {
		return nil, fmt.Errorf("host: delegated identity: %w", err)
	}
	ext, err := protocol.EncodeDelegationExtension(p.AgentAddr, proof)
	if err != nil {
		return nil, fmt.Errorf("host: delegated identity: extension: %w", err)
	}
	cert, err := makeCert(opKey, ext, now)
	if err != nil {
		return nil, err
	}
	return &Identity{Key: opKey, Address: p.AgentAddr, NodeID: a2al.NodeIDFromAddress(p.AgentAddr),
		Delegation: append([]byte(nil), proof...), cert: cert, now: time.Now}, nil
}

var delegationOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 999999, 1}

// makeCert is the self-signed certificate template of docs/modea.md; ext,
// when set, is the CBOR content of the delegation extension.
func makeCert(key ed25519.PrivateKey, ext []byte, now time.Time) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("host: identity: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"a2al"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if ext != nil {
		val, err := asn1.Marshal(ext) // DER OCTET STRING around the CBOR map
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("host: identity: extension: %w", err)
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: delegationOID, Value: val}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("host: identity: create certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// peerCert is what a leaf certificate proves: the key-derived address, and
// the agent address when the certificate carries a delegation that verifies
// (agent_addr bound to the extension's address and to the leaf key).
type peerCert struct {
	derived   a2al.Address
	delegated a2al.Address // zero unless a delegation verified
	delegErr  error        // why a present extension was not accepted
}

// identity is the address the peer proved: the delegated agent if any.
func (p peerCert) identity() a2al.Address {
	if !p.delegated.IsZero() {
		return p.delegated
	}
	return p.derived
}

func parsePeerCert(raw [][]byte, now time.Time) (peerCert, error) {
	if len(raw) != 1 {
		return peerCert{}, fmt.Errorf("%w: want exactly one certificate, got %d", ErrIdentity, len(raw))
	}
	cert, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return peerCert{}, fmt.Errorf("%w: parse certificate: %w", ErrIdentity, err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return peerCert{}, fmt.Errorf("%w: certificate key is %T, want Ed25519", ErrIdentity, cert.PublicKey)
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return peerCert{}, fmt.Errorf("%w: certificate not self-signed: %w", ErrIdentity, err)
	}
	pc := peerCert{derived: a2al.AddressFromEd25519(pub)}
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(delegationOID) {
			pc.delegated, pc.delegErr = verifyDelegationExt(ext.Value, pub, now)
			break
		}
	}
	return pc, nil
}

// verifyDelegationExt checks the extension fully: the proof must be for the
// extension's agent address, authorise the leaf key and verify at now.
func verifyDelegationExt(val []byte, leaf ed25519.PublicKey, now time.Time) (a2al.Address, error) {
	var content []byte
	if rest, err := asn1.Unmarshal(val, &content); err != nil || len(rest) != 0 {
		return a2al.Address{}, fmt.Errorf("delegation extension is not one DER OCTET STRING")
	}
	agent, proof, err := protocol.DecodeDelegationExtension(content)
	if err != nil {
		return a2al.Address{}, err
	}
	if _, err := protocol.VerifyDelegation(proof, agent, leaf, now); err != nil {
		return a2al.Address{}, err
	}
	return agent, nil
}

// PeerAddressFromCerts returns the identity a peer's certificate proves at
// now: the delegated agent address when the certificate carries a delegation
// that fully verifies, otherwise the address derived from the key. (An
// extension that does not verify proves nothing, so the key-derived address
// is reported, never the claimed one.)
func PeerAddressFromCerts(raw [][]byte, now time.Time) (a2al.Address, error) {
	pc, err := parsePeerCert(raw, now)
	if err != nil {
		return a2al.Address{}, err
	}
	return pc.identity(), nil
}

// verifyExpected returns a VerifyPeerCertificate callback that requires the
// peer to prove want: its key derives want, or it carries a delegation for
// want that verifies.
func verifyExpected(want a2al.Address, now func() time.Time) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		pc, err := parsePeerCert(raw, now())
		if err != nil {
			return err
		}
		if pc.derived == want || pc.delegated == want {
			return nil
		}
		if pc.delegErr != nil {
			return fmt.Errorf("%w: peer key is %s, expected %s: delegation: %w", ErrIdentity, pc.derived, want, pc.delegErr)
		}
		return fmt.Errorf("%w: peer is %s, expected %s", ErrIdentity, pc.identity(), want)
	}
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
		VerifyPeerCertificate: verifyExpected(expect, id.now),
	}
}

// ServerTLS is the listener configuration: both ALPNs, a client certificate is
// required and checked for shape; the caller then reads the verified identity
// with PeerAddress and compares it with whatever it expects. bySNI, when set,
// picks the certificate of a hosted agent named by the client's SNI (nil
// result: our own).
func (id *Identity) ServerTLS(bySNI func(sni string) *Identity) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if bySNI != nil {
				if a := bySNI(hello.ServerName); a != nil {
					return &a.cert, nil
				}
			}
			return &id.cert, nil
		},
		NextProtos: []string{ALPNModeA, ALPNModeB},
		ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := parsePeerCert(raw, id.now())
			return err
		},
	}
}

// PeerAddress returns the verified identity of the other side of a completed
// QUIC handshake (see PeerAddressFromCerts).
func (id *Identity) PeerAddress(c *quic.Conn) (a2al.Address, error) {
	st := c.ConnectionState().TLS
	raw := make([][]byte, 0, len(st.PeerCertificates))
	for _, c := range st.PeerCertificates {
		raw = append(raw, c.Raw)
	}
	return PeerAddressFromCerts(raw, id.now())
}
