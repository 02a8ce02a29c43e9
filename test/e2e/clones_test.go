package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// A queue session copies the kernel's clone, never the original: with the
// reader stopped (SIGSTOP) the originals still get through at once — with
// NFQUEUE holding originals they would wait for the verdict — and their
// copies arrive once it runs again. Over v4 and v6.
func TestQueueNeverHoldsOriginals(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: q
    method: queue
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}, {number: 2, action: accept, protocol: icmpv6}]
    targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 9}]
`)
	// a bigger buffer: the copies come as one burst after SIGCONT
	c := l.StartCapture(t, l.Col2, "e0", "udp port 4789", lab.Direction("in"), lab.TcpdumpArgs("-B", "8192"))
	// Resolve col2 first: a burst of copies to an unresolved neighbour
	// would mostly be dropped by the kernel's ARP queue (3 packets).
	ping(t, l, l.Eng, lab.Col2IP, 1)
	resume := sigstop(t, d)
	defer resume()
	const n = 20
	rtt := regexp.MustCompile(`rtt min/avg/max/mdev = [\d.]+/[\d.]+/([\d.]+)/`)
	for _, dst := range []string{lab.EngE0IP, lab.EngE06} {
		args := []string{"-n", "-c", strconv.Itoa(n), "-i", "0.01", "-W", "1", dst}
		if dst == lab.EngE06 {
			args = append([]string{"-6"}, args...)
		}
		out, err := l.Exec(context.Background(), l.Src, "ping", args...)
		sent, recv, dupes, perr := lab.ParsePingSummary(string(out))
		if err != nil || perr != nil || sent != n || recv != n || dupes != 0 {
			t.Fatalf("ping %s with nfclone stopped: %v %v\n%s", dst, err, perr, out)
		}
		m := rtt.FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("no rtt line:\n%s", out)
		}
		if max, _ := strconv.ParseFloat(m[1], 64); max > 50 {
			t.Fatalf("ping %s: max rtt %.1f ms with nfclone stopped: originals were held\n%s", dst, max, out)
		}
		t.Logf("%s with the reader stopped: %d/%d replies, max rtt %s ms", dst, recv, n, m[1])
	}
	// (A copy of something that came before SIGSTOP may still arrive: count
	// only the echo requests.)
	if got := vxlanEchoRequests(c.Records()); got != 0 {
		t.Fatalf("%d copies of echo requests while nfclone was stopped", got)
	}
	resume()
	// the clones waited in the kernel queue
	for end := time.Now().Add(5 * time.Second); c.Count() < 2*n && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	d.stop(t)
	led := ledgerNumbers(t, d.Stderr(), "q")
	// 2n echo requests (and the neighbour discovery that came with them)
	innerEcho := func(p lab.Packet) bool {
		for _, v := range append(p.All("icmp.type"), p.All("icmpv6.type")...) {
			if v == "8" || v == "128" {
				return true
			}
		}
		return false
	}
	pk := c.Stop()
	requireCount(t, "echo requests in VXLAN at col2", pk, innerEcho, 2*n)
	var recs []lab.Record
	for _, p := range pk {
		recs = append(recs, p.Record)
	}
	if got := vxlanEchoRequests(recs); got != 2*n { // the check used while stopped counts right
		t.Fatalf("vxlanEchoRequests counts %d of the %d echo requests tshark decoded", got, 2*n)
	}
	if led["copied"] < 2*n {
		t.Fatalf("ledger %v, want >= %d copied", led, 2*n)
	}
}

// sigstop stops nfclone (SIGSTOP) and waits until the kernel says it is
// stopped; resume (SIGCONT) is safe to call more than once.
func sigstop(t *testing.T, d *daemon) (resume func()) {
	t.Helper()
	if err := d.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	resume = func() {
		if stopped {
			stopped = false
			if err := d.Signal(syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	lab.WaitFor(t, 5*time.Second, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.Pid()))
		i := bytes.LastIndexByte(b, ')')
		return err == nil && i > 0 && i+2 < len(b) && b[i+2] == 'T'
	}, "nfclone stopped")
	return resume
}

// A kernel-routed session's clones do not wait for nfclone: dup routes
// them to the gateway, a queue session's queue is fail-open and NFLOG holds
// nothing. With nfclone stopped (SIGSTOP), a queue session's small kernel
// queue fills and the kernel sends every later clone at once, a log
// session's all of them (tcpdump at col sees them while nfclone is
// stopped); none reaches the originals' destination (col2 sees each echo
// request once, ping no DUP!); after SIGCONT the queued ones follow. The
// ledger counts every copy, those the kernel sent unread as kernel_sent.
func TestKernelRoutedFailOpen(t *testing.T) {
	const gw, dev = "{kind: gateway, gateway: 10.77.2.2, device: e1}", "{kind: device, device: e1}"
	for _, tc := range []struct{ name, method, target string }{
		{"queue", "queue", gw}, {"log", "log", gw},
		// A device target: dup routes the clone to the device's made-up
		// next hop; col's capture sees the frames (a veth filters no
		// destination address).
		{"queue-device", "queue", dev},
		// nfclone's VXLAN device (queue.vxlan_kernel_route): the kernel
		// encapsulates the clones; col sees them as VXLAN datagrams.
		{"queue-vxlan", "queue", `{kind: vxlan, remote: "10.77.2.2:4789", vni: 9}`},
		// A veth pair nfclone creates (tap): the kernel sends into its
		// near end; the copies are read on agg0.
		{"queue-tap", "queue", "{kind: device, device: agg0, create: true}"},
	} {
		t.Run(tc.name, func(t *testing.T) { runKernelRoutedStopped(t, tc.method, tc.target) })
	}
}

func runKernelRoutedStopped(t *testing.T, method, target string) {
	l := lab.New(t)
	const maxLen, n = 8, 60
	d := startNfclone(t, l, fmt.Sprintf(`
