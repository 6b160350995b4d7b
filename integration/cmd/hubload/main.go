// Command hubload measures the signaling hub under load: it registers N
// authenticated clients spread over many 127.x source addresses, places calls
// between random pairs and reports registration rate, call setup latency and
// the hub's memory and goroutines per connection.
//
// By default the hub runs as a child process (this binary re-executed with
// -serve-hub) so that its VmRSS can be read from /proc honestly, without the
// load generator's own memory. Use -hub to load an external hub instead.
//
//	go run ./integration/cmd/hubload -clients 5000 -calls 2000
package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/signal"
)

type config struct {
	clients, calls, callConc, regConc, perIP int
	hub                                      string
	hubPID                                   int
	jsonOut                                  bool
	timeout                                  time.Duration
}

func main() {
	var cfg config
	serveHub := flag.Bool("serve-hub", false, "internal: run a hub on loopback, print its address, exit when stdin closes")
	flag.IntVar(&cfg.clients, "clients", 1000, "registered clients")
	flag.IntVar(&cfg.calls, "calls", 1000, "calls between random pairs")
	flag.IntVar(&cfg.callConc, "call-concurrency", 32, "calls in flight")
	flag.IntVar(&cfg.regConc, "reg-concurrency", 128, "registrations in flight")
	flag.IntVar(&cfg.perIP, "per-ip", 50, "clients per 127.x source address (keep below the hub's per-IP limit)")
	flag.StringVar(&cfg.hub, "hub", "", "external hub base URL (ws://host:port); default: start one as a child process")
	flag.IntVar(&cfg.hubPID, "hub-pid", 0, "with -hub: pid of the hub process, to read its VmRSS")
	flag.BoolVar(&cfg.jsonOut, "json", false, "print one JSON object")
	flag.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "overall deadline")
	flag.Parse()
	raiseNoFile()
	if *serveHub {
		if err := runHub(); err != nil {
			fmt.Fprintln(os.Stderr, "hubload hub:", err)
			os.Exit(1)
		}
		return
	}
	res, err := runLoad(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hubload:", err)
		os.Exit(1)
	}
	if cfg.jsonOut {
		json.NewEncoder(os.Stdout).Encode(res)
	} else {
		res.print(os.Stdout)
	}
}

// raiseNoFile lifts the soft descriptor limit to the hard one: each client
// needs a socket here and one in the hub.
func raiseNoFile() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}

type result struct {
	Clients            int     `json:"clients"`
	Registered         int     `json:"registered"`
	RegistrationsPerS  float64 `json:"registrations_per_s"`
	Calls              int     `json:"calls"`
	CallsOK            int     `json:"calls_ok"`
	CallSetupP50MS     float64 `json:"call_setup_p50_ms"`
	CallSetupP99MS     float64 `json:"call_setup_p99_ms"`
	HubRSSBaseKiB      int64   `json:"hub_rss_base_kib"`
	HubRSSKiB          int64   `json:"hub_rss_kib"`
	HubRSSPerConnKiB   float64 `json:"hub_rss_per_conn_kib"`
	HubHeapPerConnKiB  float64 `json:"hub_heap_inuse_per_conn_kib"`
	HubStackPerConnKiB float64 `json:"hub_stack_inuse_per_conn_kib"`
	HubGoroutinesPerCn float64 `json:"hub_goroutines_per_conn"`
	// After a forced GC + FreeOSMemory in the child: live state only.
	HubRSSAfterGCPerConnKiB   float64 `json:"hub_rss_after_gc_per_conn_kib,omitempty"`
	HubStackAfterGCPerConnKiB float64 `json:"hub_stack_after_gc_per_conn_kib,omitempty"`
	Errors                    int     `json:"errors"`
	FirstError                string  `json:"first_error,omitempty"`
}

func (r *result) print(w io.Writer) {
	fmt.Fprintf(w, "%-28s %d (registered %d)\n", "clients", r.Clients, r.Registered)
	fmt.Fprintf(w, "%-28s %.0f\n", "registrations/s", r.RegistrationsPerS)
	fmt.Fprintf(w, "%-28s %d ok of %d\n", "calls", r.CallsOK, r.Calls)
	fmt.Fprintf(w, "%-28s %.2f ms\n", "call setup p50", r.CallSetupP50MS)
	fmt.Fprintf(w, "%-28s %.2f ms\n", "call setup p99", r.CallSetupP99MS)
	fmt.Fprintf(w, "%-28s %d -> %d KiB\n", "hub VmRSS (idle -> loaded)", r.HubRSSBaseKiB, r.HubRSSKiB)
	fmt.Fprintf(w, "%-28s %.1f KiB\n", "hub VmRSS per connection", r.HubRSSPerConnKiB)
	fmt.Fprintf(w, "%-28s %.1f KiB\n", "hub heap in use per conn", r.HubHeapPerConnKiB)
	fmt.Fprintf(w, "%-28s %.1f KiB\n", "hub stacks per conn", r.HubStackPerConnKiB)
	if r.HubRSSAfterGCPerConnKiB != 0 { // only known for a child hub
		fmt.Fprintf(w, "%-28s %.1f KiB (stacks %.1f KiB)\n", "  after forced GC", r.HubRSSAfterGCPerConnKiB, r.HubStackAfterGCPerConnKiB)
	}
	fmt.Fprintf(w, "%-28s %.2f\n", "hub goroutines per conn", r.HubGoroutinesPerCn)
	fmt.Fprintf(w, "%-28s %d %s\n", "errors", r.Errors, r.FirstError)
}

