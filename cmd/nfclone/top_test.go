package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nfclone/nfclone/status"
	"github.com/nfclone/nfclone/statusapi"
)

// fakeDaemon serves a status whose session q copies 50 more packets at
// every request, on a status socket in a fresh state directory.
func fakeDaemon(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nfct")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var mu sync.Mutex
	var copied uint64
	src := func() status.Status {
		mu.Lock()
		defer mu.Unlock()
		copied += 50
		return status.Status{PID: 99, Version: "test", Started: time.Now().Add(-time.Minute), Generation: 1,
			Sessions: []status.SessionStatus{{Name: "q", Method: "queue", State: "running",
				Copied: status.Counter{Packets: copied, Bytes: copied * 100}, Seen: status.Counter{Packets: copied}}}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- statusapi.Serve(ctx, dir, src, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("unix", statusapi.SocketPath(dir)); err == nil {
			c.Close()
			return dir
		}
		if time.Now().After(deadline) {
			t.Fatal("fake daemon's status socket never answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Into a pipe (not a terminal) top prints plain frames, -n of them; --once
// prints one with rates; no daemon is exit 2.
func TestTopPlain(t *testing.T) {
	dir := fakeDaemon(t)
	var out, errOut bytes.Buffer
	if err := run([]string{"top", "--state-dir", dir, "-n", "3", "--interval", "100ms"}, &out, &errOut); err != nil {
		t.Fatalf("top: %v\n%s", err, errOut.String())
	}
	s := out.String()
	if strings.Contains(s, "\x1b") {
		t.Errorf("escape codes in plain output: %q", s)
	}
	if n := strings.Count(s, "nfclone test  pid 99"); n != 3 {
		t.Errorf("%d frames, want 3:\n%s", n, s)
	}
	if !strings.Contains(s, "SESSION") || !strings.Contains(s, "COPIES/S") {
		t.Errorf("no session table:\n%s", s)
	}

	out.Reset()
	if err := run([]string{"top", "--state-dir", dir, "--once", "--interval", "200ms"}, &out, &errOut); err != nil {
		t.Fatalf("top --once: %v\n%s", err, errOut.String())
	}
	var rate string
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[0] == "q" {
			rate = f[3]
		}
	}
	// 50 copies per request over about 200 ms: about 250/s.
	if rate == "" || rate == "-" || rate == "0" {
		t.Errorf("top --once: q copies/s %q:\n%s", rate, out.String())
	}

	errOut.Reset()
	err := run([]string{"top", "--state-dir", t.TempDir(), "--once"}, &out, &errOut)
	if code := exitCode(err); code != 2 || !strings.Contains(errOut.String(), "no running nfclone") {
		t.Errorf("no daemon: exit %d, %q", code, errOut.String())
	}
	if code := exitCode(run([]string{"top", "--interval", "1ms"}, &out, &errOut)); code != 1 {
		t.Errorf("--interval 1ms: exit %d, want 1", code)
	}
}
