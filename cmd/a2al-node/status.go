package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/a2alnode/a2al/crypto"
	"github.com/a2alnode/a2al/host"
)

// IDView is "id --json".
type IDView struct {
	Address string `json:"address"`
	NodeID  string `json:"node_id"` // 64 lowercase hex digits
	KeyFile string `json:"key_file"`
	Created bool   `json:"created"` // the key was created by this call
}

var idCmd = &command{
	name:  "id",
	short: "print this node's address (creates the key on first use)",
	long: `Print the node's address and DHT node ID, read from the key in --data-dir
(created there if missing, mode 0600). The address is what others resolve,
ping and connect to.`,
	example: `  a2al-node id --json`,
	flags: func(fs *flagSet) func(context.Context, stdio, []string) error {
		var o identityFlags
		var asJSON bool
		o.register(fs)
		fs.Bool(&asJSON, "json", false, "print as JSON")
		fs.NoEnv("json")
		return func(_ context.Context, std stdio, args []string) error {
			if len(args) > 0 {
				return usagef("id takes no arguments, got %q", args)
			}
			if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
				return fmt.Errorf("data dir: %w", err)
			}
			key, created, err := crypto.LoadOrCreateKeyFile(o.key())
			if err != nil {
				return fmt.Errorf("key: %w", err)
			}
			id, err := host.NewIdentity(key, time.Now())
			if err != nil {
				return err
			}
			v := IDView{Address: id.Address.String(), NodeID: id.NodeID.String(), KeyFile: o.key(), Created: created}
			if asJSON {
				return writeJSONTo(std.out, v)
			}
			if created {
				fmt.Fprintf(std.err, "created %s\n", o.key())
			}
			fmt.Fprintf(std.out, "address  %s\nnode id  %s\nkey file %s\n", v.Address, v.NodeID, v.KeyFile)
			return nil
		}
	},
}

var statusCmd = &command{
	name:  "status",
	short: "show what a running node sees (asks its control API)",
	long: `Ask the node running on this machine (its control API on --debug-addr) for
its status: address, NAT type, public mapping, peers, hubs and why one is
down, published record. --json prints GET /api/status as is (format in
docs/cli.md). Exits 1 when no node answers.`,
	example: `  a2al-node status
  a2al-node status --json | jq .nat.type`,
	flags: func(fs *flagSet) func(context.Context, stdio, []string) error {
		var addr string
		var asJSON bool
		var timeout time.Duration
		fs.Listen(&addr, "debug-addr", DefaultDebugAddr, false, "control API address of the running node")
		fs.Duration(&timeout, "timeout", 5*time.Second, time.Millisecond, "time limit for the request")
		fs.Bool(&asJSON, "json", false, "print the status as JSON")
		fs.NoEnv("json")
		return func(ctx context.Context, std stdio, args []string) error {
			if len(args) > 0 {
				return usagef("status takes no arguments, got %q", args)
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			body, err := getStatus(ctx, addr)
			if err != nil {
				return err
			}
			if asJSON {
				_, err := std.out.Write(body)
				return err
			}
			var v StatusView
			if err := json.Unmarshal(body, &v); err != nil {
				return fmt.Errorf("status from %s: %w", addr, err)
			}
			printStatus(std.out, v)
			return nil
		}
	},
}

func getStatus(ctx context.Context, addr string) ([]byte, error) {
	if strings.HasPrefix(addr, ":") {
		addr = "127.0.0.1" + addr
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/api/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no answer from a node's control API at %s: %w", addr, ctx.Err())
		}
		return nil, fmt.Errorf("no node's control API at %s (is \"a2al-node run\" running, with this --debug-addr?): %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("status from %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status from %s: HTTP %d: %s", addr, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func printStatus(w io.Writer, v StatusView) {
	fmt.Fprintf(w, "address    %s\n", v.Address)
	fmt.Fprintf(w, "listening  udp %s, up %v\n", v.Local, time.Duration(v.UptimeS)*time.Second)
	nat := v.NAT.Type
	if v.NAT.Mapped != "" {
		nat += ", public " + v.NAT.Mapped
	}
	fmt.Fprintf(w, "nat        %s\n", nat)
	fmt.Fprintf(w, "peers      %d live, %d in the routing table, network ~%d nodes\n", v.LivePeers, v.RoutingPeers, v.NetworkSize)
	fmt.Fprintf(w, "hubs       %d/%d registered\n", v.Hubs.Registered, v.Hubs.Configured)
	for _, h := range v.Hubs.List {
		state := "registered"
		if !h.Registered {
			state = "down"
			if h.Error != "" {
				state += ": " + h.Error
			}
		}
		fmt.Fprintf(w, "  %s  %s\n", h.URL, state)
	}
	fmt.Fprintf(w, "pool       %d punched connections\n", v.Pool.Size)
	if v.Published.Seq == 0 {
		fmt.Fprintf(w, "published  not yet\n")
	} else {
		fmt.Fprintf(w, "published  seq %d at %s\n", v.Published.Seq, v.Published.At.UTC().Format(time.RFC3339))
	}
}