queue: {max_len: %d, log_kernel_route: true, vxlan_kernel_route: true}
sessions:
  - name: k
    method: %s
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [%s]
`, maxLen, method, target))
	// Resolve the gateway first: a burst of copies to an unresolved
	// neighbour would mostly be dropped by the kernel's ARP queue.
	ping(t, l, l.Eng, lab.ColIP, 1)
	filter, cpFilter := "icmp[0] == 8 and dst host "+lab.Col2IP, "icmp[0] == 8 and dst host "+lab.Col2IP
	if strings.Contains(target, "vxlan") {
		cpFilter = "udp dst port 4789" // the session copies nothing else
	}
	cpNS, cpDev := l.Col, "e0"
	if strings.Contains(target, "create: true") {
		cpNS, cpDev = l.Eng, "agg0"
	}
	cp := l.StartCapture(t, cpNS, cpDev, cpFilter, lab.Direction("in"))
	orig := l.StartCapture(t, l.Col2, "e0", filter, lab.Direction("in"))
	resume := sigstop(t, d)
	defer resume()
	if s, r, du, err := lab.Ping(context.Background(), l, l.Src, lab.Col2IP, n, 10*time.Millisecond); err != nil || s != n || r != n || du != 0 {
		t.Fatalf("ping with nfclone stopped: sent %d received %d duplicates %d: %v", s, r, du, err)
	}
	wantStopped := n // NFLOG holds nothing
	if method == "queue" {
		wantStopped = n - maxLen
	}
	cp.WaitCount(wantStopped, 5*time.Second)
	whileStopped := cp.Count()
	resume()
	cp.WaitCount(n, 5*time.Second)
	d.stop(t)
	c, o := cp.Stop(), orig.Stop()
	if len(c) != n || len(o) != n {
		t.Fatalf("%d copies at the gateway, %d originals at col2: want %d each", len(c), len(o), n)
	}
	led := ledgerNumbers(t, d.Stderr(), "k") // fails unless balanced
	if led["copied"] != n {
		t.Fatalf("ledger %v: want copied %d", led, n)
	}
	if method == "queue" && (led["kernel_sent"] < n-maxLen || led["kernel_sent"] == n) {
		t.Fatalf("ledger %v: want kernel_sent at least %d and below %d", led, n-maxLen, n)
	}
	t.Logf("%d of %d copies sent by the kernel while nfclone was stopped; ledger %v", whileStopped, n, led)
}

// The copies of a queue session are the originals byte for byte, although
// the kernel's dup decrements the TTL of a clone taken in prerouting: the
// rules add it back (and fix the checksum), for v4 and v6 — whether nfclone
// sends the copies (two targets) or the kernel does (one gateway per
// session, queue.kernel_route; for log sessions, queue.log_kernel_route).
func TestQueueCopiesAreExact(t *testing.T) {
	for _, tc := range []struct {
		name      string
		copyRange int // what the kernel hands nfclone of each clone (0: log, no queue)
		cfg       string
	}{
		{"nfclone sends", 65531, `
