package main

import (
	"bufio"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
)

// measureMemory records what the idle nodes cost once the measurements are
// over: Go heap, goroutine stacks, goroutines and the process's resident set,
// each per live node (the heap and stack figures net of what the process held
// before the first node existed; RSS is the whole process, simulator
// included, after the garbage was collected and its pages returned to the
// OS, so it is what the idle network occupies; the peak is reported beside).
func (w *world) measureMemory(res *result, baseHeap, baseStack uint64, baseG int) {
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	live := float64(w.liveCount())
	res.HeapPerNodeKiB = float64(int64(ms.HeapAlloc)-int64(baseHeap)) / 1024 / live
	res.StackPerNodeKiB = float64(int64(ms.StackInuse)-int64(baseStack)) / 1024 / live
	res.GoroutinesPerNode = float64(runtime.NumGoroutine()-baseG) / live
	if kib, ok := rssKiB(); ok {
		res.RSSPerNodeKiB = float64(kib) / live
	}
	if kib, ok := peakRSSKiB(); ok {
		res.PeakRSSMiB = float64(kib) / 1024
	}
	if w.o.memprofile != "" {
		f, err := os.Create(w.o.memprofile)
		if err != nil {
			progress("heap profile: %v", err)
			return
		}
		defer f.Close()
		if err := pprof.WriteHeapProfile(f); err != nil {
			progress("heap profile: %v", err)
		}
	}
}

// rssKiB is the process's resident set (VmRSS of /proc/self/status).
func rssKiB() (uint64, bool) { return statusKiB("VmRSS:") }

// peakRSSKiB is the process's peak resident set (VmHWM).
func peakRSSKiB() (uint64, bool) { return statusKiB("VmHWM:") }

func statusKiB(field string) (uint64, bool) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, field) {
			continue
		}
		fs := strings.Fields(line[len(field):])
		if len(fs) == 0 {
			return 0, false
		}
		v, err := strconv.ParseUint(fs[0], 10, 64)
		return v, err == nil
	}
	return 0, false
}
