package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/crypto"
	"github.com/a2alnode/a2al/dht"
	"github.com/a2alnode/a2al/host"
	"github.com/a2alnode/a2al/natprobe"
	"github.com/a2alnode/a2al/protocol"
)

// clientOptions are the flags of the commands that join the network for one
// operation (resolve, ping, connect).
type clientOptions struct {
	id      identityFlags
	net     netFlags
	log     logFlags
	timeout time.Duration
}

func (o *clientOptions) register(fs *flagSet) {
	o.id.register(fs)
	o.net.register(fs, "0.0.0.0:0")
	o.log.register(fs, "warn")
	fs.Duration(&o.timeout, "timeout", 30*time.Second, time.Millisecond, "overall time limit for joining and the operation")
}

// addressArg parses the one <address> argument of a client command.
func addressArg(cmd string, args []string) (a2al.Address, error) {
	if len(args) != 1 {
		return a2al.Address{}, usagef("%s wants exactly one address argument, got %d", cmd, len(args))
	}
	a, err := parseAddressArg(args[0])
	if err != nil {
		return a2al.Address{}, &usageError{err.Error()}
	}
	return a, nil
}

// parseAddressArg parses an address typed by a person: like
// a2al.ParseAddress, but an all-uppercase native or Ethereum address is
// read as its lowercase (unchecksummed) form.
func parseAddressArg(s string) (a2al.Address, error) {
	s = strings.TrimSpace(s)
	if s != "" && s == strings.ToUpper(s) && isHexText(strings.TrimPrefix(s, "0X")) {
		s = strings.ToLower(s)
	}
	return a2al.ParseAddress(s)
}

func isHexText(s string) bool {
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return s != ""
}

// clientHost starts a short-lived host for a client command: an ephemeral key
// (unless --key is given, so it never collides with a running node's
// identity), a random port, bootstrapped into the network within ctx.
func (o *clientOptions) clientHost(ctx context.Context, std stdio) (*host.Host, error) {
	var key ed25519.PrivateKey
	var err error
	if o.id.keyFile != "" {
		if key, err = crypto.LoadKeyFile(o.id.keyFile); err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
	} else if _, key, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, err
	}
	boot := o.net.bootstrap
	cache := filepath.Join(o.id.dataDir, "peers.cache")
	if len(boot) == 0 {
		boot = readPeersCache(cache)
	}
	if len(boot) == 0 {
		return nil, usagef("no bootstrap address: pass --bootstrap host[:port] (or run a node first to fill %s)", cache)
	}
	h, err := host.New(host.Config{
		Key: key, ListenAddr: o.net.listen, Bootstrap: boot, HubURLs: o.net.hubs, STUNServers: o.net.stun, TURN: o.net.turnServers(),
		Logger: o.log.logger(std.err), DisableMaintenance: true, DisableNAT: true,
	})
	if err != nil {
		return nil, err
	}
	bctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := h.Bootstrap(bctx); err != nil {
		h.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("join the network through %s: %w", strings.Join(boot, ", "), err)
	}
	return h, nil
}

func readPeersCache(p string) []string {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func resolve(ctx context.Context, h *host.Host, target a2al.Address) (*protocol.EndpointRecord, error) {
	rec, err := dht.NewQuery(h.Node()).Resolve(ctx, a2al.NodeIDFromAddress(target))
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", target.String(), err)
	}
	return rec, nil
}

// recordView is the JSON form of an endpoint record (resolve --json and
// GET /api/resolve).
func recordView(er *protocol.EndpointRecord) RecordView {
	v := RecordView{OK: true, Address: er.Address.String(), Seq: er.Seq, TTL: er.TTL, NAT: natName(er.NatType),
		Published: time.Unix(int64(er.Timestamp), 0).UTC(), Endpoints: er.Endpoints, Hubs: er.Signals}
	if len(v.Hubs) == 0 && er.Signal != "" {
		v.Hubs = []string{er.Signal}
	}
	return v
}

func printRecord(w io.Writer, v RecordView) {
	fmt.Fprintf(w, "address   %s\n", v.Address)
	fmt.Fprintf(w, "seq       %d (published %s, ttl %ds)\n", v.Seq, v.Published.Format(time.RFC3339), v.TTL)
	fmt.Fprintf(w, "nat       %s\n", v.NAT)
	for _, e := range v.Endpoints {
		fmt.Fprintf(w, "endpoint  %s\n", e)
	}
	for _, s := range v.Hubs {
		fmt.Fprintf(w, "hub       %s\n", s)
	}
}

