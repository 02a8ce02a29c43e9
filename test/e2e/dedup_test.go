package e2e

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// A session copying eng:e0 ingress and eng:e2 egress sees every forwarded
// echo request twice (once with the TTL one lower): with dedup: 50ms each
// reaches the collector once, without it twice (tcpdump at the collector).
func TestDedupForwarded(t *testing.T) {
	for _, tc := range []struct {
		method, dedup string
		want          int
	}{
		{"log", "50ms", 1},
		{"queue", "50ms", 1},
		{"log", "", 2},
	} {
		name := tc.method + "/dedup=" + tc.dedup
		t.Run(name, func(t *testing.T) {
			l := lab.New(t)
			dedup := ""
			if tc.dedup != "" {
				dedup = "dedup: " + tc.dedup
			}
			d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: dd
    method: %s
    %s
    sources: [{interface: e0, direction: ingress}, {interface: e2, direction: egress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: device, device: e1}]
`, tc.method, dedup))
			orig := l.StartCapture(t, l.Src, "e0", "icmp[0] == 8", lab.Direction("out"))
			c := l.StartCapture(t, l.Col, "e0", "icmp", lab.Direction("in"), lab.Promisc())
			ping(t, l, l.Src, lab.Src2IP, pings)
			c.WaitCount(tc.want*pings, 5*time.Second)
			time.Sleep(300 * time.Millisecond) // a second copy would be there by now
			originals, copies := orig.Stop(), c.Stop()
			requireCount(t, "originals", originals, echoReq(lab.SrcIP), pings)
			requireCount(t, "copies of echo requests at the collector", copies, echoReq(lab.SrcIP), tc.want*pings)
			ttls := map[int]int{}
			for _, p := range copies {
				if p.IsEchoRequest() {
					ttls[p.TTL]++
				}
			}
			d.stop(t)
			if tc.want == 2 && (ttls[64] != pings || ttls[63] != pings) {
				t.Fatalf("without dedup: TTLs of the copies %v, want %d of 64 (ingress) and of 63 (egress)", ttls, pings)
			}
			if tc.want == 1 {
				if ttls[64] != pings {
					t.Fatalf("with dedup: TTLs of the copies %v, want the first sighting (ingress, 64) of each", ttls)
				}
				if !strings.Contains(d.Stderr(), fmt.Sprintf("dedup=%d", pings)) {
					t.Errorf("the session ledger does not count %d dedup:\n%s", pings, d.Stderr())
				}
			}
		})
	}
}

// collect --dedup: two sessions mirror the same pings into VXLAN (VNIs 7
// and 8) to one collector; tcpdump at the collector sees 20 datagrams and
// collect writes each echo request once.
func TestCollectDedup(t *testing.T) {
	l := lab.New(t)
	out := t.TempDir() + "/dedup.pcap"
	col := l.Start(t, l.Col2, binary, "collect", "--listen", lab.Col2IP+":4789", "--allow", "10.77.0.0/16", "--dedup", "50ms", "-w", out)
	lab.WaitFor(t, 10*time.Second, func() bool {
		if col.Exited() {
			t.Fatalf("collect exited:\n%s", col.Stderr())
		}
		return strings.Contains(col.Stderr(), "collecting")
	}, "nfclone collect to listen")
	d := startNfclone(t, l, `
sessions:
  - name: a
    method: log
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 7}]
  - name: b
    method: log
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 8}]
`)
	orig := l.StartCapture(t, l.Src, "e0", "icmp[0] == 8", lab.Direction("out"))
	tun := l.StartCapture(t, l.Col2, "e0", "udp port 4789", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	tun.WaitCount(2*pings, 5*time.Second)
	originals, datagrams := orig.Stop(), tun.Stop()
	requireCount(t, "VXLAN datagrams at the collector", datagrams, func(p lab.Packet) bool { return p.VXLANVNI == 7 || p.VXLANVNI == 8 }, 2*pings)
	d.stop(t)
	if err := col.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code, err := col.Wait(10 * time.Second); code != 0 || err != nil {
		t.Fatalf("collect exit %d %v:\n%s", code, err, col.Stderr())
	}
	ps, err := lab.ReadPackets(out)
	if err != nil {
		t.Fatal(err)
	}
	requireCount(t, "echo requests written by collect --dedup", ps, echoReq(lab.SrcIP), pings)
	if len(ps) != pings {
		t.Fatalf("collect wrote %d frames, want %d", len(ps), pings)
	}
	for i := range ps {
		if !bytes.Equal(ps[i].IP, originals[i].IP) {
			t.Fatalf("frame %d differs from the original", i)
		}
	}
	if !strings.Contains(col.Stderr(), fmt.Sprintf("duplicates %d", pings)) {
		t.Errorf("collect's counters:\n%s", col.Stderr())
	}
}
