// Package e2e runs nfclone in the network-namespace lab (test/lab) and lets
// real tools (nft, tcpdump/tshark, ping, ip) judge what it did.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// binary is the nfclone built once for the whole package (TestMain).
var binary string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "nfclone-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := lab.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binary = filepath.Join(dir, "nfclone")
	cmd := exec.Command("go", "build", "-o", binary, "./cmd/nfclone")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building nfclone: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// daemon is a running `nfclone run` in the lab's engine namespace.
type daemon struct {
	*lab.Proc
	l        *lab.Lab
	cfgPath  string
	stateDir string
}

// writeConfig writes a config with a private state_dir and returns its path.
func writeConfig(t *testing.T, yaml string) (path, stateDir string) {
	t.Helper()
	dir := t.TempDir()
	stateDir = filepath.Join(dir, "state")
	path = filepath.Join(dir, "nfclone.yaml")
	metrics := "metrics: {listen: \"\"}" // tests that scrape set their own
	if strings.Contains(yaml, "\nmetrics:") {
		metrics = "# metrics below"
	}
	full := fmt.Sprintf("state_dir: %s\n%s\n%s", stateDir, metrics, yaml)
	if err := os.WriteFile(path, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, stateDir
}

// startNfclone runs nfclone with the config and waits until its tables are
// in the kernel.
func startNfclone(t *testing.T, l *lab.Lab, yaml string) *daemon {
	t.Helper()
	path, stateDir := writeConfig(t, yaml)
	p := l.Start(t, l.Eng, binary, "run", "-c", path)
	d := &daemon{Proc: p, l: l, cfgPath: path, stateDir: stateDir}
	lab.WaitFor(t, 15*time.Second, func() bool {
		if p.Exited() {
			t.Fatalf("nfclone exited early:\n%s", p.Stderr())
		}
		return strings.Contains(p.Stderr(), "rules installed")
	}, "nfclone to install its rules")
	return d
}

// stop sends SIGTERM and requires a clean exit 0.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	code, err := d.Wait(15 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("nfclone after SIGTERM: exit %d, %v\n%s", code, err, d.Stderr())
	}
}

// nfc runs an nfclone command in the engine namespace.
func nfc(l *lab.Lab, args ...string) (stdout, stderr string, code int) {
	return runIn(l.Eng, append([]string{binary}, args...)...)
}

// runIn runs a command in a namespace and returns its output and exit code.
func runIn(ns string, args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		e.WriteString(err.Error())
	}
	return o.String(), e.String(), code
}

