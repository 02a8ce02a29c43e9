package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

const pings = 10

// A config exercising every filter feature the kernel can load through nft.
const richConfig = `
sessions:
  - name: web
    method: dup
    host_only: true
    sources: [{interface: e0, direction: both}, {interface: e2, direction: ingress}]
    rules:
      - {number: 300, action: reject, protocol: udp, destination: "fd00::/8", source_ports: "1024-65535"}
      - {number: 100, action: accept, protocol: tcp, destination_ports: "80,443"}
      - {number: 150, action: accept, protocol: tcp, source_ports: "1024-65535", destination_ports: "22,8000-8100"}
      - {number: 200, action: accept, protocol: icmp, source: 10.0.0.0/8, direction: ingress}
      - {number: 400, action: accept}
    sample: 4
    rate: 20000/second
    targets:
      - {kind: device, device: e3}
      - {kind: gateway, gateway: 10.77.2.2, device: e1}
      - {kind: gateway, gateway: "fd77:2::2", device: e1}
  - name: l2
    sources: [{interface: e0, direction: ingress}]
    rules:
      - {number: 1, action: accept, vlan: 100}
      - {number: 2, action: reject}
    targets: [{kind: device, device: e3}, {kind: vxlan, remote: "10.77.4.2:4789", vni: 9}]
`

// logSession adds a userspace session (render only until the clone engine).
const logSession = `
  - name: lg
    method: log
    snaplen: 128
    sources: [{interface: e2}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
`

