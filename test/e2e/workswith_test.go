package e2e

// End-to-end tests behind README's "Works with" table that no other
// test covers: a Linux VXLAN device terminating nfclone's tunnel, and a
// NetFlow probe (softflowd → nfcapd/nfdump) on an aggregated TAP interface.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// A collector that terminates the tunnel with a plain Linux VXLAN device
// (ip link add vx0 type vxlan id 4242 dstport 4789): tcpdump on vx0 sees
// each copied frame, decapsulated, with the original IP packet inside
// (method queue: nfclone's own encapsulation; method dup: the kernel VXLAN
// device nfclone owns).
func TestWorksWithLinuxVXLANDevice(t *testing.T) {
	for _, method := range []string{"queue", "dup"} {
		t.Run(method, func(t *testing.T) {
			l := lab.New(t)
			l.MustExec(t, l.Col2, "ip", "link", "add", "vx0", "type", "vxlan", "id", "4242", "dstport", "4789", "local", lab.Col2IP, "nolearning")
			l.MustExec(t, l.Col2, "ip", "link", "set", "vx0", "up")
			d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: tun
    method: %s
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: vxlan, remote: "%s:4789", vni: 4242}]
`, method, lab.Col2IP))
			orig := l.StartCapture(t, l.Src, "e0", "icmp[0] == 8", lab.Direction("out"))
			c := l.StartCapture(t, l.Col2, "vx0", "icmp[0] == 8", lab.Direction("in"))
			ping(t, l, l.Src, lab.EngE0IP, pings)
			c.WaitCount(pings, 5*time.Second)
			copies, originals := c.Stop(), orig.Stop()
			requireCount(t, "originals", originals, echoReq(lab.SrcIP), pings)
			requireCount(t, "echo requests decapsulated by vx0", copies, echoReq(lab.SrcIP), pings)
			for i := range copies {
				if !bytes.Equal(copies[i].IP, originals[i].IP) {
					t.Fatalf("frame %d on vx0 differs from the original:\nvx0  %x\norig %x", i, copies[i].IP, originals[i].IP)
				}
			}
			d.stop(t)
		})
	}
}

// NetFlow on an aggregated TAP: `nfclone tap 'e0,e3>agg0' --create`
// copies what arrives on e0 (src's side) and on e3 (col2's side) into
// agg0; softflowd exports NetFlow v9 of agg0's traffic to nfcapd; nfdump
// reports the TCP connection src → col2, whose two directions arrive on
// two different ports, as one bidirectional flow holding every packet
// tcpdump counted on the two ports (and, unaggregated, one record per
// direction). A probe on either port alone would see half of it.
//
// softflowd 1.1.0 reads a live interface without libpcap's immediate mode
// and processes nothing on a quiet one (irino/softflowd#71: "Packets
// processed: 0" while libpcap received them), so it reads agg0 through
// tcpdump's capture of agg0 (softflowd -r): the frames it gets are
// exactly agg0's.
func TestWorksWithSoftflowdNfdump(t *testing.T) {
	lab.RequireTools(t, "softflowd", "nfcapd", "nfdump", "socat")
	l := lab.New(t)
	dir := t.TempDir()
	tap := startTap(t, l, filepath.Join(dir, "state"), "e0,e3>agg0", "--create", "--direction", "ingress")
	// The ports carry wire packets, as a switch's would: agg0 delivers
	// wire packets (nfclone cuts what enters its pair), and the counts on
	// the ports and on agg0 are then of the same packets (with TSO the
	// sender's super-packets crossed e0 whole: 13 on e0, 63 on agg0).
	l.MustExec(t, l.Src, "ethtool", "-K", "e0", "tso", "off", "gso", "off")

	big := lab.TcpdumpArgs("-B", "16384")
	in0 := l.StartCapture(t, l.Eng, "e0", "tcp port 5002", lab.Direction("in"), big)
	in3 := l.StartCapture(t, l.Eng, "e3", "tcp port 5002", lab.Direction("in"), big)
	agg := l.StartCapture(t, l.Eng, "agg0", "tcp port 5002", big)
	recv := l.Start(t, l.Col2, "socat", "-u", "TCP-LISTEN:5002,reuseaddr", "OPEN:/dev/null,wronly")
	file, _ := writeRandomFile(t, dir, "data.bin", 64<<10)
	lab.WaitFor(t, 5*time.Second, func() bool {
		out, _, code := runIn(l.Col2, "ss", "-Hltn", "sport = :5002")
		return code == 0 && strings.Contains(out, "5002")
	}, "socat listening in col2")
	l.MustExec(t, l.Src, "socat", "-u", "OPEN:"+file, "TCP:"+lab.Col2IP+":5002")
	if _, err := recv.Wait(10 * time.Second); err != nil {
		t.Fatalf("receiver: %v", err)
	}
	// tcpdump's count of the connection's packets on each port, and on agg0.
	lab.WaitFor(t, 5*time.Second, func() bool {
		return in0.Count() > 0 && in3.Count() > 0 && agg.Count() >= in0.Count()+in3.Count()
	}, "both directions on agg0")
	time.Sleep(300 * time.Millisecond) // a late duplicate would show
	toCol2, toSrc, onAgg := len(in0.Stop()), len(in3.Stop()), len(agg.Stop())
	for name, c := range map[string]*lab.Capture{"e0": in0, "e3": in3, "agg0": agg} {
		if d := c.Finish(); d != 0 {
			t.Fatalf("tcpdump on %s dropped %d packets: cannot count the connection", name, d)
		}
	}
	if onAgg != toCol2+toSrc {
		t.Fatalf("agg0 carried %d packets of the connection, e0 and e3 received %d + %d", onAgg, toCol2, toSrc)
	}

	flows := filepath.Join(dir, "flows")
	if err := os.MkdirAll(flows, 0o755); err != nil {
		t.Fatal(err)
	}
	nfcapd := l.Start(t, l.Eng, "nfcapd", "-w", flows, "-b", "127.0.0.1", "-p", "9995", "-t", "60")
	lab.WaitFor(t, 5*time.Second, func() bool { return strings.Contains(nfcapd.Stderr(), "Startup") }, "nfcapd to start")
	// No -c: reading a file, softflowd has no control socket (with one it
	// may block in accept(): it tests poll results it never polled for).
	sout, serr, code := runIn(l.Eng, "softflowd", "-d", "-r", agg.Path, "-n", "127.0.0.1:9995", "-v", "9",
		"-p", filepath.Join(dir, "softflowd.pid"))
	if code != 0 {
		t.Fatalf("softflowd -r: exit %d\n%s%s", code, sout, serr)
	}
	lab.WaitFor(t, 5*time.Second, func() bool {
		time.Sleep(200 * time.Millisecond)
		return true
	}, "the export datagrams to reach nfcapd")
	if err := nfcapd.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := nfcapd.Wait(10 * time.Second); err != nil {
		t.Fatalf("nfcapd: %v\n%s", err, nfcapd.Stderr())
	}

	dump := func(args ...string) []string {
		t.Helper()
		cmd := exec.Command("nfdump", append([]string{"-R", flows, "-q", "-o", "fmt:%sa %sp %da %dp %ipkt %opkt"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nfdump %v: %v\n%s", args, err, out)
		}
		var lines []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.Contains(line, "5002") {
				lines = append(lines, strings.Join(strings.Fields(line), " "))
			}
		}
		return lines
	}
	records := dump("proto tcp and port 5002")
	bidir := dump("-b", "proto tcp and port 5002")
	t.Logf("tcpdump: %d packets src→col2 on e0, %d col2→src on e3, %d on agg0; nfdump records: %q; bidirectional: %q", toCol2, toSrc, onAgg, records, bidir)
	if len(bidir) != 1 {
		t.Fatalf("nfdump -b: %d flows for the one connection, want 1: %q\nnfcapd: %s", len(bidir), bidir, nfcapd.Stderr())
	}
	// src:port dst:port in-packets out-packets: the client's packets one
	// way, col2's the other.
	f := strings.Fields(bidir[0])
	in, _ := strconv.Atoi(f[len(f)-2])
	out, _ := strconv.Atoi(f[len(f)-1])
	if f[0] != lab.SrcIP || f[2] != lab.Col2IP || in != toCol2 || out != toSrc {
		t.Errorf("the flow %q: want %s → %s with %d packets in and %d out (tcpdump on e0 and e3)", bidir[0], lab.SrcIP, lab.Col2IP, toCol2, toSrc)
	}
	if len(records) != 2 {
		t.Errorf("%d NetFlow records, want one per direction: %q", len(records), records)
	}
	tap.stop(t)
}
