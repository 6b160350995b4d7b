// Command a2al-node runs an a2al node (DHT + NAT traversal) and offers small
// client commands against the network. Run "a2al-node help" for the list.
//
// Exit codes follow the Go tools: 0 success, 1 the operation failed, 2 the
// command line or an A2AL_* variable is wrong (nothing was started).
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
	"runtime/debug"
	"strings"
	"syscall"
)

func main() {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	os.Exit(realMain(os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr, env: os.LookupEnv}))
}

// stdio is what a command reads and writes; tests pass buffers.
type stdio struct {
	in       io.Reader
	out, err io.Writer
	env      func(string) (string, bool)
}

// command is one subcommand. flags registers the command's flags on fs (one
// line per flag) and returns the body, which runs with the positional
// arguments after every flag and variable has been parsed and checked.
type command struct {
	name    string
	args    string // argument synopsis, e.g. "<address>"
	short   string // one line for the command list
	long    string // paragraph(s) for "<command> -h"
	example string
	more    string // printed after the example (e.g. the control API)
	flags   func(fs *flagSet) func(ctx context.Context, std stdio, args []string) error
}

// commands is the command list, in the order help shows it.
func commands() []*command {
	return []*command{runCmd, idCmd, statusCmd, resolveCmd, pingCmd, connectCmd, tunnelCmd, agentCmd, demoCmd, versionCmd}
}

func lookupCommand(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `a2al-node runs an a2al node: a peer in a distributed directory that maps
cryptographic addresses to signed endpoint records, reachable behind home NATs.

Usage:
  a2al-node <command> [flags] [arguments]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.short)
	}
	fmt.Fprint(w, `
Run "a2al-node <command> -h" (or "a2al-node help <command>") for a command's
flags and an example. Every flag also reads an A2AL_<FLAG> environment
variable (e.g. --data-dir from A2AL_DATA_DIR); the flag wins.
`)
}

func printCommandHelp(w io.Writer, c *command, fs *flagSet) {
	fmt.Fprintf(w, "%s\n\nUsage:\n  a2al-node %s [flags]", c.long, c.name)
	if c.args != "" {
		fmt.Fprintf(w, " %s", c.args)
	}
	fmt.Fprintln(w)
	fs.printDefaults(w)
	if c.example != "" {
		fmt.Fprintf(w, "\nExample:\n%s\n", c.example)
	}
	if c.more != "" {
		fmt.Fprintf(w, "\n%s", c.more)
	}
}

func realMain(args []string, std stdio) int {
	if std.env == nil {
		std.env = os.LookupEnv
	}
	if len(args) == 0 {
		printUsage(std.err)
		return 2
	}
	name := args[0]
	switch name {
	case "-h", "--help", "help":
		if len(args) > 1 {
			if c := lookupCommand(args[1]); c != nil {
				fs := newFlagSet(c.name)
				c.flags(fs)
				printCommandHelp(std.out, c, fs)
				return 0
			}
			fmt.Fprintf(std.err, "a2al-node help: unknown command %q\n", args[1])
			return 2
		}
		printUsage(std.out)
		return 0
	case "-v", "--version":
		name = "version"
	}
	c := lookupCommand(name)
	if c == nil {
		fmt.Fprintf(std.err, "a2al-node: unknown command %q (run \"a2al-node help\" for the list)\n", name)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := execute(ctx, c, args[1:], std)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(std.err, "a2al-node %s: %v (see \"a2al-node %s -h\")\n", c.name, err, c.name)
		return 2
	case errors.Is(err, context.Canceled):
		fmt.Fprintf(std.err, "a2al-node %s: interrupted\n", c.name)
		return 1
	default:
		fmt.Fprintf(std.err, "a2al-node %s: %v\n", c.name, err)
		return 1
	}
}

// execute parses args for c (environment first, then flags) and runs it;
// for -h it prints the command's help and returns flag.ErrHelp.
func execute(ctx context.Context, c *command, args []string, std stdio) error {
	if std.env == nil {
		std.env = os.LookupEnv
	}
	fs := newFlagSet(c.name)
	body := c.flags(fs)
	pos, err := fs.parse(args, std.env)
	if errors.Is(err, flag.ErrHelp) {
		printCommandHelp(std.out, c, fs)
		return err
	}
	if err != nil {
		return err
	}
	return body(ctx, std, pos)
}

var versionCmd = &command{
	name:    "version",
	short:   "print the version and VCS revision",
	long:    "Print the module version, VCS revision and Go version this binary was built from.",
	example: "  a2al-node version",
	flags: func(fs *flagSet) func(context.Context, stdio, []string) error {
		return func(_ context.Context, std stdio, args []string) error {
			if len(args) > 0 {
				return usagef("version takes no arguments")
			}
			fmt.Fprintln(std.out, versionString())
			return nil
		}
	},
}

// versionString reads the build info: module version, VCS revision and time,
// and whether the tree was modified.
func versionString() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "a2al-node (no build info)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, at, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	out := "a2al-node " + v
	if rev != "" {
		out += " " + rev + dirty
		if at != "" {
			out += " " + at
		}
	}
	return out + " " + bi.GoVersion
}

func defaultDataDir() string {
	if d, err := os.UserHomeDir(); err == nil && d != "" {
		return filepath.Join(d, ".a2al")
	}
	return ".a2al"
}

// identityFlags locate the node's key.
type identityFlags struct {
	dataDir string
	keyFile string
}

func (c *identityFlags) register(fs *flagSet) {
	fs.String(&c.dataDir, "data-dir", defaultDataDir(), "data directory (key, peers cache)")
	fs.String(&c.keyFile, "key", "", "key file (default <data-dir>/node.key)")
	fs.Check(func() error {
		if c.dataDir == "" {
			return usagef("--data-dir must not be empty")
		}
		return nil
	})
}

func (c *identityFlags) key() string {
	if c.keyFile != "" {
		return c.keyFile
	}
	return filepath.Join(c.dataDir, "node.key")
}

// netFlags are the flags of every command that joins the DHT.
type netFlags struct {
	listen    string
	bootstrap []string
	hubs      []string
	stun      []string
	turn      []string
}

func (c *netFlags) register(fs *flagSet, listenDef string) {
	fs.Listen(&c.listen, "listen", listenDef, false, `UDP address to bind (":4121" or "[::]:4121": IPv4 and IPv6 on one socket; "0.0.0.0:4121": IPv4 only; "[::1]:4121": IPv6 only)`)
	fs.List(&c.bootstrap, "bootstrap", hostPortDefault(4121), "bootstrap nodes host[:port] or [IPv6]:port, comma separated (default port 4121)")
	fs.List(&c.hubs, "hub", hubURL, "signaling hub URLs (ws:// or wss://), comma separated")
	fs.List(&c.stun, "stun", hostPortDefault(3478), "STUN servers host[:port] (default <hub host>:3478)")
	fs.List(&c.turn, "turn", checkTURN, "extra TURN relays: turn:host:port?transport=udp&user=U&pass=P or ...&secret=S (coturn shared secret), comma separated; see docs/relay.md")
}

// logFlags choose the log level and format.
type logFlags struct {
	level  string
	format string
}

func (c *logFlags) register(fs *flagSet, def string) {
	fs.Enum(&c.level, "log-level", def, []string{"debug", "info", "warn", "error"}, "log level")
	fs.Enum(&c.format, "log-format", "text", []string{"text", "json"}, "log format")
}

func (c *logFlags) logger(w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(strings.ToUpper(c.level))) // checked by the flag
	o := &slog.HandlerOptions{Level: l}
	if c.format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}
