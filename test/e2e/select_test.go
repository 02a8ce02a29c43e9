package e2e

import (
	"context"
	be "encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// Selectors end to end (README "Selecting flows"): copies are counted by
// tcpdump at the collectors, flows told apart by what the copies carry.

// icmpEchoID is the identifier of an ICMP echo in an IPv4 packet (-1 if it
// is none).
func icmpEchoID(ip []byte) int {
	if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != 1 {
		return -1
	}
	hl := int(ip[0]&0x0f) * 4
	if len(ip) < hl+8 {
		return -1
	}
	return int(be.BigEndian.Uint16(ip[hl+4:]))
}

// udpEchoServer answers every datagram to port on addr (in ns) with the same
// bytes, until the test ends.
func udpEchoServer(t *testing.T, l *lab.Lab, ns, addr string, port int) {
	t.Helper()
	script := `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(2048)
    s.sendto(d, a)
`
	p := l.Start(t, ns, "python3", "-c", script, addr, strconv.Itoa(port))
	lab.WaitFor(t, 10*time.Second, func() bool {
		if p.Exited() {
			t.Fatalf("udp echo server exited: %s", p.Stderr())
		}
		return strings.Contains(p.Stdout(), "ready")
	}, "the udp echo server")
}

// udpFlows sends, from ns, count datagrams on each of flows UDP flows (source
// ports first, first+1, ...) to dst:port, waiting for each echo; it returns
// how many echoes came back per flow.
func udpFlows(t *testing.T, l *lab.Lab, ns, src, dst string, port, first, flows, count int) map[int]int {
	t.Helper()
	script := `
import socket, sys
src, dst, port, first, flows, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
for i in range(flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, first + i))
    s.settimeout(1)
    got = 0
    for k in range(count):
        s.sendto(b"nfclone-select-%05d-%03d" % (first + i, k), (dst, port))
        try:
            s.recvfrom(2048)
            got += 1
        except socket.timeout:
            pass
    print(first + i, got)
    s.close()
`
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := l.Exec(ctx, ns, "python3", "-c", script, src, dst, strconv.Itoa(port), strconv.Itoa(first), strconv.Itoa(flows), strconv.Itoa(count))
	if err != nil {
		t.Fatalf("udp flows: %v\n%s", err, out)
	}
	got := map[int]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var p, n int
		if _, err := fmt.Sscan(line, &p, &n); err == nil {
			got[p] = n
		}
	}
	return got
}

// udpFlood sends datagrams from ns as fast as it can on one flow for
// about dur; it returns how many it sent and for how long (measured by the
// sender).
func udpFlood(t *testing.T, l *lab.Lab, ns, src, dst string, sport, dport int, dur time.Duration) (int, time.Duration) {
	t.Helper()
	script := `
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[3])))
dst, dur, n = (sys.argv[2], int(sys.argv[4])), float(sys.argv[5]), 0
start = time.monotonic()
while time.monotonic() - start < dur:
    for i in range(100):
        s.sendto(b"flood", dst)
    n += 100
print(n, time.monotonic() - start)
`
	out, err := l.Exec(context.Background(), ns, "python3", "-c", script, src, dst, strconv.Itoa(sport), strconv.Itoa(dport), strconv.FormatFloat(dur.Seconds(), 'f', 3, 64))
	if err != nil {
		t.Fatalf("udp flood: %v\n%s", err, out)
	}
	var n int
	var secs float64
	if _, err := fmt.Sscan(string(out), &n, &secs); err != nil {
		t.Fatalf("udp flood output %q: %v", out, err)
	}
	return n, time.Duration(secs * float64(time.Second))
}

// waitQuiet waits until a capture has stopped growing (nothing new for
// 500 ms), at most 10 s.
func waitQuiet(t *testing.T, c *lab.Capture) {
	t.Helper()
	last, since := -1, time.Now()
	lab.WaitFor(t, 10*time.Second, func() bool {
		n := c.Count()
		if n != last {
			last, since = n, time.Now()
		}
		return time.Since(since) > 500*time.Millisecond
	}, "the capture to settle")
}

