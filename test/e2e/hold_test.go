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

// holdPings is a hold session of ICMP arriving on e0, copied to a gateway
// (address, device).
const holdPings = `
sessions:
  - name: h
    method: queue
    hold: true
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: gateway, gateway: %s, device: %s}]
`

// TestHoldOriginals: a hold session queues the originals themselves (`queue
// num N bypass`) and lets each go on once nfclone has sent its copy.
//   - Running: every forwarded echo request is answered, and its copy at the
//     collector is the packet as it arrived (TTL 64, as src sent it: the copy
//     is taken before forwarding) and got there before the original reached
//     col2 (the reader sends it before the verdict).
//   - Stopped (SIGSTOP): the matched traffic waits for it — IPv4 pings get no
//     reply — while traffic the session does not match (IPv6 pings) passes.
//   - Killed (SIGKILL): the kernel removes nfclone's table with the process,
//     and the matched traffic flows again without it.
func TestHoldOriginals(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, fmt.Sprintf(holdPings, lab.ColIP, "e1"))
	if rs := nftRuleset(t, l); !strings.Contains(rs, "bypass") {
		t.Fatalf("no queue with bypass in the ruleset:\n%s", rs)
	}
	// check says what hold means here, and that nice defaults to 0.
	if out, errOut, code := nfc(l, "check", "-c", d.cfgPath); code != 0 || !strings.Contains(out, "session h holds its originals") || !strings.Contains(out, "(nice 0)") {
		t.Fatalf("check: exit %d, no note on the hold session:\n%s%s", code, out, errOut)
	}
	// Both captures stamp in nanoseconds from the one kernel clock.
	nano := lab.TcpdumpArgs("--time-stamp-precision=nano")
	capt := l.StartCapture(t, l.Col, lab.Iface, "icmp", lab.Direction("in"), nano)
	origs := l.StartCapture(t, l.Col2, lab.Iface, "icmp", lab.Direction("in"), nano)
	ping(t, l, l.Eng, lab.ColIP, 1) // col is a known neighbour before the copies
	const n = 20
	ping(t, l, l.Src, lab.Col2IP, n)
	capt.WaitCount(n, 5*time.Second)
	origs.WaitCount(n, 5*time.Second)
	arrived := map[int]time.Time{} // echo request seq → when the original reached col2
	for _, p := range origs.Stop() {
		if p.IsEchoRequest() {
			arrived[p.ICMPSeq] = p.Record.Time
		}
	}
	var copies int
	for _, p := range capt.Stop() {
		if !p.IsEchoRequest() || p.IPDst != lab.Col2IP {
			continue
		}
		copies++
		if p.TTL != 64 {
			t.Errorf("copy %d has TTL %d, want 64 (the packet as it arrived)", p.Number, p.TTL)
		}
		// The reader sends the copy before the verdict that lets the
		// original go: the copy is at the collector first.
		if at, ok := arrived[p.ICMPSeq]; !ok {
			t.Errorf("echo request %d: copied, but the original never reached col2", p.ICMPSeq)
		} else if p.Record.Time.After(at) {
			t.Errorf("echo request %d: the copy reached the collector %v after the original reached col2, want before", p.ICMPSeq, p.Record.Time.Sub(at))
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

// A reload that re-opens a hold session (its gateway moved to another
// collector) under steady traffic: the new session binds new queues, the
// rules switch in one batch, the old reader accepts what it still holds.
// Every ping is answered, and copied once, to the old target before and to
// the new one after. (The kernel drops every queued packet when a hook
// goes: before the applier released the held rules and waited for the
// queues to empty, 0–1 of 300 originals were lost at the switch.) (The moved gateway takes a route table of its own: before, the
// reload was refused, the old gateway's route being in its table.)
func TestHoldReloadUnderTraffic(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, fmt.Sprintf(holdPings, lab.ColIP, "e1"))
	ping(t, l, l.Eng, lab.ColIP, 1) // known neighbours before the copies
	ping(t, l, l.Eng, lab.Col2IP, 1)
	oldT := l.StartCapture(t, l.Col, lab.Iface, "icmp[0] == 8", lab.Direction("in"))
	newT := l.StartCapture(t, l.Col2, lab.Iface, "icmp[0] == 8", lab.Direction("in"))
	const n = 300
	done := pingInBackground(t, l, n)
	time.Sleep(time.Second)
	rewrite(t, d, fmt.Sprintf(holdPings, lab.Col2IP, "e3"))
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	lab.WaitFor(t, 10*time.Second, func() bool { return generation(t, l, d) == 2 }, "the reload to apply (generation 2)")
	r := <-done
	if r.sent != n || r.recv != n || r.dupes != 0 {
		t.Fatalf("originals through the reload: sent %d answered %d duplicates %d", r.sent, r.recv, r.dupes)
	}
	before, after := count(oldT.Stop(), echoReq(lab.SrcIP)), count(newT.Stop(), echoReq(lab.SrcIP))
	t.Logf("%d answered of %d; copies %d to the old target, %d to the new", r.recv, n, before, after)
	if before < 50 || after < 50 || before+after > n+3 {
		t.Fatalf("copies: %d to the old target and %d to the new of %d pings", before, after, n)
	}
	d.stop(t)
}
