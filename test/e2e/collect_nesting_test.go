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

// gwlbScript builds, with scapy, what an AWS Gateway Load Balancer sends
// (the capture users post): GENEVE with VNI 0, protocol IPv4 (0x0800) and
// 32 bytes of TLV options, carrying IP 10.10.0.4.65444 > 10.10.0.46.4789,
// VXLAN VNI 9325541 (Traffic Mirroring), carrying Ethernet / IP
// 52.94.225.236.443 > 10.10.0.4.58254 TCP ACK. Every fourth datagram's
// VXLAN VNI is 1 (another mirror session). With "plain", the GENEVE
// payload is the TCP/IP packet itself (a GWLB appliance's traffic);
// "plain6" the same over IPv6 (protocol 0x86dd). It
// sends the datagrams from the namespace it runs in and writes the frames
// the collector should give back (inner Ethernet frames, or the bare IP
// packets for "plain") to OUT.
const gwlbScript = `
import sys
from scapy.all import Ether, IP, IPv6, UDP, TCP, wrpcap, send
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.layers.vxlan import VXLAN
dst, port, n, mode, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
opts = [GeneveOptions(classid=0x0108, type=1, data=b'\x11' * 8),
        GeneveOptions(classid=0x0108, type=2, data=b'\x22' * 8),
        GeneveOptions(classid=0x0108, type=3, data=b'\x33' * 4)]
want, outer = [], []
for i in range(n):
    ip = IP(src='52.94.225.236', dst='10.10.0.4', id=i) / \
        TCP(sport=443, dport=58254, flags='A', seq=1000 + i, ack=3271274354, window=32730)
    proto = 0x0800
    if mode == 'plain6':
        ip = IPv6(src='2600:1f14::236', dst='fd00::4') / \
            TCP(sport=443, dport=58254, flags='A', seq=1000 + i, ack=3271274354, window=32730)
        proto = 0x86dd
    if mode.startswith('plain'):
        want.append(IP(bytes(ip)))
        payload = ip
    else:
        vni = 1 if i % 4 == 3 else 9325541
        inner = Ether(src='02:00:00:00:00:fe', dst='02:00:00:00:00:04') / ip
        payload = IP(src='10.10.0.4', dst='10.10.0.46') / UDP(sport=65444, dport=4789) / VXLAN(vni=vni, flags=0x08) / inner
        if vni != 1:
            want.append(Ether(bytes(inner)))
    outer.append(IP(dst=dst) / UDP(sport=60291, dport=port) / GENEVE(vni=0, proto=proto, options=opts) / payload)
wrpcap(out, want)
send(outer, verbose=False)
`

// GENEVE-with-options datagrams carrying VXLAN carrying Ethernet/IP, built
// with scapy as a Gateway Load Balancer sends them, come out of `nfclone
// collect` as the inner frames (--vni matching the inner VXLAN VNI); GENEVE
// carrying bare IPv4 comes out with a synthesized Ethernet header. tcpdump
// reads them back, and the bytes equal the frames scapy built.
func TestCollectGWLBNesting(t *testing.T) {
	lab.RequireTools(t, "/usr/bin/python3", "tcpdump")
	l := lab.New(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "gwlb.py")
	if err := os.WriteFile(script, []byte(gwlbScript), 0o644); err != nil {
		t.Fatal(err)
	}
	const n = 12 // 9 with the mirror's VNI, 3 with VNI 1
	for _, tc := range []struct {
		mode, port string
		args       []string
		want       int
	}{
		{"nested", "6081", []string{"--vni", "9325541"}, 9},
		{"plain", "6082", nil, n},
		{"plain6", "6083", nil, n},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			out := filepath.Join(dir, tc.mode+".pcap")
			want := filepath.Join(dir, tc.mode+"-want.pcap")
			args := append([]string{"collect", "--listen", lab.Col2IP + ":" + tc.port, "--allow", "10.77.0.0/16", "-w", out}, tc.args...)
			col := l.Start(t, l.Col2, binary, args...)
			lab.WaitFor(t, 10*time.Second, func() bool {
				if col.Exited() {
					t.Fatalf("collect exited:\n%s", col.Stderr())
				}
				return strings.Contains(col.Stderr(), "collecting")
			}, "nfclone collect to listen")
			l.MustExec(t, l.Src, "/usr/bin/python3", script, lab.Col2IP, tc.port, fmt.Sprint(n), tc.mode, want)
			lab.WaitFor(t, 5*time.Second, func() bool {
				recs, err := lab.ReadPcapFile(out)
				return err == nil && len(recs) >= tc.want
			}, "the collector's pcap to hold every inner frame")
			if err := col.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			if code, err := col.Wait(10 * time.Second); code != 0 || err != nil {
				t.Fatalf("collect exit %d %v:\n%s", code, err, col.Stderr())
			}
			td := l.MustExec(t, "", "tcpdump", "-nr", out)
			line := "IP 52.94.225.236.443 > 10.10.0.4.58254: Flags [.]"
			if tc.mode == "plain6" {
				line = "IP6 2600:1f14::236.443 > fd00::4.58254: Flags [.]"
			}
			if c := strings.Count(td, line); c != tc.want || strings.Contains(td, "llc") {
				t.Fatalf("tcpdump shows %d inner TCP ACKs, want %d:\n%s", c, tc.want, td)
			}
			got, err := lab.ReadPcapFile(out)
			if err != nil {
				t.Fatal(err)
			}
			exp, err := lab.ReadPcapFile(want)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.want || len(exp) != tc.want {
				t.Fatalf("collected %d frames, scapy built %d, want %d", len(got), len(exp), tc.want)
			}
			for i := range got {
				e := exp[i].Data
				switch tc.mode {
				case "plain":
					// scapy's file is raw IP; the collector's frames have the
					// synthesized header 02:4e:43:00:00:01 > 02:4e:43:00:00:02, IPv4.
					e = append([]byte{2, 0x4e, 0x43, 0, 0, 2, 2, 0x4e, 0x43, 0, 0, 1, 8, 0}, e...)
				case "plain6":
					e = append([]byte{2, 0x4e, 0x43, 0, 0, 2, 2, 0x4e, 0x43, 0, 0, 1, 0x86, 0xdd}, e...)
				}
				if !bytes.Equal(got[i].Data, e) {
					t.Fatalf("frame %d:\ngot  %x\nwant %x", i, got[i].Data, e)
				}
			}
			if tc.mode == "nested" && !strings.Contains(col.Stderr(), "other VNI 3,") {
				t.Errorf("collect's counters do not show the 3 other-VNI datagrams filtered:\n%s", col.Stderr())
			}
		})
	}
}
