package loadgen

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// CPUWait is how long the threads of the server and of the load tool were
// runnable but waiting for a CPU over the window, summed over their
// threads, from /proc/PID/task/*/schedstat. On a machine shared with other
// work it says how much of the window the others took: a server that
// waited while messages queued up was slowed by its neighbours, not by its
// own cost.
type CPUWait struct {
	Server float64 `json:"server_seconds,omitempty"`
	Load   float64 `json:"load_seconds"`
}

// ProcRunWait returns the time the threads of process pid have spent
// waiting on a run queue, summed over the threads alive now (the second
// field of each /proc/PID/task/TID/schedstat, in nanoseconds).
func ProcRunWait(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("%s/%d/task/*/schedstat", procRoot, pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("loadgen: no schedstat for process %d", pid)
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread has just exited
		}
		f := bytes.Fields(b)
		if len(f) < 2 {
			return 0, fmt.Errorf("loadgen: unexpected %s", t)
		}
		ns, err := strconv.ParseInt(string(f[1]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("loadgen: unexpected %s", t)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

// runWaitSample is a sample of ProcRunWait for the load tool and the
// server (-1 where unknown).
type runWaitSample struct{ load, server time.Duration }

func (r *runner) sampleRunWait() runWaitSample {
	s := runWaitSample{load: -1, server: -1}
	if d, err := ProcRunWait(os.Getpid()); err == nil {
		s.load = d
	}
	if r.cfg.PID > 0 {
		if d, err := ProcRunWait(r.cfg.PID); err == nil {
			s.server = d
		}
	}
	return s
}

// cpuWait is the difference of two samples, or nil when the load tool's
// own is unknown (no /proc).
func cpuWait(a, b runWaitSample) *CPUWait {
	if a.load < 0 || b.load < 0 {
		return nil
	}
	w := &CPUWait{Load: (b.load - a.load).Seconds()}
	if a.server >= 0 && b.server >= 0 {
		w.Server = (b.server - a.server).Seconds()
	}
	return w
}
