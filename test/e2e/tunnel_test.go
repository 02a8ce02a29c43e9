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

// innerIP returns the IP packet inside a captured VXLAN/GENEVE frame:
// outer Ethernet, IPv4 (no options), UDP, 8-byte tunnel header (GENEVE
// without options), inner Ethernet.
func innerIP(t *testing.T, p lab.Packet) []byte {
	t.Helper()
	d := p.Record.Data
	off := 14 + 20 + 8 + 8 + 14
	if len(d) < off+20 {
		t.Fatalf("frame %d too short for a tunnelled packet: %x", p.Number, d)
	}
	return d[off:]
}

// Userspace copies in VXLAN and GENEVE: tshark on the collector decodes the
// tunnel with the configured VNI, and the inner packets equal the originals.
// vxlan with one remote goes through the kernel VXLAN device nfclone creates
// (encap: kernel, the default; gone on exit), or nfclone's own headers
// (encap: userspace, and always geneve: no device).
func TestTunnelTargets(t *testing.T) {
	for _, method := range []string{"queue", "log"} {
		for _, tc := range []struct{ kind, port, encap string }{{"vxlan", "4789", "kernel"}, {"vxlan", "4789", "userspace"}, {"geneve", "6081", "userspace"}} {
			t.Run(method+"/"+tc.kind+"/"+tc.encap, func(t *testing.T) {
				l := lab.New(t)
				d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: tun
    method: %s
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: %s, remote: "10.77.4.2:%s", vni: 4242, encap: %s}]
`, method, tc.kind, tc.port, tc.encap))
				device := strings.Contains(l.MustExec(t, l.Eng, "ip", "-d", "link", "show", "type", "vxlan"), "vxlan id 4242 remote 10.77.4.2")
				if device != (tc.encap == "kernel") {
					t.Fatalf("encap %s: a VXLAN device with VNI 4242 in eng: %v", tc.encap, device)
				}
				orig := l.StartCapture(t, l.Src, "e0", "icmp[0] == 8", lab.Direction("out"))
				c := l.StartCapture(t, l.Col2, "e0", "udp port "+tc.port, lab.Direction("in"))
				ping(t, l, l.Src, lab.EngE0IP, pings)
				c.WaitCount(pings, 5*time.Second)
				copies, originals := c.Stop(), orig.Stop()
				requireCount(t, "originals", originals, echoReq(lab.SrcIP), pings)
				requireCount(t, tc.kind+" frames with VNI 4242", copies, func(p lab.Packet) bool {
					return (p.VXLANVNI == 4242 || p.GeneveVNI == 4242) && p.IPDst == lab.Col2IP
				}, pings)
				for i := range copies {
					if in := innerIP(t, copies[i]); !bytes.Equal(in, originals[i].IP) {
						t.Fatalf("inner packet %d differs from the original:\ninner %x\norig  %x", i, in, originals[i].IP)
					}
				}
				ports := map[int]bool{}
				for _, p := range copies {
					ports[p.UDPSrcPort] = true
				}
				if len(ports) != 1 {
					t.Fatalf("one flow used %d outer source ports: %v", len(ports), ports)
				}
				d.stop(t)
				if out := l.MustExec(t, l.Eng, "ip", "-d", "link", "show", "type", "vxlan"); strings.Contains(out, "vxlan") {
					t.Fatalf("a VXLAN device survived SIGTERM:\n%s", out)
				}
			})
		}
	}
}

// vxlan with method dup: the kernel VXLAN device nfclone owns; gone on exit.
func TestVXLANWithDup(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: kvx
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 99}]
`)
	c := l.StartCapture(t, l.Col2, "e0", "udp port 4789", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	c.WaitCount(pings, 5*time.Second)
	requireCount(t, "VXLAN frames with VNI 99 holding echo requests", c.Stop(), vxlanEchoReq(99), pings)
	d.stop(t)
	if out := l.MustExec(t, l.Eng, "ip", "-d", "link"); strings.Contains(out, "vxlan") {
		t.Fatalf("the VXLAN device survived SIGTERM:\n%s", out)
	}
}

// nfclone run → VXLAN → nfclone collect -w out.pcap on the collector gives
// back the originals.
func TestRunToCollect(t *testing.T) {
	l := lab.New(t)
	out := filepath.Join(t.TempDir(), "collected.pcap")
	col := l.Start(t, l.Col2, binary, "collect", "--listen", lab.Col2IP+":4789", "--allow", "10.77.0.0/16", "--vni", "7", "-w", out)
	lab.WaitFor(t, 10*time.Second, func() bool {
		if col.Exited() {
			t.Fatalf("collect exited:\n%s", col.Stderr())
		}
		return strings.Contains(col.Stderr(), "collecting")
	}, "nfclone collect to listen")
	d := startNfclone(t, l, `
sessions:
  - name: c
    method: queue
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 7}]
`)
	orig := l.StartCapture(t, l.Src, "e0", "icmp[0] == 8", lab.Direction("out"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	originals := orig.Stop()
	requireCount(t, "originals", originals, echoReq(lab.SrcIP), pings)
	lab.WaitFor(t, 5*time.Second, func() bool {
		ps, err := lab.DecodePcap(out)
		return err == nil && count(ps, echoReq(lab.SrcIP)) == pings
	}, "the collector's pcap to hold every copy")
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
	requireCount(t, "decapsulated copies", ps, echoReq(lab.SrcIP), pings)
	for i := range ps {
		if !bytes.Equal(ps[i].IP, originals[i].IP) {
			t.Fatalf("collected packet %d differs:\ngot  %x\nwant %x", i, ps[i].IP, originals[i].IP)
		}
	}
	if !strings.Contains(col.Stderr(), fmt.Sprintf("written %d", pings)) {
		t.Fatalf("collect's counters:\n%s", col.Stderr())
	}
}

// Two collectors behind one target: each flow goes whole to one of them, and
// both get flows.
func TestTwoCollectorsWholeFlows(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: spread
    method: log
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: udp, destination_ports: "9000"}]
    targets: [{kind: vxlan, remote: ["10.77.2.2:4789", "10.77.4.2:4789"], vni: 5}]
`)
	// The collectors are known neighbours before the burst: copies sent while
	// ARP is unresolved wait in a short kernel queue that may overflow.
	ping(t, l, l.Eng, lab.ColIP, 1)
	ping(t, l, l.Eng, lab.Col2IP, 1)
	// A bigger capture buffer: on 2 busy cores tcpdump itself dropped
	// bursts here ("packets dropped by kernel"), not nfclone.
	c1 := l.StartCapture(t, l.Col, "e0", "udp port 4789", lab.Direction("in"), lab.TcpdumpArgs("-B", "16384"))
	c2 := l.StartCapture(t, l.Col2, "e0", "udp port 4789", lab.Direction("in"), lab.TcpdumpArgs("-B", "16384"))
	const flows, perFlow = 16, 5
	script := fmt.Sprintf(`
import socket, time
for i in range(%d):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("%s", 20000 + i))
    for j in range(%d):
        s.sendto(b"flow", ("%s", 9000))
        time.sleep(0.001)
    s.close()
`, flows, lab.SrcIP, perFlow, lab.EngE0IP)
	l.MustExec(t, l.Src, "python3", "-c", script)
	deadline := time.Now().Add(5 * time.Second)
	for c1.Count()+c2.Count() < flows*perFlow && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := c1.Count() + c2.Count(); n != flows*perFlow {
		n1, n2 := c1.Count(), c2.Count()
		time.Sleep(time.Second)
		m1, m2 := c1.Count(), c2.Count()
		p1, p2 := len(c1.Stop()), len(c2.Stop())
		d.stop(t)
		t.Fatalf("%d copies at the collectors (col %d, col2 %d; 1 s later %d %d; after stop %d %d), want %d; nfclone:\n%s", n, n1, n2, m1, m2, p1, p2, flows*perFlow, d.Stderr())
	}
	at := map[int]map[string]int{} // inner source port → collector → packets
	for name, ps := range map[string][]lab.Packet{"col": c1.Stop(), "col2": c2.Stop()} {
		for _, p := range ps {
			ports := p.All("udp.srcport") // outer first, then inner
			if len(ports) < 2 {
				continue
			}
			var sport int
			fmt.Sscan(ports[1], &sport)
			if at[sport] == nil {
				at[sport] = map[string]int{}
			}
			at[sport][name]++
		}
	}
	used := map[string]bool{}
	for i := 0; i < flows; i++ {
		m := at[20000+i]
		if len(m) != 1 {
			t.Fatalf("flow %d was split or lost: %v", 20000+i, m)
		}
		for name, n := range m {
			if n != perFlow {
				t.Fatalf("flow %d: %d packets at %s, want %d", 20000+i, n, name, perFlow)
			}
			used[name] = true
		}
	}
	if len(used) != 2 {
		t.Fatalf("all %d flows went to one collector: %v", flows, used)
	}
	d.stop(t)
}

// Tunnel traffic is never copied (auto-excluded, shown by render): a dup
// session on the tunnel's egress interface does not copy the VXLAN packets
// of another session into its own target.
func TestTunnelTrafficNotCopied(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: kvx
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 3}]
  - name: watch_e3
    sources: [{interface: e3, direction: egress}]
    targets: [{kind: device, device: e1}]
`)
	tunnel := l.StartCapture(t, l.Col2, "e0", "udp port 4789", lab.Direction("in"))
	copies := l.StartCapture(t, l.Col, "e0", "udp port 4789", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	tunnel.WaitCount(pings, 5*time.Second)
	requireCount(t, "VXLAN echo requests at the collector", tunnel.Stop(), vxlanEchoReq(3), pings)
	requireCount(t, "VXLAN packets copied by the e3 egress session", copies.Stop(), func(lab.Packet) bool { return true }, 0)
	rendered, _, _ := nfc(l, "render", "-c", d.cfgPath)
	if !strings.Contains(rendered, "ip daddr 10.77.4.2 udp dport 4789 return") {
		t.Fatalf("render does not show the tunnel exclusion:\n%s", rendered)
	}
	d.stop(t)
}

// A host that already has a VXLAN device with the target's VNI and port
// (a VTEP of its own): the kernel refuses nfclone's device, run ends with
// exit 2 saying why and what to use instead, the host's device and the
// lab are untouched; with encap: userspace the same session copies.
func TestVXLANDeviceInUse(t *testing.T) {
	l := lab.New(t)
	l.MustExec(t, l.Eng, "ip", "link", "add", "vtep0", "type", "vxlan", "id", "31", "dstport", "4789")
	cfg := `
sessions:
  - name: vx
    method: queue
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 31%s}]
`
	before := l.MustExec(t, l.Eng, "ip", "-d", "link")
	path, _ := writeConfig(t, fmt.Sprintf(cfg, ""))
	_, errOut, code := nfc(l, "run", "-c", path)
	if code != 2 {
		t.Fatalf("run with VNI 31 on port 4789 taken: exit %d, want 2\n%s", code, errOut)
	}
	for _, want := range []string{"another VXLAN device on this host has this VNI and port", "encap: userspace"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("missing %q in:\n%s", want, errOut)
		}
	}
	if after := l.MustExec(t, l.Eng, "ip", "-d", "link"); after != before {
		t.Fatalf("the failed start changed the links:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	d := startNfclone(t, l, fmt.Sprintf(cfg, ", encap: userspace"))
	c := l.StartCapture(t, l.Col2, "e0", "udp port 4789", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	c.WaitCount(pings, 5*time.Second)
	requireCount(t, "VXLAN copies with encap: userspace", c.Stop(), vxlanEchoReq(31), pings)
	d.stop(t)
}
