package host

import (
	"crypto/sha256"
	"net"
	"sort"
	"strings"
)

// netFingerprint summarises the local interfaces and their addresses; a
// change means the node may sit behind a different NAT now (laptop moved,
// DHCP renewal, VPN up/down).
func (h *Host) netFingerprint() [32]byte {
	var lines []string
	if h.cfg.Net != nil {
		ifs, err := h.cfg.Net.Interfaces()
		if err == nil {
			for _, ifc := range ifs {
				addrs, _ := ifc.Addrs()
				for _, a := range addrs {
					lines = append(lines, ifc.Name+" "+a.String())
				}
			}
		}
	} else if ifs, err := net.Interfaces(); err == nil {
		for _, ifc := range ifs {
			if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			addrs, _ := ifc.Addrs()
			for _, a := range addrs {
				lines = append(lines, ifc.Name+" "+a.String())
			}
		}
	}
	sort.Strings(lines)
	return sha256.Sum256([]byte(strings.Join(lines, "\n")))
}
