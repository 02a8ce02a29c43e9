package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// nftCounter reads "counter packets P bytes B" of one table in ns: packets
// and bytes.
var nftCounter = regexp.MustCompile(`counter packets (\d+) bytes (\d+)`)

func tableCounters(t *testing.T, l *lab.Lab, ns, family, table string) (pkts, bytes []int) {
	t.Helper()
	for _, m := range nftCounter.FindAllStringSubmatch(l.MustExec(t, ns, "nft", "list", "table", family, table), -1) {
		p, _ := strconv.Atoi(m[1])
		b, _ := strconv.Atoi(m[2])
		pkts, bytes = append(pkts, p), append(bytes, b)
	}
	return pkts, bytes
}

// iperfToCol2 runs one iperf3 test from src to a server in col2 (port
// 5201) at dst with args, and requires both ends to exit 0.
// linkMAC is the hardware address of dev in ns.
func linkMAC(t *testing.T, l *lab.Lab, ns, dev string) string {
	t.Helper()
	m := regexp.MustCompile(`link/ether ([0-9a-f:]{17})`).FindStringSubmatch(l.MustExec(t, ns, "ip", "link", "show", dev))
	if m == nil {
		t.Fatalf("[%s] %s has no Ethernet address", ns, dev)
	}
	return m[1]
}

func iperfToCol2(t *testing.T, l *lab.Lab, dst string, args ...string) {
	t.Helper()
	srv := l.Start(t, l.Col2, "iperf3", "-s", "-1")
	lab.WaitFor(t, 5*time.Second, func() bool {
		return strings.TrimSpace(l.MustExec(t, l.Col2, "ss", "-Hltn", "sport = :5201")) != ""
	}, "iperf3 to listen")
	l.MustExec(t, l.Src, "iperf3", append([]string{"-c", dst, "--connect-timeout", "2000"}, args...)...)
	if code, err := srv.Wait(10 * time.Second); code != 0 || err != nil {
		t.Fatalf("iperf3 server: exit %d %v\n%s", code, err, srv.Stderr())
	}
}

// TCP bulk through a link flap on the gateway target's device, IPv4 and
// IPv6, with gateway copies that hand super-packets to the kernel whole
// (the packet socket to the gateway's neighbour) and fall back to the raw
// socket and the policy route while the neighbour is gone. The kernel
// judges: a counter in eng sees every copy (the session's TCP, with
// nfclone's mark) that leaves by anything but e1 (a copy leaking into
// production) — it must stay 0 through the flap — and after the flap counters at the collector
// and the receiver must show the copies carrying every payload byte the
// receiver got (TCP payload: IP bytes less the headers of each packet, since
// the receiver gets GRO super-packets and the collector wire packets).
// With hold: true the originals themselves wait for nfclone; while e1 is
// down its copies fail fast (counted), so the originals keep flowing. The
// kernel row has one session per family, each with one gateway: the kernel
// sends their clones (queue.kernel_route, dup routing them to e1, a
// fail-open queue), and while e1 is down dup makes none. The
// kernel-device row has one session with the device e1 as its target
// (col's e0 MAC, so col's stack counts the copies): the kernel sends its
// clones of both families to the device's made-up next hops, whose
// neighbours and routes the flap removes and nfclone puts back. The
// kernel-vxlan row sends into nfclone's VXLAN device
// (queue.vxlan_kernel_route): e1 is its underlay, the outer datagrams are
// lost while it is down, and col decapsulates and counts the copies. The
// log-device row is the kernel-device row with a log session at its
// defaults: the kernel sends the TCP clones (queue.log_kernel_route: tcp),
// read from the session's second NFLOG group.
func TestBulkTCPThroughLinkFlap(t *testing.T) {
	lab.RequireTools(t, "iperf3", "ethtool", "nft")
	for _, mode := range []string{"queue", "hold", "kernel", "kernel-device", "kernel-vxlan", "log-device"} {
		t.Run(mode, func(t *testing.T) { bulkThroughFlap(t, mode) })
	}
}

