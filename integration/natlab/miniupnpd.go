package natlab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// UPnPWANNet is the outside /24 of routers that run miniupnpd. miniupnpd
// refuses to map behind an external address in a reserved range, TEST-NET
// included, so these routers take their outside address from a block it
// accepts. Nothing leaves the lab's namespaces (they have no route out);
// lab hosts that must reach these routers get an on-link route to the block
// (ReachUPnPNet).
const UPnPWANNet = "11.0.0"

// MiniUPnPdPath is the Debian miniupnpd-nftables binary
// (.ci/install-lab-deps.sh installs it with service starts denied).
const MiniUPnPdPath = "/usr/sbin/miniupnpd"

// UPnPOptions says which port-mapping protocols a lab router answers.
// miniupnpd serves NAT-PMP and PCP on one port with one switch, so the lab
// drops requests of the disabled one before miniupnpd sees them.
type UPnPOptions struct {
	UPnP, NATPMP, PCP bool
	// MaxLifetime caps PCP leases in seconds (0: miniupnpd's default).
	MaxLifetime int
}

// RequireMiniUPnPd skips the test (fails it under CI=true) without miniupnpd.
func RequireMiniUPnPd(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(MiniUPnPdPath); err != nil {
		skipOrFail(t, "natlab: miniupnpd not installed (run .ci/install-lab-deps.sh): "+err.Error())
	}
	if _, err := exec.LookPath("nft"); err != nil {
		skipOrFail(t, "natlab: nft not installed: "+err.Error())
	}
}

// AddUPnPRouter builds a NAT router of type typ whose outside address is in
// UPnPWANNet and which runs miniupnpd with a config the lab writes.
func (l *Lab) AddUPnPRouter(t testing.TB, name string, typ NATType, o UPnPOptions) *Router {
	t.Helper()
	RequireMiniUPnPd(t)
	return l.AddRouter(name, typ, RouterOptions{Program: func(r *Router) error {
		octet := strings.TrimPrefix(r.lanNet, "10.")
		octet = strings.TrimSuffix(octet, ".0")
		r.WANIP = mustIP(UPnPWANNet + "." + octet)
		if err := ipBatch(r.NS, fmt.Sprintf("addr add %s/32 dev wan0", r.WANIP)); err != nil {
			return err
		}
		rules, err := ruleset(typ, r.WANIP, 0)
		if err != nil {
			return err
		}
		if _, err := r.NS.RunStdin(rules+upnpRuleset(o), "nft", "-f", "-"); err != nil {
			return fmt.Errorf("load rules: %w", err)
		}
		conf := filepath.Join(l.logDir, r.Name+"-miniupnpd.conf")
		if err := os.WriteFile(conf, []byte(miniupnpdConf(r, o)), 0o644); err != nil {
			return err
		}
		// Its own pid file: the default one would stop a second lab router.
		pid := filepath.Join(l.logDir, r.Name+"-miniupnpd.pid")
		_, err = (&Host{Lab: l, Name: r.Name, NS: r.NS}).Start("miniupnpd", MiniUPnPdPath, "-d", "-f", conf, "-P", pid)
		return err
	}})
}

// upnpRuleset is the nftables structure miniupnpd fills (its table and chain
// names are set in miniupnpdConf). Its DNATs run just before the lab's own
// NAT chains, and the lab's forward filter already admits DNATed flows ("ct
// status dnat"), so a mapping works in front of any NAT type.
func upnpRuleset(o UPnPOptions) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("table inet a2lupnp {")
	p("  chain forward { type filter hook forward priority filter - 5; policy accept; jump miniupnpd; }")
	p("  chain miniupnpd { }")
	p("  chain prerouting { type nat hook prerouting priority dstnat - 5; policy accept; jump prerouting_miniupnpd; }")
	p("  chain postrouting { type nat hook postrouting priority srcnat - 5; policy accept; jump postrouting_miniupnpd; }")
	p("  chain prerouting_miniupnpd { }")
	p("  chain postrouting_miniupnpd { }")
	// NAT-PMP requests start with version 0, PCP requests with version 2.
	p("  chain pmp_filter {")
	p("    type filter hook input priority filter - 5; policy accept;")
	if !o.NATPMP {
		p("    iifname \"lan0\" udp dport 5351 @th,64,8 0 drop")
	}
	if !o.PCP {
		p("    iifname \"lan0\" udp dport 5351 @th,64,8 2 drop")
	}
	p("  }")
	p("}")
	return b.String()
}

func miniupnpdConf(r *Router, o UPnPOptions) string {
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("ext_ifname=wan0")
	p("ext_ip=%s", r.WANIP)
	p("listening_ip=lan0")
	p("http_port=5000")
	p("enable_upnp=%s", yes(o.UPnP))
	p("enable_natpmp=%s", yes(o.NATPMP || o.PCP))
	p("secure_mode=yes")
	p("system_uptime=no")
	p("uuid=3b1d4c2a-0000-4000-8000-0000000000%02x", r.LANIP[1])
	p("upnp_table_name=a2lupnp")
	p("upnp_nat_table_name=a2lupnp")
	p("upnp_forward_chain=miniupnpd")
	p("upnp_nat_chain=prerouting_miniupnpd")
	p("upnp_nat_postrouting_chain=postrouting_miniupnpd")
	if o.MaxLifetime > 0 {
		p("min_lifetime=%d", max(1, o.MaxLifetime/2))
		p("max_lifetime=%d", o.MaxLifetime)
	}
	p("allow 1024-65535 %s.0/24 1024-65535", r.lanNet)
	p("deny 0-65535 0.0.0.0/0 0-65535")
	return b.String()
}

// ReachUPnPNet gives namespaces on the WAN an on-link route to UPnPWANNet:
// hosts (device eth0) and routers (device wan0).
func (l *Lab) ReachUPnPNet(hosts []*Host, routers []*Router) error {
	for _, h := range hosts {
		if err := ipBatch(h.NS, fmt.Sprintf("route add %s.0/24 dev eth0", UPnPWANNet)); err != nil {
			return err
		}
	}
	for _, r := range routers {
		if err := ipBatch(r.NS, fmt.Sprintf("route add %s.0/24 dev wan0", UPnPWANNet)); err != nil {
			return err
		}
	}
	return nil
}

// UPnPRedirects lists the DNAT rules miniupnpd holds in the router (empty
// when no mapping is in force).
func (r *Router) UPnPRedirects() ([]string, error) {
	out, err := r.NS.Run("nft", "list", "chain", "inet", "a2lupnp", "prerouting_miniupnpd")
	if err != nil {
		return nil, fmt.Errorf("natlab: list miniupnpd rules in %s: %w", r.NS.Name, err)
	}
	var rules []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "dnat") {
			rules = append(rules, strings.TrimSpace(l))
		}
	}
	return rules, nil
}
