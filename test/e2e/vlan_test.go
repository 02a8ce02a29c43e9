package e2e

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// A device target with vlan: 100 (queue and log): tcpdump -e on the
// collector shows every copy tagged `vlan 100`, none untagged, and behind
// the tag each copy is the original byte for byte.
func TestDeviceTargetVLAN(t *testing.T) {
	for _, method := range []string{"queue", "log"} {
		t.Run(method, func(t *testing.T) {
			l := lab.New(t)
			d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: tagged
    method: %s
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: device, device: e1, vlan: 100}]
`, method))
			orig := l.StartCapture(t, l.Src, "e0", "icmp[0] == 8", lab.Direction("out"))
			c := l.StartCapture(t, l.Col, "e0", "", lab.Direction("in"), lab.Promisc())
			ping(t, l, l.Src, lab.EngE0IP, pings)
			c.WaitCount(pings, 5*time.Second)
			originals := orig.Stop()
			c.Finish()
			d.stop(t)
			requireCount(t, "originals", originals, echoReq(lab.SrcIP), pings)
			td := l.MustExec(t, "", "tcpdump", "-e", "-n", "-r", c.Path)
			tagged, requests := 0, 0
			for _, line := range strings.Split(td, "\n") {
				if !strings.Contains(line, "ICMP echo request") {
					continue
				}
				requests++
				if strings.Contains(line, "ethertype 802.1Q (0x8100), length 102: vlan 100, p 0, ethertype IPv4") {
					tagged++
				}
			}
			if tagged != pings || requests != pings {
				t.Fatalf("tcpdump -e at the collector: %d echo requests, %d tagged vlan 100; want %d of each:\n%s", requests, tagged, pings, td)
			}
			recs, err := lab.ReadPcapFile(c.Path)
			if err != nil {
				t.Fatal(err)
			}
			i := 0
			for _, r := range recs {
				if len(r.Data) < 18 || r.Data[12] != 0x81 || r.Data[13] != 0 {
					continue
				}
				if i >= len(originals) || !bytes.Equal(r.Data[18:], originals[i].IP) {
					t.Fatalf("tagged frame %d is not original %d:\n%x", i, i, r.Data)
				}
				i++
			}
		})
	}
}
