package e2e

// End-to-end tests behind README's "Works with" table that no other
// test covers: a Linux VXLAN device terminating nfclone's tunnel, and a
// NetFlow probe (softflowd → nfcapd/nfdump) on an aggregated TAP interface.

import (
	"bytes"
	"fmt"
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
