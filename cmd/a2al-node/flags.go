package main

// Flag and environment parsing shared by every command. A command declares its
// flags in its flags function (one line per flag; see command in main.go); each
// flag's value type checks the value when it is set, so a bad flag or A2AL_*
// variable is refused before anything starts, with one line naming the flag,
// the value and what is accepted (exit 2).

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/a2alnode/a2al/signal"
)

// usageError is a bad command line or environment: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// flagSet is a command's flags. Every flag has an environment variable
// A2AL_<NAME> (dashes as underscores) as its default unless exempted with
// NoEnv (per-invocation switches like --json).
type flagSet struct {
	fs     *flag.FlagSet
	noEnv  map[string]bool
	order  []string          // registration order, for help
	checks []func() error    // cross-flag checks run after parsing
	bad    error             // the first value error, with the flag's name
	meta   map[string]string // value placeholder shown in help ("duration", "list"...)
}

func newFlagSet(cmd string) *flagSet {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // we print errors and help ourselves
	fs.Usage = func() {}
	return &flagSet{fs: fs, noEnv: map[string]bool{}, meta: map[string]string{}}
}

// envName is the environment variable of flag name.
func envName(name string) string {
	return "A2AL_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// checked wraps a value so a failing Set records which flag and value failed.
type checked struct {
	flag.Value
	name   string
	fs     *flagSet
	source string // "" while parsing the command line, else the variable name
}

func (c *checked) Set(s string) error {
	if err := c.Value.Set(s); err != nil {
		if c.fs.bad == nil {
			where := "--" + c.name
			if c.source != "" {
				where = c.source + " (--" + c.name + ")"
			}
			c.fs.bad = usagef("invalid value %q for %s: %v", s, where, err)
		}
		return err
	}
	return nil
}

func (c *checked) IsBoolFlag() bool {
	b, ok := c.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Var registers a flag with value v (already holding its default); meta names
// the kind of value for help.
func (f *flagSet) Var(v flag.Value, name, meta, usage string) {
	f.fs.Var(&checked{Value: v, name: name, fs: f}, name, usage)
	f.order = append(f.order, name)
	f.meta[name] = meta
}

// NoEnv exempts per-invocation switches (--json, -c) from A2AL_* variables.
func (f *flagSet) NoEnv(names ...string) {
	for _, n := range names {
		f.noEnv[n] = true
	}
}

// Check adds a validation run after all flags are set (for rules that
// involve several flags).
func (f *flagSet) Check(fn func() error) { f.checks = append(f.checks, fn) }

func (f *flagSet) String(p *string, name, def, usage string) {
	*p = def
	f.Var((*stringValue)(p), name, "string", usage)
}

// Enum is a string flag that must be one of allowed.
func (f *flagSet) Enum(p *string, name, def string, allowed []string, usage string) {
	*p = def
	f.Var(&enumValue{p: p, allowed: allowed}, name, strings.Join(allowed, "|"), usage)
}

func (f *flagSet) Bool(p *bool, name string, def bool, usage string) {
	*p = def
	f.Var((*boolValue)(p), name, "", usage)
}

// Duration is a duration flag that must be at least min (min 0: not negative).
func (f *flagSet) Duration(p *time.Duration, name string, def, min time.Duration, usage string) {
	*p = def
	f.Var(&durationValue{p: p, min: min}, name, "duration", usage)
}

// Int is an integer flag within [min, max].
func (f *flagSet) Int(p *int, name string, def, min, max int, usage string) {
	*p = def
	f.Var(&intValue{p: p, min: min, max: max}, name, "n", usage)
}

// List is a comma-separated list; each item passes through norm, which
// checks it and may rewrite it (e.g. add a default port).
func (f *flagSet) List(p *[]string, name string, norm func(string) (string, error), usage string) {
	*p = nil
	f.Var(&listValue{p: p, norm: norm}, name, "list", usage)
}

// parse applies the environment, then args; it returns the positional
// arguments. Errors are usage errors (exit 2), except flag.ErrHelp.
func (f *flagSet) parse(args []string, lookupEnv func(string) (string, bool)) ([]string, error) {
	var envErr error
	f.fs.VisitAll(func(fl *flag.Flag) {
		if envErr != nil || f.noEnv[fl.Name] {
			return
		}
		name := envName(fl.Name)
		v, ok := lookupEnv(name)
		if !ok {
			return
		}
		c := fl.Value.(*checked)
		c.source = name
		if err := f.fs.Set(fl.Name, v); err != nil {
			envErr = f.bad
		}
		c.source = ""
	})
	if envErr != nil {
		return nil, envErr
	}
	// Accept positional arguments before, between or after the flags.
	var pos []string
	for {
		if err := f.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			if f.bad != nil {
				return nil, f.bad
			}
			msg := err.Error()
			if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
				msg = "unknown flag --" + strings.TrimPrefix(name, "-")
			}
			return nil, usagef("%s", msg)
		}
		args = f.fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	for _, c := range f.checks {
		if err := c(); err != nil {
			var ue *usageError
			if errors.As(err, &ue) {
				return nil, err
			}
			return nil, &usageError{err.Error()}
		}
	}
	return pos, nil
}

// printDefaults writes the flags in registration order, tailscale style.
func (f *flagSet) printDefaults(w io.Writer) {
	if len(f.order) == 0 {
		return
	}
	fmt.Fprintln(w, "\nFlags:")
	for _, n := range f.order {
		fl := f.fs.Lookup(n)
		head := "  --" + n
		if m := f.meta[n]; m != "" {
			head += " " + m
		}
		fmt.Fprintln(w, head)
		usage := fl.Usage
		switch def := fl.DefValue; {
		case def == "true" && f.meta[n] == "":
			usage += fmt.Sprintf(" (default true; --%s=false turns it off)", n)
		case def != "" && def != "false":
			usage += fmt.Sprintf(" (default %s)", def)
		}
		if !f.noEnv[n] {
			usage += " [" + envName(n) + "]"
		}
		fmt.Fprintf(w, "        %s\n", usage)
	}
}

type stringValue string

func (s *stringValue) Set(v string) error { *s = stringValue(v); return nil }
func (s *stringValue) String() string     { return string(*s) }

type enumValue struct {
	p       *string
	allowed []string
}

func (e *enumValue) Set(v string) error {
	for _, a := range e.allowed {
		if v == a {
			*e.p = v
			return nil
		}
	}
	return fmt.Errorf("want one of %s", strings.Join(e.allowed, ", "))
}

func (e *enumValue) String() string {
	if e.p == nil {
		return ""
	}
	return *e.p
}

type boolValue bool

func (b *boolValue) Set(v string) error {
	x, err := strconv.ParseBool(v)
	if err != nil {
		return errors.New("want true or false (or 1, 0)")
	}
	*b = boolValue(x)
	return nil
}
func (b *boolValue) String() string   { return strconv.FormatBool(bool(*b)) }
func (b *boolValue) IsBoolFlag() bool { return true }

type durationValue struct {
	p   *time.Duration
	min time.Duration
}

func (d *durationValue) Set(v string) error {
	x, err := time.ParseDuration(v)
	if err != nil {
		return errors.New("want a duration such as 30s, 2m or 500ms")
	}
	if x < d.min {
		return fmt.Errorf("want a duration of at least %v", d.min)
	}
	*d.p = x
	return nil
}

func (d *durationValue) String() string {
	if d.p == nil {
		return ""
	}
	return d.p.String()
}

type intValue struct {
	p        *int
	min, max int
}

func (n *intValue) Set(v string) error {
	x, err := strconv.Atoi(v)
	if err != nil || x < n.min || x > n.max {
		return fmt.Errorf("want a whole number from %d to %d", n.min, n.max)
	}
	*n.p = x
	return nil
}

func (n *intValue) String() string {
	if n.p == nil {
		return ""
	}
	return strconv.Itoa(*n.p)
}

type listValue struct {
	p    *[]string
	norm func(string) (string, error)
}

func (l *listValue) Set(v string) error {
	var out []string
	items := splitList(v)
	for _, item := range items {
		n, err := l.norm(item)
		if err != nil && len(items) > 1 {
			return fmt.Errorf("item %q: %w", item, err)
		}
		if err != nil {
			return err
		}
		out = append(out, n)
	}
	*l.p = out
	return nil
}

func (l *listValue) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

// splitList splits "a,b c;d" into items.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' })
}

