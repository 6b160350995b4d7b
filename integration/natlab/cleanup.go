package natlab

import (
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Namespace names are "a2l<pid>x<lab>-<node>". The PID lets a later run tell
// namespaces of a dead (crashed, killed, timed-out) run from those of a
// concurrent live run, so the start-up sweep never breaks a parallel lab.
var staleName = regexp.MustCompile(`^a2l([0-9]+)x[0-9]+-`)

var (
	sweepOnce  sync.Once
	signalOnce sync.Once

	liveMu   sync.Mutex
	liveLabs = map[*Lab]struct{}{}
)

// sweepStale removes namespaces left behind by natlab processes that no
// longer exist. It returns the names it removed.
func sweepStale() []string {
	names, err := listNetNS()
	if err != nil {
		return nil
	}
	var removed []string
	for _, name := range names {
		m := staleName.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil {
			continue
		}
		if pid == os.Getpid() || processOwns(pid, name) {
			continue
		}
		if deleteNetNS(name) == nil {
			removed = append(removed, name)
		}
	}
	return removed
}

// processOwns reports whether pid is alive and started before the namespace
// was created (so a recycled PID does not protect stale namespaces).
func processOwns(pid int, nsName string) bool {
	pst, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	if err != nil {
		return false
	}
	nst, err := os.Stat(netnsDir + "/" + nsName)
	if err != nil {
		return false
	}
	return !pst.ModTime().After(nst.ModTime().Add(time.Second))
}

// installSignalHandler tears down every live lab on SIGINT/SIGTERM (Ctrl-C on
// `go test`, CI cancellation), because the testing package would otherwise
// exit without running t.Cleanup.
func installSignalHandler() {
	signalOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
		go func() {
			sig := <-ch
			fmt.Fprintf(os.Stderr, "natlab: %v: removing lab namespaces\n", sig)
			liveMu.Lock()
			labs := make([]*Lab, 0, len(liveLabs))
			for l := range liveLabs {
				labs = append(labs, l)
			}
			liveMu.Unlock()
			for _, l := range labs {
				l.teardown()
			}
			os.Exit(130)
		}()
	})
}

func registerLab(l *Lab) {
	liveMu.Lock()
	liveLabs[l] = struct{}{}
	liveMu.Unlock()
}

func unregisterLab(l *Lab) {
	liveMu.Lock()
	delete(liveLabs, l)
	liveMu.Unlock()
}
