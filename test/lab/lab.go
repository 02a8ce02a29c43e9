// Package lab builds nfclone's network-namespace test lab from Go tests.
//
// Topology (all links veth, every interface up, lo up everywhere; namespace names carry a
// random 6-hex-digit suffix, e.g. "eng-1a2b3c"):
//
//	src  e0 10.77.1.2/24 fd77:1::2/64 ── eng e0 10.77.1.1/24 fd77:1::1/64
//	col  e0 10.77.2.2/24 fd77:2::2/64 ── eng e1 10.77.2.1/24 fd77:2::1/64   (col promiscuous)
//	src2 e0 10.77.3.2/24 fd77:3::2/64 ── eng e2 10.77.3.1/24 fd77:3::1/64
//	col2 e0 10.77.4.2/24 fd77:4::2/64 ── eng e3 10.77.4.1/24 fd77:4::1/64   (col2 promiscuous)
//
// src, src2, col and col2 route everything (v4 and v6) via their eng address. Sysctls, set in
// the lab namespaces only (the host namespace is never touched):
//
//   - everywhere: IPv6 accept_dad=0 (addresses are also added "nodad"), router_solicitations=0,
//     IPv4 rp_filter=0 (all, default and every interface), arp_ignore=1 and arp_announce=2
//     (a namespace answers ARP only for the address of the interface asked on).
//   - eng: net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1.
//   - col, col2: forwarding off. Copies addressed to other hosts are seen by captures and then
//     dropped silently by the kernel (no ICMP error is sent when forwarding is off).
//
// Veth pairs are created directly inside their namespaces, so nothing with a fixed name ever
// exists in the host namespace; if the kernel or ip refuses that, a pair is created under
// temporary names nl<suffix><n>{a,b}, moved at once and renamed inside the namespaces.
package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Addresses of the lab.
const (
	SrcIP  = "10.77.1.2"
	Src6   = "fd77:1::2"
	Src2IP = "10.77.3.2"
	Src26  = "fd77:3::2"
	ColIP  = "10.77.2.2"
	Col6   = "fd77:2::2"
	Col2IP = "10.77.4.2"
	Col26  = "fd77:4::2"

	EngE0IP = "10.77.1.1" // eng side of the src link
	EngE06  = "fd77:1::1"
	EngE1IP = "10.77.2.1" // eng side of the col link
	EngE16  = "fd77:2::1"
	EngE2IP = "10.77.3.1" // eng side of the src2 link
	EngE26  = "fd77:3::1"
	EngE3IP = "10.77.4.1" // eng side of the col2 link
	EngE36  = "fd77:4::1"
)

// Interface names.
const (
	// Iface is the only interface (besides lo) of src, src2, col and col2.
	Iface = "e0"
	// Eng's interfaces.
	EngToSrc  = "e0"
	EngToCol  = "e1"
	EngToSrc2 = "e2"
	EngToCol2 = "e3"
)

// Lab is one running instance of the topology.
type Lab struct {
	Suffix string
	// Namespace names: "src-<suffix>" etc.
	Src, Src2, Eng, Col, Col2 string

	dumpOnce sync.Once
	// owned holds the namespaces and host-namespace temporaries this Lab created; Teardown
	// removes only those (nil: a Lab not built by New, Teardown removes all its names).
	owned map[string]bool
}

// Namespaces returns the lab's namespace names (src, src2, eng, col, col2).
func (l *Lab) Namespaces() []string {
	return []string{l.Src, l.Src2, l.Eng, l.Col, l.Col2}
}

// RequireRoot skips the test when not running as root, or fails it instead when
// NFCLONE_E2E=1 (CI), as CI needs. It also checks that the tools the lab uses exist.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "end-to-end test needs root (network namespaces); run as root or unset NFCLONE_E2E")
	}
	RequireTools(t, "ip")
}

// RequireTools skips (or fails, with NFCLONE_E2E=1) when a command is not on PATH.
// scripts/deps.sh installs all the tools the lab uses.
func RequireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			skipOrFail(t, fmt.Sprintf("%s not found on PATH (run scripts/deps.sh)", n))
		}
	}
}

func skipOrFail(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("NFCLONE_E2E") == "1" {
		t.Fatalf("NFCLONE_E2E=1: %s", reason)
	}
	t.Skip(reason)
}

// RandomSuffix returns 6 random hex digits.
func RandomSuffix() string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// RepoRoot returns the directory holding go.mod: the first found walking up from the working
// directory (go test runs in the package directory), else from this source file's directory.
func RepoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("go.mod not found above the working directory or the lab package source")
}

