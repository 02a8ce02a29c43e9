package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// Issue 17: status needs only the running daemon. After a reload refused
// because the file no longer parses, `nfclone status -c FILE` still reaches
// the daemon (through the state_dir line of the broken file) and shows the
// refused reload with its error; exit 0.
func TestStatusWithBrokenConfig(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: d
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: device, device: e3}]
`)
	defer d.stop(t)
	// Not YAML any more (an unclosed flow sequence on line 5).
	rewrite(t, d, "sessions:\n  - name: d\n    sources: [{interface: e0, direction: ingress}\n")
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	lab.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(d.Stderr(), "reload refused") }, "the reload to be refused")
	if _, _, code := nfc(l, "check", "-c", d.cfgPath); code != 1 {
		t.Fatalf("check on the broken file: exit %d, want 1", code)
	}
	out, errOut, code := nfc(l, "status", "-c", d.cfgPath)
	if code != 0 {
		t.Fatalf("status -c on a broken file: exit %d, want 0\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"last reload: FAILED at ", "(the previous configuration still runs):\n  (file): not valid YAML: line 5: did not find expected ',' or ']'\n", "d  "} {
		if !strings.Contains(out, want) {
			t.Errorf("status: missing %q in:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "does not load") {
		t.Errorf("status: no note that the file does not load:\n%s", errOut)
	}
	// The file valid again but for the host (an interface that does not
	// exist): status reads its state_dir as usual and shows that error.
	rewrite(t, d, "sessions:\n  - name: d\n    sources: [{interface: nope0, direction: ingress}]\n    targets: [{kind: device, device: e3}]\n")
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	lab.WaitFor(t, 10*time.Second, func() bool { return strings.Count(d.Stderr(), "reload refused") >= 2 }, "the second reload to be refused")
	out, errOut, code = nfc(l, "status", "-c", d.cfgPath)
	if code != 0 || !strings.Contains(out, `  sessions[0].sources[0].interface: interface "nope0" does not exist (line 5)`) {
		t.Fatalf("status after a reload refused by the host: exit %d\n%s%s", code, out, errOut)
	}
	// Without the file at all, --state-dir is enough.
	if err := os.Remove(d.cfgPath); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := nfc(l, "status", "--state-dir", d.stateDir); code != 0 || !strings.Contains(out, "last reload: FAILED") {
		t.Fatalf("status --state-dir: exit %d\n%s%s", code, out, errOut)
	}
}

// Issue 17: `nfclone capture -i e0 'tcp port 7777 and host 10.77.4.2'`
// records exactly the packets tcpdump records with the same expression on
// the same interface and traffic: crafted TCP to and from port 7777 of
// col2 (and col2's resets) among TCP to other ports and hosts, UDP to port
// 7777, the ICMP errors it draws, and IPv6 TCP to port 7777.
func TestCaptureFilterExpressionLikeTcpdump(t *testing.T) {
	lab.RequireTools(t, "tcpdump", "tshark", "/usr/bin/python3")
	l := lab.New(t)
	const expr = "tcp port 7777 and host " + lab.Col2IP
	out := filepath.Join(t.TempDir(), "expr.pcap")
	td := l.StartCapture(t, l.Eng, "e0", expr)
	p := l.Start(t, l.Eng, binary, "capture", "-i", "e0", "-w", out, "tcp", "port", "7777", "and", "host", lab.Col2IP)
	lab.WaitFor(t, 10*time.Second, func() bool {
		if p.Exited() {
			t.Fatalf("capture exited early:\n%s", p.Stderr())
		}
		return strings.Contains(p.Stderr(), "capturing on")
	}, "capture to start")
	const n = 5
	script := fmt.Sprintf(`
from scapy.all import IP, IPv6, TCP, UDP, send
conf_n = %d
pk = []
for i in range(conf_n):
    pk.append(IP(dst="%[2]s")/TCP(sport=40000+i, dport=7777, flags="S"))   # match (and col2's RST)
    pk.append(IP(dst="%[2]s")/TCP(sport=7777, dport=80+i, flags="S"))      # match (and col2's RST)
    pk.append(IP(dst="%[2]s")/TCP(sport=40100+i, dport=7778, flags="S"))   # other port
    pk.append(IP(dst="%[3]s")/TCP(sport=40200+i, dport=7777, flags="S"))   # other host
    pk.append(IP(dst="%[2]s")/UDP(sport=40300+i, dport=7777)/b"x")         # udp
    pk.append(IPv6(dst="fd77:4::2")/TCP(sport=40400+i, dport=7777, flags="S"))  # IPv6
