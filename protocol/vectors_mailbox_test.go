package protocol

import (
	"bytes"
	"crypto/ecdh"
	"testing"

	"github.com/a2alnode/a2al"
)

type mailboxFile struct {
	Sender, Recipient struct {
		SeedHex    string `json:"seed_hex"`
		PubHex     string `json:"public_key_hex"`
		AddressHex string `json:"address_hex"`
	}
	MsgType     uint8  `json:"msg_type"`
	BodyHex     string `json:"body_hex"`
	PlainCBOR   string `json:"plaintext_cbor_hex"`
	RecipX25519 string `json:"recipient_x25519_public_hex"`
	RecipPriv   string `json:"recipient_x25519_private_hex"`
	EphPriv     string `json:"ephemeral_x25519_private_hex"`
	EphPub      string `json:"ephemeral_x25519_public_hex"`
	Shared      string `json:"shared_secret_hex"`
	Salt        string `json:"hkdf_salt_hex"`
	Info        string `json:"hkdf_info_hex"`
	AESKey      string `json:"aes_key_hex"`
	Nonce       string `json:"nonce_hex"`
	Ciphertext  string `json:"ciphertext_with_tag_hex"`
	PayloadCBOR string `json:"payload_cbor_hex"`
	PayloadLen  int    `json:"payload_len"`
	RecordCBOR  string `json:"record_cbor_hex"`
	StoreKey    string `json:"store_key_hex"`
	Decrypted   struct {
		SenderHex string `json:"sender_address_hex"`
		MsgType   uint8  `json:"msg_type"`
		BodyHex   string `json:"body_hex"`
	} `json:"decrypted_by_upstream"`
}

func TestVectorMailbox(t *testing.T) {
	var f mailboxFile
	loadVectors(t, "mailbox.json", &f)
	snd, rcp := newTestKey(unhex(t, f.Sender.SeedHex)), newTestKey(unhex(t, f.Recipient.SeedHex))
	vc := newVecCounter(t, "mailbox.json")
	vc.run("intermediates", func(t *testing.T) {
		u, err := Ed25519PublicToX25519(rcp.pub)
		if err != nil || !bytes.Equal(u, unhex(t, f.RecipX25519)) {
			t.Errorf("Montgomery u = %x (%v), want %s", u, err, f.RecipX25519)
		}
		priv, err := X25519PrivateFromSeed(unhex(t, f.Recipient.SeedHex))
		if err != nil || !bytes.Equal(priv, unhex(t, f.RecipPriv)) {
			t.Errorf("recipient scalar = %x, want %s", priv, f.RecipPriv)
		}
		// The recipient scalar's public key must equal the converted Ed25519 key.
		k, _ := ecdh.X25519().NewPrivateKey(priv)
		if !bytes.Equal(k.PublicKey().Bytes(), u) {
			t.Errorf("scalar and Montgomery conversion disagree")
		}
		key, err := mailboxKey(unhex(t, f.Shared), snd.addr, rcp.addr)
		if err != nil || !bytes.Equal(key, unhex(t, f.AESKey)) {
			t.Errorf("HKDF key = %x, want %s", key, f.AESKey)
		}
		if !bytes.Equal(mailboxSalt, unhex(t, f.Salt)) || !bytes.Equal(append(snd.addr[:], rcp.addr[:]...), unhex(t, f.Info)) {
			t.Errorf("salt/info differ")
		}
		plain, _ := marshal(wireMailboxPlain{MsgType: f.MsgType, Body: unhex(t, f.BodyHex)})
		if !bytes.Equal(plain, unhex(t, f.PlainCBOR)) {
			t.Errorf("plaintext CBOR = %x", plain)
		}
	})
	vc.run("encrypt", func(t *testing.T) {
		rnd := bytes.NewReader(append(unhex(t, f.EphPriv), unhex(t, f.Nonce)...))
		payload, err := EncryptMailbox(snd.addr, rcp.addr, rcp.pub, MailboxMessage{MsgType: f.MsgType, Body: unhex(t, f.BodyHex)}, rnd)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(payload, unhex(t, f.PayloadCBOR)) || len(payload) != f.PayloadLen {
			t.Fatalf("payload\n got %x\nwant %s", payload, f.PayloadCBOR)
		}
		p, err := DecodeMailboxPayload(payload)
		if err != nil || !bytes.Equal(p.EphemeralPK[:], unhex(t, f.EphPub)) || !bytes.Equal(p.Ciphertext, unhex(t, f.Ciphertext)) {
			t.Fatalf("decoded payload: %+v %v", p, err)
		}
		if enc, _ := EncodeMailboxPayload(*p); !bytes.Equal(enc, payload) {
			t.Errorf("payload round trip differs")
		}
	})
	vc.run("record_and_decrypt", func(t *testing.T) {
		rec, err := DecodeRecord(unhex(t, f.RecordCBOR))
		if err != nil {
			t.Fatal(err)
		}
		if enc, _ := EncodeRecord(rec); !bytes.Equal(enc, unhex(t, f.RecordCBOR)) {
			t.Errorf("record round trip differs")
		}
		if err := VerifySignedRecord(rec, at(vecT0+10)); err != nil {
			t.Fatalf("verify: %v", err)
		}
		key := a2al.NodeID(unhex(t, f.StoreKey))
		if key != rcp.addr.NodeID() {
			t.Fatalf("store key is not NodeID(recipient)")
		}
		if err := CheckAuthority(key, rec, at(vecT0+10)); err != nil {
			t.Fatalf("authority: %v", err)
		}
		priv, _ := X25519PrivateFromSeed(unhex(t, f.Recipient.SeedHex))
		m, err := DecryptMailbox(rec, rcp.addr, priv)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Address != a2al.Address(unhex(t, f.Decrypted.SenderHex)) || m.MsgType != f.Decrypted.MsgType ||
			!bytes.Equal(m.Body, unhex(t, f.Decrypted.BodyHex)) {
			t.Fatalf("decrypted %+v", m)
		}
		// Wrong recipient and tampered ciphertext must fail.
		if _, err := DecryptMailbox(rec, snd.addr, priv); err == nil {
			t.Error("decrypted for the wrong recipient")
		}
		bad := rec
		p, _ := DecodeMailboxPayload(rec.Payload)
		p.Ciphertext = append([]byte{}, p.Ciphertext...)
		p.Ciphertext[0] ^= 1
		bad.Payload, _ = EncodeMailboxPayload(*p)
		if _, err := DecryptMailbox(bad, rcp.addr, priv); err == nil {
			t.Error("tampered ciphertext decrypted")
		}
	})
	vc.report()
}
