package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// TestHoldOriginals: a hold session queues the originals themselves (`queue
// num N bypass`) and lets each go on once nfclone has read it.
//   - Running: every forwarded echo request is answered, and its copy at the
//     collector is the packet as it arrived (TTL 64, as src sent it: the copy
//     is taken before forwarding).
//   - Stopped (SIGSTOP): the matched traffic waits for it — IPv4 pings get no
//     reply — while traffic the session does not match (IPv6 pings) passes.
//   - Killed (SIGKILL): the kernel removes nfclone's table with the process,
//     and the matched traffic flows again without it.
func TestHoldOriginals(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: h
    method: queue
    hold: true
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: gateway, gateway: %s, device: e1}]
`, lab.ColIP))
	if rs := nftRuleset(t, l); !strings.Contains(rs, "bypass") {
		t.Fatalf("no queue with bypass in the ruleset:\n%s", rs)
	}
	capt := l.StartCapture(t, l.Col, lab.Iface, "icmp", lab.Direction("in"))
	ping(t, l, l.Eng, lab.ColIP, 1) // col is a known neighbour before the copies
	const n = 20
	ping(t, l, l.Src, lab.Col2IP, n)
	capt.WaitCount(n, 5*time.Second)
	var copies int
	for _, p := range capt.Stop() {
		if !p.IsEchoRequest() || p.IPDst != lab.Col2IP {
			continue
		}
		copies++
		if p.TTL != 64 {
			t.Errorf("copy %d has TTL %d, want 64 (the packet as it arrived)", p.Number, p.TTL)
		}
	}
	if copies != n {
		t.Fatalf("%d copies of %d forwarded echo requests at the collector", copies, n)
	}

	if err := d.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = d.Signal(syscall.SIGCONT)
		}
	}()
	lab.WaitFor(t, 5*time.Second, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.Pid()))
		i := bytes.LastIndexByte(b, ')')
		return err == nil && i > 0 && i+2 < len(b) && b[i+2] == 'T'
	}, "nfclone stopped")
	sent, recv, _, err := lab.Ping(context.Background(), l, l.Src, lab.Col2IP, 3, 20*time.Millisecond)
	if sent != 3 || recv != 0 {
		t.Fatalf("IPv4 ping with the hold session's reader stopped: %d of %d answered (%v), want none: the originals wait for nfclone", recv, sent, err)
	}
	ping(t, l, l.Src, lab.Col26, 3) // not matched: not held

	if err := d.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	stopped = false
	d.Wait(10 * time.Second)
	lab.WaitFor(t, 5*time.Second, func() bool { return strings.TrimSpace(nftRuleset(t, l)) == "" },
		"the kernel to remove the owned table of the killed process")
	ping(t, l, l.Src, lab.Col2IP, 10)
}
