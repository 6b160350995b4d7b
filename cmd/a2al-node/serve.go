package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/a2alnode/a2al/host"
)

// repeatValue is a repeatable flag: every --NAME adds its ';'-separated
// items (items from the A2AL_* variable come first).
type repeatValue struct{ p *[]string }

func (r repeatValue) Set(v string) error {
	for _, item := range strings.Split(v, ";") {
		if item = strings.TrimSpace(item); item != "" {
			*r.p = append(*r.p, item)
		}
	}
	return nil
}

func (r repeatValue) String() string {
	if r.p == nil {
		return ""
	}
	return strings.Join(*r.p, ";")
}

// serveFlags are run's service flags (docs/services.md).
type serveFlags struct{ serve, allow, public []string }

func (s *serveFlags) register(fs *flagSet) {
	fs.Var(repeatValue{&s.serve}, "serve", "NAME=tcp:HOST:PORT", "expose a local TCP service (repeatable); it answers on agent NAME's address if that agent exists (a2al-node agent add NAME), else on the node's")
	fs.Var(repeatValue{&s.allow}, "allow", "NAME=ADDR[,ADDR]", "let these callers reach service NAME (repeatable; without --allow or --public nobody may)")
	fs.Var(repeatValue{&s.public}, "public", "NAME", "let every caller reach service NAME (repeatable)")
}

// plan validates the flags against the hosted agents and returns the
// service configurations, before anything starts.
func (s *serveFlags) plan(agents []namedAgent) ([]host.ServiceConfig, error) {
	var out []host.ServiceConfig
	byName := map[string]int{}
	onNode := ""
	for _, v := range s.serve {
		name, spec, ok := strings.Cut(v, "=")
		target, isTCP := strings.CutPrefix(spec, "tcp:")
		if !ok || !agentName.MatchString(name) || !isTCP || target == "" {
			return nil, usagef("--serve %q: want NAME=tcp:HOST:PORT", v)
		}
		if _, dup := byName[name]; dup {
			return nil, usagef("--serve: service %s given twice", name)
		}
		cfg := host.ServiceConfig{Name: name, Target: target}
		for _, a := range agents {
			if a.name == name {
				cfg.Address = a.id.Address
			}
		}
		if cfg.Address.IsZero() {
			if onNode != "" {
				return nil, usagef("--serve: %s and %s would both answer on the node's address; create an agent for one (a2al-node agent add %s)", onNode, name, name)
			}
			onNode = name
		}
		byName[name] = len(out)
		out = append(out, cfg)
	}
	for _, v := range s.allow {
		name, list, ok := strings.Cut(v, "=")
		i, known := byName[name]
		if !ok || !known {
			return nil, usagef("--allow %q: want NAME=ADDR[,ADDR...] for a service given with --serve", v)
		}
		for _, t := range splitList(list) {
			a, err := parseAddressArg(t)
			if err != nil {
				return nil, usagef("--allow %s: %v", name, err)
			}
			out[i].Allow = append(out[i].Allow, a)
		}
	}
	for _, name := range s.public {
		i, known := byName[name]
		if !known {
			return nil, usagef("--public %q: no such service given with --serve", name)
		}
		out[i].Public = true
	}
	return out, nil
}

// startServices registers the agents and services on h and says where each
// service answers.
func startServices(h *host.Host, agents []namedAgent, svcs []host.ServiceConfig, stdout io.Writer, log *slog.Logger) error {
	for _, a := range agents {
		if err := h.AddAgent(a.id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "agent %s %s\n", a.name, a.id.Address.String())
	}
	for _, cfg := range svcs {
		if err := h.Serve(cfg); err != nil {
			return err
		}
		addr := cfg.Address
		if addr.IsZero() {
			addr = h.Address()
		}
		who := fmt.Sprintf("%d allowed callers", len(cfg.Allow))
		if cfg.Public {
			who = "public"
		} else if len(cfg.Allow) == 0 {
			log.Warn("service refuses every caller: add --allow NAME=ADDR or --public NAME", "service", cfg.Name)
		}
		fmt.Fprintf(stdout, "service %s -> tcp %s on %s (%s)\n", cfg.Name, cfg.Target, addr.String(), who)
	}
	return nil
}
