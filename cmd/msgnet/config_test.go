package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/tlsconfig"
)

func writeTOML(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A config file can set every flag of serve: the test gives each a value
// other than its default, of the flag's own type, and checks it arrives.
// A flag added later is covered without a change here.
func TestConfigCoversEveryFlag(t *testing.T) {
	cmd := newServeCmd(io.Discard)
	var file strings.Builder
	want := map[string]string{}
	n := 0
	cmd.fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		n++
		var toml, text string
		switch v := f.Value.(flag.Getter).Get().(type) {
		case bool:
			toml = strconv.FormatBool(!v)
			text = toml
		case int:
			toml = strconv.Itoa(v + 7 + n)
			text = toml
		case float64:
			toml = strconv.FormatFloat(v+1.5, 'f', -1, 64)
			text = toml
		case time.Duration:
			d := v + time.Duration(n)*time.Second
			toml, text = strconv.Quote(d.String()), d.String()
		case size:
			toml = strconv.Itoa(int(v) + 1000 + n)
			text = toml
		case string:
			text = "value-of-" + f.Name
			toml = strconv.Quote(text)
		default:
			t.Fatalf("--%s has a type the test does not know: %T", f.Name, v)
		}
		fmt.Fprintf(&file, "%s = %s\n", f.Name, toml)
		want[f.Name] = text
	})
	path := writeTOML(t, "all.toml", file.String())
	cmd = newServeCmd(io.Discard)
	st, err := cmd.parse([]string{"--config", path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range want {
		if got := cmd.fs.Lookup(name).Value.String(); got != v {
			t.Errorf("--%s: got %q from the file, want %q", name, got, v)
		}
		if !st.fromFile[name] {
			t.Errorf("--%s not reported as set by the file", name)
		}
	}
	if len(want) < 40 {
		t.Fatalf("only %d flags: the test did not see serve's features", len(want))
	}
}

// Tables prefix the flags' names, lists become comma-separated values,
// and sizes may be numbers or text with a unit.
func TestConfigTablesAndLists(t *testing.T) {
	path := writeTOML(t, "t.toml", `
message-size-limit = "64KiB"
send-queue-bytes = 65536
[cluster]
listen = "127.0.0.1:0"
routes = ["nats-route://a:1", "nats-route://b:2"]
`)
	cmd := newServeCmd(io.Discard)
	if _, err := cmd.parse([]string{"--config", path}, nil); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"message-size-limit": "65536", "send-queue-bytes": "65536",
		"cluster-listen": "127.0.0.1:0", "cluster-routes": "nats-route://a:1,nats-route://b:2",
	} {
		if got := cmd.fs.Lookup(name).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", name, got, want)
		}
	}
}

// An unknown key, a value of the wrong type or an unparsable one is an
// error that names the key and the file; so is a broken file, with its
// line. Nothing falls back to a default in silence.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ content, want string }{
		{"max-conections = 10\n", `unknown key "max-conections"`},
		{"[cluster]\nlisen = \"x\"\n", `unknown key "cluster-lisen"`},
		{"max-connections = \"many\"\n", `key "max-connections": want an integer, got a string`},
		{"quiet = 1\n", `key "quiet": want true or false, got an integer`},
		{"idle-timeout = 30\n", `key "idle-timeout": want a duration such as "30s", got an integer`},
		{"idle-timeout = \"soon\"\n", `key "idle-timeout":`},
		{"message-size-limit = \"big\"\n", `key "message-size-limit": not a size`},
		{"addr = [1, 2]\n", `key "addr": want a string or a list of strings, got a list`},
		{"config = \"other.toml\"\n", `unknown key "config"`},
		{"max-connections = 10\nmax-connections = 11\n", "line 2"},
	} {
		path := writeTOML(t, "bad.toml", tc.content)
		cmd := newServeCmd(io.Discard)
		_, err := cmd.parse([]string{"--config", path}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: got %v, want an error naming the file and %s", tc.content, err, tc.want)
		}
	}
	// The command itself exits 2 with the message.
	path := writeTOML(t, "bad.toml", "max-conections = 10\n")
	var out bytes.Buffer
	if code := run(context.Background(), []string{"serve", "--config", path}, nil, &out, &out); code != 2 || !strings.Contains(out.String(), "max-conections") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
}