// render's output is accepted by nft itself.
func TestRenderAcceptedByNft(t *testing.T) {
	l := lab.New(t)
	// Without the vxlan target: its kernel device exists only while nfclone
	// runs, and nft -c checks that dup's device exists.
	cfg := strings.Replace(richConfig, `, {kind: vxlan, remote: "10.77.4.2:4789", vni: 9}`, "", 1)
	path, _ := writeConfig(t, cfg+logSession)
	out, errOut, code := nfc(l, "render", "-c", path)
	if code != 0 {
		t.Fatalf("render: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "dup to 10.77.2.2 device \"e1\"") || !strings.Contains(out, "vlan id 100") {
		t.Fatalf("render output lacks expected statements:\n%s", out)
	}
	rf := filepath.Join(t.TempDir(), "render.nft")
	if err := os.WriteFile(rf, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if o, err := l.Exec(context.Background(), l.Eng, "nft", "-c", "-f", rf); err != nil {
		t.Fatalf("nft -c -f rejects render output: %v\n%s\n--- render:\n%s", err, o, out)
	}
	// render touches nothing.
	if rs := nftRuleset(t, l); strings.TrimSpace(rs) != "" {
		t.Fatalf("render changed the ruleset:\n%s", rs)
	}
}

// After run, the kernel's listing of nfclone's tables equals what render printed.
func TestKernelListingEqualsRender(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, richConfig)
	rendered, errOut, code := nfc(l, "render", "-c", d.cfgPath)
	if code != 0 {
		t.Fatalf("render: %s", errOut)
	}
	listed := nftRuleset(t, l)
	if got, want := normalizeNft(listed), normalizeNft(rendered); got != want {
		t.Fatalf("nft list ruleset differs from render.\n--- kernel:\n%s\n--- render:\n%s", got, want)
	}
	d.stop(t)
}

// Two sources aggregated into one collector: every packet exactly once.
func TestAggregation(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: agg
    sources: [{interface: e0, direction: ingress}, {interface: e2, direction: ingress}]
    targets: [{kind: device, device: e1}]
`)
	c := l.StartCapture(t, l.Col, "e0", "icmp", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	ping(t, l, l.Src2, lab.EngE2IP, pings)
	c.WaitCount(2*pings, 5*time.Second)
	ps := c.Stop()
	requireCount(t, "copies of src's echo requests", ps, echoReq(lab.SrcIP), pings)
	requireCount(t, "copies of src2's echo requests", ps, echoReq(lab.Src2IP), pings)
	requireCount(t, "copies of replies (ingress only: none)", ps, func(p lab.Packet) bool { return p.IsEchoReply() }, 0)
	d.stop(t)
}

// One source replicated to two collectors.
func TestReplication(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: rep
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: device, device: e1}, {kind: device, device: e3}]
`)
	c1 := l.StartCapture(t, l.Col, "e0", "icmp", lab.Direction("in"))
	c2 := l.StartCapture(t, l.Col2, "e0", "icmp", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	c1.WaitCount(pings, 5*time.Second)
	c2.WaitCount(pings, 5*time.Second)
	requireCount(t, "col copies", c1.Stop(), echoReq(lab.SrcIP), pings)
	requireCount(t, "col2 copies", c2.Stop(), echoReq(lab.SrcIP), pings)
	d.stop(t)
}

// ingress copies what arrives on the source, egress what leaves it, both both.
func TestDirections(t *testing.T) {
	for _, tc := range []struct {
		dir           string
		reqs, replies int
	}{
		{"ingress", pings, 0},
		{"egress", 0, pings},
		{"both", pings, pings},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			l := lab.New(t)
			d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: d
    sources: [{interface: e0, direction: %s}]
    targets: [{kind: device, device: e1}]
`, tc.dir))
			c := l.StartCapture(t, l.Col, "e0", "icmp", lab.Direction("in"))
			ping(t, l, l.Src, lab.EngE0IP, pings)
			c.WaitCount(tc.reqs+tc.replies, 5*time.Second)
			ps := c.Stop()
			requireCount(t, "echo requests", ps, echoReq(lab.SrcIP), tc.reqs)
			requireCount(t, "echo replies", ps, echoRep(lab.SrcIP), tc.replies)
			d.stop(t)
		})
	}
}

// TEE-style gateway copies equal the originals at the IP layer (kernel dup
// decrements the TTL of copies taken in prerouting: that byte and the header
// checksum are the only differences).
func TestGatewayCopiesEqualOriginals(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: tee
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
`)
	orig := l.StartCapture(t, l.Src, "e0", "icmp", lab.Direction("out"))
	c := l.StartCapture(t, l.Col, "e0", "icmp", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	c.WaitCount(pings, 5*time.Second)
	copies, originals := c.Stop(), orig.Stop()
	requireCount(t, "copies", copies, echoReq(lab.SrcIP), pings)
	requireCount(t, "originals", originals, echoReq(lab.SrcIP), pings)
	for i := range copies {
		a, b := ipNoTTL(originals[i].IP), ipNoTTL(copies[i].IP)
		if !bytes.Equal(a, b) {
			t.Fatalf("copy %d differs from the original at the IP layer:\norig %x\ncopy %x", i, originals[i].IP, copies[i].IP)
		}
		if copies[i].TTL != originals[i].TTL-1 {
			t.Fatalf("copy %d TTL %d, original %d: kernel dup should decrement it once", i, copies[i].TTL, originals[i].TTL)
		}
	}
	d.stop(t)
}

// ipNoTTL blanks the IPv4 TTL and header checksum.
func ipNoTTL(ip []byte) []byte {
	b := append([]byte(nil), ip...)
	if len(b) >= 20 && b[0]>>4 == 4 {
		b[8], b[10], b[11] = 0, 0, 0
	}
	return b
}

// Accepted kinds are copied, rejected kinds are not; first match decides.
func TestFilters(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: f
    sources: [{interface: e0, direction: ingress}]
    rules:
      - {number: 30, action: accept, protocol: udp}
      - {number: 10, action: accept, protocol: icmp}
      - {number: 20, action: reject, protocol: udp, destination_ports: "9999,7000-7010"}
    targets: [{kind: device, device: e1}]
`)
	c := l.StartCapture(t, l.Col, "e0", "icmp or udp", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	for _, port := range []int{9999, 7005, 8888, 8889} {
		l.MustExec(t, l.Src, "bash", "-c", fmt.Sprintf("echo hello > /dev/udp/%s/%d", lab.EngE0IP, port))
	}
	c.WaitCount(pings+2, 5*time.Second)
	ps := c.Stop()
	requireCount(t, "icmp (accepted)", ps, echoReq(lab.SrcIP), pings)
	requireCount(t, "udp to 8888/8889 (accepted by rule 30)", ps, func(p lab.Packet) bool {
		return p.UDPDstPort == 8888 || p.UDPDstPort == 8889
	}, 2)
	requireCount(t, "udp to 9999/7005 (rejected by rule 20 first)", ps, func(p lab.Packet) bool {
		return p.UDPDstPort == 9999 || p.UDPDstPort == 7005
	}, 0)
	d.stop(t)
}

// host_only: traffic to the host is copied, traffic it forwards is not.
func TestHostOnly(t *testing.T) {
	for _, kind := range []string{"device", "gateway"} {
		t.Run(kind, func(t *testing.T) {
			l := lab.New(t)
			target := "{kind: device, device: e1}"
			if kind == "gateway" {
				target = "{kind: gateway, gateway: 10.77.2.2, device: e1}"
			}
			d := startNfclone(t, l, `
sessions:
  - name: h
    host_only: true
    sources: [{interface: e0, direction: ingress}]
    targets: [`+target+`]
`)
			c := l.StartCapture(t, l.Col, "e0", "icmp", lab.Direction("in"))
			ping(t, l, l.Src, lab.EngE0IP, pings) // to the host
			ping(t, l, l.Src, lab.Col2IP, pings)  // forwarded through it
			c.WaitCount(pings, 5*time.Second)
			ps := c.Stop()
			requireCount(t, "copies of pings to the host", ps, func(p lab.Packet) bool {
				return p.IsEchoRequest() && p.IPDst == lab.EngE0IP
			}, pings)
			requireCount(t, "copies of forwarded pings", ps, func(p lab.Packet) bool {
				return p.IsEchoRequest() && p.IPDst == lab.Col2IP
			}, 0)
			d.stop(t)
		})
	}
}

// IPv6: device copies and ip6 gateway copies.
func TestIPv6(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: v6dev
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmpv6, source: "fd77:1::/64"}]
    targets: [{kind: device, device: e3}]
  - name: v6gw
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: gateway, gateway: "fd77:2::2", device: e1}]
`)
	c1 := l.StartCapture(t, l.Col, "e0", "icmp6 and ip6[40] == 128", lab.Direction("in"))
	c2 := l.StartCapture(t, l.Col2, "e0", "icmp6 and ip6[40] == 128", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE06, pings)
	c1.WaitCount(pings, 5*time.Second)
	c2.WaitCount(pings, 5*time.Second)
	requireCount(t, "ip6 gateway copies at col", c1.Stop(), echoReq(lab.Src6), pings)
	requireCount(t, "device copies at col2", c2.Stop(), echoReq(lab.Src6), pings)
	d.stop(t)
}

const arpConfig = `
sessions:
  - name: g
    sources: [{interface: e0, direction: ingress}]
    targets:
      - {kind: gateway, gateway: 10.77.2.2, device: e1, arp: off}
      - {kind: gateway, gateway: 10.77.4.2, device: e3, mac: "02:00:00:00:77:42"}
`

// After SIGTERM nothing of nfclone is left: tables, link flags, neighbours, state.
func TestSIGTERMLeavesNothing(t *testing.T) {
	l := lab.New(t)
	flagsE1 := linkFlags(t, l, l.Eng, "e1")
	neighBefore := l.MustExec(t, l.Eng, "ip", "neigh", "show", "dev", "e3")
	d := startNfclone(t, l, arpConfig)
	if f := linkFlags(t, l, l.Eng, "e1"); !strings.Contains(f, "NOARP") {
		t.Fatalf("arp: off did not set NOARP on e1: %s", f)
	}
	if n := l.MustExec(t, l.Eng, "ip", "neigh", "show", "dev", "e3"); !strings.Contains(n, "02:00:00:00:77:42 PERMANENT") {
		t.Fatalf("mac: did not install a permanent neighbour: %q", n)
	}
	c := l.StartCapture(t, l.Col, "e0", "icmp", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	c.WaitCount(pings, 5*time.Second)
	requireCount(t, "copies through the NOARP egress", c.Stop(), echoReq(lab.SrcIP), pings)
	d.stop(t)

	if rs := nftRuleset(t, l); strings.TrimSpace(rs) != "" {
		t.Fatalf("ruleset after SIGTERM:\n%s", rs)
	}
	if f := linkFlags(t, l, l.Eng, "e1"); f != flagsE1 {
		t.Fatalf("e1 flags after exit %s, before %s", f, flagsE1)
	}
	if n := l.MustExec(t, l.Eng, "ip", "neigh", "show", "dev", "e3"); n != neighBefore {
		t.Fatalf("neighbours of e3 after exit %q, before %q", n, neighBefore)
	}
	if _, err := os.Stat(filepath.Join(d.stateDir, "state.json")); !os.IsNotExist(err) {
		t.Fatalf("state file still there: %v", err)
	}
}

// kill -9: the kernel drops the owned tables at once; flush undoes the rest.
func TestKill9ThenFlush(t *testing.T) {
	l := lab.New(t)
	flagsE1 := linkFlags(t, l, l.Eng, "e1")
	d := startNfclone(t, l, arpConfig)
	if err := d.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.Wait(10 * time.Second)
	lab.WaitFor(t, 5*time.Second, func() bool { return strings.TrimSpace(nftRuleset(t, l)) == "" },
		"the kernel to remove the owned tables of the killed process")
	if f := linkFlags(t, l, l.Eng, "e1"); !strings.Contains(f, "NOARP") {
		t.Fatalf("expected the killed run's NOARP to remain until flush: %s", f)
	}
	out, errOut, code := nfc(l, "flush", "-c", d.cfgPath)
	if code != 0 {
		t.Fatalf("flush: exit %d: %s %s", code, out, errOut)
	}
	if f := linkFlags(t, l, l.Eng, "e1"); f != flagsE1 {
		t.Fatalf("e1 flags after flush %s, before %s", f, flagsE1)
	}
	if n := l.MustExec(t, l.Eng, "ip", "neigh", "show", "dev", "e3"); strings.Contains(n, "PERMANENT") {
		t.Fatalf("neighbour left after flush: %q", n)
	}
	// Idempotent.
	if _, errOut, code := nfc(l, "flush", "-c", d.cfgPath); code != 0 {
		t.Fatalf("second flush: exit %d: %s", code, errOut)
	}
}

// Configs that cannot work end with exit 1 and every key path; a host that
// cannot do it (a missing interface, a gateway on no connected network)
// ends with exit 2, still with every key path; nothing is half-applied.
func TestBadInput(t *testing.T) {
	l := lab.New(t)
	path, _ := writeConfig(t, `
sessions:
  - name: bad
    sources: [{interface: nope0, direction: ingress}]
    rules:
      - {number: 5, action: accept, protocol: tcp, destination_ports: "70000"}
      - {number: 5, action: accept}
    targets:
      - {kind: gateway, gateway: 10.99.0.1, device: e1}
      - {kind: gateway, gateway: "fd77:9::1", device: e3}
      - {kind: vxlan, remote: "10.77.4.2", vni: 16777216}
    colour: blue
`)
	_, errOut, code := nfc(l, "run", "-c", path)
	if code != 1 {
		t.Fatalf("run with a bad config: exit %d, want 1\n%s", code, errOut)
	}
	for _, want := range []string{
		"sessions[0].colour: unknown key",
		`sessions[0].rules[0].destination_ports: port 70000 is out of range 1-65535`,
		"sessions[0].rules[1].number: 5 is already the number of rules[0]",
		`sessions[0].targets[2].remote: "10.77.4.2" has no port`,
		"sessions[0].targets[2].vni: 16777216 is out of range 0-16777215",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("missing %q in:\n%s", want, errOut)
		}
	}
	// A config that is valid but does not fit this host.
	path, _ = writeConfig(t, `
sessions:
  - name: host
    sources: [{interface: nope0, direction: ingress}]
    targets:
      - {kind: gateway, gateway: 10.99.0.1, device: e1}
      - {kind: gateway, gateway: "fd77:9::1", device: e3}
      - {kind: gateway, gateway: "10.77.4.2", device: e1}
`)
	for _, cmd := range []string{"check", "run"} {
		_, errOut, code = nfc(l, cmd, "-c", path)
		if code != 2 {
			t.Fatalf("%s on a config that does not fit the host: exit %d, want 2 (a host problem)\n%s", cmd, code, errOut)
		}
		for _, want := range []string{
			`sessions[0].sources[0].interface: interface "nope0" does not exist`,
			"sessions[0].targets[0].gateway: 10.99.0.1 is not on a network connected to e1",
			"sessions[0].targets[1].gateway: fd77:9::1 is not on a network connected to e3",
			"sessions[0].targets[2].gateway: 10.77.4.2 is not on a network connected to e1",
		} {
			if !strings.Contains(errOut, want) {
				t.Errorf("%s: missing %q in:\n%s", cmd, want, errOut)
			}
		}
	}
	// Without CAP_NET_ADMIN: exit 2 with the reason, nothing applied.
	good, _ := writeConfig(t, arpConfig)
	_, errOut, code = runIn(l.Eng, "setpriv", "--bounding-set=-all", "--inh-caps=-all", binary, "run", "-c", good)
	if code != 2 || !strings.Contains(errOut, "CAP_NET_ADMIN") {
		t.Fatalf("run without capabilities: exit %d, want 2 and a reason naming CAP_NET_ADMIN:\n%s", code, errOut)
	}
	if f := linkFlags(t, l, l.Eng, "e1"); strings.Contains(f, "NOARP") {
		t.Fatalf("a failed run left NOARP on e1: %s", f)
	}
	if rs := nftRuleset(t, l); strings.TrimSpace(rs) != "" {
		t.Fatalf("a failed run left rules:\n%s", rs)
	}
}
