package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every hostile config ends with exit 1 and problems with key paths; never
// a panic or a stack trace. (render touches nothing: no root needed.)
func TestHostileConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/hostile/*.yaml")
	if err != nil || len(files) < 10 {
		t.Fatalf("hostile corpus missing: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run([]string{"render", "-c", f}, &out, &errOut)
			if code := exitCode(err); code != 1 {
				t.Fatalf("exit %d, want 1:\n%s%s", code, out.String(), errOut.String())
			}
			msg := errOut.String()
			if strings.Contains(msg, "panic") || strings.Contains(msg, "goroutine ") {
				t.Fatalf("stack trace:\n%s", msg)
			}
			lines := strings.Split(strings.TrimSpace(msg), "\n")
			if !strings.HasPrefix(lines[0], "nfclone: the config has") || len(lines) < 2 {
				t.Fatalf("not a list of problems:\n%s", msg)
			}
			for _, l := range lines[1:] {
				if !strings.Contains(l, ": ") {
					t.Fatalf("problem without a key path: %q", l)
				}
			}
			if out.Len() != 0 {
				t.Fatalf("rules printed for a bad config:\n%s", out.String())
			}
		})
	}
}

// Flags: usage mistakes are exit 1; version works.
func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"nope"}, {"run"}, {"render", "--bogus"}, {"tap"}, {"collect", "-w", "x"}, {"capture", "-w", "x"}} {
		var out, errOut bytes.Buffer
		if code := exitCode(run(args, &out, &errOut)); code != 1 {
			t.Errorf("%v: exit %d, want 1: %s", args, code, errOut.String())
		}
	}
	var out bytes.Buffer
	if err := run([]string{"version"}, &out, os.Stderr); err != nil || !strings.HasPrefix(out.String(), "nfclone ") {
		t.Fatalf("version: %v %q", err, out.String())
	}
}
