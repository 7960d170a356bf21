package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// version prints the module's version and the VCS revision the binary was
// built from, as the Go toolchain recorded them.
func version(stdout io.Writer) int {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintln(stdout, "msgnet: no build information in this binary")
		return 1
	}
	fmt.Fprintln(stdout, versionText(bi))
	return 0
}

// versionText is "msgnet VERSION (REVISION[+modified], TIME) GO".
func versionText(bi *debug.BuildInfo) string {
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	rev := settings["vcs.revision"]
	if rev == "" {
		rev = "unknown revision"
	} else if len(rev) > 12 {
		rev = rev[:12]
	}
	if settings["vcs.modified"] == "true" {
		rev += "+modified"
	}
	if t := settings["vcs.time"]; t != "" {
		rev += ", " + t
	}
	return fmt.Sprintf("msgnet %s (%s) %s", bi.Main.Version, rev, bi.GoVersion)
}