send(pk, verbose=0, inter=0.002)
`, n, lab.Col2IP, lab.Src2IP)
	l.MustExec(t, l.Src, "/usr/bin/python3", "-c", script) // scapy's python
	// 2n SYNs and 2n resets match.
	td.WaitCount(4*n, 10*time.Second)
	// nfclone's file too (NFLOG hands over batches, the last one within 1 s).
	lab.WaitFor(t, 10*time.Second, func() bool { recs, _ := lab.ReadPcapFile(out); return len(recs) >= 4*n }, "nfclone's file to hold the matching packets")
	time.Sleep(300 * time.Millisecond) // anything extra would show up too
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(10 * time.Second); code != 0 || err != nil {
		t.Fatalf("capture: exit %d %v\n%s", code, err, p.Stderr())
	}
	want := td.Stop()
	got, err := lab.ReadPackets(out)
	if err != nil {
		t.Fatal(err)
	}
	keys := func(ps []lab.Packet) []string {
		var out []string
		for _, p := range ps {
			out = append(out, fmt.Sprintf("%s %s>%s %d>%d", p.Protocol, p.IPSrc, p.IPDst, p.TCPSrcPort, p.TCPDstPort))
		}
		sort.Strings(out)
		return out
	}
	w, g := keys(want), keys(got)
	if len(w) != 4*n || strings.Join(w, "\n") != strings.Join(g, "\n") {
		t.Fatalf("tcpdump recorded %d packets, nfclone %d; want the same %d:\ntcpdump:\n%s\nnfclone:\n%s", len(w), len(g), 4*n, strings.Join(w, "\n"), strings.Join(g, "\n"))
	}
	if rs := nftRuleset(t, l); strings.TrimSpace(rs) != "" {
		t.Fatalf("capture left rules:\n%s", rs)
	}
}

// With several -i and --format pcapng, each packet is recorded on the
// interface it was seen on, with its direction (tshark reads both): a ping
// forwarded from src (e0) to src2 (e2) is in the file four times per echo,
// each on its own interface and direction.
func TestCapturePcapngInterfaces(t *testing.T) {
	lab.RequireTools(t, "tshark")
	l := lab.New(t)
	out := filepath.Join(t.TempDir(), "if.pcapng")
	p := l.Start(t, l.Eng, binary, "capture", "-i", "e0", "-i", "e2", "--format", "pcapng", "-c", "12", "-w", out, "icmp")
	lab.WaitFor(t, 10*time.Second, func() bool {
		if p.Exited() {
			t.Fatalf("capture exited early:\n%s", p.Stderr())
		}
		return strings.Contains(p.Stderr(), "capturing on")
	}, "capture to start")
	ping(t, l, l.Src, lab.Src2IP, 3)
	if code, err := p.Wait(10 * time.Second); code != 0 || err != nil {
		t.Fatalf("capture: exit %d %v\n%s", code, err, p.Stderr())
	}
	o := l.MustExec(t, "", "tshark", "-n", "-r", out, "-T", "fields", "-e", "frame.interface_name", "-e", "frame.packet_flags_direction", "-e", "icmp.type")
	counts := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(o), "\n") {
		counts[strings.Join(strings.Fields(line), " ")]++
	}
	want := map[string]int{ // 1 inbound, 2 outbound; 8 request, 0 reply
		"e0 0x00000001 8": 3, "e2 0x00000002 8": 3, "e2 0x00000001 0": 3, "e0 0x00000002 0": 3,
	}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Fatalf("interfaces and directions in the pcapng (tshark):\n%s\ngot %v\nwant %v", o, counts, want)
	}
}

// A filter expression (negations, guards in netdev and ip/ip6 tables) and a
// byte rate: the kernel lists exactly what render printed (the netlink
// expressions are the ones nft itself would make for that text).
func TestFilterAndByteRateListingEqualsRender(t *testing.T) {
	l := lab.New(t)
	pcap := filepath.Join(t.TempDir(), "f.pcap")
	d := startNfclone(t, l, `
sessions:
  - name: dd
    sources: [{interface: e0, direction: both}]
    rate: "10 mbytes/second"
    filter: "not host 10.77.1.2 and (tcp dst portrange 1000-2000 or udp port 53) or icmp6 or icmp"
    targets: [{kind: device, device: e3}]
  - name: lg
    method: log
    sources: [{interface: e2}]
    rate: "512 kbytes/second"
    filter: "ip6 and not src net fd77:3::/64 or tcp port 7777 and host 10.77.4.2"
    targets: [{kind: pcap, path: `+pcap+`}]
