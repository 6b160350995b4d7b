package protocol

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"io"
	"math/big"

	"github.com/a2alnode/a2al"
)

// MaxMailboxPayload is the verifier cap for rec_type 0x80–0x8F payloads (docs/wire.md §9.3).
const MaxMailboxPayload = 512

// Mailbox plaintext message types (docs/wire.md §9.3).
const (
	MailboxConnectRequest uint8 = 0x01
	MailboxCandidates     uint8 = 0x02
	MailboxText           uint8 = 0x03
)

var mailboxSalt = []byte("a2al-mailbox\x00")

// MailboxPayload is the payload of a mailbox record (docs/wire.md §9.3).
type MailboxPayload struct {
	Recipient   a2al.Address
	Sender      a2al.Address
	EphemeralPK [32]byte
	Ciphertext  []byte // AES-256-GCM output including the 16-byte tag
	Nonce       [12]byte
}

// MailboxMessage is the decrypted plaintext. Body nil encodes as null.
type MailboxMessage struct {
	MsgType uint8
	Body    []byte
}

type wireMailbox struct {
	Recipient   []byte `cbor:"1,keyasint"`
	Sender      []byte `cbor:"2,keyasint"`
	EphemeralPK []byte `cbor:"3,keyasint"`
	Ciphertext  []byte `cbor:"4,keyasint"`
	Nonce       []byte `cbor:"5,keyasint"`
}

type wireMailboxPlain struct {
	MsgType uint8  `cbor:"1,keyasint"`
	Body    []byte `cbor:"2,keyasint"`
}

// EncodeMailboxPayload encodes p canonically; the result must fit 512 bytes.
func EncodeMailboxPayload(p MailboxPayload) ([]byte, error) {
	b, err := marshal(wireMailbox{
		Recipient: p.Recipient[:], Sender: p.Sender[:], EphemeralPK: p.EphemeralPK[:],
		Ciphertext: p.Ciphertext, Nonce: p.Nonce[:],
	})
	if err != nil {
		return nil, err
	}
	if len(b) > MaxMailboxPayload {
		return nil, fmt.Errorf("%w: %w: payload %d bytes, limit %d", ErrMailbox, ErrTooLarge, len(b), MaxMailboxPayload)
	}
	return b, nil
}

// DecodeMailboxPayload decodes a mailbox payload and checks field lengths.
func DecodeMailboxPayload(b []byte) (*MailboxPayload, error) {
	if len(b) > MaxMailboxPayload {
		return nil, fmt.Errorf("%w: %w: payload %d bytes, limit %d", ErrMailbox, ErrTooLarge, len(b), MaxMailboxPayload)
	}
	var w wireMailbox
	if err := unmarshal(b, &w, "mailbox payload"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMailbox, err)
	}
	if len(w.Recipient) != a2al.AddressLen || len(w.Sender) != a2al.AddressLen ||
		len(w.EphemeralPK) != 32 || len(w.Nonce) != 12 {
		return nil, fmt.Errorf("%w: %w: field lengths recipient=%d sender=%d ephemeral=%d nonce=%d",
			ErrMailbox, ErrShape, len(w.Recipient), len(w.Sender), len(w.EphemeralPK), len(w.Nonce))
	}
	p := &MailboxPayload{Ciphertext: w.Ciphertext}
	copy(p.Recipient[:], w.Recipient)
	copy(p.Sender[:], w.Sender)
	copy(p.EphemeralPK[:], w.EphemeralPK)
	copy(p.Nonce[:], w.Nonce)
	return p, nil
}

var (
	fieldP = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	// edD is the Edwards curve constant d = -121665/121666 mod p.
	edD = func() *big.Int {
		n := new(big.Int).Neg(big.NewInt(121665))
		inv := new(big.Int).ModInverse(big.NewInt(121666), fieldP)
		return n.Mul(n, inv).Mod(n, fieldP)
	}()
)

// Ed25519PublicToX25519 maps an Ed25519 public key to its Montgomery u
// coordinate u = (1+y)/(1−y) mod p (docs/wire.md §9.3 step 2), after checking
// that the encoding is a canonical point on the curve.
func Ed25519PublicToX25519(pub []byte) ([]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: ed25519 key is %d bytes", ErrMailbox, len(pub))
	}
	le := append([]byte{}, pub...)
	sign := le[31] >> 7
	le[31] &= 0x7f
	y := new(big.Int).SetBytes(reverse(le))
	if y.Cmp(fieldP) >= 0 {
		return nil, fmt.Errorf("%w: non-canonical ed25519 key", ErrMailbox)
	}
	// x² = (y² − 1) / (d·y² + 1) must be a square (and x = 0 needs sign 0).
	y2 := new(big.Int).Mul(y, y)
	y2.Mod(y2, fieldP)
	num := new(big.Int).Sub(y2, big.NewInt(1))
	num.Mod(num, fieldP)
	den := new(big.Int).Mul(edD, y2)
	den.Add(den, big.NewInt(1)).Mod(den, fieldP)
	x2 := new(big.Int).Mul(num, new(big.Int).ModInverse(den, fieldP))
	x2.Mod(x2, fieldP)
	if x2.Sign() == 0 && sign == 1 || x2.Sign() != 0 && big.Jacobi(x2, fieldP) != 1 {
		return nil, fmt.Errorf("%w: ed25519 key is not a curve point", ErrMailbox)
	}
	oneMinusY := new(big.Int).Sub(big.NewInt(1), y)
	oneMinusY.Mod(oneMinusY, fieldP)
	if oneMinusY.Sign() == 0 {
		return nil, fmt.Errorf("%w: ed25519 key is the identity point", ErrMailbox)
	}
	u := new(big.Int).Add(big.NewInt(1), y)
	u.Mul(u, new(big.Int).ModInverse(oneMinusY, fieldP)).Mod(u, fieldP)
	out := make([]byte, 32)
	u.FillBytes(out)
	return reverse(out), nil
}

