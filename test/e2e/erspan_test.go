package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// ERSPAN type II and III built by nfclone (queue and log): tshark at the
// collector decodes GRE/ERSPAN with the configured span ids and an inner
// frame whose IP packet is the original byte for byte, and `nfclone
// collect --kind erspan --session 7 -w` gives back exactly the originals
// (the copies of session 8 are counted as another session and dropped).
func TestERSPANTargets(t *testing.T) {
	for _, tc := range []struct {
		name, method  string
		version       int
		remote, proto string
		src, dst      string
	}{
		{"v2/queue", "queue", 2, lab.Col2IP, "icmp", lab.SrcIP, lab.EngE0IP},
		{"v3/log", "log", 3, lab.Col2IP, "icmp", lab.SrcIP, lab.EngE0IP},
		{"v3/log/ipv6", "log", 3, lab.Col26, "icmpv6", lab.Src6, lab.EngE06},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := lab.New(t)
			out := filepath.Join(t.TempDir(), "erspan.pcap")
			col := l.Start(t, l.Col2, binary, "collect", "--kind", "erspan", "--listen", tc.remote,
				"--allow", "10.77.0.0/16", "--allow", "fd77::/16", "--session", "7", "-w", out)
			lab.WaitFor(t, 10*time.Second, func() bool {
				if col.Exited() {
					t.Fatalf("collect exited:\n%s", col.Stderr())
				}
				return strings.Contains(col.Stderr(), "collecting")
			}, "nfclone collect to listen")
			d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: span
    method: %s
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: %s}]
    targets:
      - {kind: erspan, remote: "%s", version: %d, session_id: 7}
      - {kind: erspan, remote: "%s", version: %d, session_id: 8}
`, tc.method, tc.proto, tc.remote, tc.version, tc.remote, tc.version))
			echo := "icmp[0] == 8"
			if tc.proto == "icmpv6" {
				echo = "icmp6 and ip6[40] == 128"
			}
			orig := l.StartCapture(t, l.Src, "e0", echo, lab.Direction("out"))
			gre := l.StartCapture(t, l.Col2, "e0", "proto 47", lab.Direction("in"))
			ping(t, l, l.Src, tc.dst, pings)
			gre.WaitCount(2*pings, 5*time.Second)
			originals := orig.Stop()
			// The icmpv6 rule copies neighbour discovery too: only the
			// copies of echo requests are compared.
			var copies []lab.Packet
			for _, p := range gre.Stop() {
				if isEchoRequestInside(p) {
					copies = append(copies, p)
				}
			}
			requireCount(t, "originals", originals, echoReq(tc.src), pings)
			if len(copies) != 2*pings {
				t.Fatalf("%d GRE packets with echo requests at the collector, want %d", len(copies), 2*pings)
			}
			// tshark's view of every GRE packet: ERSPAN version (1: type
			// II, 2: type III), span id, and the inner packet's source.
			addr := "ip.src"
			if tc.proto == "icmpv6" {
				addr = "ipv6.src"
			}
			fields := l.MustExec(t, "", "tshark", "-r", gre.Path, "-n", "-Y", "icmp.type == 8 or icmpv6.type == 128", "-T", "fields", "-E", "separator=|",
				"-e", "gre.proto", "-e", "erspan.version", "-e", "erspan.spanid", "-e", addr)
			wantVer := map[int]string{2: "0x88be|1", 3: "0x22eb|2"}[tc.version]
			spans := map[string]int{}
			for _, line := range strings.Split(strings.TrimSpace(fields), "\n") {
				f := strings.Split(line, "|")
				if len(f) != 4 || f[0]+"|"+f[1] != wantVer || !strings.HasSuffix(f[3], ","+tc.src) {
					t.Fatalf("tshark decodes %q, want %s|<span>|<outer>,%s", line, wantVer, tc.src)
				}
				spans[f[2]]++
			}
			if spans["7"] != pings || spans["8"] != pings {
				t.Fatalf("span ids seen by tshark: %v, want %d of 7 and of 8", spans, pings)
			}
			// The inner frame: ERSPAN headers, synthesized Ethernet, then
			// the original IP packet byte for byte.
			outerIP := 20
			if tc.proto == "icmpv6" {
				outerIP = 40
			}
			hdr := 14 + outerIP + 8 + map[int]int{2: 8, 3: 12}[tc.version] + 14
			// (Each original twice, once per target; a batch of copies
			// goes to one target, then the other, so only the multiset is
			// compared.)
			want := map[string]int{}
			for _, o := range originals {
				want[string(o.IP)] += 2
			}
			for i, c := range copies {
				in := string(c.Record.Data[hdr:])
				if want[in] == 0 {
					t.Fatalf("GRE packet %d: inner packet is no original (or one too often):\ninner %x", i, in)
				}
				want[in]--
			}
			d.stop(t)
			if err := col.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			if code, err := col.Wait(10 * time.Second); code != 0 || err != nil {
				t.Fatalf("collect exit %d %v:\n%s", code, err, col.Stderr())
			}
			all, err := lab.ReadPackets(out)
			if err != nil {
				t.Fatal(err)
			}
			var ps []lab.Packet
			for _, p := range all {
				if isEchoRequestInside(p) {
					ps = append(ps, p)
				}
			}
			requireCount(t, "collected frames", ps, echoReq(tc.src), pings)
			if len(ps) != pings {
				t.Fatalf("collect wrote %d echo requests, want %d", len(ps), pings)
			}
			for i := range ps {
				if !bytes.Equal(ps[i].IP, originals[i].IP) {
					t.Fatalf("collected packet %d differs:\ngot  %x\nwant %x", i, ps[i].IP, originals[i].IP)
				}
			}
			// Everything of session 8 was dropped as another session.
			if !strings.Contains(col.Stderr(), fmt.Sprintf("written %d, malformed 0, other VNI %d,", len(all), len(all))) {
				t.Fatalf("collect's counters:\n%s", col.Stderr())
			}
		})
	}
}

// isEchoRequestInside reports whether tshark found an ICMP or ICMPv6 echo
// request in the frame (at any depth).
func isEchoRequestInside(p lab.Packet) bool {
	for _, v := range p.All("icmp.type") {
		if v == "8" {
			return true
		}
	}
	for _, v := range p.All("icmpv6.type") {
		if v == "128" {
			return true
		}
	}
	return false
}

// ERSPAN type III says the copy's direction: tshark decodes D as ingress
// for the copies of the echo requests that arrived on e0 and egress for
// those of the replies that left it.
func TestERSPANDirection(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: span
    method: log
    sources: [{interface: e0, direction: both}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: erspan, remote: 10.77.4.2, version: 3, session_id: 9}]
`)
	gre := l.StartCapture(t, l.Col2, "e0", "proto 47", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	gre.WaitCount(2*pings, 5*time.Second)
	gre.Finish()
	d.stop(t)
	out := l.MustExec(t, "", "tshark", "-r", gre.Path, "-n", "-T", "fields", "-E", "separator=|",
		"-e", "erspan.spanid", "-e", "erspan.direction", "-e", "icmp.type")
	count := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		count[line]++
	}
	// icmp.type 8 = request (arrived: ingress, D 0), 0 = reply (left: egress, D 1).
	if count["9|0|8"] != pings || count["9|1|0"] != pings {
		t.Fatalf("tshark's span id | direction | icmp type: %v, want %d of 9|0|8 and of 9|1|0", count, pings)
	}
}
