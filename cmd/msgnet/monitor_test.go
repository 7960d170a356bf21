package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/monitor"
)

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// httpGet fetches url with hc and returns the status and body.
func httpGet(t *testing.T, hc *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// startMonitored runs `msgnet serve --monitor ADDR extra...` and waits
// until the monitor answers. It returns the server's and the monitor's
// addresses and an HTTP client.
func startMonitored(t *testing.T, extra ...string) (addr, mon string, hc *http.Client) {
	t.Helper()
	mon = freeAddr(t)
	addr = startServe(t, append([]string{"--monitor", mon}, extra...)...)
	hc = &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := hc.Get("http://" + mon + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr, mon, hc
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("monitor on %s did not answer: %v", mon, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metricValue finds a sample line "series value" in a text exposition.
func metricValue(t *testing.T, body, series string) string {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	t.Fatalf("%s not in /metrics:\n%s", series, body)
	return ""
}

func TestServeMonitor(t *testing.T) {
	addr, mon, hc := startMonitored(t)

	c := msgnet.NewClient("watcher")
	got := make(chan string, 10)
	c.OnMessage(func(m []byte) { got <- string(m) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range []string{"one", "two", "three"} {
		c.SendString(m)
		expectMsg(t, got, "Echo: "+m)
	}
	// The echo can arrive a moment before the server counts it as sent,
	// and the connection startServe made to see the server up ends on its
	// own time.
	var body string
	deadline := time.Now().Add(5 * time.Second)
	for {
		var code int
		code, body = httpGet(t, hc, "http://"+mon+"/metrics")
		if code != http.StatusOK {
			t.Fatalf("/metrics: %d\n%s", code, body)
		}
		if metricValue(t, body, `msgnet_frames_sent_total{kind="DATA"}`) == "3" && metricValue(t, body, "msgnet_sessions_open") == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("3 DATA frames never counted as sent:\n%s", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for series, want := range map[string]string{
		`msgnet_frames_received_total{kind="DATA"}`: "3",
		`msgnet_connections_accepted_total`:         "2", // startServe's probe, then the client
		`msgnet_server_running`:                     "1",
	} {
		if v := metricValue(t, body, series); v != want {
			t.Errorf("%s = %s, want %s", series, v, want)
		}
	}

	code, vbody := httpGet(t, hc, "http://"+mon+"/varz")
	var v monitor.Varz
	if err := json.Unmarshal([]byte(vbody), &v); code != http.StatusOK || err != nil {
		t.Fatalf("/varz: %d %v\n%s", code, err, vbody)
	}
	if v.ServerID != "main_server" || v.Addr != addr || v.Sessions != 1 || v.FramesIn["DATA"] != 3 {
		t.Errorf("/varz: %+v", v)
	}

	code, cbody := httpGet(t, hc, "http://"+mon+"/connz")
	var cz monitor.Connz
	if err := json.Unmarshal([]byte(cbody), &cz); code != http.StatusOK || err != nil {
		t.Fatalf("/connz: %d %v\n%s", code, err, cbody)
	}
	if cz.Total != 1 || cz.Sessions[0].ClientID != "watcher" || cz.Sessions[0].ID != c.SessionID() {
		t.Errorf("/connz: %+v", cz)
	}

	// Profiles are off unless --pprof is given.
	if code, _ := httpGet(t, hc, "http://"+mon+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without --pprof: %d, want 404", code)
	}
}

func TestServeMonitorPprof(t *testing.T) {
	_, mon, hc := startMonitored(t, "--pprof")
	if code, body := httpGet(t, hc, "http://"+mon+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/: %d\n%s", code, body)
	}
}

func TestServeMonitorFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"serve", "--addr", freeAddr(t), "--pprof"}, nil, &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), "--pprof needs --monitor") {
		t.Errorf("--pprof alone: exit %d, %q", code, errOut.String())
	}

	// A monitor address that is taken stops serve with an error.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	errOut.Reset()
	code = run(context.Background(), []string{"serve", "--addr", freeAddr(t), "--monitor", l.Addr().String()}, nil, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "address already in use") {
		t.Errorf("taken --monitor address: exit %d, %q", code, errOut.String())
	}
}

// The monitor listener also serves the live page and its WebSocket chat.
func TestServeMonitorLivePage(t *testing.T) {
	_, mon, hc := startMonitored(t)
	code, body := httpGet(t, hc, "http://"+mon+"/")
	if code != http.StatusOK || !strings.Contains(body, "msgnet") || !strings.Contains(body, "id=\"sessions\"") {
		t.Fatalf("/: %d\n%s", code, body)
	}
	if code, _ := httpGet(t, hc, "http://"+mon+"/msgnet.js"); code != http.StatusOK {
		t.Fatalf("/msgnet.js: %d", code)
	}
	code, body = httpGet(t, hc, "http://"+mon+"/api/sessions")
	if code != http.StatusOK || !strings.HasPrefix(strings.TrimSpace(body), "{") && !strings.HasPrefix(strings.TrimSpace(body), "[") {
		t.Fatalf("/api/sessions: %d %s", code, body)
	}
	// /metrics is still the monitor's.
	if code, body := httpGet(t, hc, "http://"+mon+"/metrics"); code != http.StatusOK || !strings.Contains(body, "msgnet_") {
		t.Fatalf("/metrics under the page: %d", code)
	}
}