sessions:
  - name: x
    method: queue
    sources: [{interface: e0, direction: ingress}]
    targets:
      - {kind: gateway, gateway: 10.77.2.2, device: e1}
      - {kind: gateway, gateway: "fd77:2::2", device: e1}
`},
		{"kernel sends, log", 0, kernelSendsConfig("log", "queue: {log_kernel_route: true}")},
		{"kernel sends", 128, kernelSendsConfig("queue", "")},
		// Into the near end of a pair nfclone creates, both families
		// through one session (the near end keeps IPv6 on); read on agg0.
		{"kernel sends, tap", 128, `
sessions:
  - name: x
    method: queue
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: device, device: agg0, create: true}]
`},
	} {
		t.Run(tc.name, func(t *testing.T) { runCopiesExact(t, tc.cfg, tc.copyRange) })
	}
}

// A gateway device with a smaller MTU than the session's source keeps the
// kernel from sending its copies: a full-size DF copy would be dropped and
// the kernel would send the original's sender "fragmentation needed" —
// telling production traffic to shrink. nfclone sends them instead
// (copy range 65531, not 128), counts the DF copies it cannot send as
// too_big, `check` says why, and src receives no ICMP from eng.
func TestKernelRouteSmallTargetMTU(t *testing.T) {
	l := lab.New(t)
	l.MustExec(t, l.Eng, "ip", "link", "set", "e1", "mtu", "1400")
	l.MustExec(t, l.Col, "ip", "link", "set", lab.Iface, "mtu", "1400")
	d := startNfclone(t, l, `
