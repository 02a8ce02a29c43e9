package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// startTap runs `nfclone tap ARGS... --state-dir DIR` and waits for its rules.
func startTap(t *testing.T, l *lab.Lab, stateDir string, args ...string) *daemon {
	t.Helper()
	p := l.Start(t, l.Eng, binary, append(append([]string{"tap"}, args...), "--state-dir", stateDir)...)
	d := &daemon{Proc: p, l: l, stateDir: stateDir}
	lab.WaitFor(t, 15*time.Second, func() bool {
		if p.Exited() {
			t.Fatalf("nfclone tap exited early:\n%s", p.Stderr())
		}
		return strings.Contains(p.Stderr(), "rules installed")
	}, "nfclone tap to install its rules")
	return d
}

func linkExists(l *lab.Lab, ns, name string) bool {
	_, _, code := runIn(ns, "ip", "link", "show", "dev", name)
	return code == 0
}

// requireAggregated pings from both sources and requires tcpdump on agg0 to
// see every echo request exactly once.
func requireAggregated(t *testing.T, l *lab.Lab, iface string) {
	t.Helper()
	c := l.StartCapture(t, l.Eng, iface, "icmp[0] == 8", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	ping(t, l, l.Src2, lab.EngE2IP, pings)
	c.WaitCount(2*pings, 5*time.Second)
	ps := c.Stop()
	requireCount(t, "src's requests on "+iface, ps, echoReq(lab.SrcIP), pings)
	requireCount(t, "src2's requests on "+iface, ps, echoReq(lab.Src2IP), pings)
}

// `nfclone tap 'e0,e2>agg0' --create`: tcpdump -i agg0 sees both sources;
// agg0 is gone after SIGTERM.
func TestTapCreateAggregates(t *testing.T) {
	l := lab.New(t)
	d := startTap(t, l, filepath.Join(t.TempDir(), "state"), "e0,e2>agg0", "--create", "--direction", "ingress")
	requireAggregated(t, l, "agg0")
	d.stop(t)
	if linkExists(l, l.Eng, "agg0") || linkExists(l, l.Eng, "agg0-tx") {
		t.Fatalf("agg0 still exists after SIGTERM:\n%s", l.MustExec(t, l.Eng, "ip", "link"))
	}
}

// After kill -9 the created interface stays until flush removes it.
func TestTapKill9ThenFlush(t *testing.T) {
	l := lab.New(t)
	state := filepath.Join(t.TempDir(), "state")
	d := startTap(t, l, state, "e0,e2>+agg0")
	if err := d.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.Wait(10 * time.Second)
	if !linkExists(l, l.Eng, "agg0") {
		t.Fatalf("agg0 vanished with the process (expected flush to remove it)")
	}
	if _, errOut, code := nfc(l, "flush", "--state-dir", state); code != 0 {
		t.Fatalf("flush: exit %d: %s", code, errOut)
	}
	if linkExists(l, l.Eng, "agg0") || linkExists(l, l.Eng, "agg0-tx") {
		t.Fatalf("agg0 still exists after flush:\n%s", l.MustExec(t, l.Eng, "ip", "link"))
	}
}

// An interface with the requested name that nfclone did not create is
// refused with a clear message and left intact.
func TestTapRefusesExistingInterface(t *testing.T) {
	l := lab.New(t)
	l.MustExec(t, l.Eng, "ip", "link", "add", "agg0", "type", "veth", "peer", "name", "mine0")
	before := l.MustExec(t, l.Eng, "ip", "-d", "link", "show", "dev", "agg0")
	_, errOut, code := nfc(l, "tap", "e0,e2>agg0", "--create", "--state-dir", filepath.Join(t.TempDir(), "s"))
	if code != 2 || !strings.Contains(errOut, `argument 'e0,e2>agg0': interface "agg0" already exists and was not created by nfclone; refusing to touch it (without --create and without a + before its name, nfclone mirrors into it)`) {
		t.Fatalf("tap onto an existing interface: exit %d, want 2 (a host problem) with a clear message:\n%s", code, errOut)
	}
	if after := l.MustExec(t, l.Eng, "ip", "-d", "link", "show", "dev", "agg0"); after != before {
		t.Fatalf("existing agg0 was touched:\nbefore %s\nafter %s", before, after)
	}
	// Mistakes: one clear line each, exit 1.
	_, errOut, code = nfc(l, "tap", "e0>e1", "e1>e0", "nope", "--dry-run")
	if code != 1 || !strings.Contains(errOut, "a loop") || !strings.Contains(errOut, "is not SOURCES>TARGETS") {
		t.Fatalf("tap mistakes: exit %d:\n%s", code, errOut)
	}
	_, errOut, code = nfc(l, "tap", "nope0>e1")
	if code != 2 || !strings.Contains(errOut, `argument 'nope0>e1': interface "nope0" does not exist`) {
		t.Fatalf("tap with an unknown interface: exit %d:\n%s", code, errOut)
	}
}

// --print-config, fed to `nfclone run -c`, behaves the same.
func TestTapPrintConfigRuns(t *testing.T) {
	l := lab.New(t)
	state := filepath.Join(t.TempDir(), "state")
	out, errOut, code := nfc(l, "tap", "e0,e2>agg0", "--create", "--direction", "ingress", "--state-dir", state, "--print-config")
	if code != 0 {
		t.Fatalf("--print-config: %s", errOut)
	}
	path := filepath.Join(t.TempDir(), "tap.yaml")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	p := l.Start(t, l.Eng, binary, "run", "-c", path)
	d := &daemon{Proc: p, l: l, cfgPath: path, stateDir: state}
	lab.WaitFor(t, 15*time.Second, func() bool {
		if p.Exited() {
			t.Fatalf("run -c exited:\n%s\n--- config:\n%s", p.Stderr(), out)
		}
		return strings.Contains(p.Stderr(), "rules installed")
	}, "nfclone run to install its rules")
	requireAggregated(t, l, "agg0")
	d.stop(t)
	if linkExists(l, l.Eng, "agg0") {
		t.Fatal("agg0 still exists after SIGTERM")
	}
}
