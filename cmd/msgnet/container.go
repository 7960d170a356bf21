package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/msgnet/msgnet/container"
)

// containerCmd converts a container on stdin from one encoding to another,
// for debugging captured traffic.
func containerCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("container", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "binary", "input encoding: text (the C++ form), binary or json")
	to := fs.String("to", "json", "output encoding: text, binary or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ff, err := container.ParseFormat(*from)
	if err != nil {
		fmt.Fprintf(stderr, "msgnet container: --from: %v\n", err)
		return 2
	}
	tf, err := container.ParseFormat(*to)
	if err != nil {
		fmt.Fprintf(stderr, "msgnet container: --to: %v\n", err)
		return 2
	}
	if err := container.Convert(stdin, stdout, ff, tf); err != nil {
		fmt.Fprintf(stderr, "msgnet container: %v\n", err)
		return 1
	}
	return 0
}
