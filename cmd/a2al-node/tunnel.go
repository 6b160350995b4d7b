package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/host"
)

var tunnelCmd = &command{
	name:  "tunnel",
	args:  "<address>",
	short: "forward a local TCP port to the service a remote address exposes",
	long: `Connect to <address> (directly, else by hole punching through a hub) and
forward every TCP connection accepted on --listen to the service exposed there
("a2al-node run --serve", or a reference agent's TCP service): one stream per
TCP connection, half-close carried both ways. A service that does not admit
this caller refuses with a reason, printed here. Use --key so the service sees
the address it allowed (without it a throw-away identity is used). SIGINT or
SIGTERM closes every forwarded connection. See docs/services.md.`,
	example: `  a2al-node tunnel --key ~/.a2al/node.key --bootstrap 192.0.2.10 --listen 127.0.0.1:9000 a0b1c2...`,
	flags: func(fs *flagSet) func(context.Context, stdio, []string) error {
		var o tunnelOptions
		o.register(fs)
		return func(ctx context.Context, std stdio, args []string) error {
			target, err := tunnelTarget(args)
			if err != nil {
				return err
			}
			return o.run(ctx, std, target)
		}
	},
}

// tunnelOptions: --listen is the local TCP address here, so the client
// node's UDP socket is --udp (the other network flags are as for connect).
type tunnelOptions struct {
	client   clientOptions
	listen   string
	at       string
	maxConns int
}

func (o *tunnelOptions) register(fs *flagSet) {
	c := &o.client
	c.id.register(fs)
	c.log.register(fs, "warn")
	fs.Listen(&o.listen, "listen", "127.0.0.1:9000", false, "local TCP address to accept connections on")
	fs.Listen(&c.net.listen, "udp", "0.0.0.0:0", false, "UDP address of this client's node socket")
	fs.List(&c.net.bootstrap, "bootstrap", hostPortDefault(4121), "bootstrap nodes host[:port], comma separated (default port 4121)")
	fs.List(&c.net.hubs, "hub", hubURL, "signaling hub URLs (ws:// or wss://), comma separated")
	fs.List(&c.net.stun, "stun", hostPortDefault(3478), "STUN servers host[:port] (default <hub host>:3478)")
	fs.String(&o.at, "at", "", "the remote's UDP host:port: dial it directly instead of resolving its record")
	fs.Int(&o.maxConns, "max-conns", 64, 1, 4096, "concurrent forwarded TCP connections (more wait in the backlog)")
	fs.Duration(&c.timeout, "timeout", 30*time.Second, time.Millisecond, "time limit for joining and for each connection to the remote")
	fs.noEnv["listen"] = true // A2AL_LISTEN is the node's UDP address elsewhere
	fs.Check(func() error {
		if o.at == "" {
			return nil
		}
		if _, err := hostPortDefault(4121)(o.at); err != nil {
			return usagef("--at %q: %v", o.at, err)
		}
		return nil
	})
}

func tunnelTarget(args []string) (a2al.Address, error) {
	if len(args) == 1 && strings.Contains(args[0], "/") {
		return a2al.Address{}, usagef("%q: a service is selected by the address it answers on (a2al-node run prints it); give that address alone", args[0])
	}
	return addressArg("tunnel", args)
}

func (o *tunnelOptions) run(ctx context.Context, std stdio, target a2al.Address) error {
	var at net.Addr
	if o.at != "" {
		hp, _ := hostPortDefault(4121)(o.at)
		ua, err := net.ResolveUDPAddr("udp", hp)
		if err != nil {
			return fmt.Errorf("--at %s: %w", o.at, err)
		}
		at = ua
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("tunnel listener --listen %s: %w", o.listen, err)
	}
	jctx, cancel := context.WithTimeout(ctx, o.client.timeout)
	h, err := o.client.clientHost(jctx, std)
	cancel()
	if err != nil {
		ln.Close()
		return err
	}
	defer h.Close()
	fmt.Fprintf(std.out, "tunnel %s -> %s\n", ln.Addr(), target.String())
	return h.Tunnel(ctx, host.TunnelConfig{Remote: target, At: at, Listener: ln, MaxConns: o.maxConns,
		DialTimeout: o.client.timeout,
		OnConnect: func(c *host.Conn) {
			fmt.Fprintf(std.err, "connected to %s via %s (%s)\n", c.Peer.String(), c.RemoteAddr(), c.Path)
		}})
}
