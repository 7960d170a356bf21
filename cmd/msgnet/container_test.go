package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestContainerConvert(t *testing.T) {
	in := `@header={[1,srv];[2,];[3,c1];[4,];[5,chat];[6,1.0.0.0];};@data={[count,5,42];[msg,11,hi</0x0C;>there];};`
	var js, back, errOut bytes.Buffer
	if code := run(context.Background(), []string{"container", "--from", "text", "--to", "json"}, strings.NewReader(in), &js, &errOut); code != 0 {
		t.Fatalf("text→json exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(js.String(), `"hi there"`) || !strings.Contains(js.String(), `"message_type":"chat"`) {
		t.Fatalf("json: %s", js.String())
	}
	var bin bytes.Buffer
	if code := run(context.Background(), []string{"container", "--from", "json", "--to", "binary"}, &js, &bin, &errOut); code != 0 {
		t.Fatalf("json→binary exit %d: %s", code, errOut.String())
	}
	if code := run(context.Background(), []string{"container", "--from", "binary", "--to", "text"}, &bin, &back, &errOut); code != 0 {
		t.Fatalf("binary→text exit %d: %s", code, errOut.String())
	}
	if strings.TrimSpace(back.String()) != in {
		t.Fatalf("round trip:\n got %s\nwant %s", back.String(), in)
	}
	errOut.Reset()
	if code := run(context.Background(), []string{"container", "--from", "binary", "--to", "json"}, strings.NewReader("\x07garbage"), &back, &errOut); code != 1 || errOut.Len() == 0 {
		t.Fatalf("undecodable input: exit %d, stderr %q", code, errOut.String())
	}
	if code := run(context.Background(), []string{"container", "--from", "yaml"}, strings.NewReader(""), &back, &errOut); code != 2 {
		t.Fatalf("unknown format: exit %d", code)
	}
}