// first_packets: 10 on both directions of e0 — three ping flows of 30
// echoes each give exactly 10 requests and 10 replies per flow at the
// collector; a flow that began before nfclone (conntrack accounting off
// then: its counters read 0) is not copied at all.
func TestSelectFirstPackets(t *testing.T) {
	l := lab.New(t)
	// A flow older than nfclone, on a host whose firewall already tracks
	// connections: accounting is off in the fresh namespace, so the old
	// flow's connection has no counters.
	l.MustExec(t, l.Eng, "nft", "add table ip fw; add chain ip fw forward_chain { type filter hook forward priority 0; }; add rule ip fw forward_chain ct state established counter")
	if out := l.MustExec(t, l.Eng, "sysctl", "-n", "net.netfilter.nf_conntrack_acct"); strings.TrimSpace(out) != "0" {
		t.Fatalf("nf_conntrack_acct in a fresh namespace is %q, want 0", out)
	}
	old := l.Start(t, l.Src, "ping", "-n", "-i", "0.05", "-c", "80", lab.Src2IP)
	lab.WaitFor(t, 5*time.Second, func() bool { return strings.Contains(old.Stdout(), "icmp_seq=3 ") }, "the old flow's pings")
	c := l.StartCapture(t, l.Col, lab.Iface, "icmp or icmp6", lab.Direction("in"))
	cb := l.StartCapture(t, l.Col2, lab.Iface, "icmp or icmp6", lab.Direction("in"))
	d := startNfclone(t, l, `
sessions:
  - name: head
    method: dup
    sources: [{interface: e0, direction: both}]
    first_packets: 10
    targets:
      - {kind: gateway, gateway: 10.77.2.2, device: e1, mac: "02:00:00:00:77:22"}
      - {kind: gateway, gateway: "fd77:2::2", device: e1, mac: "02:00:00:00:77:22"}
  - name: bytes
    method: log
    sources: [{interface: e0, direction: both}]
    first_bytes: 300
    targets:
      - {kind: gateway, gateway: 10.77.4.2, device: e3}
      - {kind: gateway, gateway: "fd77:4::2", device: e3}
`)
	// The kernel turned accounting on when the ct expression was loaded.
	if out := l.MustExec(t, l.Eng, "sysctl", "-n", "net.netfilter.nf_conntrack_acct"); strings.TrimSpace(out) != "1" {
		t.Errorf("nf_conntrack_acct after nfclone started is %q, want 1", out)
	}
	done := make(chan error, 4)
	for _, dst := range []string{lab.Src2IP, lab.Src2IP, lab.Src2IP, lab.Src26} {
		go func() {
			sent, recv, _, err := lab.Ping(context.Background(), l, l.Src, dst, 30, 20*time.Millisecond)
			if err == nil && (sent != 30 || recv != 30) {
				err = fmt.Errorf("ping %s: sent %d received %d", dst, sent, recv)
			}
			done <- err
		}()
	}
	for i := 0; i < 4; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := old.Wait(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitQuiet(t, c)
	waitQuiet(t, cb)
	pkts, bpkts := c.Stop(), cb.Stop()
	d.stop(t)
	// first_bytes 300: an IPv4 echo is 84 bytes (3 fit), an IPv6 one 104 (2).
	b4, b6 := map[int]int{}, 0
	for _, p := range bpkts {
		if id := icmpEchoID(p.IP); id >= 0 {
			b4[id]++
		} else if (p.IsEchoRequest() || p.IsEchoReply()) && (p.IP6Src == lab.Src6 || p.IP6Dst == lab.Src6) {
			b6++ // echoes only: neighbour discovery is not tracked, and copied
		}
	}
	t.Logf("first_bytes 300: per IPv4 flow (requests and replies) %v, IPv6 flow %d", b4, b6)
	if len(b4) != 3 || b6 != 4 {
		t.Errorf("first_bytes 300: %v of the IPv4 flows and %d of the IPv6 flow, want 3 flows of 6 and 4", b4, b6)
	}
	for id, n := range b4 {
		if n != 6 {
			t.Errorf("first_bytes 300: flow %d has %d copies, want 3 requests and 3 replies", id, n)
		}
	}
	type count struct{ req, rep int }
	flows := map[int]*count{}
	v6req, v6rep := 0, 0
	for _, p := range pkts {
		switch {
		case p.IsEchoRequest() && p.IP6Src == lab.Src6:
			v6req++
		case p.IsEchoReply() && p.IP6Dst == lab.Src6:
			v6rep++
		}
		id := icmpEchoID(p.IP)
		if id < 0 {
			continue
		}
		if flows[id] == nil {
			flows[id] = &count{}
		}
		switch {
		case p.IsEchoRequest():
			flows[id].req++
		case p.IsEchoReply():
			flows[id].rep++
		}
	}
	var ids []int
	for id := range flows {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	var desc []string
	for _, id := range ids {
		desc = append(desc, fmt.Sprintf("id %d: %d requests %d replies", id, flows[id].req, flows[id].rep))
	}
	t.Logf("copies at the collector per flow: %s", strings.Join(desc, "; "))
	if len(flows) != 3 {
		t.Fatalf("copies of %d ping flows, want 3 (the old flow none): %s", len(flows), strings.Join(desc, "; "))
	}
	for _, id := range ids {
		if f := flows[id]; f.req != 10 || f.rep != 10 {
			t.Errorf("flow id %d: %d requests and %d replies copied, want 10 and 10", id, f.req, f.rep)
		}
	}
	t.Logf("IPv6 ping flow: %d requests %d replies copied", v6req, v6rep)
	if v6req != 10 || v6rep != 10 {
		t.Errorf("IPv6 ping flow: %d requests and %d replies copied, want 10 and 10", v6req, v6rep)
	}
}

// sample_flows: 2 over 40 UDP flows (5 datagrams each way, both directions
// copied on their way in: e0 and e2 ingress) — each flow is copied whole or
// not at all, and between 10 and 30 of them are.
func TestSelectSampleFlows(t *testing.T) {
	l := lab.New(t)
	udpEchoServer(t, l, l.Src2, lab.Src2IP, 7000)
	c := l.StartCapture(t, l.Col, lab.Iface, "udp", lab.Direction("in"))
	d := startNfclone(t, l, `
sessions:
  - name: half
    method: log
    sources: [{interface: e0, direction: ingress}, {interface: e2, direction: ingress}]
    sample_flows: 2
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1, mac: "02:00:00:00:77:22"}]
`)
	const flows, per = 40, 5
	got := udpFlows(t, l, l.Src, lab.SrcIP, lab.Src2IP, 7000, 21000, flows, per)
	for p := 21000; p < 21000+flows; p++ {
		if got[p] != per {
			t.Fatalf("flow %d: %d of %d echoes came back", p, got[p], per)
		}
	}
	waitQuiet(t, c)
	pkts := c.Stop()
	d.stop(t)
	perFlow := map[int]int{}
	for _, p := range pkts {
		port := p.UDPSrcPort
		if port == 7000 {
			port = p.UDPDstPort
		}
		perFlow[port]++
	}
	chosen := 0
	for p := 21000; p < 21000+flows; p++ {
		switch perFlow[p] {
		case 0:
		case 2 * per:
			chosen++
		default:
			t.Errorf("flow %d: %d copies, want 0 or %d (the whole flow, both ways)", p, perFlow[p], 2*per)
		}
	}
	t.Logf("sample_flows 2: %d of %d flows copied whole, the others not at all (%d copies)", chosen, flows, len(pkts))
	if chosen < 10 || chosen > 30 {
		t.Errorf("%d of %d flows copied, want between 10 and 30", chosen, flows)
	}
}

// flow_rate caps a flooding flow while a slow flow is copied whole.
func TestSelectFlowRate(t *testing.T) {
	l := lab.New(t)
	c := l.StartCapture(t, l.Col, lab.Iface, "", lab.Direction("in"))
	d := startNfclone(t, l, `
sessions:
  - name: capped
    method: queue
    sources: [{interface: e0, direction: ingress}]
    flow_rate: "50/second"
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1, mac: "02:00:00:00:77:22"}]
`)
	slow := make(chan error, 1)
	go func() {
		sent, recv, _, err := lab.Ping(context.Background(), l, l.Src, lab.Src2IP, 30, 50*time.Millisecond)
		if err == nil && (sent != 30 || recv != 30) {
			err = fmt.Errorf("ping: sent %d received %d", sent, recv)
		}
		slow <- err
	}()
	flood, took := udpFlood(t, l, l.Src, lab.SrcIP, lab.Src2IP, 22000, 9, 2*time.Second)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	waitQuiet(t, c)
	pkts := c.Stop()
	d.stop(t)
	var floodCopies, pingCopies int
	for _, p := range pkts {
		switch {
		case p.UDPSrcPort == 22000:
			floodCopies++
		case p.IsEchoRequest() && p.IPSrc == lab.SrcIP:
			pingCopies++
		}
	}
	// The limit's token bucket: a burst of 5, then 50 per second.
	maxFlood := 5 + int(50*took.Seconds()+0.999) + 5
	// At least the burst and one second's worth of the 2 s: a sender the
	// shared CPU stalls earns no more than the burst meanwhile.
	minFlood := 5 + 50

	t.Logf("flow_rate 50/second: flood of %d datagrams in %v: %d copied (%d-%d allowed); slow flow (20 pings/s): %d of 30 copied",
		flood, took.Round(time.Millisecond), floodCopies, minFlood, maxFlood, pingCopies)
	if pingCopies != 30 {
		t.Errorf("slow flow: %d of 30 echo requests copied, want all", pingCopies)
	}
	if floodCopies < minFlood || floodCopies > maxFlood {
		t.Errorf("flood: %d copies, want between %d and %d", floodCopies, minFlood, maxFlood)
	}
}

// Two sessions with priority on one source: 1 copies pings, 2 pings and
// UDP. Pings reach only the first session's collector, UDP only the
// second's; the kernel's counter on the claim tells status why.
func TestSelectPriority(t *testing.T) {
	l := lab.New(t)
	udpEchoServer(t, l, l.Src2, lab.Src2IP, 7000)
	c1 := l.StartCapture(t, l.Col, lab.Iface, "icmp or udp", lab.Direction("in"))
	c2 := l.StartCapture(t, l.Col2, lab.Iface, "icmp or udp", lab.Direction("in"))
	d := startNfclone(t, l, `
sessions:
  - name: second
    method: log
    priority: 2
    sources: [{interface: e0, direction: ingress}]
    rules:
      - {number: 1, action: accept, protocol: icmp}
      - {number: 2, action: accept, protocol: udp}
    targets: [{kind: gateway, gateway: 10.77.4.2, device: e3}]
  - name: first
    method: dup
    priority: 1
    sources: [{interface: e0, direction: ingress}]
    rules:
      - {number: 1, action: accept, protocol: icmp}
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1, mac: "02:00:00:00:77:22"}]
`)
	ping(t, l, l.Src, lab.Src2IP, 20)
	got := udpFlows(t, l, l.Src, lab.SrcIP, lab.Src2IP, 7000, 23000, 2, 10)
	if got[23000] != 10 || got[23001] != 10 {
		t.Fatalf("udp echoes: %v", got)
	}
	waitQuiet(t, c1)
	waitQuiet(t, c2)
	p1, p2 := c1.Stop(), c2.Stop()
	status, errOut, code := nfc(l, "status", "-c", d.cfgPath)
	d.stop(t)
	kinds := func(ps []lab.Packet) (icmp, udp int) {
		for _, p := range ps {
			if p.IsEchoRequest() {
				icmp++
			}
			if p.UDPDstPort == 7000 {
				udp++
			}
		}
		return
	}
	i1, u1 := kinds(p1)
	i2, u2 := kinds(p2)
	t.Logf("priority: first's collector %d pings %d udp; second's %d pings %d udp", i1, u1, i2, u2)
	if i1 != 20 || u1 != 0 || i2 != 0 || u2 != 20 {
		t.Errorf("first's collector got %d pings and %d udp (want 20, 0); second's %d pings and %d udp (want 0, 20)", i1, u1, i2, u2)
	}
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	if !strings.Contains(status, "second: priority 20") {
		t.Errorf("status does not say that priority kept 20 packets from session second:\n%s", status)
	}
}

// udpSendScript sends count datagrams from src:sport to dst:port, first
// dropping to uid when one is given (argv[6]).
const udpSendScript = `
import os, socket, sys
src, dst, port, sport, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if len(sys.argv) > 6:
    os.setuid(int(sys.argv[6]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, sport))
for i in range(count):
    s.sendto(b"nfclone-scope", (dst, port))
`

// udpSportCounts counts the captured UDP packets by source port.
func udpSportCounts(ps []lab.Packet) map[int]int {
	out := map[int]int{}
	for _, p := range ps {
		if p.UDPSrcPort > 0 {
			out[p.UDPSrcPort]++
		}
	}
	return out
}

// user: only the sockets of uid 65534 are copied; root's datagrams on the
// same path are not.
func TestSelectUser(t *testing.T) {
	l := lab.New(t)
	c := l.StartCapture(t, l.Col, lab.Iface, "udp", lab.Direction("in"))
	d := startNfclone(t, l, `
sessions:
  - name: nobody
    method: dup
    user: 65534
    sources: [{interface: e0, direction: egress}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1, mac: "02:00:00:00:77:22"}]
`)
	if rs := nftRuleset(t, l); !strings.Contains(rs, "meta skuid 65534") {
		t.Fatalf("the ruleset has no skuid match:\n%s", rs)
	}
	send := func(sport int, uid ...string) {
		args := append([]string{"-c", udpSendScript, lab.EngE0IP, lab.SrcIP, "9", strconv.Itoa(sport), "10"}, uid...)
		if out, err := l.Exec(context.Background(), l.Eng, "python3", args...); err != nil {
			t.Fatalf("sending from port %d: %v\n%s", sport, err, out)
		}
	}
	send(25001, "65534")
	send(25002)
	waitQuiet(t, c)
	got := udpSportCounts(c.Stop())
	status, _, _ := nfc(l, "status", "-c", d.cfgPath)
	d.stop(t)
	t.Logf("user 65534: copies of uid 65534's datagrams %d of 10, of root's %d of 10", got[25001], got[25002])
	if got[25001] != 10 || got[25002] != 0 {
		t.Errorf("copies by source port %v, want 10 of 25001 (uid 65534) and none of 25002 (root)", got)
	}
	if !strings.Contains(status, "nobody: scope 10") {
		t.Errorf("status does not say that the scope kept root's 10 datagrams from being copied:\n%s", status)
	}
}

// mountNS is a private mount namespace with cgroup2 mounted in it (this
// host has only the v1 controllers at /sys/fs/cgroup), held by a sleeping
// process until the test ends. Commands enter it with nsenter -m; the
// network namespace they run in is set by ip netns exec before that, so
// the remount of /sys that ip netns exec does is not in the way.
type mountNS struct {
	pid  string
	root string // where cgroup2 is mounted inside
}

func newCgroup2NS(t *testing.T, l *lab.Lab) *mountNS {
	t.Helper()
	lab.RequireTools(t, "unshare", "nsenter")
	holder := exec.Command("unshare", "-m", "--propagation", "private", "sleep", "3600")
	holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := holder.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	t.Cleanup(func() {
		_ = holder.Process.Kill()
		_ = holder.Wait()
	})
	m := &mountNS{pid: strconv.Itoa(holder.Process.Pid), root: filepath.Join(t.TempDir(), "cgroup2")}
	if err := os.Mkdir(m.root, 0o755); err != nil {
		t.Fatal(err)
	}
	// The namespace exists once unshare has exec'd sleep.
	lab.WaitFor(t, 5*time.Second, func() bool {
		a, _ := os.Readlink("/proc/self/ns/mnt")
		b, _ := os.Readlink("/proc/" + m.pid + "/ns/mnt")
		return b != "" && a != b
	}, "the private mount namespace")
	if out, err := exec.Command("nsenter", "-t", m.pid, "-m", "mount", "-t", "cgroup2", "none", m.root).CombinedOutput(); err != nil {
		t.Fatalf("mounting cgroup2: %v\n%s", err, out)
	}
	return m
}

// sh runs a shell command inside the mount namespace (in the host's
// network namespace).
func (m *mountNS) sh(t *testing.T, script string) string {
	t.Helper()
	out, err := exec.Command("nsenter", "-t", m.pid, "-m", "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return strings.TrimSpace(string(out))
}

// cgroup: a process in cgroup A and one outside it send to the same
// destination; only A's datagrams are copied — A created after nfclone
// started, and again after A is removed and created again (a new cgroup id,
// followed without a reload).
func TestSelectCgroup(t *testing.T) {
	l := lab.New(t)
	m := newCgroup2NS(t, l)
	name := "nfclone-e2e-" + l.Suffix
	dir := filepath.Join(m.root, name)
	t.Cleanup(func() { _, _ = exec.Command("nsenter", "-t", m.pid, "-m", "rmdir", dir).CombinedOutput() })
	ino := func() string { return m.sh(t, "stat -c %i "+dir) }

	c := l.StartCapture(t, l.Col, lab.Iface, "udp", lab.Direction("in"))
	path, stateDir := writeConfig(t, fmt.Sprintf(`
sessions:
  - name: app
    method: dup
    cgroup: %q
    sources: [{interface: e0, direction: egress}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1, mac: "02:00:00:00:77:22"}]
`, name))
	p := l.Start(t, l.Eng, "nsenter", "-t", m.pid, "-m", binary, "run", "-c", path)
	d := &daemon{Proc: p, l: l, cfgPath: path, stateDir: stateDir}
	lab.WaitFor(t, 15*time.Second, func() bool {
		if p.Exited() {
			t.Fatalf("nfclone exited early:\n%s", p.Stderr())
		}
		return strings.Contains(p.Stderr(), "rules installed")
	}, "nfclone to install its rules")
	requireRule := func(id string) {
		t.Helper()
		want := "socket cgroupv2 level 1 " + id
		lab.WaitFor(t, 5*time.Second, func() bool { return strings.Contains(nftRuleset(t, l), want) }, want+" in the ruleset")
	}
	// A does not exist yet: the session waits, its rule has id 0.
	requireRule("0")
	if st, _, _ := nfc(l, "status", "-c", d.cfgPath); !strings.Contains(st, "cgroup "+name) || !strings.Contains(st, "waiting") {
		t.Errorf("status does not show the session waiting for its cgroup:\n%s", st)
	}
	m.sh(t, "mkdir "+dir)
	first := ino()
	requireRule(first)
	// in: a sender moved into the cgroup first; out: the same, left where it is.
	send := func(sport int, inside bool) {
		t.Helper()
		enter := ""
		if inside {
			enter = "echo $$ > " + filepath.Join(dir, "cgroup.procs") + " && "
		}
		args := []string{"-t", m.pid, "-m", "sh", "-c", enter + `exec python3 -c "$0" "$@"`, udpSendScript, lab.EngE0IP, lab.SrcIP, "9", strconv.Itoa(sport), "10"}
		if out, err := l.Exec(context.Background(), l.Eng, "nsenter", args...); err != nil {
			t.Fatalf("sending from port %d: %v\n%s", sport, err, out)
		}
	}
	send(24001, true)
	send(24002, false)
	// A is removed and created again: a new id, picked up by the watcher.
	m.sh(t, "rmdir "+dir+" && mkdir "+dir)
	second := ino()
	if second == first {
		t.Fatalf("the re-created cgroup has the same id %s", first)
	}
	requireRule(second)
	send(24003, true)
	send(24004, false)
	waitQuiet(t, c)
	got := udpSportCounts(c.Stop())
	d.stop(t)
	t.Logf("cgroup %s (id %s, then %s): copies of the datagrams sent inside %d and %d of 10, outside %d and %d of 10",
		name, first, second, got[24001], got[24003], got[24002], got[24004])
	if got[24001] != 10 || got[24003] != 10 || got[24002] != 0 || got[24004] != 0 {
		t.Errorf("copies by source port %v, want 10 of 24001 and 24003 (inside the cgroup), none of 24002 and 24004", got)
	}
	if !strings.Contains(p.Stderr(), "cgroup changed") {
		t.Errorf("nfclone did not log the cgroup change:\n%s", p.Stderr())
	}
}

// Both directions of this host's UDP servers: one in cgroup A (port 7001)
// and one outside (7002), both on eng, answer src. Ingress (the input hook)
// finds the receiving socket by a lookup of its own, so the cgroup selects
// requests and replies alike; a user match has no socket on ingress for
// unconnected UDP (the kernel attaches none before the input hook), so
// user: selects the replies only.
func TestSelectScopeIngress(t *testing.T) {
	l := lab.New(t)
	m := newCgroup2NS(t, l)
	name := "nfclone-e2e-in-" + l.Suffix
	dir := filepath.Join(m.root, name)
	m.sh(t, "mkdir "+dir)
	t.Cleanup(func() { _, _ = exec.Command("nsenter", "-t", m.pid, "-m", "rmdir", dir).CombinedOutput() })
	server := func(port int, inside bool, uid string) {
		t.Helper()
		enter := ""
		if inside {
			enter = "echo $$ > " + filepath.Join(dir, "cgroup.procs") + " && "
		}
		script := `
import os, socket, sys
if sys.argv[3] != "":
    os.setuid(int(sys.argv[3]))  # before the socket: it belongs to its creator
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(2048)
    s.sendto(d, a)
`
		p := l.Start(t, l.Eng, "nsenter", "-t", m.pid, "-m", "sh", "-c", enter+`exec python3 -c "$0" "$@"`, script, lab.EngE0IP, strconv.Itoa(port), uid)
		lab.WaitFor(t, 10*time.Second, func() bool {
			if p.Exited() {
				t.Fatalf("server %d exited: %s", port, p.Stderr())
			}
			return strings.Contains(p.Stdout(), "ready")
		}, "the udp server")
	}
	server(7001, true, "")
	server(7002, false, "")
	server(7003, false, "65534")
	c := l.StartCapture(t, l.Col, lab.Iface, "udp", lab.Direction("in"))
	path, stateDir := writeConfig(t, fmt.Sprintf(`
sessions:
  - name: app
    method: dup
    cgroup: %q
    sources: [{interface: e0, direction: both}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1, mac: "02:00:00:00:77:22"}]
  - name: nobody
    method: log
    user: 65534
    sources: [{interface: e0, direction: both}]
    targets: [{kind: gateway, gateway: 10.77.4.2, device: e3}]
`, name))
	p := l.Start(t, l.Eng, "nsenter", "-t", m.pid, "-m", binary, "run", "-c", path)
	d := &daemon{Proc: p, l: l, cfgPath: path, stateDir: stateDir}
	lab.WaitFor(t, 15*time.Second, func() bool {
		if p.Exited() {
			t.Fatalf("nfclone exited early:\n%s", p.Stderr())
		}
		return strings.Contains(p.Stderr(), "rules installed")
	}, "nfclone to install its rules")
	c2 := l.StartCapture(t, l.Col2, lab.Iface, "udp", lab.Direction("in"))
	for _, port := range []int{7001, 7002, 7003} {
		got := udpFlows(t, l, l.Src, lab.SrcIP, lab.EngE0IP, port, 26000+10*port%100, 1, 10)
		if got[26000+10*port%100] != 10 {
			t.Fatalf("port %d: %v echoes", port, got)
		}
	}
	waitQuiet(t, c)
	waitQuiet(t, c2)
	cg, us := c.Stop(), c2.Stop()
	d.stop(t)
	dirs := func(ps []lab.Packet, port int) (in, out int) {
		for _, p := range ps {
			if p.UDPDstPort == port {
				in++
			}
			if p.UDPSrcPort == port {
				out++
			}
		}
		return
	}
	i1, o1 := dirs(cg, 7001)
	i2, o2 := dirs(cg, 7002)
	i3, o3 := dirs(us, 7003)
	i4, o4 := dirs(us, 7002)
	t.Logf("cgroup: server inside %d requests %d replies copied, outside %d %d; user 65534: its server %d requests %d replies, root's %d %d",
		i1, o1, i2, o2, i3, o3, i4, o4)
	if i1 != 10 || o1 != 10 || i2 != 0 || o2 != 0 {
		t.Errorf("cgroup: inside %d/%d, outside %d/%d copied; want 10/10 and 0/0", i1, o1, i2, o2)
	}
	if i3 != 0 || o3 != 10 || i4 != 0 || o4 != 0 {
		t.Errorf("user: its server %d/%d, root's %d/%d copied; want 0/10 (no socket on ingress) and 0/0", i3, o3, i4, o4)
	}
}

// runCapture runs `nfclone capture ARGS -w FILE` in the engine namespace
// while traffic() runs, and returns the packets of the file (read by
// tshark) and capture's report.
func runCapture(t *testing.T, l *lab.Lab, traffic func(), args ...string) ([]lab.Packet, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "f.pcap")
	p := l.Start(t, l.Eng, binary, append(append([]string{"capture"}, args...), "-w", out)...)
	lab.WaitFor(t, 10*time.Second, func() bool {
		if p.Exited() {
			t.Fatalf("capture exited early:\n%s", p.Stderr())
		}
		return strings.Contains(p.Stderr(), "capturing on")
	}, "capture to start")
	traffic()
	if code, err := p.Wait(15 * time.Second); code != 0 || err != nil {
		t.Fatalf("capture: exit %d %v\n%s", code, err, p.Stderr())
	}
	ps, err := lab.ReadPackets(out)
	if err != nil {
		t.Fatal(err)
	}
	return ps, p.Stderr()
}

// capture --first-packets 3: two forwarded ping flows of 10 give 3
// requests and 3 replies each in the file, and the report says what the
// selector left out; capture --user 65534 --direction egress: only that
// user's datagrams.
func TestSelectCapture(t *testing.T) {
	l := lab.New(t)
	ps, report := runCapture(t, l, func() {
		done := make(chan error, 2)
		for i := 0; i < 2; i++ {
			go func() {
				_, _, _, err := lab.Ping(context.Background(), l, l.Src, lab.Src2IP, 10, 20*time.Millisecond)
				done <- err
			}()
		}
		for i := 0; i < 2; i++ {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}, "-i", "e0", "--proto", "icmp", "--first-packets", "3", "--duration", "4s")
	req, rep := map[int]int{}, map[int]int{}
	for _, p := range ps {
		if p.IsEchoRequest() {
			req[icmpEchoID(p.IP)]++
		} else if p.IsEchoReply() {
			rep[icmpEchoID(p.IP)]++
		}
	}
	t.Logf("capture --first-packets 3: requests per flow %v, replies %v", req, rep)
	if len(req) != 2 || len(rep) != 2 {
		t.Fatalf("flows in the file: requests %v replies %v, want 2 flows", req, rep)
	}
	for id := range req {
		if req[id] != 3 || rep[id] != 3 {
			t.Errorf("flow %d: %d requests %d replies in the file, want 3 and 3", id, req[id], rep[id])
		}
	}
	if !strings.Contains(report, "12 packets captured") || !strings.Contains(report, "28 packets not selected (first_packets 28)") {
		t.Errorf("capture's report:\n%s", report)
	}

	ps, report = runCapture(t, l, func() {
		for _, s := range []struct {
			sport int
			uid   []string
		}{{27001, []string{"65534"}}, {27002, nil}} {
			args := append([]string{"-c", udpSendScript, lab.EngE0IP, lab.SrcIP, "9", strconv.Itoa(s.sport), "10"}, s.uid...)
			if out, err := l.Exec(context.Background(), l.Eng, "python3", args...); err != nil {
				t.Errorf("sending: %v\n%s", err, out)
			}
		}
	}, "-i", "e0", "--direction", "egress", "--proto", "udp", "--user", "65534", "--duration", "3s")
	got := udpSportCounts(ps)
	t.Logf("capture --user 65534: %v", got)
	if got[27001] != 10 || got[27002] != 0 {
		t.Errorf("in the file by source port %v, want 10 of 27001 and none of 27002\n%s", got, report)
	}
}
