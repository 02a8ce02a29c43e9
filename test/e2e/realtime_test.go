package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// queue.realtime: every nfclone thread runs in SCHED_FIFO at the priority
// asked (ps judges, thread by thread), and a clone session — queue and
// log, the originals never held — copies four unlimited iperf3 TCP streams
// from src through eng to col2 completely to a gateway collector: nft
// counters at the collector and at the receiver must show the copies
// carrying at least 0.98 of the payload bytes the receiver got. With the
// same test at the default nice 10 the copies carried 0.53–0.78 (four
// runs); with realtime 1.00 (eight runs).
func TestRealtimeCopiesSaturatingTCP(t *testing.T) {
	lab.RequireTools(t, "iperf3", "ethtool", "nft", "ps")
	for _, method := range []string{"queue", "log"} {
		t.Run(method, func(t *testing.T) { realtimeBulk(t, method) })
	}
}

func realtimeBulk(t *testing.T, method string) {
	l := lab.New(t)
	wireCollector(t, l)
	d := startNfclone(t, l, fmt.Sprintf(`
queue: {realtime: 7}
sessions:
  - name: rt
    method: %s
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: tcp, destination_ports: "5201"}]
    targets: [{kind: gateway, gateway: %s, device: e1}]
`, method, lab.ColIP))
	threads := strings.Fields(l.MustExec(t, l.Eng, "ps", "-L", "-o", "cls=,rtprio=", "-p", strconv.Itoa(d.Pid())))
	if len(threads) < 4 || len(threads)%2 != 0 {
		t.Fatalf("ps lists %q for nfclone's threads", threads)
	}
	for i := 0; i < len(threads); i += 2 {
		if threads[i] != "FF" || threads[i+1] != "7" {
			t.Fatalf("a thread of nfclone has class %s priority %s, want FF 7: %q", threads[i], threads[i+1], threads)
		}
	}
	if out, errOut, code := nfc(l, "check", "-c", d.cfgPath); code != 0 || !strings.Contains(out, "note: queue.realtime 7: nfclone's threads run SCHED_FIFO") {
		t.Fatalf("check with queue.realtime: exit %d\n%s%s", code, out, errOut)
	}
	for _, ns := range []string{l.Col, l.Col2} {
		l.MustExec(t, ns, "nft", "add table ip rtcnt; "+
			"add chain ip rtcnt pre { type filter hook prerouting priority -500; }; "+
			"add rule ip rtcnt pre tcp dport 5201 counter")
	}
	ping(t, l, l.Eng, lab.ColIP, 1) // the collector is a known neighbour
	iperfToCol2(t, l, lab.Col2IP, "-t", "3", "-P", "4")
	const hdr = 52 // IPv4 + TCP with timestamps, per packet counted
	payload := func(ns string) int {
		p, b := tableCounters(t, l, ns, "ip", "rtcnt")
		if len(p) != 1 {
			t.Fatalf("%s: %d counters in table rtcnt", ns, len(p))
		}
		return b[0] - hdr*p[0]
	}
	var copies, originals int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		copies, originals = payload(l.Col), payload(l.Col2)
		if originals > 100<<20 && float64(copies) >= 0.98*float64(originals) {
			break
		}
		if time.Now().After(deadline) {
			st, _, _ := nfc(l, "status", "--state-dir", d.stateDir)
			t.Fatalf("%s, realtime: copies carry %d payload bytes, the receiver got %d (%.3f; want >= 0.98 of at least 100 MiB)\n%s",
				method, copies, originals, float64(copies)/float64(max(originals, 1)), st)
		}
	}
	t.Logf("%s, realtime: copies carry %d of %d payload bytes (%.3f)", method, copies, originals, float64(copies)/float64(originals))
	d.stop(t)
}
