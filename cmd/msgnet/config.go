package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Configuration for `msgnet serve`, as operators expect it: every flag can
// also come from a TOML file (--config FILE) and from an MSGNET_*
// environment variable. Flags override the environment, which overrides
// the file. A file's keys are the flags' names, at the top level or in
// tables whose names prefix them:
//
//	max-connections = 5000
//	[cluster]
//	listen = "10.0.0.1:6222"          # the flag --cluster-listen
//	routes = ["nats-route://10.0.0.2:6222", "nats-route://10.0.0.3:6222"]
//
// and MSGNET_MAX_CONNECTIONS=5000 sets --max-connections. An unknown key,
// or a value of the wrong type, is an error naming the key and the file.

// envPrefix starts the environment variables that set flags.
const envPrefix = "MSGNET_"

// notFlags are MSGNET_ variables of the project's tests and tools, not
// settings of serve.
var notFlags = map[string]bool{
	"MSGNET_REQUIRE_TOOLS": true, "MSGNET_TEST_FARM": true, "MSGNET_SEGMENT_SEED": true,
}

// settings says where each flag's value came from.
type settings struct {
	file     string            // the config file, "" without one
	cmdline  map[string]bool   // flags set on the command line
	fromEnv  map[string]string // flag → the variable that set it
	fromFile map[string]bool   // flags set by the file
	warnings []string          // MSGNET_ variables that set nothing
}

// applySettings applies the environment and the config file to the flags
// of fs that the command line did not set. fs has been parsed; file is
// --config's value (or MSGNET_CONFIG's).
func applySettings(fs *flag.FlagSet, file string, environ []string) (*settings, error) {
	st := &settings{file: file, cmdline: map[string]bool{}, fromEnv: map[string]string{}, fromFile: map[string]bool{}}
	fs.Visit(func(f *flag.Flag) { st.cmdline[f.Name] = true })
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) || notFlags[name] {
			continue
		}
		flagName := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, envPrefix), "_", "-"))
		if flagName == "config" {
			continue // --config's default (configFromEnv)
		}
		if fs.Lookup(flagName) == nil {
			st.warnings = append(st.warnings, fmt.Sprintf("environment variable %s names no setting of msgnet serve; ignored", name))
			continue
		}
		if st.cmdline[flagName] {
			continue
		}
		if err := fs.Set(flagName, value); err != nil {
			return nil, fmt.Errorf("environment variable %s: %v", name, err)
		}
		st.fromEnv[flagName] = name
	}
	if file == "" {
		return st, nil
	}
	values, err := readConfigFile(fs, file)
	if err != nil {
		return nil, err
	}
	for _, name := range sortedKeys(values) {
		if st.cmdline[name] || st.fromEnv[name] != "" {
			continue
		}
		if err := fs.Set(name, values[name]); err != nil {
			return nil, fmt.Errorf("%s: key %q: %v", file, name, err)
		}
		st.fromFile[name] = true
	}
	return st, nil
}

// readConfigFile reads a config file into flag values, checking every key
// against fs's flags and every value against the flag's type.
func readConfigFile(fs *flag.FlagSet, file string) (map[string]string, error) {
	var raw map[string]any
	if _, err := toml.DecodeFile(file, &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s: line %d: %s", file, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	values := map[string]string{}
	var walk func(prefix string, m map[string]any) error
	walk = func(prefix string, m map[string]any) error {
		for _, k := range sortedKeys(m) {
			name := prefix + k
			if sub, ok := m[k].(map[string]any); ok {
				if err := walk(name+"-", sub); err != nil {
					return err
				}
				continue
			}
			f := fs.Lookup(name)
			if f == nil || name == "config" {
				return fmt.Errorf("%s: unknown key %q: msgnet serve has no flag --%s", file, name, name)
			}
			s, err := flagText(f, m[k])
			if err != nil {
				return fmt.Errorf("%s: key %q: %v", file, name, err)
			}
			values[name] = s
		}
		return nil
	}
	return values, walk("", raw)
}

// flagText turns a TOML value into the text flag f parses, refusing a
// value of the wrong type: a flag's type is what its Get returns.
func flagText(f *flag.Flag, v any) (string, error) {
	var kind any
	if g, ok := f.Value.(flag.Getter); ok {
		kind = g.Get()
	}
	wrong := func(want string) error { return fmt.Errorf("want %s, got %s", want, tomlType(v)) }
	switch kind.(type) {
	case bool:
		b, ok := v.(bool)
		if !ok {
			return "", wrong("true or false")
		}
		return strconv.FormatBool(b), nil
	case int, int64, uint, uint64:
		n, ok := v.(int64)
		if !ok {
			return "", wrong("an integer")
		}
		return strconv.FormatInt(n, 10), nil
	case float64:
		switch n := v.(type) {
		case int64:
			return strconv.FormatInt(n, 10), nil
		case float64:
			return strconv.FormatFloat(n, 'g', -1, 64), nil
		}
		return "", wrong("a number")
	case time.Duration:
		s, ok := v.(string)
		if !ok {
			return "", wrong(`a duration such as "30s"`)
		}
		return s, nil
	case size:
		switch n := v.(type) {
		case int64:
			return strconv.FormatInt(n, 10), nil
		case string:
			return n, nil
		}
		return "", wrong(`a size such as 1048576 or "1MiB"`)
	default: // strings, and comma-separated lists
		switch s := v.(type) {
		case string:
			return s, nil
		case []any:
			parts := make([]string, len(s))
			for i, e := range s {
				p, ok := e.(string)
				if !ok {
					return "", wrong("a string or a list of strings")
				}
				parts[i] = p
			}
			return strings.Join(parts, ","), nil
		}
		return "", wrong("a string")
	}
}

func tomlType(v any) string {
	switch v.(type) {
	case bool:
		return "a boolean"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case string:
		return "a string"
	case []any:
		return "a list"
	case time.Time:
		return "a date"
	}
	return fmt.Sprintf("%T", v)
}

// size is what a sizeFlag's Get returns, so that a config file may give
// it as a number or as text with a unit.
type size int

func (s *sizeFlag) Get() any { return size(*s) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// configFromEnv is --config's default: MSGNET_CONFIG.
func configFromEnv() string { return os.Getenv(envPrefix + "CONFIG") }
