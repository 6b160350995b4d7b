package main

import (
	"encoding/binary"
	"fmt"
	"net"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Minimal rtnetlink: the scratch images have no ip(8), so the router and the
// node containers set routes and extra addresses through netlink directly.

func rtRequest(typ uint16, flags netlink.HeaderFlags, body []byte, attrs []netlink.Attribute) error {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return fmt.Errorf("dial rtnetlink: %w", err)
	}
	defer c.Close()
	ab, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return fmt.Errorf("encode attributes: %w", err)
	}
	msg := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   append(body, ab...),
	}
	if _, err := c.Execute(msg); err != nil {
		return err
	}
	return nil
}

// replaceDefaultRoute points the IPv4 default route at gw.
func replaceDefaultRoute(gw net.IP) error {
	gw4 := gw.To4()
	if gw4 == nil {
		return fmt.Errorf("gateway %v is not IPv4", gw)
	}
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags(u32)
	body := []byte{unix.AF_INET, 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, 0, 0, 0, 0}
	err := rtRequest(unix.RTM_NEWROUTE, netlink.Create|netlink.Replace, body,
		[]netlink.Attribute{{Type: unix.RTA_GATEWAY, Data: gw4}})
	if err != nil {
		return fmt.Errorf("replace default route via %v: %w", gw, err)
	}
	return nil
}

// addAddress adds cidr (e.g. 203.0.113.3/24) to the interface whose
// existing address is in the same subnet.
func addAddress(cidr string) error {
	ip, ipnet, err := net.ParseCIDR(cidr)
	if err != nil || ip.To4() == nil {
		return fmt.Errorf("bad IPv4 address %q", cidr)
	}
	ifc, _, err := interfaceIn(ipnet)
	if err != nil {
		return err
	}
	ones, _ := ipnet.Mask.Size()
	body := make([]byte, 8) // struct ifaddrmsg: family, prefixlen, flags, scope, index(u32)
	body[0], body[1], body[3] = unix.AF_INET, byte(ones), unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(body[4:], uint32(ifc.Index))
	err = rtRequest(unix.RTM_NEWADDR, netlink.Create|netlink.Replace, body, []netlink.Attribute{
		{Type: unix.IFA_LOCAL, Data: ip.To4()},
		{Type: unix.IFA_ADDRESS, Data: ip.To4()},
	})
	if err != nil {
		return fmt.Errorf("add %s to %s: %w", cidr, ifc.Name, err)
	}
	return nil
}

// interfaceIn finds the interface with an IPv4 address inside subnet.
func interfaceIn(subnet *net.IPNet) (*net.Interface, net.IP, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, nil, fmt.Errorf("list interfaces: %w", err)
	}
	for i := range ifs {
		addrs, err := ifs[i].Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && subnet.Contains(n.IP) {
				return &ifs[i], n.IP.To4(), nil
			}
		}
	}
	return nil, nil, fmt.Errorf("no interface has an address in %v", subnet)
}
