package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// `run` with watch: true and a start-up error (a missing interface) exits
// with the problem and its key path, as with watch: false; it used to wait
// forever for the file watcher, deaf to SIGTERM.
func TestWatchStartupErrorExits(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "nfclone.yaml")
	yaml := "watch: true\ntable: nfclone_watchtest\nstate_dir: " + filepath.Join(dir, "state") + `
metrics: {listen: ""}
queue: {nice: 0}
sessions:
  - name: d
    sources: [{interface: nosuch0x, direction: ingress}]
    targets: [{kind: device, device: nosuch1x}]
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, watch := range []string{"true", "false"} {
		t.Run("watch="+watch, func(t *testing.T) {
			if watch == "false" {
				if err := os.WriteFile(cfg, []byte(strings.Replace(yaml, "watch: true", "watch: false", 1)), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var out, errOut bytes.Buffer
			done := make(chan int, 1)
			go func() { done <- exitCode(run([]string{"run", "-c", cfg}, &out, &errOut)) }()
			select {
			case code := <-done:
				if code != 1 && code != 2 {
					t.Fatalf("exit %d, want 1 or 2:\n%s", code, errOut.String())
				}
				if code == 1 && !strings.Contains(errOut.String(), "sessions[0]") {
					t.Fatalf("exit 1 without the key path:\n%s", errOut.String())
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("run with watch: %s did not exit within 5 s", watch)
			}
		})
	}
}