// New builds a lab with a fresh random suffix. Teardown (which also kills every process still
// running inside the lab's namespaces) is registered with t.Cleanup before anything is
// created, so it runs whether the build or the test fails. When the test has failed, the
// engine's state is logged first (see Dump). New takes about half a second.
func New(t testing.TB) *Lab {
	t.Helper()
	RequireRoot(t)
	s := RandomSuffix()
	l := &Lab{
		Suffix: s,
		Src:    "src-" + s,
		Src2:   "src2-" + s,
		Eng:    "eng-" + s,
		Col:    "col-" + s,
		Col2:   "col2-" + s,
		owned:  map[string]bool{},
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.Dump(t)
		}
		if err := l.Teardown(); err != nil {
			t.Errorf("lab teardown: %v", err)
		}
	})
	if err := l.build(); err != nil {
		t.Fatalf("building lab %s: %v", s, err)
	}
	return l
}

// run runs a command in the current (host) namespace; used only for "ip netns"/"ip link"
// calls that name a lab namespace or a lab temporary.
func run(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func (l *Lab) build() error {
	common := []string{
		"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
		"net.ipv6.conf.all.router_solicitations=0", "net.ipv6.conf.default.router_solicitations=0",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
		"net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.default.arp_ignore=1",
		"net.ipv4.conf.all.arp_announce=2", "net.ipv4.conf.default.arp_announce=2",
	}
	for _, ns := range l.Namespaces() {
		if err := run("ip", "netns", "add", ns); err != nil {
			return err
		}
		l.owned[ns] = true
		if err := run("ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
		kv := append([]string{}, common...)
		if ns == l.Eng {
			kv = append(kv, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.forwarding=1")
		} else {
			kv = append(kv, "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")
		}
		if err := l.sysctl(ns, kv...); err != nil {
			return err
		}
	}
	type link struct {
		peer, peerIf, engIf string
		n                   int // subnet number 10.77.n.0/24
		promisc             bool
	}
	links := []link{
		{l.Src, Iface, EngToSrc, 1, false},
		{l.Col, Iface, EngToCol, 2, true},
		{l.Src2, Iface, EngToSrc2, 3, false},
		{l.Col2, Iface, EngToCol2, 4, true},
	}
	for i, lk := range links {
		if err := l.veth(lk.peer, lk.peerIf, l.Eng, lk.engIf, i); err != nil {
			return err
		}
		for _, side := range []struct {
			ns, ifc string
			host    int
		}{{l.Eng, lk.engIf, 1}, {lk.peer, lk.peerIf, 2}} {
			v4 := fmt.Sprintf("10.77.%d.%d/24", lk.n, side.host)
			v6 := fmt.Sprintf("fd77:%d::%d/64", lk.n, side.host)
			if err := run("ip", "-n", side.ns, "addr", "add", v4, "dev", side.ifc); err != nil {
				return err
			}
			if err := run("ip", "-n", side.ns, "-6", "addr", "add", v6, "dev", side.ifc, "nodad"); err != nil {
				return err
			}
			if err := l.sysctl(side.ns, "net.ipv4.conf."+side.ifc+".rp_filter=0", "net.ipv6.conf."+side.ifc+".accept_dad=0"); err != nil {
				return err
			}
			if err := run("ip", "-n", side.ns, "link", "set", side.ifc, "up"); err != nil {
				return err
			}
		}
		if lk.promisc {
			if err := run("ip", "-n", lk.peer, "link", "set", lk.peerIf, "promisc", "on"); err != nil {
				return err
			}
		}
		if err := run("ip", "-n", lk.peer, "route", "add", "default", "via", fmt.Sprintf("10.77.%d.1", lk.n), "dev", lk.peerIf); err != nil {
			return err
		}
		if err := run("ip", "-n", lk.peer, "-6", "route", "add", "default", "via", fmt.Sprintf("fd77:%d::1", lk.n), "dev", lk.peerIf); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) sysctl(ns string, kv ...string) error {
	args := append([]string{"netns", "exec", ns, "sysctl", "-q", "-w"}, kv...)
	return run("ip", args...)
}

// forceVethFallback makes veth skip the direct creation (tests of the fallback path).
var forceVethFallback = false

// veth creates a pair with end ifa in nsa and ifb in nsb.
func (l *Lab) veth(nsa, ifa, nsb, ifb string, n int) error {
	direct := errors.New("skipped")
	if !forceVethFallback {
		direct = run("ip", "link", "add", ifa, "netns", nsa, "type", "veth", "peer", "name", ifb, "netns", nsb)
	}
	if direct == nil {
		return nil
	}
	// Fallback: unique temporaries in the host namespace, moved and renamed at once.
	ta, tb := fmt.Sprintf("nl%s%da", l.Suffix, n), fmt.Sprintf("nl%s%db", l.Suffix, n)
	if err := run("ip", "link", "add", ta, "type", "veth", "peer", "name", tb); err != nil {
		return fmt.Errorf("veth %s/%s: direct: %v; fallback: %w", nsa, nsb, direct, err)
	}
	l.owned[ta] = true
	steps := [][]string{
		{"link", "set", ta, "netns", nsa},
		{"link", "set", tb, "netns", nsb},
		{"-n", nsa, "link", "set", ta, "name", ifa},
		{"-n", nsb, "link", "set", tb, "name", ifb},
	}
	for _, s := range steps {
		if err := run("ip", s...); err != nil {
			return err
		}
	}
	return nil
}

// Teardown kills every process left in the lab's namespaces and deletes them (and any
// fallback veth temporaries). It is idempotent; New registers it with t.Cleanup.
func (l *Lab) Teardown() error {
	var errs []error
	existing := map[string]bool{}
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				existing[f[0]] = true
			}
		}
	}
	mine := func(name string) bool { return l.owned == nil || l.owned[name] }
	for _, ns := range l.Namespaces() {
		if !existing[ns] || !mine(ns) {
			continue
		}
		if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if err := run("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	for n := 0; n < 4; n++ {
		ta := fmt.Sprintf("nl%s%da", l.Suffix, n)
		if mine(ta) && exec.Command("ip", "link", "show", "dev", ta).Run() == nil {
			_ = run("ip", "link", "del", ta)
		}
	}
	return errors.Join(errs...)
}

// Dump logs the state that explains most failures: eng's addresses, links (with counters),
// routes, rules, neighbours and nft ruleset, and the collectors' addresses. It runs at most
// once per lab (automatically, before teardown or before a Proc is killed, when the test
// has failed).
func (l *Lab) Dump(t testing.TB) {
	t.Helper()
	l.dumpOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var b strings.Builder
		fmt.Fprintf(&b, "=== lab %s state ===\n", l.Suffix)
		cmds := []struct {
			ns   string
			args []string
		}{
			{l.Eng, []string{"ip", "addr"}},
			{l.Eng, []string{"ip", "-s", "link"}},
			{l.Eng, []string{"ip", "route", "show", "table", "all"}},
			{l.Eng, []string{"ip", "-6", "route", "show", "table", "all"}},
			{l.Eng, []string{"ip", "rule"}},
			{l.Eng, []string{"ip", "-6", "rule"}},
			{l.Eng, []string{"ip", "neigh"}},
			{l.Eng, []string{"nft", "list", "ruleset"}},
			{l.Col, []string{"ip", "-s", "link"}},
			{l.Col2, []string{"ip", "-s", "link"}},
		}
		for _, c := range cmds {
			out, err := l.execCombined(ctx, c.ns, c.args[0], c.args[1:]...)
			fmt.Fprintf(&b, "--- [%s] %s", c.ns, strings.Join(c.args, " "))
			if err != nil {
				fmt.Fprintf(&b, " (error: %v)", err)
			}
			fmt.Fprintf(&b, "\n%s", out)
		}
		t.Log(b.String())
	})
}

