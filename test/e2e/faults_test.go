package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// ledgerNumbers parses a session's "session ledger" line.
func ledgerNumbers(t *testing.T, stderr, session string) map[string]uint64 {
	t.Helper()
	line := ledgerLine(t, stderr, session)
	out := map[string]uint64{}
	for _, m := range regexp.MustCompile(`(\w+)=(\d+)`).FindAllStringSubmatch(line, -1) {
		out[m[1]], _ = strconv.ParseUint(m[2], 10, 64)
	}
	if !strings.Contains(line, "balanced=true") {
		t.Fatalf("the ledger does not balance: %s", line)
	}
	return out
}

// fault runs steady traffic (ping every 5 ms from src to eng) through a
// running nfclone, injects a fault after 0.5 s, heals it 1.5 s later, and
// checks: no original lost, the copies after healing arrive (recovery), the
// ledger balances after SIGTERM, and nothing is left behind.
type fault struct {
	name, method, target string
	inject, heal         func(t *testing.T, l *lab.Lab, d *daemon)
	capNS                func(l *lab.Lab) (ns, iface, filter string)
}

func runFault(t *testing.T, f fault) {
	l := lab.New(t)
	before := routingState(t, l)
	d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: f
    method: %s
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [%s]
`, f.method, f.target))
	const n = 600 // 3 s at 5 ms
	done := make(chan [3]int, 1)
	go func() {
		s, r, du, err := lab.Ping(context.Background(), l, l.Src, lab.EngE0IP, n, 5*time.Millisecond)
		if err != nil {
			t.Error(err)
		}
		done <- [3]int{s, r, du}
	}()
	time.Sleep(500 * time.Millisecond)
	f.inject(t, l, d)
	time.Sleep(time.Second)
	healed := time.Now()
	f.heal(t, l, d)
	r := <-done
	t.Logf("%s: originals sent %d received %d duplicates %d", f.name, r[0], r[1], r[2])
	if r[0] != n || r[1] != n || r[2] != 0 {
		t.Fatalf("%s: originals lost: sent %d received %d duplicates %d", f.name, r[0], r[1], r[2])
	}
	// Recovery: copies flow again after healing.
	ns, iface, filter := f.capNS(l)
	c := l.StartCapture(t, ns, iface, filter, lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	c.WaitCount(pings, 5*time.Second)
	if got := c.Count(); got < pings {
		t.Fatalf("%s: only %d of %d copies after healing", f.name, got, pings)
	}
	c.Stop()
	t.Logf("%s: copies flowing again %.1f s after healing", f.name, time.Since(healed).Seconds())
	d.stop(t)
	led := ledgerNumbers(t, d.Stderr(), "f")
	t.Logf("%s: ledger %v", f.name, led)
	if after := routingState(t, l); after != before {
		t.Fatalf("%s: routing state after exit differs:\n%s\n--- before:\n%s", f.name, after, before)
	}
	if rs := nftRuleset(t, l); strings.TrimSpace(rs) != "" {
		t.Fatalf("%s: rules left:\n%s", f.name, rs)
	}
}

func TestFaults(t *testing.T) {
	gw := "{kind: gateway, gateway: 10.77.2.2, device: e1}"
	atCol := func(l *lab.Lab) (string, string, string) { return l.Col, "e0", "icmp[0] == 8" }
	for _, method := range []string{"queue", "log"} {
		for _, f := range []fault{
			{
				name: "SIGSTOP 1 s then SIGCONT", target: gw, capNS: atCol,
				inject: func(t *testing.T, l *lab.Lab, d *daemon) { _ = d.Signal(syscall.SIGSTOP) },
				heal:   func(t *testing.T, l *lab.Lab, d *daemon) { _ = d.Signal(syscall.SIGCONT) },
			},
			{
				name: "collector interface down", target: gw, capNS: atCol,
				inject: func(t *testing.T, l *lab.Lab, d *daemon) { l.MustExec(t, l.Col, "ip", "link", "set", "e0", "down") },
				heal: func(t *testing.T, l *lab.Lab, d *daemon) {
					l.MustExec(t, l.Col, "ip", "link", "set", "e0", "up")
					l.MustExec(t, l.Col, "ip", "link", "set", "e0", "promisc", "on")
				},
			},
			{
				name:   "collector answers ICMP port unreachable",
				target: `{kind: vxlan, remote: "10.77.4.2:4789", vni: 8}`,
				capNS:  func(l *lab.Lab) (string, string, string) { return l.Col2, "e0", "udp port 4789" },
				// col2 has no listener: every datagram draws an ICMP error, all along.
				inject: func(t *testing.T, l *lab.Lab, d *daemon) {},
				heal:   func(t *testing.T, l *lab.Lab, d *daemon) {},
			},
		} {
			f.method = method
			t.Run(method+"/"+f.name, func(t *testing.T) { runFault(t, f) })
		}
	}
}

// The target device deleted under load: copies to it are counted as send
// errors, the other target goes on, and the re-created device is used again.
func TestFaultTargetDeviceDeleted(t *testing.T) {
	l := lab.New(t)
	mk := func() {
		l.MustExec(t, l.Eng, "ip", "link", "add", "mon0", "type", "veth", "peer", "name", "mon1")
		l.MustExec(t, l.Eng, "ip", "link", "set", "mon0", "up")
		l.MustExec(t, l.Eng, "ip", "link", "set", "mon1", "up")
	}
	mk()
	d := startNfclone(t, l, `
sessions:
  - name: f
    method: queue
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: device, device: mon0}, {kind: gateway, gateway: 10.77.2.2, device: e1}]
`)
	gw := l.StartCapture(t, l.Col, "e0", "icmp[0] == 8", lab.Direction("in"))
	l.MustExec(t, l.Eng, "ip", "link", "del", "mon0")
	ping(t, l, l.Src, lab.EngE0IP, pings) // originals unaffected
	gw.WaitCount(pings, 5*time.Second)
	requireCount(t, "gateway copies while mon0 is gone", gw.Stop(), echoReq(lab.SrcIP), pings)
	mk()
	// generation 2: re-applied without mon0; 3: with the new mon0.
	lab.WaitFor(t, 10*time.Second, func() bool { return generation(t, l, d) >= 3 }, "nfclone to reopen the session on the new mon0")
	requirePingCopies(t, l, l.Eng, "mon1", "device copies on the re-created mon0")
	d.stop(t)
	requireBalancedLedgers(t, d.Stderr())
}

// A kernel-routed session's rule names its gateway's device by index (dup
// routes the clones there): when that device is deleted and made again (a
// new index), nfclone re-applies the rule and copies reach the gateway on
// the new device; meanwhile the originals flow and nothing is copied
// anywhere else.
func TestFaultKernelRoutedGatewayRecreated(t *testing.T) {
	l := lab.New(t)
	mk := func() {
		l.MustExec(t, l.Eng, "ip", "link", "add", "mon0", "type", "veth", "peer", "name", "mon1", "netns", l.Col)
		l.MustExec(t, l.Eng, "ip", "addr", "add", "10.77.9.1/24", "dev", "mon0")
		l.MustExec(t, l.Eng, "ip", "link", "set", "mon0", "up")
		l.MustExec(t, l.Col, "ip", "addr", "add", "10.77.9.2/24", "dev", "mon1")
		l.MustExec(t, l.Col, "ip", "link", "set", "mon1", "up")
	}
	mk()
	d := startNfclone(t, l, `
