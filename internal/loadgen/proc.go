package loadgen

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// procRoot is where /proc is; tests point it elsewhere.
var procRoot = "/proc"

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat times. It is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// ProcCPU returns the user plus system CPU time that process pid has used,
// from /proc/PID/stat (fields utime and stime, which include threads that
// have exited).
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/stat", procRoot, pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("loadgen: unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state is field 3, utime field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("loadgen: short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("loadgen: bad times in /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// ProcRSS returns the resident set size of process pid in bytes, from the
// VmRSS line of /proc/PID/status.
func ProcRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/status", procRoot, pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			break
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			break
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("loadgen: no VmRSS in /proc/%d/status", pid)
}

// serverProbe samples the server process at the start and the end of a
// window. With no PID it does nothing.
type serverProbe struct {
	r      *runner
	pid    int
	cpu0   time.Duration
	rss0   int64
	failed bool
	self0  time.Duration // the load tool's own CPU time, -1 if unknown
}

// begin takes the first sample.
func (r *runner) probeBegin() *serverProbe {
	p := &serverProbe{r: r, pid: r.cfg.PID, self0: -1}
	if c, err := ProcCPU(os.Getpid()); err == nil {
		p.self0 = c
	}
	if p.pid <= 0 {
		return p
	}
	var err error
	if p.cpu0, err = ProcCPU(p.pid); err != nil {
		r.errs.add(fmt.Errorf("server stats: %w", err))
		p.failed = true
		return p
	}
	if p.rss0, err = ProcRSS(p.pid); err != nil {
		r.errs.add(fmt.Errorf("server stats: %w", err))
		p.failed = true
	}
	return p
}

// selfCPU returns the load tool's CPU time since begin, or 0 when unknown.
func (p *serverProbe) selfCPU() float64 {
	if p.self0 < 0 {
		return 0
	}
	c, err := ProcCPU(os.Getpid())
	if err != nil {
		return 0
	}
	return (c - p.self0).Seconds()
}

// end takes the second sample and returns the difference, or nil with no
// PID or when a sample failed.
func (p *serverProbe) end() *ServerStats {
	if p.pid <= 0 || p.failed {
		return nil
	}
	cpu, err := ProcCPU(p.pid)
	if err != nil {
		p.r.errs.add(fmt.Errorf("server stats: %w", err))
		return nil
	}
	rss, err := ProcRSS(p.pid)
	if err != nil {
		p.r.errs.add(fmt.Errorf("server stats: %w", err))
		return nil
	}
	return &ServerStats{
		PID:        p.pid,
		CPUSeconds: (cpu - p.cpu0).Seconds(),
		RSSBefore:  p.rss0,
		RSSAfter:   rss,
	}
}
