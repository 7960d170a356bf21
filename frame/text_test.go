package frame

import (
	"bytes"
	"testing"
)

func TestAppendEscaped(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":              "plain text",
		"tab\tkept":               "tab\tkept",
		"a\nb":                    `a\nb`,
		"a\r\nb":                  `a\r\nb`,
		"\x1b[31mred":             `\x1b[31mred`,
		"nul\x00del\x7f":          `nul\x00del\x7f`,
		"ünï\u2028code":           "ünï\u2028code", // not a byte-level control
		"back\\slash stays as is": "back\\slash stays as is",
		"csi\u009b2J nel\u0085":   `csi\u009b2J nel\u0085`,
		"\u00a0\u00c2 kept":       "\u00a0\u00c2 kept", // printable, and a lone 0xc2-lead
		"end\xc2":                 "end\xc2",
	} {
		got := AppendEscaped([]byte("> "), []byte(in))
		if string(got) != "> "+want {
			t.Errorf("AppendEscaped(%q) = %q, want %q", in, got, "> "+want)
		}
		if bytes.ContainsAny(got, "\n\r\x1b") {
			t.Errorf("AppendEscaped(%q) left a line break or escape: %q", in, got)
		}
	}
}

// SplitLineFrom finds the same lines as SplitLine whatever it is told was
// scanned already, as long as that part holds no newline.
func TestSplitLineFrom(t *testing.T) {
	b := []byte("0123456789\nrest")
	for scanned := 0; scanned <= 10; scanned++ {
		line, n, err := SplitLineFrom(b, scanned, 100)
		if err != nil || n != 11 || string(line) != "0123456789" {
			t.Fatalf("scanned %d: %q %d %v", scanned, line, n, err)
		}
	}
	if _, n, err := SplitLineFrom([]byte("no newline"), 10, 100); n != 0 || err != nil {
		t.Fatalf("incomplete line: %d %v", n, err)
	}
	if _, _, err := SplitLineFrom([]byte("0123456789"), 5, 8); err != ErrTooLarge {
		t.Fatalf("over the limit: %v", err)
	}
}
