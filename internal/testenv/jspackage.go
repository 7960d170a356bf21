package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msgnet/msgnet/internal/flock"
)

// JSPackage returns node and the absolute path of webDir (the JavaScript
// client's package, web/), with the packages its tests need
// (package.json's devDependencies: typescript, and ws for a Node without a
// global WebSocket) installed: when node_modules lacks one, or holds
// another version than package-lock.json, it runs npm ci. Test binaries
// of several packages may ask at once: an exclusive lock on a file in
// node_modules' parent keeps them from running npm ci together. A missing
// node or npm ends the test as Tool says; a failing npm ci fails it.
func JSPackage(t testing.TB, webDir string) (node, dir string) {
	t.Helper()
	node = Tool(t, "node")
	dir, err := filepath.Abs(webDir)
	if err != nil {
		t.Fatal(err)
	}
	missing, err := missingPackages(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) == 0 {
		return node, dir
	}
	npm := Tool(t, "npm")
	lock, err := os.OpenFile(filepath.Join(dir, "node_modules.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := flock.Lock(lock); err != nil {
		t.Fatal(err)
	}
	defer flock.Unlock(lock)
	// Another test binary may have installed them while this one waited.
	if missing, err = missingPackages(dir); err != nil || len(missing) == 0 {
		if err != nil {
			t.Fatal(err)
		}
		return node, dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("web/ lacks %s; npm ci in %s failed: %v\n%s", strings.Join(missing, ", "), dir, err, out)
	}
	if missing, err = missingPackages(dir); err != nil || len(missing) > 0 {
		t.Fatalf("after npm ci, web/node_modules still lacks %s (%v)\n%s", strings.Join(missing, ", "), err, out)
	}
	return node, dir
}

// missingPackages lists the devDependencies of dir/package.json that
// dir/node_modules lacks, or holds in another version than the lock file.
func missingPackages(dir string) ([]string, error) {
	var pkg struct {
		DevDependencies map[string]string `json:"devDependencies"`
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	for name, v := range map[string]any{"package.json": &pkg, "package-lock.json": &lock} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, v); err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
	}
	var missing []string
	for name := range pkg.DevDependencies {
		var installed struct {
			Version string `json:"version"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "node_modules", name, "package.json"))
		if err == nil {
			err = json.Unmarshal(b, &installed)
		}
		if err != nil || installed.Version != lock.Packages["node_modules/"+name].Version {
			missing = append(missing, name)
		}
	}
	return missing, nil
}