// hubProc is the hub under test.
type hubProc struct {
	base       string // ws://...
	metricsURL string
	gcURL      string // child only: forces a GC
	pid        int
	stop       func()
}

func startChildHub() (*hubProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command(exe, "-serve-hub")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start hub child: %w", err)
	}
	stop := func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	lineCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lineCh <- sc.Text()
		}
		close(lineCh)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case line, ok := <-lineCh:
		addr, found := strings.CutPrefix(line, "ADDR ")
		if !ok || !found {
			stop()
			return nil, fmt.Errorf("hub child did not report its address (got %q)", line)
		}
		return &hubProc{base: "ws://" + addr, metricsURL: "http://" + addr + "/metrics", gcURL: "http://" + addr + "/debug/gc", pid: cmd.Process.Pid, stop: stop}, nil
	case <-time.After(15 * time.Second):
		stop()
		return nil, errors.New("hub child did not start within 15 s")
	}
}

func vmRSSKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// scrape reads plain gauges from a Prometheus text endpoint.
func scrape(url string, names ...string) map[string]float64 {
	out := map[string]float64{}
	if url == "" {
		return out
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		for _, n := range names {
			if v, ok := strings.CutPrefix(sc.Text(), n+" "); ok {
				out[n], _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
			}
		}
	}
	return out
}

// sourceDialer binds client i to 127.<1+k/250>.<k%250+1>.1-ish addresses so
// that at most perIP clients share one source IP, like real nodes would.
func sourceDialer(i, perIP int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	k := i / perIP
	ip := net.IPv4(127, byte(1+k/250), byte(k%250+1), 1)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
	return d.DialContext
}

type errTracker struct {
	n     atomic.Int64
	mu    sync.Mutex
	first string
}

func (e *errTracker) add(err error) {
	if e.n.Add(1) == 1 {
		e.mu.Lock()
		e.first = err.Error()
		e.mu.Unlock()
	}
}

