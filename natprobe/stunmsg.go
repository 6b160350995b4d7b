package natprobe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/pion/stun"
)

// RequestSize is the size our client pads every Binding request to. It must
// be at least the largest full reply (maxFullReply) so that the server's
// no-amplification rule never truncates answers to our own requests.
const RequestSize = 128

// maxFullReply is the largest reply the server builds: header (20) + four
// IPv6 address attributes (4*24) + FINGERPRINT (8).
const maxFullReply = 20 + 4*24 + 8

// CHANGE-REQUEST flags (RFC 5780 §7.2).
const (
	flagChangeIP   uint32 = 0x04
	flagChangePort uint32 = 0x02
)

const (
	stunHeaderSize = 20
	magicCookie    = 0x2112A442
)

var (
	errNotSTUN        = errors.New("not a STUN message")
	errNotBindingResp = errors.New("not a Binding response")
	errErrorResponse  = errors.New("STUN error response")
	errBadAddrAttr    = errors.New("malformed address attribute")
	errNoMappedAddr   = errors.New("response has no (XOR-)MAPPED-ADDRESS")
)

// changeRequest is the CHANGE-REQUEST attribute as a pion/stun Setter.
type changeRequest uint32

func (c changeRequest) AddTo(m *stun.Message) error {
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], uint32(c))
	m.Add(stun.AttrChangeRequest, v[:])
	return nil
}

// padTo is a Setter that adds a PADDING attribute so that the final message
// (including a FINGERPRINT added afterwards) is total bytes long.
type padTo int

func (p padTo) AddTo(m *stun.Message) error {
	// current length + PADDING header + value + FINGERPRINT (8)
	n := int(p) - len(m.Raw) - 4 - 8
	if n < 0 {
		return nil
	}
	n &^= 3
	m.Add(stun.AttrPadding, make([]byte, n))
	return nil
}

// buildRequest encodes a Binding request with the given transaction id and
// CHANGE-REQUEST flags, padded to RequestSize bytes.
func buildRequest(txid [stun.TransactionIDSize]byte, change uint32) ([]byte, error) {
	setters := []stun.Setter{stun.BindingRequest, stun.NewTransactionIDSetter(txid)}
	if change != 0 {
		setters = append(setters, changeRequest(change))
	}
	setters = append(setters, padTo(RequestSize), stun.Fingerprint)
	m, err := stun.Build(setters...)
	if err != nil {
		return nil, fmt.Errorf("build binding request: %w", err)
	}
	return m.Raw, nil
}

// headerTxID does the cheap checks a demultiplexer hook needs before paying
// for a full decode: STUN framing and magic cookie. It returns the
// transaction id.
func headerTxID(pkt []byte) ([stun.TransactionIDSize]byte, bool) {
	var id [stun.TransactionIDSize]byte
	if len(pkt) < stunHeaderSize || pkt[0]&0xC0 != 0 ||
		binary.BigEndian.Uint32(pkt[4:8]) != magicCookie {
		return id, false
	}
	copy(id[:], pkt[8:20])
	return id, true
}

// decodeStrict decodes pkt with pion/stun after checking the framing rules
// pion does not enforce: length multiple of 4, no trailing bytes, and a valid
// FINGERPRINT when one is present.
func decodeStrict(pkt []byte, m *stun.Message) error {
	if _, ok := headerTxID(pkt); !ok {
		return errNotSTUN
	}
	size := int(binary.BigEndian.Uint16(pkt[2:4]))
	if size%4 != 0 || len(pkt) != stunHeaderSize+size {
		return fmt.Errorf("%w: length field %d does not match %d bytes", errNotSTUN, size, len(pkt))
	}
	if err := stun.Decode(pkt, m); err != nil {
		return fmt.Errorf("decode STUN: %w", err)
	}
	if m.Contains(stun.AttrFingerprint) {
		if err := stun.Fingerprint.Check(m); err != nil {
			return fmt.Errorf("check FINGERPRINT: %w", err)
		}
	}
	return nil
}

