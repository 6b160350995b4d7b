package host

import (
	"testing"
	"time"
)

func FuzzPeerAddressFromCerts(f *testing.F) {
	id := newTestIdentity(f)
	f.Add(id.cert.Certificate[0])
	hf := loadHostFrames(f)
	f.Add(mustHex(f, hf.Delegated.DER))
	for _, d := range hf.Defects {
		f.Add(mustHex(f, d.DER))
	}
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		addr, err := PeerAddressFromCerts([][]byte{der}, time.Now())
		if err == nil && addr.IsZero() {
			t.Fatal("accepted certificate yielded a zero address")
		}
	})
}

func TestPeerAddressFromCerts(t *testing.T) {
	id := newTestIdentity(t)
	got, err := PeerAddressFromCerts(id.cert.Certificate, time.Now())
	if err != nil || got != id.Address {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := PeerAddressFromCerts(nil, time.Now()); err == nil {
		t.Fatal("no certificate accepted")
	}
	other, _ := NewIdentity(newTestIdentity(t).Key, time.Now())
	if _, err := PeerAddressFromCerts([][]byte{id.cert.Certificate[0], other.cert.Certificate[0]}, time.Now()); err == nil {
		t.Fatal("two certificates accepted")
	}
	if err := verifyExpected(other.Address, time.Now)(id.cert.Certificate, nil); err == nil {
		t.Fatal("wrong identity accepted")
	}
}