// ExecError is returned by Exec when the command fails; it carries the command's stderr.
type ExecError struct {
	Cmd    string
	Err    error
	Stderr string
}

func (e *ExecError) Error() string {
	return fmt.Sprintf("%s: %v: %s", e.Cmd, e.Err, strings.TrimSpace(e.Stderr))
}

func (e *ExecError) Unwrap() error { return e.Err }

// ExitCode returns the command's exit code, or -1.
func (e *ExecError) ExitCode() int {
	var ee *exec.ExitError
	if errors.As(e.Err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// nsCommand builds "ip netns exec ns name args..." (or just name args... when ns is "").
func nsCommand(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Exec runs name with args inside namespace ns ("ip netns exec ns name args...") and returns
// its stdout. On failure the error is an *ExecError carrying stderr. ns "" runs the command
// in the test's own namespace.
func (l *Lab) Exec(ctx context.Context, ns string, name string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := nsCommand(ctx, ns, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &ExecError{Cmd: fmt.Sprintf("[%s] %s %s", ns, name, strings.Join(args, " ")), Err: err, Stderr: stderr.String()}
	}
	return stdout.Bytes(), nil
}

func (l *Lab) execCombined(ctx context.Context, ns, name string, args ...string) (string, error) {
	cmd := nsCommand(ctx, ns, name, args...)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// MustExec is Exec with a 60 s timeout that fails the test on error; it returns stdout.
func (l *Lab) MustExec(t testing.TB, ns, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := l.Exec(ctx, ns, name, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return string(out)
}

// WaitFor polls cond every 20 ms until it returns true, failing the test (t.Fatalf) if
// timeout passes first. what describes the awaited condition for the failure message.
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