sessions:
  - name: k
    method: queue
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: gateway, gateway: 10.77.9.2, device: mon0}]
`)
	requirePingCopies(t, l, l.Col, "mon1", "copies at the gateway")
	gen := generation(t, l, d)
	l.MustExec(t, l.Eng, "ip", "link", "del", "mon0")
	lab.WaitFor(t, 10*time.Second, func() bool { return generation(t, l, d) > gen }, "nfclone to re-apply without mon0")
	elsewhere := l.StartCapture(t, l.Col, "e0", "icmp[0] == 8", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings) // originals unaffected
	gen = generation(t, l, d)
	mk()
	lab.WaitFor(t, 10*time.Second, func() bool { return generation(t, l, d) > gen }, "nfclone to re-apply with the new mon0")
	requirePingCopies(t, l, l.Col, "mon1", "copies at the gateway on the new mon0")
	if n := count(elsewhere.Stop(), echoReq(lab.SrcIP)); n != 0 {
		t.Fatalf("%d copies reached col by e1, not by the gateway's device", n)
	}
	d.stop(t)
	requireBalancedLedgers(t, d.Stderr())
}

// The pcap disk fills up (a 256 KiB tmpfs): copies are counted as send
// errors, originals flow, the ledger balances, and the file holds whole
// records that tcpdump reads.
func TestFaultDiskFull(t *testing.T) {
	lab.RequireRoot(t)
	l := lab.New(t)
	dir := t.TempDir()
	if out, err := l.Exec(context.Background(), "", "mount", "-t", "tmpfs", "-o", "size=256k", "nfclone-test", dir); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _, _ = l.Exec(context.Background(), "", "umount", dir) })
	path := filepath.Join(dir, "full.pcap")
	d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: f
    method: log
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: pcap, path: %s}]
`, path))
	// Large pings fill 256 KiB quickly: ~1.4 KiB per copy, 400 copies.
	out := l.MustExec(t, l.Src, "ping", "-n", "-q", "-s", "1400", "-c", "400", "-i", "0.002", lab.EngE0IP)
	sent, recv, dupes, err := lab.ParsePingSummary(out)
	if err != nil || sent != 400 || recv != 400 || dupes != 0 {
		t.Fatalf("originals while the disk was full: %v\n%s", err, out)
	}
	d.stop(t)
	led := ledgerNumbers(t, d.Stderr(), "f")
	if led["send_errors"] == 0 {
		t.Fatalf("a full disk cost no copy? ledger %v", led)
	}
	if _, err := lab.ReadPcapFile(path); err != nil {
		t.Fatalf("the pcap on the full disk is not readable: %v", err)
	}
	if out, err := l.Exec(context.Background(), "", "tcpdump", "-nr", path); err != nil || len(out) == 0 {
		t.Fatalf("tcpdump cannot read the pcap: %v", err)
	}
	st, _ := os.Stat(path)
	t.Logf("disk full: %d copies written (%d bytes), %d send errors, ledger %v", led["copied"], st.Size(), led["send_errors"], led)
}

