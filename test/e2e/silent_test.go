package e2e

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// Issue 11, item 11: the interfaces nfclone creates carry copies and
// nothing of their own — no IPv6 link-local address, no neighbour
// solicitation, no MLD report. Idle for 3 s, the created veth pair (both
// ends), the VXLAN device (and the tunnel to the collector) and collect's
// TAP show 0 packets in tcpdump.
func TestCreatedDevicesSilent(t *testing.T) {
	lab.RequireTools(t, "tcpdump")
	l := lab.New(t)
	col := l.Start(t, l.Col2, binary, "collect", "--listen", lab.Col2IP+":4789", "--allow", "10.77.0.0/16", "--vni", "7", "--tap", "mon0")
	lab.WaitFor(t, 10*time.Second, func() bool {
		if col.Exited() {
			t.Fatalf("collect exited:\n%s", col.Stderr())
		}
		return strings.Contains(col.Stderr(), "collecting")
	}, "nfclone collect to listen")
	// The tunnel is watched from before nfclone starts: a report sent as
	// the device comes up counts too.
	tunnel := l.StartCapture(t, l.Col2, "e0", "udp port 4789", lab.Direction("in"))
	// The session copies nothing (no traffic matches its rule, not even
	// src2's own IPv6 chatter): whatever shows was made by the devices.
	d := startNfclone(t, l, `
sessions:
  - name: idle
    sources: [{interface: e2, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: udp, destination_ports: "9"}]
    targets:
      - {kind: device, device: agg0, create: true}
      - {kind: vxlan, remote: "10.77.4.2:4789", vni: 7}
`)
	vx := regexp.MustCompile(`nfcvx[0-9a-f]+`).FindString(l.MustExec(t, l.Eng, "ip", "-o", "link"))
	if vx == "" {
		t.Fatal("no nfcvx device")
	}
	type cap struct {
		ns, dev string
		c       *lab.Capture
	}
	caps := []*cap{{ns: l.Eng, dev: "agg0"}, {ns: l.Eng, dev: "agg0-tx"}, {ns: l.Eng, dev: vx}, {ns: l.Col2, dev: "mon0"}}
	for _, c := range caps {
		c.c = l.StartCapture(t, c.ns, c.dev, "")
	}
	time.Sleep(3 * time.Second)
	for _, c := range caps {
		if ps := c.c.Stop(); len(ps) != 0 {
			out, _ := exec.Command("tcpdump", "-nr", c.c.Path).CombinedOutput()
			t.Errorf("%s in %s sent %d packets of its own while idle:\n%s", c.dev, c.ns, len(ps), out)
		}
	}
	if ps := tunnel.Stop(); len(ps) != 0 {
		t.Errorf("the VXLAN device sent %d datagrams of its own to the collector", len(ps))
	}
	for _, dev := range []string{"agg0", "agg0-tx", vx} {
		if out := l.MustExec(t, l.Eng, "ip", "-6", "addr", "show", "dev", dev); strings.Contains(out, "inet6") {
			t.Errorf("%s has IPv6 addresses:\n%s", dev, out)
		}
		if out := l.MustExec(t, l.Eng, "ip", "-d", "link", "show", "dev", dev); !strings.Contains(out, "addrgenmode none") {
			t.Errorf("%s: IPv6 address generation not off:\n%s", dev, out)
		}
	}
	d.stop(t)
}
