// Command a2al-node runs an a2al node (DHT + NAT traversal) and offers small
// client commands against the network.
//
//	a2al-node run                      run a node (first run creates the key)
//	a2al-node id                       print (and create) the node identity
//	a2al-node resolve <address>        look up an endpoint record
//	a2al-node ping <address>           resolve, then PING its endpoints
//	a2al-node connect <address>        stdin/stdout over an authenticated stream
//	a2al-node demo                     simulated NATs in-process: watch nodes punch
//
// Every flag has an A2AL_* environment variable as its default.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	os.Exit(realMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `usage: a2al-node <command> [flags]

commands:
  run               run a node (DHT, NAT sensing, hole punching, publishing)
  id                print the node identity (creates the key on first use)
  resolve <addr>    resolve an address to its endpoint record
  ping <addr>       resolve an address and PING its endpoints
  connect <addr>    open an authenticated stream; stdin/stdout (netcat-like)
  demo              in-process demo: nodes behind simulated NATs punch each other

Run "a2al-node <command> -h" for the flags of a command.
`

func realMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], stdout, stderr)
	case "id":
		err = cmdID(args[1:], stdout, stderr)
	case "resolve":
		err = cmdResolve(ctx, args[1:], stdout, stderr)
	case "ping":
		err = cmdPing(ctx, args[1:], stdout, stderr)
	case "connect":
		err = cmdConnect(ctx, args[1:], stdin, stdout, stderr)
	case "demo":
		err = cmdDemo(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "a2al-node: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "a2al-node %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// env returns the A2AL_* variable or def.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, ok := os.LookupEnv(name); ok {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// splitList splits "a,b c;d" into items.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' })
}

func defaultDataDir() string {
	if d, err := os.UserHomeDir(); err == nil && d != "" {
		return filepath.Join(d, ".a2al")
	}
	return ".a2al"
}

// common are the network flags every command that joins the DHT takes.
type common struct {
	dataDir   string
	keyFile   string
	listen    string
	bootstrap string
	hubs      string
	stun      string
	logLevel  string
}

func (c *common) register(fs *flag.FlagSet, listenDef string) {
	fs.StringVar(&c.dataDir, "data-dir", env("A2AL_DATA_DIR", defaultDataDir()), "data directory (key, peers cache) [A2AL_DATA_DIR]")
	fs.StringVar(&c.keyFile, "key", env("A2AL_KEY", ""), "key file (default <data-dir>/node.key) [A2AL_KEY]")
	fs.StringVar(&c.listen, "listen", env("A2AL_LISTEN", listenDef), "UDP listen address [A2AL_LISTEN]")
	fs.StringVar(&c.bootstrap, "bootstrap", env("A2AL_BOOTSTRAP", ""), "bootstrap host:port list, comma separated [A2AL_BOOTSTRAP]")
	fs.StringVar(&c.hubs, "hub", env("A2AL_HUBS", ""), "signaling hub URLs (ws:// or wss://), comma separated [A2AL_HUBS]")
	fs.StringVar(&c.stun, "stun", env("A2AL_STUN", ""), "STUN servers host:port (default <hub host>:3478) [A2AL_STUN]")
	fs.StringVar(&c.logLevel, "log-level", env("A2AL_LOG_LEVEL", "info"), "debug, info, warn or error [A2AL_LOG_LEVEL]")
}

func (c *common) key() string {
	if c.keyFile != "" {
		return c.keyFile
	}
	return filepath.Join(c.dataDir, "node.key")
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
