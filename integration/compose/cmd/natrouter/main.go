// Command natrouter is the compose lab's multi-tool for scratch containers:
//
//	natrouter router --type port-restricted --wan-subnet 203.0.113.0/24
//	    programs a NAT router (nftables via netlink) and waits for SIGTERM;
//	natrouter exec --via 10.1.0.254 [--add-addr 203.0.113.3/24] -- prog args...
//	    points the default route at a router, adds addresses, then execs prog;
//	natrouter get [--timeout 5s] [--method POST] [--field a.b] URL
//	    prints an HTTP body (the images have no curl), non-zero on failure;
//	natrouter field PATH < body.json
//	    prints one field of a JSON document (dot path, as get --field);
//	natrouter whoami [--listen :8080]
//	    answers HTTP requests with the caller's address as seen here (used to
//	    check that a LAN container reaches the WAN through its NAT).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"

	"github.com/a2alnode/a2al/integration/compose/nftnat"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "router":
		err = runRouter(os.Args[2:])
	case "exec":
		err = runExec(os.Args[2:])
	case "get":
		err = runGet(os.Args[2:])
	case "field":
		err = runField(os.Args[2:])
	case "whoami":
		err = runWhoami(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "natrouter %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: natrouter router|exec|get|field|whoami ... (see package doc)")
	os.Exit(2)
}

// multiFlag collects a repeated string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runRouter(args []string) error {
	fs := flag.NewFlagSet("router", flag.ExitOnError)
	typ := fs.String("type", envOr("NAT_TYPE", nftnat.PortRestricted), "router behaviour: "+strings.Join(nftnat.Types, ", "))
	wanSubnet := fs.String("wan-subnet", "203.0.113.0/24", "subnet of the outside interface (found by address)")
	gateway := fs.String("gateway", "", "default route for the router itself (needed behind another router)")
	mapping := fs.Duration("mapping-timeout", 120*time.Second, "cone mapping lifetime")
	shift := fs.Int("shift-offset", 36000, "port-shifted: outside port = inside port + offset")
	shifted := fs.String("shift-ports", "4000-4009,4121-4140", "port-shifted: inside UDP ports to remap")
	_ = fs.Parse(args)

	_, subnet, err := net.ParseCIDR(*wanSubnet)
	if err != nil {
		return fmt.Errorf("--wan-subnet: %w", err)
	}
	ifc, wanIP, err := interfaceIn(subnet)
	if err != nil {
		return err
	}
	ports, err := parsePorts(*shifted)
	if err != nil {
		return fmt.Errorf("--shift-ports: %w", err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
		// Read-only /proc/sys in unprivileged containers: compose sets the
		// sysctl instead; check that it is on.
		if b, rerr := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); rerr != nil || strings.TrimSpace(string(b)) != "1" {
			return fmt.Errorf("IP forwarding is off and cannot be enabled (%v); set sysctl net.ipv4.ip_forward=1", err)
		}
	}
	if *gateway != "" {
		if err := replaceDefaultRoute(net.ParseIP(*gateway)); err != nil {
			return err
		}
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables netlink: %w", err)
	}
	cfg := nftnat.Config{Type: *typ, WANIf: ifc.Name, WANIP: wanIP, MappingTimeout: *mapping,
		ShiftedPorts: ports, ShiftOffset: *shift}
	if err := nftnat.Apply(c, cfg); err != nil {
		return err
	}
	fmt.Printf("natrouter: %s NAT on %s (%s) ready\n", *typ, ifc.Name, wanIP)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	fmt.Println("natrouter: stopping")
	return nil
}

