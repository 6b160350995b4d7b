// Command attackbench runs the attacks of docs/security.md against the real
// binaries (a2al-node and signal-hub) on loopback and reports what each cost
// the attacker, what the victim sent or lost, and whether legitimate use
// kept working during the attack. Every attack is bounded in packets and
// time; the whole run takes a couple of minutes.
//
// The binaries are built from this module unless -node and -hub name others,
// so the same bench measures an older commit ("before") and the current one:
//
//	git worktree add /tmp/base <commit>
//	(cd /tmp/base && go build -o /tmp/old/ ./cmd/a2al-node ./cmd/signal-hub)
//	go run ./integration/cmd/attackbench -node /tmp/old/a2al-node -hub /tmp/old/signal-hub
//	go run ./integration/cmd/attackbench -json
//
// The attackers are Go code in this process built from the project's own
// packages (protocol messages, signaling client, identities); some use
// source addresses across 127.0.0.0/8 (Linux routes all of it to lo).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Row is one attack's line of the table.
type Row struct {
	Attack        string `json:"attack"`
	AttackerBytes int64  `json:"attacker_bytes"`
	AttackerPkts  int64  `json:"attacker_packets"`
	VictimSent    string `json:"victim_sent"`
	Legit         string `json:"legit"`
	MemBeforeKB   int64  `json:"mem_before_kb"`
	MemAfterKB    int64  `json:"mem_after_kb"`
	Err           string `json:"error,omitempty"`
}

// Summary is the -json object. Pointer fields are null when their attack
// did not run or could not be measured.
type Summary struct {
	ReflectionAmplification    *float64 `json:"reflection_amplification"`
	ReflectionMaxPPS           *float64 `json:"reflection_max_pps"`
	ReflectionAmplification1   *float64 `json:"reflection_amplification_1cand"`
	FindValueLegitAnswered     *float64 `json:"findvalue_legit_answered"`
	FindValueLegitP99MS        *float64 `json:"findvalue_legit_p99_ms"`
	ReplayMovedVerifiedAddress *bool    `json:"replay_moved_verified_address"`
	StoreFloodHonestSurvived   *float64 `json:"store_flood_honest_survived"`
	StoreFloodOwnSurvived      *float64 `json:"store_flood_own_survived"`
	HubVictimDisconnects       *int     `json:"hub_victim_disconnects"`
	HubVictimLegitCallOK       *bool    `json:"hub_victim_legit_call_ok"`
	ModeALegitOK               *bool    `json:"modea_legit_ok"`
	HubHalfOpenLegitOK         *bool    `json:"hub_halfopen_legit_ok"`
	HubHalfOpenMaxFDs          *int     `json:"hub_halfopen_max_fds"`
	ControlAPIForeignHostOK    *int     `json:"control_api_foreign_host_answered"`
	HubBurstCallerDropped      *bool    `json:"hub_burst_caller_dropped"`
	DHTAnswerAmplification     *float64 `json:"dht_answer_amplification"`
	DHTAnswersToUnproven       *int     `json:"dht_answers_to_unproven"`
	STUNAnsweredOneSource      *int     `json:"stun_answered_one_source"`
	SybilSame16Entries         *int     `json:"sybil_same16_entries"`
	Rows                       []Row    `json:"rows"`
}

func ptr[T any](v T) *T { return &v }

// attack is one entry of the bench.
type attack struct {
	name string
	run  func(ctx context.Context, e *env, s *Summary) Row
}

var attacks = []attack{
	{"1-ice-reflection", attackReflection},
	{"1b-ice-reflection-1cand", attackReflection1},
	{"2-findvalue-cpu", attackFindValue},
	{"3-replay", attackReplay},
	{"4-hub-callflood", attackCallFlood},
	{"5-store-flood", attackStoreFlood},
	{"6-modea-squat", attackModeA},
	{"7-hub-halfopen", attackHalfOpen},
	{"8-api-host", attackAPIHost},
	{"9-hub-burst", attackHubBurst},
	{"w1-dht-amplify", attackDHTAmplify},
	{"w2-stun-flood", attackSTUNFlood},
	{"w3-sybil-16", attackSybil16},
}

