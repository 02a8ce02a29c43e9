// Package netnstest gives kernel tests a network namespace of their own,
// with a locked OS thread living in it (for sockets and /proc/<tid>/net),
// removed when the test ends, also on failure. Tests only.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireRoot skips a test that needs root, saying why, and fails it instead
// when NFCLONE_E2E=1 (CI).
func RequireRoot(t testing.TB, needs string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("NFCLONE_E2E") == "1" {
		t.Fatalf("NFCLONE_E2E=1 but not root: cannot test %s", needs)
	}
	t.Skipf("needs root (%s); NFCLONE_E2E=1 makes this a failure", needs)
}

// NS is a network namespace made for one test.
type NS struct {
	Name string
	FD   int // an open /run/netns/NAME, valid until cleanup
	TID  int // the thread inside the namespace
	do   chan func()
}

// New creates the namespace PREFIX-<random>, brings lo up and registers its
// removal with t.Cleanup.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	name := prefix + "-" + hex.EncodeToString(rb[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		if os.Getenv("NFCLONE_E2E") == "1" {
			t.Fatalf("ip netns add: %v %s", err, out)
		}
		t.Skipf("cannot create a network namespace: %v %s", err, out)
	}
	ns := &NS{Name: name, FD: -1, do: make(chan func())}
	t.Cleanup(func() {
		close(ns.do)
		if ns.FD >= 0 {
			unix.Close(ns.FD)
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", name, err, out)
		}
	})
	fd, err := unix.Open("/var/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ns.FD = fd
	ready := make(chan error)
	go func() {
		// This thread enters the namespace and is never unlocked: when the
		// goroutine ends, the runtime terminates the thread.
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ready <- err
			return
		}
		ns.TID = unix.Gettid()
		ready <- nil
		for f := range ns.do {
			f()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	ns.Sh(t, "ip link set lo up")
	return ns
}

// Run runs f on the namespace's thread.
func (ns *NS) Run(f func()) {
	done := make(chan struct{})
	ns.do <- func() { f(); close(done) }
	<-done
}

// Sh runs a command (split on spaces) inside the namespace.
func (ns *NS) Sh(t testing.TB, cmd string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, strings.Fields(cmd)...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	return string(out)
}