func bulkThroughFlap(t *testing.T, mode string) {
	l := lab.New(t)
	wireCollector(t, l)
	method := "queue"
	if mode == "log-device" {
		method = "log"
	}
	session := func(name, targets string) string {
		return fmt.Sprintf(`
  - name: %s
    method: %s
    hold: %t
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: tcp, destination_ports: "5201"}]
    targets: [%s]`, name, method, mode == "hold", targets)
	}
	gw4 := fmt.Sprintf("{kind: gateway, gateway: %s, device: e1}", lab.ColIP)
	gw6 := fmt.Sprintf(`{kind: gateway, gateway: "%s", device: e1}`, lab.Col6)
	sessions := session("flap", gw4+", "+gw6)
	switch mode {
	case "kernel":
		sessions = session("flap4", gw4) + session("flap6", gw6)
	case "kernel-device", "log-device":
		sessions = session("flap", fmt.Sprintf(`{kind: device, device: e1, mac: "%s"}`, linkMAC(t, l, l.Col, lab.Iface)))
	case "kernel-vxlan":
		// col decapsulates (its VXLAN device has the inner destination
		// address nfclone's copies carry), so its stack counts them.
		sessions = session("flap", fmt.Sprintf(`{kind: vxlan, remote: "%s:4789", vni: 9}`, lab.ColIP))
		l.MustExec(t, l.Col, "ip", "link", "add", "vx9", "address", "02:4e:43:00:00:02", "type", "vxlan", "id", "9", "dstport", "4789", "dev", lab.Iface)
		l.MustExec(t, l.Col, "ip", "link", "set", "vx9", "up")
	}
	d := startNfclone(t, l, "queue: {nice: 0, vxlan_kernel_route: true}\nsessions:"+sessions+"\n")
	if mode == "log-device" {
		// The second group, the kernel's TCP clones, asks for 128 bytes
		// (group, portid, qlen, copy mode, copy range, …).
		if !regexp.MustCompile(`(?m)^\s*1\s+\d+\s+\d+\s+\d+\s+128\s`).MatchString(l.MustExec(t, l.Eng, "cat", "/proc/net/netfilter/nfnetlink_log")) {
			t.Fatalf("nfnetlink_log has no group 1 with copy range 128: the kernel does not send the TCP clones")
		}
	}
	if strings.HasPrefix(mode, "kernel") {
		for _, line := range strings.Split(strings.TrimSpace(l.MustExec(t, l.Eng, "cat", "/proc/net/netfilter/nfnetlink_queue")), "\n") {
			if f := strings.Fields(line); len(f) < 5 || f[4] != "128" {
				t.Fatalf("nfnetlink_queue line %q: want copy range 128 (the kernel sends)", line)
			}
		}
	}
	nftIn(t, l, `table inet flapleak {
	chain post {
		type filter hook postrouting priority 100
		oifname != "e1" oifname != "nfcvx*" meta mark & 0x000000ff != 0 tcp dport 5201 counter
	}
}
`)
	for _, ns := range []string{l.Col, l.Col2} {
		l.MustExec(t, ns, "sh", "-c", `nft -f - <<'EOF'
table inet flapcnt {
	chain pre {
		type filter hook prerouting priority -500
		meta nfproto ipv4 tcp dport 5201 counter
		meta nfproto ipv6 tcp dport 5201 counter
	}
}
EOF`)
	}
	// The collector is a known neighbour of both families before the
	// transfer (the packet socket needs its link-layer address).
	ping(t, l, l.Eng, lab.ColIP, 1)
	ping(t, l, l.Eng, lab.Col6, 1)

	// A transfer with the flap in its middle.
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(time.Second)
		l.MustExec(t, l.Eng, "ip", "link", "set", "e1", "down")
		time.Sleep(300 * time.Millisecond)
		l.MustExec(t, l.Eng, "ip", "link", "set", "e1", "up")
	}()
	iperfToCol2(t, l, lab.Col2IP, "-t", "3", "-b", "300M")
	<-done
	// IPv6 drops a device's addresses when it goes down; the operator (here
	// the test) puts eng's back, nfclone repairs its routes.
	l.MustExec(t, l.Eng, "ip", "-6", "addr", "replace", lab.EngE16+"/64", "dev", "e1", "nodad")
	lab.WaitFor(t, 10*time.Second, func() bool {
		r4 := l.MustExec(t, l.Eng, "ip", "route", "show", "table", "all")
		r6 := l.MustExec(t, l.Eng, "ip", "-6", "route", "show", "table", "all")
		if mode == "kernel-vxlan" {
			// e1 is the underlay: the VXLAN device's routes stay.
			return strings.Contains(r4, "default dev nfcvx") && strings.Contains(r6, "default dev nfcvx")
		}
		if mode == "kernel-device" || mode == "log-device" {
			// Both next hops' device routes and permanent neighbours.
			n := l.MustExec(t, l.Eng, "ip", "neigh", "show", "dev", "e1", "nud", "permanent")
			n6 := l.MustExec(t, l.Eng, "ip", "-6", "neigh", "show", "dev", "e1", "nud", "permanent")
			return strings.Contains(r4, "default dev e1") && strings.Contains(r6, "default dev e1") &&
				strings.Contains(n, "169.254.77.1 ") && strings.Contains(n6, "fe80::4e43:1 ")
		}
		return strings.Contains(r4, "default via "+lab.ColIP) && strings.Contains(r6, "default via "+lab.Col6)
	}, "nfclone to repair both families' routes")
	ping(t, l, l.Eng, lab.ColIP, 1)
	ping(t, l, l.Eng, lab.Col6, 1)

	// After the flap: every payload byte the receiver got is copied, in
	// both families.
	for _, fam := range []struct {
		name, dst string
		i, hdr    int // counter index; IP + TCP (with timestamps) header bytes per packet
	}{{"IPv4", lab.Col2IP, 0, 52}, {"IPv6", lab.Col26, 1, 72}} {
		// Deltas of the counters (nft 1.0.6's "reset counters table" leaves
		// a rule's anonymous counter alone).
		cp0, cb0 := tableCounters(t, l, l.Col, "inet", "flapcnt")
		op0, ob0 := tableCounters(t, l, l.Col2, "inet", "flapcnt")
		iperfToCol2(t, l, fam.dst, "-t", "2", "-b", "400M")
		var copies, originals int
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			cp, cb := tableCounters(t, l, l.Col, "inet", "flapcnt")
			op, ob := tableCounters(t, l, l.Col2, "inet", "flapcnt")
			copies = cb[fam.i] - cb0[fam.i] - fam.hdr*(cp[fam.i]-cp0[fam.i])
			originals = ob[fam.i] - ob0[fam.i] - fam.hdr*(op[fam.i]-op0[fam.i])
			if copies >= originals {
				break
			}
			if time.Now().After(deadline) {
				st, _, _ := nfc(l, "status", "--state-dir", d.stateDir)
				t.Fatalf("%s after the flap: copies carry %d payload bytes, the receiver got %d\n%s\n%s",
					fam.name, copies, originals, st, d.Stderr())
			}
		}
		if copies < 1<<20 {
			t.Fatalf("%s: only %d payload bytes copied: no bulk transfer happened", fam.name, copies)
		}
	}
	if pkts, _ := tableCounters(t, l, l.Eng, "inet", "flapleak"); len(pkts) != 1 || pkts[0] != 0 {
		t.Fatalf("copies left eng by another device than e1 (production): %v\n%s", pkts, d.Stderr())
	}
	if mode == "kernel-vxlan" {
		// Over the 1500-byte underlay the segment-size program cut the
		// super-packets, also after the flap of its underlay.
		cut := tunnelCut(t, l, d)
		if cut == nil || cut["cut"].(float64) == 0 {
			t.Fatalf("status: tunnel_cut %v: no super-packet was cut to the path\n%s", cut, d.Stderr())
		}
		t.Logf("tunnel_cut: %v", cut)
	}
	d.stop(t)
}