// env is what every attack gets.
type env struct {
	bins bins
	tmp  string
	n    int // data dirs handed out
	// scale divides attack volumes (smoke test).
	scale int
	// storeFlood is the number of STOREs of attack 5.
	storeFlood int
}

func (e *env) dir() string {
	e.n++
	d := filepath.Join(e.tmp, fmt.Sprintf("node%d", e.n))
	_ = os.MkdirAll(d, 0o700)
	return d
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "attackbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("attackbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodeBin := fs.String("node", "", "a2al-node binary (default: build from this module)")
	hubBin := fs.String("hub", "", "signal-hub binary (default: build from this module)")
	src := fs.String("src", ".", "module directory to build from when -node/-hub are not given")
	asJSON := fs.Bool("json", false, "print one JSON object instead of the table")
	only := fs.String("only", "", "comma-separated attack name prefixes to run (e.g. 1,4,7)")
	scale := fs.Int("scale", 1, "divide attack volumes by this (quick runs)")
	compare := fs.String("compare", "", "print Markdown before/after tables from -json outputs: BEFORE[,BEFORE2...]:AFTER[,...] (runs nothing)")
	storeFlood := fs.Int("store-flood", 160000, "STOREs sent by the store flood (the victim keeps 100,000 keys by default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *compare != "" {
		bp, ap, ok := strings.Cut(*compare, ":")
		if !ok {
			return fmt.Errorf("-compare wants BEFORE:AFTER")
		}
		before, err := loadSummary(bp)
		if err != nil {
			return err
		}
		after, err := loadSummary(ap)
		if err != nil {
			return err
		}
		printCompare(stdout, before, after)
		return nil
	}
	if runtime.GOOS != "linux" {
		return fmt.Errorf("needs Linux (loopback source addresses across 127.0.0.0/8, /proc)")
	}
	tmp, err := os.MkdirTemp("", "attackbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	e := &env{tmp: tmp, scale: max(1, *scale), storeFlood: *storeFlood, bins: bins{node: *nodeBin, hub: *hubBin}}
	if e.bins.node == "" || e.bins.hub == "" {
		built, err := buildBins(ctx, *src, tmp)
		if err != nil {
			return err
		}
		if e.bins.node == "" {
			e.bins.node = built.node
		}
		if e.bins.hub == "" {
			e.bins.hub = built.hub
		}
	}
	var s Summary
	for _, a := range attacks {
		if !selected(*only, a.name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		actx, cancel := context.WithTimeout(ctx, 150*time.Second)
		fmt.Fprintf(stderr, "attackbench: %s ...\n", a.name)
		r := a.run(actx, e, &s)
		cancel()
		r.Attack = a.name
		s.Rows = append(s.Rows, r)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	printTable(stdout, s)
	return nil
}

func selected(only, name string) bool {
	if only == "" {
		return true
	}
	for _, p := range strings.Split(only, ",") {
		if p = strings.TrimSpace(p); p != "" && strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func printTable(w io.Writer, s Summary) {
	fmt.Fprintf(w, "%-24s %12s %9s  %-44s %-40s %9s %9s\n", "attack", "atk bytes", "atk pkts", "victim sent / lost", "legitimate use", "rss0 MB", "rss1 MB")
	for _, r := range s.Rows {
		vs := r.VictimSent
		if r.Err != "" {
			vs = "ERROR: " + r.Err
		}
		fmt.Fprintf(w, "%-24s %12d %9d  %-44s %-40s %9.1f %9.1f\n", r.Attack, r.AttackerBytes, r.AttackerPkts, vs, r.Legit,
			float64(r.MemBeforeKB)/1024, float64(r.MemAfterKB)/1024)
	}
}
