// Package nftnat programs NAT router behaviours (full cone, address- and
// port-restricted cone, symmetric, port-shifted, UDP blocked) into the
// kernel through nftables netlink (github.com/google/nftables), with no nft
// binary needed. It is the rule engine of the compose lab's router
// container and mirrors the text rulesets of integration/natlab, whose
// behaviour probe also checks this package.
package nftnat

import (
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Router behaviours accepted by Config.Type.
const (
	FullCone          = "full-cone"
	AddressRestricted = "address-restricted"
	PortRestricted    = "port-restricted"
	Symmetric         = "symmetric"
	PortShifted       = "port-shifted"
	UDPBlocked        = "udp-blocked"
)

// Types lists the accepted Config.Type values.
var Types = []string{FullCone, AddressRestricted, PortRestricted, Symmetric, PortShifted, UDPBlocked}

// TableName is the nftables table the router owns (replaced on Apply).
const TableName = "natrouter"

// Config describes one router.
type Config struct {
	Type           string
	WANIf          string        // outside interface
	WANIP          net.IP        // outside IPv4 address (SNAT target)
	MappingTimeout time.Duration // cone mapping state lifetime; default 120 s
	// ShiftedPorts/ShiftOffset: for PortShifted, inner UDP port p leaves as
	// p+ShiftOffset (one-to-one, so the mapping stays endpoint-independent).
	ShiftedPorts []int
	ShiftOffset  int
}

// Netlink register numbers as nft uses them: 1 and 2 are the 16-byte
// registers, 9 and 13 the 4-byte registers following regs 1 and 2.
const (
	reg1   = 1
	reg2   = 2
	reg1b1 = 9  // second 32-bit slot of reg 1 (NFT_REG32_01)
	reg2b1 = 13 // second 32-bit slot of reg 2 (NFT_REG32_05)
)

// Apply replaces the router table with the ruleset for cfg in one netlink
// transaction.
func Apply(c *nftables.Conn, cfg Config) error {
	wan := cfg.WANIP.To4()
	if wan == nil {
		return fmt.Errorf("nftnat: WAN address %v is not IPv4", cfg.WANIP)
	}
	if cfg.WANIf == "" || len(cfg.WANIf) >= unix.IFNAMSIZ {
		return fmt.Errorf("nftnat: bad WAN interface name %q", cfg.WANIf)
	}
	known := false
	for _, t := range Types {
		known = known || t == cfg.Type
	}
	if !known {
		return fmt.Errorf("nftnat: unknown router type %q (want one of %v)", cfg.Type, Types)
	}
	if cfg.Type == PortShifted {
		for _, p := range cfg.ShiftedPorts {
			if p <= 0 || p+cfg.ShiftOffset > 65535 || p+cfg.ShiftOffset <= 0 {
				return fmt.Errorf("nftnat: shifted port %d+%d out of range", p, cfg.ShiftOffset)
			}
		}
	}
	if c == nil {
		return fmt.Errorf("nftnat: nil netlink connection")
	}
	timeout := cfg.MappingTimeout
	if timeout <= 0 {
		timeout = 120 * time.Second
	}

	// Delete an old table of ours (ignore "not found": flush first so the
	// delete is valid in the same batch).
	c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName})
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName})
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName})

	natPost := c.AddChain(&nftables.Chain{Name: "nat_post", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	switch cfg.Type {
	case Symmetric:
		rule(c, t, natPost, oif(cfg.WANIf), snat(wan, 0, true))
	case PortShifted:
		for _, p := range cfg.ShiftedPorts {
			rule(c, t, natPost, oif(cfg.WANIf), isUDP(), sport(uint16(p)), snat(wan, uint16(p+cfg.ShiftOffset), false))
		}
		rule(c, t, natPost, oif(cfg.WANIf), snat(wan, 0, false))
	default:
		rule(c, t, natPost, oif(cfg.WANIf), snat(wan, 0, false))
	}

	if cfg.Type == FullCone || cfg.Type == AddressRestricted {
		keyType := nftables.TypeInetService
		if cfg.Type == AddressRestricted {
			keyType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
		}
		cone := &nftables.Set{Table: t, Name: "cone", IsMap: true, Dynamic: true, HasTimeout: true,
			Timeout: timeout, Size: 4096, KeyType: keyType,
			DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
		if err := c.AddSet(cone, nil); err != nil {
			return fmt.Errorf("nftnat: add cone map: %w", err)
		}
		// Record mapped (post-SNAT) key -> original inner ip.port.
		rec := c.AddChain(&nftables.Chain{Name: "cone_rec", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityNATSource + 10)})
		var key []expr.Any
		if cfg.Type == AddressRestricted {
			key = []expr.Any{
				&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},    // ip daddr
				&expr.Payload{DestRegister: reg1b1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2}, // udp sport
			}
		} else {
			key = []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2}}
		}
		rule(c, t, rec, oif(cfg.WANIf), isUDP(), key,
			[]expr.Any{
				&expr.Ct{Register: reg2, Key: expr.CtKeySRC, Direction: 0},
				&expr.Ct{Register: reg2b1, Key: expr.CtKeyPROTOSRC, Direction: 0},
				&expr.Dynset{SrcRegKey: reg1, SrcRegData: reg2, SetName: cone.Name, SetID: cone.ID, Operation: unix.NFT_DYNSET_OP_UPDATE},
			})
		// Inbound: DNAT through the map (unknown keys fall through and are
		// dropped by the filter chains).
		pre := c.AddChain(&nftables.Chain{Name: "nat_pre", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
		var lookupKey []expr.Any
		if cfg.Type == AddressRestricted {
			lookupKey = []expr.Any{
				&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},    // ip saddr
				&expr.Payload{DestRegister: reg1b1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, // udp dport
			}
		} else {
			lookupKey = []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}}
		}
		rule(c, t, pre, iif(cfg.WANIf), isUDP(), lookupKey,
			[]expr.Any{
				&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: cone.Name, SetID: cone.ID},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegProtoMin: reg1b1},
			})
	}

	// Filtering: replies and cone DNATs only; unsolicited packets are
	// dropped before conntrack confirms them (no stray entries).
	fwd := c.AddChain(&nftables.Chain{Name: "filt_fwd", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	if cfg.Type == UDPBlocked {
		rule(c, t, fwd, isUDP(), verdict(expr.VerdictDrop))
	}
	rule(c, t, fwd, iif(cfg.WANIf), ctBits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))
	rule(c, t, fwd, iif(cfg.WANIf), ctBits(expr.CtKeySTATUS, 0x20 /* IPS_DST_NAT */), verdict(expr.VerdictAccept))
	rule(c, t, fwd, iif(cfg.WANIf), verdict(expr.VerdictDrop))
	in := c.AddChain(&nftables.Chain{Name: "filt_in", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	rule(c, t, in, iif(cfg.WANIf), ctBits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))
	rule(c, t, in, iif(cfg.WANIf), verdict(expr.VerdictDrop))

	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftnat: install %s ruleset: %w", cfg.Type, err)
	}
	return nil
}

func rule(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain, parts ...[]expr.Any) {
	var exprs []expr.Any
	for _, p := range parts {
		exprs = append(exprs, p...)
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
}

func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func oif(name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ifname(name)},
	}
}

func iif(name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ifname(name)},
	}
}

func isUDP() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_UDP}},
	}
}

func sport(p uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(p)},
	}
}

// snat to ip (and port if non-zero); random selects fully-random ports.
func snat(ip net.IP, port uint16, random bool) []expr.Any {
	e := []expr.Any{&expr.Immediate{Register: reg1, Data: ip.To4()}}
	n := &expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, Random: random, FullyRandom: random}
	if port != 0 {
		e = append(e, &expr.Immediate{Register: reg2, Data: binaryutil.BigEndian.PutUint16(port)})
		n.RegProtoMin = reg2
		n.Specified = true
	}
	return append(e, n)
}

// ctBits matches when any of bits is set in the conntrack key (host order).
func ctBits(key expr.CtKey, bits uint32) []expr.Any {
	mask := make([]byte, 4)
	binary.NativeEndian.PutUint32(mask, bits)
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: key},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: k}}
}
