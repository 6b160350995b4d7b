package a2al

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

type identityVectors struct {
	Ed25519 []struct {
		Name        string `json:"name"`
		AddressHex  string `json:"address_hex"`
		AddressText string `json:"address_text"`
		NodeIDHex   string `json:"node_id_hex"`
	} `json:"ed25519_identities"`
	Secp256k1 []struct {
		Name        string `json:"name"`
		AddressHex  string `json:"address_hex"`
		AddressText string `json:"address_text"`
		P2PKH       string `json:"address_text_p2pkh_base58check"`
		NodeIDHex   string `json:"node_id_hex"`
	} `json:"secp256k1_identities"`
	AddressParse []struct {
		Name          string `json:"name"`
		Input         string `json:"input"`
		OK            bool   `json:"ok"`
		AddressHex    string `json:"address_hex"`
		CanonicalText string `json:"canonical_text"`
	} `json:"address_parse"`
}

func loadIdentityVectors(t *testing.T) identityVectors {
	t.Helper()
	raw, err := os.ReadFile("testdata/vectors/identity.json")
	if err != nil {
		t.Fatal(err)
	}
	var v identityVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Ed25519) == 0 || len(v.Secp256k1) == 0 || len(v.AddressParse) == 0 {
		t.Fatal("identity vectors incomplete")
	}
	return v
}

func addrFromHex(t *testing.T, s string) Address {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != AddressLen {
		t.Fatalf("bad vector hex %q", s)
	}
	var a Address
	copy(a[:], b)
	return a
}

func TestAddressTextVectors(t *testing.T) {
	v := loadIdentityVectors(t)
	check := func(name, addrHex, text, nodeHex string) {
		a := addrFromHex(t, addrHex)
		if got := a.String(); got != text {
			t.Errorf("%s: String = %s, want %s", name, got, text)
		}
		p, err := ParseAddress(text)
		if err != nil || p != a {
			t.Errorf("%s: ParseAddress(%s) = %x, %v", name, text, p, err)
		}
		if got := a.NodeID().String(); got != nodeHex {
			t.Errorf("%s: NodeID %s, want %s", name, got, nodeHex)
		}
		id, err := ParseNodeID(nodeHex)
		if err != nil || id != a.NodeID() {
			t.Errorf("%s: ParseNodeID: %v", name, err)
		}
	}
	for _, id := range v.Ed25519 {
		check(id.Name, id.AddressHex, id.AddressText, id.NodeIDHex)
	}
	for _, id := range v.Secp256k1 {
		check(id.Name, id.AddressHex, id.AddressText, id.NodeIDHex)
		if id.P2PKH != "" {
			p, err := ParseAddress(id.P2PKH)
			if err != nil || p != addrFromHex(t, id.AddressHex) {
				t.Errorf("%s: P2PKH %s = %x, %v", id.Name, id.P2PKH, p, err)
			}
		}
	}
}