// checkAddrAttr validates an (XOR-)MAPPED-ADDRESS style value before pion
// parses it (pion v0.6 indexes the value before checking its length).
func checkAddrAttr(v []byte) error {
	if len(v) < 4 {
		return errBadAddrAttr
	}
	switch fam := binary.BigEndian.Uint16(v[0:2]); {
	case fam == 1 && len(v) == 8, fam == 2 && len(v) == 20:
		return nil
	default:
		return fmt.Errorf("%w: family %d with %d bytes", errBadAddrAttr, fam, len(v))
	}
}

// bindingResponse is what the classifier needs from a Binding success response.
type bindingResponse struct {
	Mapped netip.AddrPort // XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS
	Other  netip.AddrPort // OTHER-ADDRESS; invalid if absent
	Origin netip.AddrPort // RESPONSE-ORIGIN; invalid if absent
}

// getAddr reads an address attribute of type t; ok is false when absent.
func getAddr(m *stun.Message, t stun.AttrType, xor bool) (netip.AddrPort, bool, error) {
	v, err := m.Get(t)
	if err != nil {
		return netip.AddrPort{}, false, nil //nolint:nilerr // absent attribute
	}
	if err := checkAddrAttr(v); err != nil {
		return netip.AddrPort{}, true, fmt.Errorf("attribute %s: %w", t, err)
	}
	var ip net.IP
	var port int
	if xor {
		var a stun.XORMappedAddress
		if err := a.GetFromAs(m, t); err != nil {
			return netip.AddrPort{}, true, fmt.Errorf("attribute %s: %w", t, err)
		}
		ip, port = a.IP, a.Port
	} else {
		var a stun.MappedAddress
		if err := a.GetFromAs(m, t); err != nil {
			return netip.AddrPort{}, true, fmt.Errorf("attribute %s: %w", t, err)
		}
		ip, port = a.IP, a.Port
	}
	ap := udpAddrPort(ip, port)
	if !ap.IsValid() {
		return netip.AddrPort{}, true, fmt.Errorf("attribute %s: %w", t, errBadAddrAttr)
	}
	return ap, true, nil
}

// parseResponse decodes a Binding success response. It never panics on
// arbitrary input (see FuzzClientResponse).
func parseResponse(pkt []byte) ([stun.TransactionIDSize]byte, bindingResponse, error) {
	var r bindingResponse
	m := new(stun.Message)
	if err := decodeStrict(pkt, m); err != nil {
		return [stun.TransactionIDSize]byte{}, r, err
	}
	id := m.TransactionID
	if m.Type.Method != stun.MethodBinding {
		return id, r, errNotBindingResp
	}
	switch m.Type.Class {
	case stun.ClassSuccessResponse:
	case stun.ClassErrorResponse:
		return id, r, errErrorResponse
	default:
		return id, r, errNotBindingResp
	}
	mapped, ok, err := getAddr(m, stun.AttrXORMappedAddress, true)
	if err != nil {
		return id, r, err
	}
	if !ok {
		if mapped, ok, err = getAddr(m, stun.AttrMappedAddress, false); err != nil {
			return id, r, err
		}
		if !ok {
			return id, r, errNoMappedAddr
		}
	}
	r.Mapped = mapped
	if r.Other, _, err = getAddr(m, stun.AttrOtherAddress, false); err != nil {
		return id, r, err
	}
	if r.Origin, _, err = getAddr(m, stun.AttrResponseOrigin, false); err != nil {
		return id, r, err
	}
	return id, r, nil
}

// udpAddrPort converts ip/port to a normalised (IPv4-unmapped) AddrPort; the
// result is invalid for bad input.
func udpAddrPort(ip net.IP, port int) netip.AddrPort {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port < 0 || port > 0xFFFF {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}

// addrPortOf extracts a normalised AddrPort from a net.Addr of any kind.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	switch v := a.(type) {
	case nil:
		return netip.AddrPort{}, false
	case *net.UDPAddr:
		if v == nil {
			return netip.AddrPort{}, false
		}
		ap := udpAddrPort(v.IP, v.Port)
		return ap, ap.IsValid()
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	}
}

// udpAddr converts back to *net.UDPAddr (IPv4 as 4-byte slices).
func udpAddr(ap netip.AddrPort) *net.UDPAddr {
	if !ap.IsValid() {
		return nil
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
}
