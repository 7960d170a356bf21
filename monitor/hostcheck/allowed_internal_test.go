package hostcheck

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

// The rules of the package documentation, one host at a time, for a
// server that received the request on 10.0.0.5.
func TestAllowed(t *testing.T) {
	c, err := New("monitor.example.com", "*.internal.example", "192.0.2.7", "[2001:db8::7]")
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddr("10.0.0.5")
	for host, want := range map[string]bool{
		"localhost":                  true,
		"127.0.0.1":                  true,
		"127.1.2.3":                  true, // all of 127.0.0.0/8
		"::1":                        true,
		"::ffff:127.0.0.1":           true,
		"10.0.0.5":                   true, // the address the request came in on
		"::ffff:10.0.0.5":            true,
		"10.0.0.6":                   false, // another address of the same network
		"monitor.example.com":        true,
		"a.internal.example":         true,
		"a.b.internal.example":       true,
		"internal.example":           false, // *.x is the names under x, not x
		"xinternal.example":          false,
		"192.0.2.7":                  true,
		"2001:db8::7":                true,
		"2001:db8:0:0:0:0:0:7":       true,  // the same address, written out
		"evil.example":               false, // the rebinding attack
		"localhost.evil.example":     false,
		"127.0.0.1.evil.example":     false,
		"10.0.0.5.nip.io":            false,
		"example.com":                false,
		"monitor.example.com.evil":   false,
		"":                           false,
		"0.0.0.0":                    false,
		"monitor-example.com":        false,
		"evilmonitor.example.com":    false,
		"sub.monitor.example.com":    false, // no wildcard for it
		"a.internal.example.evil.io": false,
	} {
		if got := c.allowed(host, local); got != want {
			t.Errorf("allowed(%q) = %v, want %v", host, got, want)
		}
	}
	// Without a local address (a server that does not say), the loopback
	// names and the list still apply.
	if !c.allowed("localhost", netip.Addr{}) || c.allowed("10.0.0.5", netip.Addr{}) {
		t.Error("without a local address: localhost refused or 10.0.0.5 allowed")
	}
}

func TestHostname(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM:8222":   "example.com",
		"example.com.":       "example.com",
		"example.com.:80":    "example.com",
		"[::1]:8222":         "::1",
		"[::1]":              "::1",
		"::1":                "::1",
		"127.0.0.1:8222":     "127.0.0.1",
		"evil.example":       "evil.example",
		"a:b:c":              "a:b:c", // not host:port; refused as a host
		"[fe80::1%25en0]:80": "fe80::1%25en0",
	} {
		if got := hostname(in); got != want {
			t.Errorf("hostname(%q) = %q, want %q", in, got, want)
		}
	}
}

// localIP reads the address a real connection was accepted on.
func TestLocalIP(t *testing.T) {
	got := make(chan netip.Addr, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- localIP(r)
	}))
	defer ts.Close()
	resp, err := ts.Client().Get(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case ip := <-got:
		if ip != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("localIP = %v, want 127.0.0.1", ip)
		}
	default:
		t.Fatal("the handler did not run before the response came back")
	}
}

func TestNewRefuses(t *testing.T) {
	for _, bad := range []string{"", "  ", "example.com:8222", "http://example.com", "example.com/x",
		"*", "*.", "a..b", "exa mple.com", "[::1]:80", "ex*ample.com", "*.*.example.com"} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%q) accepted it", bad)
		}
	}
	if _, err := New("Example.COM.", " *.Example.com ", "::1", "[2001:db8::1]", "10.0.0.1", "under_score.example"); err != nil {
		t.Errorf("New refused valid hosts: %v", err)
	}
}