`)
	defer d.stop(t)
	rendered, errOut, code := nfc(l, "render", "-c", d.cfgPath)
	if code != 0 {
		t.Fatalf("render: %s", errOut)
	}
	for _, want := range []string{"limit rate over 10 mbytes/second", "limit rate over 512 kbytes/second", "ip saddr != 10.77.1.2", "meta protocol != ip"} {
		if !strings.Contains(rendered, want) {
			t.Fatalf("render lacks %q:\n%s", want, rendered)
		}
	}
	listed := nftRuleset(t, l)
	if got, want := normalizeNft(listed), normalizeNft(rendered); got != want {
		t.Fatalf("nft list ruleset differs from render.\n--- kernel:\n%s\n--- render:\n%s", got, want)
	}
}

// -i any: every interface that is up except lo, each named.
func TestCaptureAny(t *testing.T) {
	l := lab.New(t)
	p := l.Start(t, l.Eng, binary, "capture", "-i", "any", "--duration", "1", "-w", filepath.Join(t.TempDir(), "any.pcap"))
	if code, err := p.Wait(15 * time.Second); code != 0 || err != nil {
		t.Fatalf("capture -i any: exit %d %v\n%s", code, err, p.Stderr())
	}
	line := ""
	for _, l := range strings.Split(p.Stderr(), "\n") {
		if strings.HasPrefix(l, "nfclone: capturing on ") {
			line = l
		}
	}
	for _, want := range []string{"e0 (both)", "e1 (both)", "e2 (both)", "e3 (both)"} {
		if !strings.Contains(line, want) {
			t.Errorf("capture -i any: %q not in %q", want, line)
		}
	}
	if strings.Contains(line, "lo (") {
		t.Errorf("capture -i any includes lo: %q", line)
	}
}

// tap --dry-run checks the host as run would: an interface it names that
// does not exist is refused in the argument's words (exit 2), and one a
// killed tap created (in its state file) is not "already existing" — run
// removes it before it starts.
func TestTapDryRunChecksHost(t *testing.T) {
	l := lab.New(t)
	state := filepath.Join(t.TempDir(), "state")
	out, errOut, code := nfc(l, "tap", "e0>agg9", "--dry-run", "--state-dir", state)
	if code != 2 || out != "" || !strings.Contains(errOut, `argument 'e0>agg9': interface "agg9" does not exist (pass --create, or write +agg9, to have nfclone create it)`) {
		t.Fatalf("dry-run onto a missing interface: exit %d\n%s%s", code, out, errOut)
	}
	d := startTap(t, l, state, "e0,e2>+agg0")
	if err := d.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.Wait(10 * time.Second)
	if !linkExists(l, l.Eng, "agg0") {
		t.Fatal("agg0 vanished with the killed tap")
	}
	if out, errOut, code := nfc(l, "tap", "e0,e2>+agg0", "--dry-run", "--state-dir", state); code != 0 || !strings.Contains(out, `dup to "agg0-tx"`) {
		t.Fatalf("dry-run after a killed tap: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := nfc(l, "flush", "--state-dir", state); code != 0 {
		t.Fatalf("flush: exit %d: %s", code, errOut)
	}
}

// In a terminal (a tmux pane), capture shows a live count while it runs
// and, after Ctrl-C, tcpdump's statistics with the drop lines.
func TestCaptureLiveCountInTerminal(t *testing.T) {
	lab.RequireTools(t, "tmux")
	l := lab.New(t)
	sock := "nfclone-e2e-" + lab.RandomSuffix()
	tmux := func(args ...string) string {
		out, err := exec.Command("tmux", append([]string{"-L", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := filepath.Join(t.TempDir(), "live.pcap")
	cmd := fmt.Sprintf("ip netns exec %s %s capture -i e0 -w %s icmp; echo EXIT=$?; sleep 60", l.Eng, binary, out)
	tmux("new-session", "-d", "-s", "cap", "-x", "160", "-y", "40", cmd)
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", sock, "kill-server").Run() })
	pane := func() string { return tmux("capture-pane", "-p", "-t", "cap") }
	lab.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(pane(), "capturing on e0") }, "capture to start in the pane")
	ping(t, l, l.Src, lab.EngE0IP, 5) // 5 requests in, 5 replies out
	lab.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(pane(), "10 packets captured") }, "the live count to reach 10 in the pane")
	if strings.Contains(pane(), "received by filter") {
		t.Fatalf("the statistics before the end:\n%s", pane())
	}
	tmux("send-keys", "-t", "cap", "C-c")
	lab.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(pane(), "EXIT=") }, "capture to end after Ctrl-C")
	p := pane()
	for _, want := range []string{"10 packets captured\n", "10 packets received by filter\n", "0 packets dropped by kernel\n", "0 packets dropped by nfclone\n", "EXIT=0"} {
		if !strings.Contains(p, want) {
			t.Errorf("pane lacks %q:\n%s", want, p)
		}
	}
	if ps, err := lab.ReadPackets(out); err != nil || len(ps) != 10 {
		t.Fatalf("the file holds %d packets (%v), want 10", len(ps), err)
	}
}
