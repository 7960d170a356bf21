package monitor

import (
	"fmt"
	"html"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"time"
)

// The profile endpoints are written on runtime/pprof rather than imported
// from net/http/pprof: importing that package registers its handlers on
// http.DefaultServeMux, which would expose profiles in every program that
// links this package and serves the default mux, whether or not it asked
// for them. These serve the same paths and formats, so `go tool pprof
// http://ADDR/debug/pprof/heap` and the like work as usual.

func registerPprof(mux *http.ServeMux) {
	mux.Handle("GET /debug/pprof", http.RedirectHandler("/debug/pprof/", http.StatusMovedPermanently))
	mux.HandleFunc("GET /debug/pprof/{$}", pprofIndex)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprofCmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprofCPU)
	mux.HandleFunc("GET /debug/pprof/trace", pprofTrace)
	mux.HandleFunc("GET /debug/pprof/{name}", pprofNamed)
}

// pprofIndex lists the profiles.
func pprofIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html><head><title>/debug/pprof/</title></head><body>\n<h1>/debug/pprof/</h1>\n<table>\n")
	b.WriteString("<tr><th>count</th><th>profile</th></tr>\n")
	for _, p := range pprof.Profiles() {
		name := html.EscapeString(p.Name())
		fmt.Fprintf(&b, "<tr><td>%d</td><td><a href=\"%s?debug=1\">%s</a></td></tr>\n", p.Count(), name, name)
	}
	b.WriteString("</table>\n<p><a href=\"profile?seconds=30\">profile</a>: CPU profile (?seconds=N, default 30)<br>\n")
	b.WriteString("<a href=\"trace?seconds=1\">trace</a>: execution trace (?seconds=N, default 1)<br>\n")
	b.WriteString("<a href=\"cmdline\">cmdline</a>: the command line<br>\n")
	b.WriteString("?debug=0 (the default) gives the binary format for go tool pprof; ?debug=1 and ?debug=2 give text.</p>\n</body></html>\n")
	fmt.Fprint(w, b.String())
}

// pprofCmdline writes the command line, arguments separated by NUL bytes.
func pprofCmdline(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	fmt.Fprint(w, strings.Join(os.Args, "\x00"))
}

// pprofNamed writes a named profile (heap, goroutine, allocs, block,
// mutex, threadcreate, ...). ?debug=N picks the format; ?gc=1 runs a
// garbage collection before a heap profile.
func pprofNamed(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	p := pprof.Lookup(name)
	if p == nil {
		http.Error(w, "unknown profile "+strconv.Quote(name), http.StatusNotFound)
		return
	}
	if r.FormValue("seconds") != "" {
		http.Error(w, "delta profiles (?seconds=) are not served; take two profiles and compare them with go tool pprof -base", http.StatusBadRequest)
		return
	}
	debug, err := intParam(r, "debug", 0)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if name == "heap" && r.FormValue("gc") != "" && r.FormValue("gc") != "0" {
		runtime.GC()
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if debug == 0 {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	p.WriteTo(w, debug)
}

// pprofCPU writes a CPU profile of ?seconds=N (default 30).
func pprofCPU(w http.ResponseWriter, r *http.Request) {
	d, err := durationParam(r, 30*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="profile"`)
	if err := pprof.StartCPUProfile(w); err != nil {
		http.Error(w, "cannot start a CPU profile: "+err.Error(), http.StatusInternalServerError)
		return
	}
	wait(r, d)
	pprof.StopCPUProfile()
}

// pprofTrace writes an execution trace of ?seconds=N (default 1).
func pprofTrace(w http.ResponseWriter, r *http.Request) {
	d, err := durationParam(r, time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="trace"`)
	if err := trace.Start(w); err != nil {
		http.Error(w, "cannot start a trace: "+err.Error(), http.StatusInternalServerError)
		return
	}
	wait(r, d)
	trace.Stop()
}

// wait returns after d, or sooner if the request is cancelled.
func wait(r *http.Request, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

func intParam(r *http.Request, name string, def int) (int, error) {
	s := r.FormValue(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s %q: want a whole number >= 0", name, s)
	}
	return n, nil
}

// durationParam reads ?seconds=N (a number > 0, fractions allowed).
func durationParam(r *http.Request, def time.Duration) (time.Duration, error) {
	s := r.FormValue("seconds")
	if s == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !(f > 0) || f > 3600 {
		return 0, fmt.Errorf("seconds %q: want a number of seconds > 0 and <= 3600", s)
	}
	return time.Duration(f * float64(time.Second)), nil
}