// ping runs ping and requires every reply, no duplicates.
func ping(t *testing.T, l *lab.Lab, ns, dst string, n int) {
	t.Helper()
	sent, recv, dupes, err := lab.Ping(context.Background(), l, ns, dst, n, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if sent != n || recv != n || dupes != 0 {
		t.Fatalf("ping %s from %s: sent %d received %d duplicates %d, want %d/%d/0", dst, ns, sent, recv, dupes, n, n)
	}
}

// requirePingCopies pings the engine from src and requires a copy of every
// echo request on iface in namespace ns.
func requirePingCopies(t *testing.T, l *lab.Lab, ns, iface, what string) {
	t.Helper()
	c := l.StartCapture(t, ns, iface, "icmp[0] == 8", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	c.WaitCount(pings, 5*time.Second)
	requireCount(t, what, c.Stop(), echoReq(lab.SrcIP), pings)
}

// count returns how many packets satisfy pred.
func count(ps []lab.Packet, pred func(lab.Packet) bool) int {
	n := 0
	for _, p := range ps {
		if pred(p) {
			n++
		}
	}
	return n
}

func echoReq(src string) func(lab.Packet) bool {
	return func(p lab.Packet) bool { return p.IsEchoRequest() && (p.IPSrc == src || p.IP6Src == src) }
}

func echoRep(dst string) func(lab.Packet) bool {
	return func(p lab.Packet) bool { return p.IsEchoReply() && (p.IPDst == dst || p.IP6Dst == dst) }
}

// requireCount fails unless exactly want packets match, and never accepts an
// empty capture when something was expected.
func requireCount(t *testing.T, what string, ps []lab.Packet, pred func(lab.Packet) bool, want int) {
	t.Helper()
	got := count(ps, pred)
	if got != want {
		var sb strings.Builder
		for _, p := range ps {
			fmt.Fprintf(&sb, "  %s %s>%s %s>%s icmp %d/%d\n", p.Protocol, p.IPSrc, p.IPDst, p.IP6Src, p.IP6Dst, p.ICMPType, p.ICMPv6Type)
		}
		t.Fatalf("%s: %d packets, want %d (capture holds %d):\n%s", what, got, want, len(ps), sb.String())
	}
}

var (
	reComment = regexp.MustCompile(`\s*#.*$`)
	reCounter = regexp.MustCompile(`counter packets \d+ bytes \d+`)
)

// normalizeNft drops comments, warnings, blank lines and counter values so that the kernel's
// listing and the rendered text compare line by line.
func normalizeNft(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		line = reComment.ReplaceAllString(line, "")
		line = reCounter.ReplaceAllString(line, "counter")
		if strings.TrimSpace(line) == "" {
			continue
		}
		out = append(out, strings.TrimRight(line, " \t"))
	}
	return strings.Join(out, "\n")
}

// nftRuleset lists the engine namespace's whole ruleset.
func nftRuleset(t *testing.T, l *lab.Lab) string {
	t.Helper()
	return l.MustExec(t, l.Eng, "nft", "list", "ruleset")
}

// linkFlags returns the flags line of `ip link show dev` in ns.
func linkFlags(t *testing.T, l *lab.Lab, ns, dev string) string {
	t.Helper()
	out := l.MustExec(t, ns, "ip", "-o", "link", "show", "dev", dev)
	if i := strings.Index(out, "<"); i >= 0 {
		if j := strings.Index(out[i:], ">"); j >= 0 {
			return out[i : i+j+1]
		}
	}
	return out
}

// requireCopiesExact matches each copy to its original by ICMP (or ICMPv6)
// sequence number — two workers may send two copies in either order — and
// requires n of each, every copy byte for byte its original's IP packet.
func requireCopiesExact(t *testing.T, what string, originals, copies []lab.Packet, n int) {
	t.Helper()
	seq := func(p lab.Packet) int { return p.ICMPSeq + p.ICMPv6Seq }
	byID := map[int][]byte{}
	var so, sc []int
	for _, p := range originals {
		so = append(so, seq(p))
		byID[seq(p)] = p.IP
	}
	for _, p := range copies {
		sc = append(sc, seq(p))
	}
	if len(originals) != n || len(copies) != n || len(byID) != n {
		t.Fatalf("%s: %d originals and %d copies, want %d each (sequence numbers %v and %v)", what, len(originals), len(copies), n, so, sc)
	}
	for i, p := range copies {
		want, ok := byID[seq(p)]
		if !ok || len(want) == 0 || !bytes.Equal(want, p.IP) {
			t.Fatalf("%s: copy %d is not byte-identical to its original (sequence numbers %v and %v):\n orig % x\n copy % x", what, i, so, sc, want, p.IP)
		}
		delete(byID, seq(p))
	}
}

// vxlanEchoReq matches VXLAN datagrams with VNI vni whose inner packet is
// an ICMP echo request.
func vxlanEchoReq(vni int) func(lab.Packet) bool {
	return func(p lab.Packet) bool {
		types := p.All("icmp.type")
		return p.VXLANVNI == vni && len(types) > 0 && types[0] == "8"
	}
}

// requireBalancedLedgers fails unless nfclone logged at least one session
// ledger and every one it logged balances.
func requireBalancedLedgers(t *testing.T, stderr string) {
	t.Helper()
	n := 0
	for _, line := range strings.Split(stderr, "\n") {
		if !strings.Contains(line, `msg="session ledger"`) {
			continue
		}
		n++
		if !strings.Contains(line, "balanced=true") {
			t.Fatalf("a ledger does not balance: %s", line)
		}
	}
	if n == 0 {
		t.Fatalf("nfclone logged no session ledger:\n%s", stderr)
	}
}