func runLoad(cfg config) (*result, error) {
	if cfg.clients < 2 {
		return nil, errors.New("-clients must be at least 2")
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	var hp *hubProc
	if cfg.hub == "" {
		var err error
		if hp, err = startChildHub(); err != nil {
			return nil, err
		}
		defer hp.stop()
	} else {
		hp = &hubProc{base: cfg.hub, pid: cfg.hubPID, stop: func() {}}
		if u, err := signal.CanonicalURL(cfg.hub); err == nil {
			hp.metricsURL = "http" + strings.TrimPrefix(strings.TrimSuffix(strings.TrimSuffix(u, "/"), signal.SignalPath), "ws") + "/metrics"
		}
	}
	time.Sleep(200 * time.Millisecond) // let the child settle before the baseline
	res := &result{Clients: cfg.clients, Calls: cfg.calls}
	var errs errTracker
	gauges := []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes"}
	base := scrape(hp.metricsURL, gauges...)
	res.HubRSSBaseKiB = vmRSSKiB(hp.pid)

	// Register all clients, regConc at a time.
	clients := make([]*signal.Client, cfg.clients)
	defer func() {
		var wg sync.WaitGroup
		for _, c := range clients {
			if c != nil {
				wg.Add(1)
				go func() { defer wg.Done(); c.Close() }()
			}
		}
		wg.Wait()
	}()
	sem := make(chan struct{}, cfg.regConc)
	var regWG sync.WaitGroup
	var registered atomic.Int64
	regStart := time.Now()
	for i := range clients {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		up := make(chan struct{}, 1)
		c, err := signal.NewClient(signal.ClientConfig{
			HubURL: hp.base, Key: key, NetDialContext: sourceDialer(i, cfg.perIP),
			BackoffMin: 200 * time.Millisecond, BackoffMax: 5 * time.Second,
			OnState: func(ok bool) {
				if ok {
					select {
					case up <- struct{}{}:
					default:
					}
				}
			},
			OnCall: func(s *signal.Session) {
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				s.Send(sctx, signal.Signal{Kind: signal.KindCred, Ufrag: "ufrag", Pwd: "password-password"})
				select {
				case <-s.Done():
				case <-sctx.Done():
					s.Close()
				}
			},
		})
		if err != nil {
			return nil, err
		}
		clients[i] = c
		sem <- struct{}{}
		regWG.Add(1)
		go func() {
			defer regWG.Done()
			defer func() { <-sem }()
			select {
			case <-up:
				registered.Add(1)
			case <-time.After(60 * time.Second):
				errs.add(fmt.Errorf("client %d: not registered within 60 s", i))
			case <-ctx.Done():
				errs.add(ctx.Err())
			}
		}()
	}
	regWG.Wait()
	regDur := time.Since(regStart)
	res.Registered = int(registered.Load())
	res.RegistrationsPerS = float64(res.Registered) / regDur.Seconds()

	time.Sleep(time.Second) // settle: let the hub finish allocating for the burst
	loaded := scrape(hp.metricsURL, gauges...)
	res.HubRSSKiB = vmRSSKiB(hp.pid)
	if n := float64(res.Registered); n > 0 {
		res.HubRSSPerConnKiB = float64(res.HubRSSKiB-res.HubRSSBaseKiB) / n
		res.HubGoroutinesPerCn = (loaded["go_goroutines"] - base["go_goroutines"]) / n
		res.HubHeapPerConnKiB = (loaded["go_memstats_heap_inuse_bytes"] - base["go_memstats_heap_inuse_bytes"]) / 1024 / n
		res.HubStackPerConnKiB = (loaded["go_memstats_stack_inuse_bytes"] - base["go_memstats_stack_inuse_bytes"]) / 1024 / n
	}

	if hp.gcURL != "" {
		c := http.Client{Timeout: 30 * time.Second}
		if resp, err := c.Get(hp.gcURL); err == nil {
			resp.Body.Close()
			after := scrape(hp.metricsURL, gauges...)
			res.HubRSSAfterGCPerConnKiB = float64(vmRSSKiB(hp.pid)-res.HubRSSBaseKiB) / float64(max(res.Registered, 1))
			res.HubStackAfterGCPerConnKiB = (after["go_memstats_stack_inuse_bytes"] - base["go_memstats_stack_inuse_bytes"]) / 1024 / float64(max(res.Registered, 1))
		}
	}

	// Calls between random pairs.
	var mu sync.Mutex
	var setups []time.Duration
	jobs := make(chan [2]int)
	var callWG sync.WaitGroup
	for w := 0; w < cfg.callConc; w++ {
		callWG.Add(1)
		go func() {
			defer callWG.Done()
			for p := range jobs {
				d, err := oneCall(ctx, clients[p[0]], clients[p[1]])
				if err != nil {
					errs.add(fmt.Errorf("call %d->%d: %w", p[0], p[1], err))
					continue
				}
				mu.Lock()
				setups = append(setups, d)
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < cfg.calls; i++ {
		a := mrand.IntN(cfg.clients)
		b := mrand.IntN(cfg.clients - 1)
		if b >= a {
			b++
		}
		jobs <- [2]int{a, b}
	}
	close(jobs)
	callWG.Wait()
	res.CallsOK = len(setups)
	sort.Slice(setups, func(i, j int) bool { return setups[i] < setups[j] })
	if n := len(setups); n > 0 {
		res.CallSetupP50MS = float64(setups[n/2].Microseconds()) / 1000
		res.CallSetupP99MS = float64(setups[min(n-1, n*99/100)].Microseconds()) / 1000
	}
	res.Errors = int(errs.n.Load())
	res.FirstError = errs.first
	return res, nil
}

// oneCall measures call placed → caller received the first relayed frame.
// That frame is the callee's credentials, sent from its OnCall handler, so
// its arrival also proves the callee got the incoming call.
func oneCall(ctx context.Context, caller, callee *signal.Client) (time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	s, err := caller.Call(cctx, a2al.NodeIDFromAddress(callee.Address()))
	if err != nil {
		return 0, err
	}
	defer s.Close()
	m, err := s.Recv(cctx)
	if err != nil {
		return 0, fmt.Errorf("first frame: %w", err)
	}
	if m.Kind != signal.KindCred {
		return 0, fmt.Errorf("first frame is %q, want cred", m.Kind)
	}
	return time.Since(start), nil
}

func runHub() error {
	cfg := signal.DefaultHubConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h, err := signal.NewHub(cfg)
	if err != nil {
		return err
	}
	defer h.Close()
	return serveHubProcess(h)
}
