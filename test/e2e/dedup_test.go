package e2e

import (
	"fmt"
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