// The kernel VXLAN device of a queue session's vxlan target (encap: kernel)
// deleted, then set down: nfclone puts it back (re-created, brought up,
// the routing into it repaired), the session's copies go into the new
// device, and the collector gets VXLAN copies again each time; originals
// are never affected.
func TestFaultOwnedVXLANDevice(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: f
    method: queue
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 21}]
`)
	device := func() (name string, up bool) {
		out := l.MustExec(t, l.Eng, "ip", "-o", "link", "show", "type", "vxlan")
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 2 && strings.HasPrefix(f[1], "nfcvx") {
				return strings.TrimSuffix(f[1], ":"), strings.Contains(f[2], ",UP")
			}
		}
		return "", false
	}
	copies := func(what string) {
		t.Helper()
		c := l.StartCapture(t, l.Col2, "e0", "udp port 4789", lab.Direction("in"))
		ping(t, l, l.Src, lab.EngE0IP, pings) // originals unaffected
		c.WaitCount(pings, 5*time.Second)
		requireCount(t, what, c.Stop(), vxlanEchoReq(21), pings)
	}
	name, up := device()
	if name == "" || !up {
		t.Fatalf("no VXLAN device of nfclone's up in eng (%q, up %v)", name, up)
	}
	copies("VXLAN copies through " + name)
	gen := generation(t, l, d)

	l.MustExec(t, l.Eng, "ip", "link", "del", name)
	running := func(st map[string]any) bool {
		for _, s := range st["sessions"].([]any) {
			if m := s.(map[string]any); m["name"] == "f" {
				return m["state"] == "running"
			}
		}
		return false
	}
	lab.WaitFor(t, 15*time.Second, func() bool {
		n, up := device()
		st := status(t, l, d)
		return n == name && up && int(st["generation"].(float64)) > gen && running(st)
	}, "nfclone to re-create "+name+" and reopen the session on it")
	copies("VXLAN copies through the re-created " + name)

	l.MustExec(t, l.Eng, "ip", "link", "set", name, "down")
	// The kernel sends the session's copies into the device
	// (queue.vxlan_kernel_route auto: its TCP super-packets cut to the
	// path): down took its next hop's route and permanent neighbour, which
	// nfclone puts back too; until then a clone's lookup ends in the
	// backstop, or waits for an ARP answer inside the tunnel.
	lab.WaitFor(t, 15*time.Second, func() bool {
		if _, up := device(); !up {
			return false
		}
		r := l.MustExec(t, l.Eng, "ip", "route", "show", "table", "all")
		n := l.MustExec(t, l.Eng, "ip", "neigh", "show", "dev", name, "nud", "permanent")
		return strings.Contains(r, "default dev "+name) && strings.Contains(n, "169.254.77.")
	}, "nfclone to bring "+name+" up again, with its next hop's route and neighbour")
	copies("VXLAN copies after " + name + " was set down and up")
	d.stop(t)
	if n, _ := device(); n != "" {
		t.Fatalf("%s survived SIGTERM", n)
	}
	requireBalancedLedgers(t, d.Stderr())
}