// natName is the one NAT vocabulary (natprobe's names) for a record's type.
func natName(t uint8) string { return natprobe.TypeFromWire(t).String() }

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

var resolveCmd = &command{
	name:  "resolve",
	args:  "<address>",
	short: "look up an address's endpoint record in the DHT",
	long: `Join the network briefly with a throwaway identity and look up the signed
endpoint record of <address>: where it listens, its NAT type and its hubs.
--json prints the record as one JSON object (format in docs/cli.md).`,
	example: `  a2al-node resolve --bootstrap 192.0.2.10 a0b1c2...`,
	flags: func(fs *flagSet) func(context.Context, stdio, []string) error {
		var o clientOptions
		var asJSON bool
		o.register(fs)
		fs.Bool(&asJSON, "json", false, "print the record as JSON")
		fs.NoEnv("json")
		return func(ctx context.Context, std stdio, args []string) error {
			target, err := addressArg("resolve", args)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, o.timeout)
			defer cancel()
			h, err := o.clientHost(ctx, std)
			if err != nil {
				return err
			}
			defer h.Close()
			start := time.Now()
			er, err := resolve(ctx, h, target)
			if err != nil {
				if asJSON {
					_ = writeJSONTo(std.out, RecordView{Address: target.String(), TookMS: time.Since(start).Milliseconds(),
						Reason: dialReason(err), Error: err.Error()})
				}
				return err
			}
			v := recordView(er)
			v.TookMS = time.Since(start).Milliseconds()
			if asJSON {
				return writeJSONTo(std.out, v)
			}
			printRecord(std.out, v)
			return nil
		}
	},
}

// PingResult is one endpoint of "ping --json".
type PingResult struct {
	Endpoint string    `json:"endpoint"`
	Sent     int       `json:"sent"`
	Received int       `json:"received"`
	RTTMS    []float64 `json:"rtt_ms"`          // one per answered PING, in order
	Error    string    `json:"error,omitempty"` // last failure (skipped endpoint or no answer)
}

// PingReport is the output of "ping --json".
type PingReport struct {
	OK        bool         `json:"ok"` // some endpoint answered as the address
	Address   string       `json:"address"`
	Endpoints []PingResult `json:"endpoints"`
}