func reverse(b []byte) []byte {
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return b
}

// X25519PrivateFromSeed derives the mailbox decryption scalar of an Ed25519
// identity: SHA-512(seed)[0:32] with the standard clamping (docs/wire.md §9.3).
func X25519PrivateFromSeed(seed []byte) ([]byte, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: seed is %d bytes", ErrMailbox, len(seed))
	}
	h := sha512.Sum512(seed)
	s := append([]byte{}, h[:32]...)
	s[0] &= 248
	s[31] &= 127
	s[31] |= 64
	return s, nil
}

func mailboxKey(shared []byte, sender, recipient a2al.Address) ([]byte, error) {
	info := append(append(make([]byte, 0, 42), sender[:]...), recipient[:]...)
	k, err := hkdf.Key(sha256.New, shared, mailboxSalt, string(info), 32)
	if err != nil {
		return nil, fmt.Errorf("%w: hkdf: %w", ErrMailbox, err)
	}
	return k, nil
}

func gcm(key []byte) (cipher.AEAD, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMailbox, err)
	}
	a, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMailbox, err)
	}
	return a, nil
}

// EncryptMailbox encrypts msg from sender to recipient, whose Ed25519 key
// (its endpoint record's pubkey) is recipientPub, and returns the encoded
// payload (docs/wire.md §9.3). rnd supplies 32 bytes of ephemeral key, then 12
// bytes of nonce (crypto/rand.Reader in production).
func EncryptMailbox(sender, recipient a2al.Address, recipientPub []byte, msg MailboxMessage, rnd io.Reader) ([]byte, error) {
	u, err := Ed25519PublicToX25519(recipientPub)
	if err != nil {
		return nil, err
	}
	var eph [32]byte
	var p MailboxPayload
	if _, err := io.ReadFull(rnd, eph[:]); err != nil {
		return nil, fmt.Errorf("%w: random: %w", ErrMailbox, err)
	}
	if _, err := io.ReadFull(rnd, p.Nonce[:]); err != nil {
		return nil, fmt.Errorf("%w: random: %w", ErrMailbox, err)
	}
	priv, err := ecdh.X25519().NewPrivateKey(eph[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMailbox, err)
	}
	peer, err := ecdh.X25519().NewPublicKey(u)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMailbox, err)
	}
	shared, err := priv.ECDH(peer) // rejects the all-zero result
	if err != nil {
		return nil, fmt.Errorf("%w: x25519: %w", ErrMailbox, err)
	}
	key, err := mailboxKey(shared, sender, recipient)
	if err != nil {
		return nil, err
	}
	plain, err := marshal(wireMailboxPlain(msg))
	if err != nil {
		return nil, err
	}
	aead, err := gcm(key)
	if err != nil {
		return nil, err
	}
	p.Recipient, p.Sender = recipient, sender
	copy(p.EphemeralPK[:], priv.PublicKey().Bytes())
	p.Ciphertext = aead.Seal(nil, p.Nonce[:], plain, nil)
	return EncodeMailboxPayload(p)
}

// DecryptMailbox opens the payload of mailbox record rec for self, using the
// X25519 scalar from X25519PrivateFromSeed. The record's address must be the
// payload's sender. Verify the record (VerifySignedRecord, CheckAuthority) first.
func DecryptMailbox(rec SignedRecord, self a2al.Address, x25519Priv []byte) (*MailboxMessage, error) {
	if RecordCategory(rec.RecType) != CategoryMailbox {
		return nil, fmt.Errorf("%w: rec_type %#x is not a mailbox record", ErrMailbox, rec.RecType)
	}
	p, err := DecodeMailboxPayload(rec.Payload)
	if err != nil {
		return nil, err
	}
	if p.Recipient != self {
		return nil, fmt.Errorf("%w: addressed to %x, not us", ErrMailbox, p.Recipient[:])
	}
	if p.Sender != rec.Address {
		return nil, fmt.Errorf("%w: sender_addr differs from record address", ErrMailbox)
	}
	priv, err := ecdh.X25519().NewPrivateKey(x25519Priv)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMailbox, err)
	}
	peer, err := ecdh.X25519().NewPublicKey(p.EphemeralPK[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMailbox, err)
	}
	shared, err := priv.ECDH(peer)
	if err != nil {
		return nil, fmt.Errorf("%w: x25519: %w", ErrMailbox, err)
	}
	key, err := mailboxKey(shared, p.Sender, p.Recipient)
	if err != nil {
		return nil, err
	}
	aead, err := gcm(key)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, p.Nonce[:], p.Ciphertext, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: decrypt: %w", ErrMailbox, err)
	}
	var w wireMailboxPlain
	if err := unmarshal(plain, &w, "mailbox plaintext"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMailbox, err)
	}
	m := MailboxMessage(w)
	return &m, nil
}