sessions:
  - name: m
    method: queue
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
`)
	if out, errOut, code := nfc(l, "check", "-c", d.cfgPath); code != 0 || !strings.Contains(out, "e1 has MTU 1400, below 1500 of source e0") || strings.Contains(out, "the kernel sends its copies") {
		t.Fatalf("check: exit %d, want the MTU warning and no kernel-route note:\n%s%s", code, out, errOut)
	}
	if q := l.MustExec(t, l.Eng, "cat", "/proc/net/netfilter/nfnetlink_queue"); !strings.Contains(strings.Join(strings.Fields(q), " "), " 2 65531 ") {
		t.Fatalf("nfnetlink_queue %q: want copy range 65531 (nfclone sends)", q)
	}
	ping(t, l, l.Eng, lab.ColIP, 1)
	icmp := l.StartCapture(t, l.Src, lab.Iface, "icmp[0] == 3 and icmp[1] == 4", lab.Direction("in"))
	copies := l.StartCapture(t, l.Col, lab.Iface, "icmp[0] == 8", lab.Direction("in"))
	const n = 10
	for _, size := range []string{"1472", "1000"} { // 1500-byte DF originals, then ones that fit
		out := l.MustExec(t, l.Src, "ping", "-n", "-M", "do", "-s", size, "-c", strconv.Itoa(n), "-i", "0.02", "-W", "1", lab.Col2IP)
		if sent, recv, dupes, err := lab.ParsePingSummary(out); err != nil || sent != n || recv != n || dupes != 0 {
			t.Fatalf("ping -s %s: sent %d received %d duplicates %d (%v):\n%s", size, sent, recv, dupes, err, out)
		}
	}
	copies.WaitCount(n, 5*time.Second)
	d.stop(t)
	if got := icmp.Stop(); len(got) != 0 {
		t.Fatalf("src received %d ICMP fragmentation-needed messages: the copies told the sender to shrink", len(got))
	}
	if c := copies.Stop(); len(c) != n {
		t.Fatalf("%d copies at the gateway, want the %d that fit its MTU", len(c), n)
	}
	if led := ledgerNumbers(t, d.Stderr(), "m"); led["too_big"] != n || led["copied"] != n {
		t.Fatalf("ledger %v: want %d copied and %d too_big", led, n, n)
	}
}

// The MTU rule follows the host: lowering the gateway device's MTU while
// nfclone runs hands the session's copies to nfclone (its queue is bound
// again with copy range 65531) before a full-size DF copy can make the
// kernel tell the sender to shrink; raising it back gives them back to the
// kernel (copy range 128).
func TestKernelRouteMTUChangesAtRuntime(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: m
    method: queue
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
`)
	copyRange := func(want string) {
		t.Helper()
		lab.WaitFor(t, 10*time.Second, func() bool {
			q, err := l.Exec(context.Background(), l.Eng, "cat", "/proc/net/netfilter/nfnetlink_queue")
			f := strings.Fields(string(q)) // one queue: number, portid, total, copy mode, copy range, …
			return err == nil && len(f) == 9 && f[3] == "2" && f[4] == want
		}, "queue copy range "+want)
	}
	copyRange("128")
	ping(t, l, l.Eng, lab.ColIP, 1)
	l.MustExec(t, l.Col, "ip", "link", "set", lab.Iface, "mtu", "1400")
	l.MustExec(t, l.Eng, "ip", "link", "set", "e1", "mtu", "1400")
	copyRange("65531")
	icmp := l.StartCapture(t, l.Src, lab.Iface, "icmp[0] == 3 and icmp[1] == 4", lab.Direction("in"))
	const n = 10
	out := l.MustExec(t, l.Src, "ping", "-n", "-M", "do", "-s", "1472", "-c", strconv.Itoa(n), "-i", "0.02", "-W", "1", lab.Col2IP)
	if sent, recv, dupes, err := lab.ParsePingSummary(out); err != nil || sent != n || recv != n || dupes != 0 {
		t.Fatalf("full-size DF pings after the MTU change: sent %d received %d duplicates %d (%v):\n%s", sent, recv, dupes, err, out)
	}
	if got := icmp.Stop(); len(got) != 0 {
		t.Fatalf("src received %d ICMP fragmentation-needed messages", len(got))
	}
	l.MustExec(t, l.Eng, "ip", "link", "set", "e1", "mtu", "1500")
	l.MustExec(t, l.Col, "ip", "link", "set", lab.Iface, "mtu", "1500")
	copyRange("128")
	requirePingCopies(t, l, l.Col, lab.Iface, "copies the kernel sends again")
	d.stop(t)
	requireBalancedLedgers(t, d.Stderr())
}

// kernelSendsConfig is two sessions of method, one gateway each (v4, v6):
// the kernel sends their copies.
func kernelSendsConfig(method, queue string) string {
	return fmt.Sprintf(`
%s
sessions:
  - name: x4
    method: %s
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
  - name: x6
    method: %s
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: gateway, gateway: "fd77:2::2", device: e1}]
`, queue, method, method)
}

