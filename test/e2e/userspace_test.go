package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// Userspace copies (queue and log, to a gateway and to a device) are
// byte-identical to the originals at the IP layer, TTL included; pings see
// no duplicate replies (the moved local rule sends copies out instead of
// delivering them back).
func TestUserspaceCopiesByteIdentical(t *testing.T) {
	for _, method := range []string{"queue", "log"} {
		for _, target := range []string{"gateway", "device"} {
			for _, fam := range []string{"v4", "v6"} {
				t.Run(method+"/"+target+"/"+fam, func(t *testing.T) {
					tgt := "{kind: device, device: e1}"
					if target == "gateway" {
						tgt = "{kind: gateway, gateway: 10.77.2.2, device: e1}"
						if fam == "v6" {
							tgt = `{kind: gateway, gateway: "fd77:2::2", device: e1}`
						}
					}
					l := lab.New(t)
					d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: u
    method: %s
    sources: [{interface: e0, direction: both}]
    targets: [%s]
`, method, tgt))
					dst, filter, src := lab.EngE0IP, "icmp[0] == 8", lab.SrcIP
					if fam == "v6" {
						dst, filter, src = lab.EngE06, "icmp6 and ip6[40] == 128", lab.Src6
					}
					orig := l.StartCapture(t, l.Src, "e0", filter, lab.Direction("out"))
					c := l.StartCapture(t, l.Col, "e0", filter, lab.Direction("in"))
					ping(t, l, l.Src, dst, pings) // fails on any duplicate reply
					c.WaitCount(pings, 5*time.Second)
					copies, originals := c.Stop(), orig.Stop()
					requireCount(t, "copies", copies, echoReq(src), pings)
					requireCount(t, "originals", originals, echoReq(src), pings)
					requireCopiesExact(t, dst, originals, copies, pings)
					d.stop(t)
					ledger := ledgerLine(t, d.Stderr(), "u")
					if !strings.Contains(ledger, "drops=0") {
						t.Fatalf("unexpected drops: %s", ledger)
					}
				})
			}
		}
	}
}

// ledgerLine returns the "session ledger" log line of a session.
func ledgerLine(t *testing.T, stderr, session string) string {
	t.Helper()
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, `msg="session ledger"`) && strings.Contains(line, "session="+session+" ") {
			return line
		}
	}
	t.Fatalf("no ledger line for session %s in:\n%s", session, stderr)
	return ""
}

// queue.count > 1 fans a session out over several queues, each with a reader.
func TestSeveralQueues(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
queue: {count: 2, socket_buffer: 12MiB}
sessions:
  - name: fan
    method: queue
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
`)
	// (The kernel sends this session's clones: one rule counts them, the
	// next, held, marks and queues them.)
	if rs := nftRuleset(t, l); !regexp.MustCompile(`meta mark & 0x000000fc == 0x00000004 counter packets \d+ bytes \d+\n\s*meta mark & 0x000000fc == 0x00000004 meta mark set meta mark & 0xffffff81 \| 0x00000081 queue num 0-1\n`).MatchString(rs) {
		t.Fatalf("no fanout queue rule for the clones:\n%s", rs)
	}
	c := l.StartCapture(t, l.Col, "e0", "icmp[0] == 8", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	ping(t, l, l.Src, lab.Col2IP, pings)
	c.WaitCount(2*pings, 5*time.Second)
	requireCount(t, "copies", c.Stop(), echoReq(lab.SrcIP), 2*pings)
	// Both queues' sockets have queue.socket_buffer, doubled by the kernel
	// (ss reads it back through netlink's sock_diag: skmem rb). Not 8 MiB:
	// the nftables library sets that on its own socket.
	ss := l.MustExec(t, l.Eng, "ss", "-f", "netlink", "-m", "-n", "-p")
	if n := strings.Count(ss, "rb25165824,"); n != 2 {
		t.Errorf("%d netlink sockets with a 12 MiB socket_buffer (rb25165824), want 2 (the two queues):\n%s", n, ss)
	}
	d.stop(t)
}

// snapshot of everything nfclone's routing side may touch in eng.
func routingState(t *testing.T, l *lab.Lab) string {
	t.Helper()
	var sb strings.Builder
	for _, args := range [][]string{
		{"ip", "rule"}, {"ip", "-6", "rule"}, {"ip", "route", "show", "table", "all"},
		{"ip", "-6", "route", "show", "table", "all"}, {"ip", "-d", "link"}, {"ip", "neigh", "show", "nud", "permanent"},
	} {
		fmt.Fprintf(&sb, "--- %s\n%s", strings.Join(args, " "), l.MustExec(t, l.Eng, args[0], args[1:]...))
	}
	return sb.String()
}

const routedConfig = `
sessions:
  - name: r
    method: queue
    sources: [{interface: e0, direction: ingress}]
    targets:
      - {kind: gateway, gateway: 10.77.2.2, device: e1, arp: off}
      - {kind: gateway, gateway: "fd77:2::2", device: e1}
      - {kind: gateway, gateway: 10.77.4.2, device: e3, mac: "02:00:00:00:77:42"}
  - name: lg
    method: log
    sources: [{interface: e2, direction: ingress}]
    targets: [{kind: device, device: e3}]
`

// After SIGTERM, ip rules, routes, link flags and neighbours are exactly as
// before; while running, the kernel has what render planned.
func TestUserspaceSIGTERMRestoresRouting(t *testing.T) {
	l := lab.New(t)
	before := routingState(t, l)
	d := startNfclone(t, l, routedConfig)
	rules := l.MustExec(t, l.Eng, "ip", "rule")
	for _, want := range []string{"100:\tfrom all fwmark 0x81/0xff lookup 20035", "102:\tfrom all fwmark 0x83/0xff lookup 20037", "1000:\tfrom all lookup local"} {
		if !strings.Contains(rules, want) {
			t.Fatalf("ip rule lacks %q:\n%s", want, rules)
		}
	}
	if strings.Contains(rules, "0:\tfrom all lookup local\n") && strings.HasPrefix(rules, "0:") {
		t.Fatalf("the local rule was not moved:\n%s", rules)
	}
	rendered, _, _ := nfc(l, "render", "-c", d.cfgPath)
	if got, want := normalizeNft(nftRuleset(t, l)), normalizeNft(rendered); got != want {
		t.Fatalf("nft list ruleset differs from render.\n--- kernel:\n%s\n--- render:\n%s", got, want)
	}
	c := l.StartCapture(t, l.Col2, "e0", "icmp[0] == 8", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	c.WaitCount(pings, 5*time.Second)
	requireCount(t, "copies to the gateway behind e3 (via the permanent neighbour)", c.Stop(), func(p lab.Packet) bool {
		return p.IsEchoRequest() && p.Record.Data[0] == 0x02 && p.Record.Data[5] == 0x42
	}, pings)
	d.stop(t)
	if after := routingState(t, l); after != before {
		t.Fatalf("routing state after SIGTERM differs.\n--- before:\n%s\n--- after:\n%s", before, after)
	}
	if rs := nftRuleset(t, l); strings.TrimSpace(rs) != "" {
		t.Fatalf("ruleset after SIGTERM:\n%s", rs)
	}
}

// kill -9 under load: the originals keep flowing (they never wait for nfclone), and
// flush restores the routing state.
func TestUserspaceKill9UnderLoad(t *testing.T) {
	for _, method := range []string{"queue", "log"} {
		t.Run(method, func(t *testing.T) {
			l := lab.New(t)
			before := routingState(t, l)
			d := startNfclone(t, l, strings.Replace(routedConfig, "method: queue", "method: "+method, 1))
			const n = 400
			done := make(chan [3]int, 1)
			go func() {
				sent, recv, dupes, err := lab.Ping(context.Background(), l, l.Src, lab.EngE0IP, n, 5*time.Millisecond)
				if err != nil {
					t.Error(err)
				}
				done <- [3]int{sent, recv, dupes}
			}()
			time.Sleep(500 * time.Millisecond) // let the load run before the kill
			if err := d.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			d.Wait(10 * time.Second)
			r := <-done
			t.Logf("ping during kill -9: sent %d received %d duplicates %d", r[0], r[1], r[2])
			if r[0] != n || r[0]-r[1] > 3 || r[2] != 0 {
				t.Fatalf("originals lost around kill -9: sent %d received %d duplicates %d (allowed: 3 lost)", r[0], r[1], r[2])
			}
			if rs := nftRuleset(t, l); strings.TrimSpace(rs) != "" {
				t.Fatalf("tables survived kill -9:\n%s", rs)
			}
			if _, errOut, code := nfc(l, "flush", "-c", d.cfgPath); code != 0 {
				t.Fatalf("flush: %s", errOut)
			}
			if after := routingState(t, l); after != before {
				t.Fatalf("routing state after flush differs.\n--- before:\n%s\n--- after:\n%s", before, after)
			}
			// A restart works and cleans up by itself too.
			d2 := startNfclone(t, l, routedConfig)
			d2.stop(t)
		})
	}
}
