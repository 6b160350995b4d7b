package natlab

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/a2alnode/a2al/natprobe"
)

// TestClassifyRealNAT runs the product's NAT classifier (natprobe.Classify)
// behind every lab router against the real signal-hub STUN server (two IPs,
// two ports) and checks it names the router type.
func TestClassifyRealNAT(t *testing.T) {
	l := New(t)
	hub := l.StartHub(t)
	types := append([]NATType{Public}, AllNATTypes...)
	hosts := map[NATType]*Host{}
	for i, typ := range types {
		hosts[typ] = l.AddNATHost(fmt.Sprintf("c%d", i), typ)
	}
	var (
		mu   sync.Mutex
		rows []string
	)
	t.Cleanup(func() {
		t.Logf("natprobe.Classify behind real kernel NATs:\n%-20s %-20s %-20s %s\n%s",
			"router", "want", "got", "detail", strings.Join(rows, "\n"))
	})
	for _, typ := range types {
		typ := typ
		t.Run(string(typ), func(t *testing.T) {
			t.Parallel()
			h := hosts[typ]
			conn, err := h.ListenUDP(nil, 4121)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := natprobe.Classify(ctx, natprobe.ClassifyConfig{
				Conn:     conn,
				Servers:  []string{hub.STUN()},
				Timeout:  2 * time.Second,
				LocalIPs: []net.IP{h.IP},
			})
			want := typ.ClassifiesAs()
			got := string(res.Type)
			mu.Lock()
			line := fmt.Sprintf("%-20s %-20s %-20s %s", typ, want, got, res)
			rows = append(rows, line)
			progress("classify " + line)
			mu.Unlock()
			if err != nil && typ != UDPBlocked {
				t.Fatalf("Classify behind %s: %v", typ, err)
			}
			if got != want {
				t.Errorf("Classify behind %s = %s, want %s; trace:\n%s", typ, res, want, strings.Join(res.Trace, "\n"))
			}
			if typ == PortShifted && res.MappedPort != 4121+ShiftOffset {
				t.Errorf("mapped port %d, want %d", res.MappedPort, 4121+ShiftOffset)
			}
		})
	}
}