func runCopiesExact(t *testing.T, cfg string, copyRange int) {
	l := lab.New(t)
	capNS, capDev, note := l.Col, "e0", "the kernel sends its copies to the gateway 10.77.2.2"
	if strings.Contains(cfg, "create: true") {
		capNS, capDev, note = l.Eng, "agg0", "the kernel sends its copies to the device agg0"
	}
	d := startNfclone(t, l, cfg)
	if copyRange != 65531 {
		// While nfclone runs: a pair it created (in its state file) is
		// no problem to check.
		if out, errOut, code := nfc(l, "check", "-c", d.cfgPath); code != 0 || !strings.Contains(out, note) {
			t.Fatalf("check: exit %d, no note that the kernel sends the copies:\n%s%s", code, out, errOut)
		}
	}
	// The kernel's own account of each queue: nfclone asked for the whole
	// packet (it sends the copy) or its first 128 bytes (the kernel does).
	// (A log session has no queue.)
	for _, line := range strings.Split(strings.TrimSpace(l.MustExec(t, l.Eng, "cat", "/proc/net/netfilter/nfnetlink_queue")), "\n") {
		if f := strings.Fields(line); copyRange != 0 && (len(f) < 5 || f[3] != "2" || f[4] != strconv.Itoa(copyRange)) {
			t.Fatalf("nfnetlink_queue line %q: want copy mode 2 (packet), copy range %d", line, copyRange)
		}
	}
	for _, tc := range []struct{ dst, filter string }{
		{lab.Col2IP, "icmp[0] == 8"},
		{lab.Col26, "icmp6 and ip6[40] == 128"},
	} {
		orig := l.StartCapture(t, l.Eng, "e0", tc.filter, lab.Direction("in"))
		cp := l.StartCapture(t, capNS, capDev, tc.filter, lab.Direction("in"))
		ping(t, l, l.Src, tc.dst, pings)
		cp.WaitCount(pings, 5*time.Second)
		o, c := orig.Stop(), cp.Stop()
		requireCopiesExact(t, tc.dst, o, c, pings)
		t.Logf("%s: %d copies identical to their originals (TTL/hop limit %d/%d)", tc.dst, pings, c[0].TTL, c[0].HopLimit)
	}
	d.stop(t)
}

// vxlanEchoRequests counts the VXLAN datagrams (outer IPv4) whose inner
// packet is an ICMP or ICMPv6 echo request.
func vxlanEchoRequests(recs []lab.Record) int {
	n := 0
	for _, r := range recs {
		ip, ok := r.IP()
		if !ok || len(ip) < 20 || ip[0]>>4 != 4 {
			continue
		}
		in := ip[int(ip[0]&0xf)*4+8+8:] // outer IPv4, UDP, VXLAN
		if len(in) < 14 {
			continue
		}
		et, l3 := uint16(in[12])<<8|uint16(in[13]), in[14:]
		switch {
		case et == 0x0800 && len(l3) >= 20 && l3[9] == 1 && len(l3) > int(l3[0]&0xf)*4:
			if l3[int(l3[0]&0xf)*4] == 8 {
				n++
			}
		case et == 0x86dd && len(l3) > 40 && l3[6] == 58:
			if l3[40] == 128 {
				n++
			}
		}
	}
	return n
}

// A session's rate is enforced by the kernel before any clone is made, and
// what it kept from the copy statement is in the ledger as rate_limit.
func TestQueueRateInLedger(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: r
    method: queue
    rate: "5/second"
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
`)
	const n = 100
	if s, r, du, err := lab.Ping(context.Background(), l, l.Src, lab.EngE0IP, n, 5*time.Millisecond); err != nil || s != n || r != n || du != 0 {
		t.Fatalf("ping: sent %d received %d duplicates %d: %v", s, r, du, err)
	}
	d.stop(t)
	led := ledgerNumbers(t, d.Stderr(), "r") // fails unless balanced
	if led["offered"] != n || led["rate_limit"] == 0 || led["copied"]+led["rate_limit"] != n {
		t.Fatalf("ledger %v: want offered %d = copied + rate_limit, rate_limit > 0", led, n)
	}
	t.Logf("ledger %v", led)
}
