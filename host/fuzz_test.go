package host

import (
	"testing"
	"time"
)

func FuzzParseAddressText(f *testing.F) {
	f.Add("A056475aa75463474C0285df5Dbf2bcAB73Da65135")
	f.Add("a056475aa75463474c0285df5dbf2bcab73da65135")
	f.Add("A056475AA75463474C0285DF5DBF2BCAB73DA65135")
	f.Add("")
	f.Add("zz")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddressText(s)
		if err != nil {
			return
		}
		// Whatever parses must round-trip through the canonical form.
		b, err := ParseAddressText(AddressText(a))
		if err != nil || b != a {
			t.Fatalf("round trip of %q failed: %v", s, err)
		}
	})
}

func FuzzPeerAddressFromCerts(f *testing.F) {
	id := newTestIdentity(f)
	f.Add(id.cert.Certificate[0])
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		addr, err := PeerAddressFromCerts([][]byte{der})
		if err == nil && addr.IsZero() {
			t.Fatal("accepted certificate yielded a zero address")
		}
	})
}

func TestPeerAddressFromCerts(t *testing.T) {
	id := newTestIdentity(t)
	got, err := PeerAddressFromCerts(id.cert.Certificate)
	if err != nil || got != id.Address {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := PeerAddressFromCerts(nil); err == nil {
		t.Fatal("no certificate accepted")
	}
	other, _ := NewIdentity(newTestIdentity(t).Key, time.Now())
	if _, err := PeerAddressFromCerts([][]byte{id.cert.Certificate[0], other.cert.Certificate[0]}); err == nil {
		t.Fatal("two certificates accepted")
	}
	if err := verifyExpected(other.Address)(id.cert.Certificate, nil); err == nil {
		t.Fatal("wrong identity accepted")
	}
}