// Flags override the environment, which overrides the file.
func TestConfigPrecedence(t *testing.T) {
	path := writeTOML(t, "p.toml", "max-connections = 10\nidle-timeout = \"10s\"\nid = \"from-file\"\n")
	env := []string{"MSGNET_MAX_CONNECTIONS=20", "MSGNET_IDLE_TIMEOUT=20s", "MSGNET_REQUIRE_TOOLS=1", "PATH=/bin"}
	cmd := newServeCmd(io.Discard)
	st, err := cmd.parse([]string{"--config", path, "--max-connections", "30"}, env)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"max-connections": "30", "idle-timeout": "20s", "id": "from-file"} {
		if got := cmd.fs.Lookup(name).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", name, got, want)
		}
	}
	if st.fromEnv["idle-timeout"] != "MSGNET_IDLE_TIMEOUT" || st.fromEnv["max-connections"] != "" || len(st.warnings) != 0 {
		t.Fatalf("sources: env %v, warnings %v", st.fromEnv, st.warnings)
	}
	// An MSGNET_ variable that names no setting is reported, not fatal; a
	// bad value in one that does is an error naming it.
	cmd = newServeCmd(io.Discard)
	if st, err := cmd.parse(nil, []string{"MSGNET_MAX_CONECTIONS=5"}); err != nil || len(st.warnings) != 1 {
		t.Fatalf("a misspelt variable: %v, warnings %v", err, st.warnings)
	}
	cmd = newServeCmd(io.Discard)
	if _, err := cmd.parse(nil, []string{"MSGNET_MAX_CONNECTIONS=lots"}); err == nil || !strings.Contains(err.Error(), "MSGNET_MAX_CONNECTIONS") {
		t.Fatalf("a bad value: %v", err)
	}
	// MSGNET_CONFIG names the file when --config does not.
	t.Setenv("MSGNET_CONFIG", path)
	cmd = newServeCmd(io.Discard)
	if _, err := cmd.parse(nil, nil); err != nil || cmd.fs.Lookup("id").Value.String() != "from-file" {
		t.Fatalf("MSGNET_CONFIG: %v, id %s", err, cmd.fs.Lookup("id").Value)
	}
}

// The sample files under examples/config, a three-node cluster with TLS,
// authentication and limits, are valid settings of serve.
func TestConfigSamples(t *testing.T) {
	files, err := filepath.Glob("../../examples/config/*.toml")
	if err != nil || len(files) != 3 {
		t.Fatalf("samples: %v %v", files, err)
	}
	for i, f := range files {
		cmd := newServeCmd(io.Discard)
		st, err := cmd.parse([]string{"--config", f}, nil)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, name := range []string{"tls-cert", "tls-client-ca", "auth-keys-file", "cluster-listen", "cluster-routes",
			"cluster-auth-file", "cluster-tls-ca", "max-connections", "max-queued-bytes", "monitor"} {
			if !st.fromFile[name] {
				t.Errorf("%s does not set --%s", f, name)
			}
		}
		if id := cmd.fs.Lookup("id").Value.String(); id != fmt.Sprint("node", i+1) {
			t.Errorf("%s: id %q", f, id)
		}
		if routes := strings.Split(cmd.fs.Lookup("cluster-routes").Value.String(), ","); len(routes) != 2 {
			t.Errorf("%s: routes %v, want the two other nodes", f, routes)
		}
		if _, err := cmd.level(); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		l := limitsFromFlags(cmd.fs)
		if l.MaxConnections != 20000 || l.MessageSize != 1<<20 || l.ServerQueueBytes != 512<<20 {
			t.Errorf("%s: limits %+v", f, l)
		}
	}
}

// A reload applies the limits and the log level that changed, and refuses,
// with a message, a change that needs a restart.
func TestReloadAppliesLimitsRefusesTheRest(t *testing.T) {
	path := writeTOML(t, "r.toml", "max-connections = 100\nmax-groups-per-session = 10\n")
	cmd := newServeCmd(io.Discard)
	args := []string{"--config", path, "--addr", "127.0.0.1:0"}
	if _, err := cmd.parse(args, nil); err != nil {
		t.Fatal(err)
	}
	srv := msgnet.NewServer("r", msgnet.WithLimits(limitsFromFlags(cmd.fs)))
	defer srv.Close()
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var level slog.LevelVar
	os.WriteFile(path, []byte("max-connections = 1\nmax-groups-per-session = 10\nlog-level = \"warn\"\nmode = \"echo\"\n"), 0o600)
	reload(cmd, args, nil, srv, &level, log)
	if l := srv.Limits(); l.MaxConnections != 1 || l.MaxGroupsPerSession != 10 {
		t.Fatalf("limits after reload: %+v", l)
	}
	if level.Level() != slog.LevelWarn {
		t.Fatalf("log level %v", level.Level())
	}
	out := logs.String()
	for _, want := range []string{"setting=max-connections value=1", "setting=log-level value=warn",
		"needs a restart", "setting=mode running=managed new=echo"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %q:\n%s", want, out)
		}
	}
	if cmd.fs.Lookup("mode").Value.String() != "managed" {
		t.Fatal("a refused setting was applied")
	}
}

func tlsTestFiles(t *testing.T, dir string) tlsconfig.TestFiles {
	t.Helper()
	files, err := tlsconfig.WriteTestFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	return files
}