var pingCmd = &command{
	name:  "ping",
	args:  "<address>",
	short: "resolve an address and PING its endpoints over UDP",
	long: `Resolve <address>, then send DHT PINGs to each endpoint in its record and check
that the answer is signed by <address>. Exits 1 if no endpoint answered (the
node may be behind a NAT: try connect, which punches through it).`,
	example: `  a2al-node ping -c 3 --bootstrap 192.0.2.10 a0b1c2...`,
	flags: func(fs *flagSet) func(context.Context, stdio, []string) error {
		var o clientOptions
		var asJSON bool
		var count int
		o.register(fs)
		fs.Int(&count, "c", 1, 1, 1000, "PINGs per endpoint, one second apart")
		fs.Bool(&asJSON, "json", false, "print the results as JSON")
		fs.NoEnv("json", "c")
		return func(ctx context.Context, std stdio, args []string) error {
			target, err := addressArg("ping", args)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, o.timeout)
			defer cancel()
			h, err := o.clientHost(ctx, std)
			if err != nil {
				return err
			}
			defer h.Close()
			er, err := resolve(ctx, h, target)
			if err != nil {
				return err
			}
			rep := pingAll(ctx, h, er, count, func(ep string, r time.Duration, err error) {
				if asJSON {
					return
				}
				switch {
				case err != nil:
					fmt.Fprintf(std.out, "%-28s %v\n", ep, err)
				default:
					fmt.Fprintf(std.out, "%-28s pong in %v\n", ep, r.Round(10*time.Microsecond))
				}
			})
			if asJSON {
				if err := writeJSONTo(std.out, rep); err != nil {
					return err
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !rep.OK {
				return fmt.Errorf("no endpoint of %s answered over UDP (it may be behind a NAT: try connect)", target.String())
			}
			return nil
		}
	},
}

// pingAll PINGs every endpoint of er count times; each outcome goes to each.
func pingAll(ctx context.Context, h *host.Host, er *protocol.EndpointRecord, count int, each func(string, time.Duration, error)) PingReport {
	rep := PingReport{Address: er.Address.String(), Endpoints: []PingResult{}}
	res := make([]PingResult, len(er.Endpoints))
	for i, ep := range er.Endpoints {
		res[i] = PingResult{Endpoint: ep, RTTMS: []float64{}}
	}
	for round := 0; round < count && ctx.Err() == nil; round++ {
		if round > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		for i, ep := range er.Endpoints {
			if ctx.Err() != nil {
				break
			}
			ua, err := h.ResolveEndpoint(ctx, ep)
			if err != nil {
				res[i].Error = "skipped: " + err.Error()
				each(ep, 0, errors.New(res[i].Error))
				continue
			}
			res[i].Sent++
			pctx, pc := context.WithTimeout(ctx, 3*time.Second)
			start := time.Now()
			id, err := h.Node().PingIdentity(pctx, ua)
			rtt := time.Since(start)
			pc()
			switch {
			case err != nil:
				res[i].Error = fmt.Sprintf("no answer (%v)", err)
				each(ep, 0, errors.New(res[i].Error))
			case id.Address != er.Address:
				res[i].Error = "answered by a different node " + id.Address.String()
				each(ep, 0, errors.New(res[i].Error))
			default:
				rep.OK = true
				res[i].Received++
				res[i].RTTMS = append(res[i].RTTMS, float64(rtt.Microseconds())/1000)
				each(ep, rtt, nil)
			}
		}
	}
	rep.Endpoints = append(rep.Endpoints, res...)
	return rep
}

// connectLinger is how long connect waits, after its input ended, for the
// peer to finish sending and close its side.
const connectLinger = 5 * time.Second

var connectCmd = &command{
	name:  "connect",
	args:  "<address>",
	short: "open an authenticated stream to an address; stdin/stdout (like netcat)",
	long: `Dial <address> (directly, else by hole punching through a hub), open one
stream, copy stdin to it and it to stdout. Ends when the peer closes its side,
when the connection dies, ` + fmt.Sprint(connectLinger) + ` after stdin ends if the peer has not closed,
or on SIGINT/SIGTERM. "a2al-node run" echoes streams back by default.`,
	example: `  echo hello | a2al-node connect --bootstrap 192.0.2.10 --hub wss://hub.example.org/v2/signal a0b1c2...`,
	flags: func(fs *flagSet) func(context.Context, stdio, []string) error {
		var o clientOptions
		o.register(fs)
		return func(ctx context.Context, std stdio, args []string) error {
			target, err := addressArg("connect", args)
			if err != nil {
				return err
			}
			return o.connect(ctx, std, target)
		}
	},
}

func (o *clientOptions) connect(ctx context.Context, std stdio, target a2al.Address) error {
	dctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	h, err := o.clientHost(dctx, std)
	if err != nil {
		return err
	}
	defer h.Close()
	c, err := h.Dial(dctx, target)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	defer c.Close()
	fmt.Fprintf(std.err, "connected to %s via %s (%s)\n", c.Peer.String(), c.RemoteAddr(), c.Path)
	s, err := c.OpenStream(dctx)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	// The stdin copy may stay blocked in a read the runtime cannot cancel
	// (a terminal); it is not waited for, the process exits after us.
	in := std.in
	if in == nil {
		in = strings.NewReader("")
	}
	inDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(s, in)
		_ = s.Close() // FIN: the peer sees EOF
		inDone <- err
	}()
	outDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(std.out, s)
		outDone <- err
	}()
	var linger <-chan time.Time
	for {
		select {
		case err := <-outDone:
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case err == nil:
				return nil // the peer closed its side
			case c.Context().Err() != nil:
				return fmt.Errorf("connection to %s ended: %w", target.String(), context.Cause(c.Context()))
			default:
				return fmt.Errorf("read stream: %w", err)
			}
		case <-inDone:
			inDone = nil
			linger = time.After(connectLinger)
		case <-linger:
			fmt.Fprintf(std.err, "a2al-node connect: input ended and the peer did not close within %v; closing\n", connectLinger)
			s.CancelRead(0)
			return nil
		case <-c.Context().Done():
			s.CancelRead(0)
			return fmt.Errorf("connection to %s ended: %w", target.String(), context.Cause(c.Context()))
		case <-ctx.Done():
			s.CancelRead(0)
			s.CancelWrite(0)
			return ctx.Err()
		}
	}
}