func runExec(args []string) error {
	fs := flag.NewFlagSet("exec", flag.ExitOnError)
	via := fs.String("via", "", "default gateway (the NAT router's LAN address)")
	var addrs multiFlag
	fs.Var(&addrs, "add-addr", "extra address CIDR to add (repeatable)")
	_ = fs.Parse(args)
	rest := fs.Args()
	if len(rest) == 0 {
		return errors.New("missing program to run after --")
	}
	for _, a := range addrs {
		if err := addAddress(a); err != nil {
			return err
		}
	}
	if *via != "" {
		gw := net.ParseIP(*via)
		if gw == nil {
			return fmt.Errorf("--via %q is not an IP", *via)
		}
		if err := replaceDefaultRoute(gw); err != nil {
			return err
		}
	}
	path, err := exec.LookPath(rest[0])
	if err != nil {
		return fmt.Errorf("find %s: %w", rest[0], err)
	}
	return syscall.Exec(path, rest, os.Environ())
}

func runGet(args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	timeout := fs.Duration("timeout", 5*time.Second, "request deadline")
	field := fs.String("field", "", "print only this field of a JSON body (dot path, e.g. nat.type or punches.0.ok)")
	method := fs.String("method", http.MethodGet, "HTTP method (GET or POST; no body is sent)")
	_ = fs.Parse(args)
	if *method != http.MethodGet && *method != http.MethodPost {
		return fmt.Errorf("method %q: want GET or POST", *method)
	}
	if fs.NArg() != 1 {
		return errors.New("want exactly one URL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, *method, fs.Arg(0), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: HTTP %s: %s", fs.Arg(0), resp.Status, strings.TrimSpace(string(body)))
	}
	if *field == "" {
		_, err = os.Stdout.Write(body)
		return err
	}
	v, err := jsonField(body, *field)
	if err != nil {
		return err
	}
	fmt.Println(v)
	return nil
}

// runField prints one field of the JSON document on stdin (scripts on the
// host have no jq either).
func runField(args []string) error {
	if len(args) != 1 {
		return errors.New("want exactly one dot path")
	}
	body, err := io.ReadAll(io.LimitReader(os.Stdin, 8<<20))
	if err != nil {
		return err
	}
	v, err := jsonField(body, args[0])
	if err != nil {
		return err
	}
	fmt.Println(v)
	return nil
}

// jsonField extracts a dot path ("a.b.0.c") from a JSON document; strings
// print bare, everything else as JSON.
func jsonField(body []byte, path string) (string, error) {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return "", fmt.Errorf("body is not JSON: %w", err)
	}
	for _, k := range strings.Split(path, ".") {
		switch cur := v.(type) {
		case map[string]any:
			next, ok := cur[k]
			if !ok {
				return "", fmt.Errorf("no field %q in path %q", k, path)
			}
			v = next
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < -len(cur) || i >= len(cur) {
				return "", fmt.Errorf("bad index %q (len %d) in path %q", k, len(cur), path)
			}
			if i < 0 {
				i += len(cur)
			}
			v = cur[i]
		default:
			return "", fmt.Errorf("cannot index %T with %q", v, k)
		}
	}
	if s, ok := v.(string); ok {
		return s, nil
	}
	out, err := json.Marshal(v)
	return string(out), err
}

func runWhoami(args []string) error {
	fs := flag.NewFlagSet("whoami", flag.ExitOnError)
	listen := fs.String("listen", ":8080", "HTTP listen address")
	_ = fs.Parse(args)
	srv := &http.Server{
		Addr:              *listen,
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, r.RemoteAddr)
		}),
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// parsePorts reads "4000-4009,4121" into a list (bounded to 4096 ports).
func parsePorts(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		var lo, hi int
		if strings.Contains(part, "-") {
			if _, err := fmt.Sscanf(part, "%d-%d", &lo, &hi); err != nil {
				return nil, fmt.Errorf("bad range %q", part)
			}
		} else if _, err := fmt.Sscanf(part, "%d", &lo); err != nil {
			return nil, fmt.Errorf("bad port %q", part)
		} else {
			hi = lo
		}
		if lo < 1 || hi > 65535 || hi < lo || len(out)+hi-lo+1 > 4096 {
			return nil, fmt.Errorf("port range %q out of bounds", part)
		}
		for p := lo; p <= hi; p++ {
			out = append(out, p)
		}
	}
	return out, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