// Value checkers for List and Check.

// hostPortDefault accepts host:port, [v6]:port, a bare host name or IP (then
// the default port is added) and returns host:port.
func hostPortDefault(defPort int) func(string) (string, error) {
	return func(s string) (string, error) {
		if ip, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
			return netip.AddrPortFrom(ip, uint16(defPort)).String(), nil
		}
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			if strings.ContainsAny(s, ":/") {
				return "", fmt.Errorf("want host or host:port (default port %d)", defPort)
			}
			h, p = s, strconv.Itoa(defPort)
		}
		if h == "" {
			return "", errors.New("want host:port with a host")
		}
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("port %q: want 1-65535", p)
		}
		return net.JoinHostPort(h, p), nil
	}
}

// checkListenAddr accepts "host:port" or ":port" (port 0 = any free port).
func checkListenAddr(s string) error {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port or :port, e.g. 127.0.0.1:2634")
	}
	if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q: want 0-65535", p)
	}
	if h != "" && net.ParseIP(h) == nil && h != "localhost" {
		return fmt.Errorf("host %q: want an IP address (or empty for all interfaces)", h)
	}
	return nil
}

// hubURL accepts what the signaling client can dial: a ws:// or wss:// URL
// with a host (signal.CanonicalURL is the one rule).
func hubURL(s string) (string, error) {
	if _, err := signal.CanonicalURL(s); err != nil {
		return "", errors.New("want a ws:// or wss:// URL with a host, e.g. wss://hub.example.org/v2/signal")
	}
	return s, nil
}

// listenValue is a listen address flag, checked with checkListenAddr; empty
// is accepted when optional (the feature is then off).
type listenValue struct {
	p        *string
	optional bool
}

func (l *listenValue) Set(v string) error {
	if v == "" && l.optional {
		*l.p = ""
		return nil
	}
	if err := checkListenAddr(v); err != nil {
		return err
	}
	*l.p = v
	return nil
}

func (l *listenValue) String() string {
	if l.p == nil {
		return ""
	}
	return *l.p
}

// Listen is a host:port flag for a socket this process binds; optional
// allows "" (off).
func (f *flagSet) Listen(p *string, name, def string, optional bool, usage string) {
	*p = def
	f.Var(&listenValue{p: p, optional: optional}, name, "addr", usage)
}