func TestAddressParseVectors(t *testing.T) {
	v := loadIdentityVectors(t)
	for _, c := range v.AddressParse {
		a, err := ParseAddress(c.Input)
		if !c.OK {
			if err == nil {
				t.Errorf("%s: %q parsed as %x, want error", c.Name, c.Input, a)
			} else if !errors.Is(err, ErrInvalidAddress) {
				t.Errorf("%s: error %v does not wrap ErrInvalidAddress", c.Name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %q: %v", c.Name, c.Input, err)
			continue
		}
		if hex.EncodeToString(a[:]) != c.AddressHex || a.String() != c.CanonicalText {
			t.Errorf("%s: got %x %s, want %s %s", c.Name, a, a, c.AddressHex, c.CanonicalText)
		}
	}
}

func TestParseAddressErrors(t *testing.T) {
	alice := "A056475aa75463474C0285df5Dbf2bcAB73Da65135"
	cases := map[string]string{
		"non-hex native":   "A056475aa75463474C0285df5Dbf2bcAB73Da6513g",
		"eth non-hex":      "0x2c7536e3605d9c16a7a3d7b1898e529396a65c2g",
		"eth short":        "0x2c7536e3605d9c16a7a3d7b1898e529396a65c2",
		"bech32 mixed":     "bc1Qr78y59zz80dm3cwuk388r097pupwdguauuex7k4",
		"bech32 bad sum":   "bc1qr78y59zz80dm3cwuk388r097pupwdguauuex7k5",
		"bech32 bad hrp":   "tb1qr78y59zz80dm3cwuk388r097pupwdguauuex7k4",
		"bech32 bad char":  "bc1qr78y59zz80dm3cwuk388r097pupwdguauuex7kb",
		"bech32 too long":  "bc1" + strings.Repeat("q", 100),
		"base58 bad sum":   "1Q1pE5vPGEEMqRcVRMbtBK842Y6Pzo6nK8",
		"base58 bad char":  "1Q1pE5vPGEEMqRcVRMbtBK842Y6Pzo6nK0",
		"base58 p2sh-like": "3Q1pE5vPGEEMqRcVRMbtBK842Y6Pzo6nK9",
		"empty":            "",
		"version 0x9f":     "9f" + strings.ToLower(alice[2:]),
	}
	for name, in := range cases {
		if a, err := ParseAddress(in); err == nil || !errors.Is(err, ErrInvalidAddress) {
			t.Errorf("%s: %q -> %x, %v", name, in, a, err)
		}
	}
	for _, bad := range []string{"", "zz", strings.Repeat("g", 64), strings.Repeat("a", 63)} {
		if _, err := ParseNodeID(bad); !errors.Is(err, ErrInvalidNodeID) {
			t.Errorf("ParseNodeID(%q): %v", bad, err)
		}
	}
}

func TestAddressTextMarshal(t *testing.T) {
	a, _ := ParseAddress("0x2c7536E3605D9C16a7a3D7b1898e529396a65c23")
	b, err := json.Marshal(struct{ A Address }{a})
	if err != nil || string(b) != `{"A":"0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"}` {
		t.Fatalf("marshal %s %v", b, err)
	}
	var out struct{ A Address }
	if err := json.Unmarshal(b, &out); err != nil || out.A != a {
		t.Fatalf("unmarshal %x %v", out.A, err)
	}
	if err := json.Unmarshal([]byte(`{"A":"nope"}`), &out); !errors.Is(err, ErrInvalidAddress) {
		t.Fatalf("bad text: %v", err)
	}
	id := a.NodeID()
	var id2 NodeID
	txt, _ := id.MarshalText()
	if err := id2.UnmarshalText(txt); err != nil || id2 != id {
		t.Fatalf("NodeID text round trip: %v", err)
	}
}

// FuzzParseAddress checks that parsing never panics, and that every address
// that parses prints to a text that parses back to the same address.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"A056475aa75463474C0285df5Dbf2bcAB73Da65135",
		"0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
		"bc1qr78y59zz80dm3cwuk388r097pupwdguauuex7k4",
		"pr1qr78y59zz80dm3cwuk388r097pupwdguaucpaw3z",
		"1Q1pE5vPGEEMqRcVRMbtBK842Y6Pzo6nK9",
		"bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
		"hello",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			return
		}
		text := a.String()
		b, err := ParseAddress(text)
		if err != nil || b != a {
			t.Fatalf("%q -> %x -> %q -> %x, %v", s, a, text, b, err)
		}
	})
}

// FuzzAddressRoundTrip checks parse(String(a)) == a for every address whose
// version has a text form (0xA0-0xAF).
func FuzzAddressRoundTrip(f *testing.F) {
	f.Add([]byte{0xa0, 1, 2, 3})
	f.Add([]byte{0xa2, 0xff})
	f.Add([]byte{0xa3})
	f.Add([]byte{0xaf, 0xaa})
	f.Fuzz(func(t *testing.T, b []byte) {
		var a Address
		copy(a[:], b)
		if a[0] < 0xa0 || a[0] > 0xaf {
			a[0] = 0xa0 | a[0]&0x0f
		}
		text := a.String()
		p, err := ParseAddress(text)
		if err != nil || p != a {
			t.Fatalf("%x -> %q -> %x, %v", a, text, p, err)
		}
		if low := strings.ToLower(text); a[0] != VersionParalism {
			if p2, err := ParseAddress(low); err != nil || p2 != a {
				t.Fatalf("lowercase %q: %x %v", low, p2, err)
			}
		}
	})
}

// TestParseAddressMistypeHasNoHint: a mistyped checksummed address is
// refused without offering the (valid-looking) checksummed form of the typo.
func TestParseAddressMistypeHasNoHint(t *testing.T) {
	var a Address
	a[0] = 0xA0
	for i := 1; i < len(a); i++ {
		a[i] = byte(i * 37)
	}
	good := a.String()
	for i := 2; i < len(good); i++ {
		c := good[i]
		var repl byte
		switch {
		case c >= '0' && c <= '8':
			repl = c + 1
		case c == '9':
			repl = '0'
		default:
			continue
		}
		typo := good[:i] + string(repl) + good[i+1:]
		parsed, err := ParseAddress(typo)
		if err == nil {
			if parsed == a {
				t.Fatalf("typo %s parsed as the original", typo)
			}
			continue // the typo happens to be a valid checksum (rare); nothing to hint
		}
		fixed, _ := ParseAddress(strings.ToLower(typo))
		if strings.Contains(err.Error(), fixed.String()) {
			t.Fatalf("error for %s suggests %s: %v", typo, fixed.String(), err)
		}
		return
	}
	t.Fatal("no digit to mistype")
}
