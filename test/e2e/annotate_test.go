package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// An annotated pcapng target: tshark reads on every record the interface
// it was copied on (an interface block named as on the host), its
// direction, and a comment naming the session, the rule that accepted it
// (log) and the direction. The rule marks never leave nfclone's chains: a
// counter after them finds no packet with nfclone's field of the mark set.
func TestAnnotatedPcapng(t *testing.T) {
	lab.RequireTools(t, "tshark", "nft")
	for _, method := range []string{"log", "queue"} {
		t.Run(method, func(t *testing.T) {
			l := lab.New(t)
			out := filepath.Join(t.TempDir(), "notes.pcapng")
			d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: notes
    method: %s
    sources: [{interface: e0, direction: both}]
    rules:
      - {number: 100, action: accept, protocol: icmp}
      - {number: 200, action: accept, protocol: udp, destination_ports: "9"}
    targets: [{kind: pcap, path: %s, format: pcapng}]
`, method, out))
			nftIn(t, l, `table inet e2emarks {
	chain forwarded {
		type filter hook forward priority filter + 20
		meta mark & 0xff != 0 counter
	}
	chain prerouted {
		type filter hook prerouting priority filter + 20
		meta mark & 0xff != 0 counter
	}
}
`)
			ping(t, l, l.Src, lab.Src2IP, 5)
			l.MustExec(t, l.Src, "python3", "-c", `import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x"*20, ("10.77.3.2", 9))`)
			// The host's own datagram, sent by uid 65534: NFLOG names the
			// socket's owner.
			l.MustExec(t, l.Eng, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
				`import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"y"*20, ("10.77.1.2", 9))`)
			lab.WaitFor(t, 5*time.Second, func() bool {
				return len(tsharkRows(t, out, "", "frame.number")) >= 14
			}, "14 copies in the pcapng")
			d.stop(t)
			rows := tsharkRows(t, out, "", "frame.interface_name", "frame.packet_flags_direction", "frame.comment", "icmp.type", "udp.dstport")
			count := map[string]int{}
			for _, r := range rows {
				what := "udp"
				switch r[3] {
				case "8":
					what = "request"
				case "0":
					what = "reply"
				case "3":
					what = "unreachable" // src2's answer to the datagram: ICMP, rule 100
				}
				count[what+" | "+strings.Join(r[:3], " | ")]++
			}
			owner := ""
			if method == "log" {
				owner = " uid=65534 gid=65534"
			}
			rule := func(n string) string {
				if method == "log" {
					return " rule=" + n
				}
				return "" // queue clones carry their own markers, not the rule
			}
			want := map[string]int{
				"request | e0 | 0x00000001 | session=notes" + rule("100") + " dir=ingress":    5,
				"reply | e0 | 0x00000002 | session=notes" + rule("100") + " dir=egress":       5,
				"udp | e0 | 0x00000001 | session=notes" + rule("200") + " dir=ingress":        1,
				"unreachable | e0 | 0x00000002 | session=notes" + rule("100") + " dir=egress": 1,
				// the host's own datagram and src's answer
				"udp | e0 | 0x00000002 | session=notes" + rule("200") + " dir=egress" + owner:  1,
				"unreachable | e0 | 0x00000001 | session=notes" + rule("100") + " dir=ingress": 1,
			}
			if fmt.Sprint(count) != fmt.Sprint(want) {
				t.Fatalf("tshark reads the annotations\n%v\nwant\n%v", count, want)
			}
			if n := nftCounterSum(t, l, "inet", "e2emarks"); n != 0 {
				t.Fatalf("%d packets left nfclone's chains with its field of the mark set", n)
			}
		})
	}
}
