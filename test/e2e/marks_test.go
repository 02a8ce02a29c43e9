package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// cniRuleset plays a CNI plugin that marks every packet before nfclone's
// chains (filter, before filter+10) with bits of its own, as Calico
// (0xffff0000) and Cilium (upper 16 bits) do, and counts, after nfclone's
// chains (filter+20), the echo requests from src arriving at the engine:
// all of them, and those whose mark is still exactly the CNI's.
const cniRuleset = `
table ip cni {
	chain pre { type filter hook prerouting priority filter; meta mark set meta mark | 0x12000000; }
	chain in { type filter hook input priority filter; meta mark set meta mark | 0x12000000; }
	chain out { type filter hook output priority filter; meta mark set meta mark | 0x12000000; }
	chain post { type filter hook postrouting priority filter; meta mark set meta mark | 0x12000000; }
	chain pre_after {
		type filter hook prerouting priority 20;
		ip saddr 10.77.1.2 icmp type echo-request counter name "pre_all"
		ip saddr 10.77.1.2 icmp type echo-request meta mark 0x12000000 counter name "pre_kept"
	}
	chain in_after {
		type filter hook input priority 20;
		ip saddr 10.77.1.2 icmp type echo-request counter name "in_all"
		ip saddr 10.77.1.2 icmp type echo-request meta mark 0x12000000 counter name "in_kept"
	}
	counter pre_all {}
	counter pre_kept {}
	counter in_all {}
	counter in_kept {}
}
`

var reNamedCounter = regexp.MustCompile(`packets (\d+)`)

// namedCounter reads the packets of a named counter of table ip cni.
func namedCounter(t *testing.T, l *lab.Lab, name string) int {
	t.Helper()
	out := l.MustExec(t, l.Eng, "nft", "list", "counter", "ip", "cni", name)
	m := reNamedCounter.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no packets in counter %s:\n%s", name, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// Other users of the packet mark: a CNI-like chain before nfclone's sets
// 0x12000000 on every packet (copies included). Every ping is still copied
// by queue, log and dup sessions, exactly once (the loop guard looks at
// nfclone's field only: a session on e1's egress, where the copies leave,
// does not copy them again), and the originals leave nfclone's chains with
// the mark they came with.
func TestOtherMarkUsers(t *testing.T) {
	for _, method := range []string{"queue", "log", "dup"} {
		t.Run(method, func(t *testing.T) {
			l := lab.New(t)
			path := filepath.Join(t.TempDir(), "cni.nft")
			if err := os.WriteFile(path, []byte(cniRuleset), 0o644); err != nil {
				t.Fatal(err)
			}
			l.MustExec(t, l.Eng, "nft", "-f", path)
			d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: m
    method: %s
    sources: [{interface: e0, direction: ingress}, {interface: e1, direction: egress}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
`, method))
			c := l.StartCapture(t, l.Col, "e0", "icmp[0] == 8", lab.Direction("in"))
			ping(t, l, l.Src, lab.EngE0IP, pings)
			c.WaitCount(pings, 5*time.Second)
			time.Sleep(300 * time.Millisecond) // copies of copies would come now
			requireCount(t, "copies at col", c.Stop(), echoReq(lab.SrcIP), pings)
			for _, hook := range []string{"pre", "in"} {
				all, kept := namedCounter(t, l, hook+"_all"), namedCounter(t, l, hook+"_kept")
				if all != pings || kept != pings {
					t.Fatalf("%s after nfclone: %d echo requests, %d with the mark 0x12000000 they came with; want %d and %d", hook, all, kept, pings, pings)
				}
			}
			d.stop(t)
		})
	}
}

// `check` reads the host's ruleset and warns about a rule using a mask that
// overlaps nfclone's field (mark_mask), nft's and iptables-nft's alike, but
// not about the CNI's bits outside it.
func TestCheckWarnsOverlappingMarks(t *testing.T) {
	l := lab.New(t)
	path := filepath.Join(t.TempDir(), "host.nft")
	host := cniRuleset + `
table inet other {
	chain c {
		type filter hook prerouting priority filter;
		meta mark & 0x000000f0 == 0x00000010 counter
	}
}
`
	if err := os.WriteFile(path, []byte(host), 0o644); err != nil {
		t.Fatal(err)
	}
	l.MustExec(t, l.Eng, "nft", "-f", path)
	l.MustExec(t, l.Eng, "iptables-nft", "-t", "mangle", "-A", "OUTPUT", "-j", "MARK", "--set-xmark", "0x8/0xf")
	cfg, _ := writeConfig(t, `
sessions:
  - name: q
    method: queue
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
`)
	out, errOut, code := nfc(l, "check", "-c", cfg)
	if code != 0 {
		t.Fatalf("check: exit %d\n%s%s", code, out, errOut)
	}
	var warns []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "warning: mark overlaps") {
			warns = append(warns, line)
		}
	}
	want := []string{
		"warning: mark overlaps mark_mask 0x000000ff: table inet other chain c (handle 2): meta mark & 0x000000f0 == 0x00000010 (bits 0x000000f0)",
		"warning: mark overlaps mark_mask 0x000000ff: table ip mangle chain OUTPUT (handle 2): xt MARK --set-xmark 0x8/0xf (bits 0x0000000f)",
	}
	if !reflect.DeepEqual(warns, want) {
		t.Fatalf("check warnings:\n%s\nwant\n%s\n(output:\n%s)", strings.Join(warns, "\n"), strings.Join(want, "\n"), out)
	}
	// Re-pointing nfclone's field away from the overlaps silences them.
	cfg, _ = writeConfig(t, `
mark_mask: 0x00f00000
mark: 0x00800000
sessions:
  - name: q
    method: queue
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
`)
	if out, _, _ := nfc(l, "check", "-c", cfg); strings.Contains(out, "warning: mark overlaps") || !strings.Contains(out, "0 overlapping") {
		t.Fatalf("check with mark_mask 0x00f00000:\n%s", out)
	}
}
