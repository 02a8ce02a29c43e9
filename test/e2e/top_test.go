package e2e

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// tmux drives a private tmux server (its own socket) for one test.
type tmux struct {
	t      *testing.T
	socket string
	target string
}

func newTmux(t *testing.T, width, height int, command ...string) *tmux {
	t.Helper()
	lab.RequireTools(t, "tmux")
	// A socket of its own in the test's temporary directory (removed with it).
	x := &tmux{t: t, socket: filepath.Join(t.TempDir(), "tmux.sock"), target: "top"}
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", x.socket, "kill-server").Run() })
	args := append([]string{"new-session", "-d", "-s", x.target, "-x", strconv.Itoa(width), "-y", strconv.Itoa(height)}, command...)
	x.run(args...)
	return x
}

func (x *tmux) run(args ...string) string {
	x.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", x.socket}, args...)...).CombinedOutput()
	if err != nil {
		x.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (x *tmux) capture() string { return x.run("capture-pane", "-p", "-t", x.target) }

func (x *tmux) alive() bool {
	return exec.Command("tmux", "-S", x.socket, "has-session", "-t", x.target).Run() == nil
}

var reClock = regexp.MustCompile(`\b\d\d:\d\d:\d\d\b`)

// sessionRate returns the COPIES/S column of session name's row in a top
// frame (SESSION METHOD STATE COPIES/S ...; state is one word here).
func sessionRate(frame, name string) (float64, bool) {
	for _, l := range strings.Split(frame, "\n") {
		f := strings.Fields(l)
		if len(f) > 3 && f[0] == name {
			v, err := strconv.ParseFloat(f[3], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// TestTopLive runs `nfclone top` in tmux against a daemon copying a 10/s
// ping (a queue session to a gateway, a dup session to a device): the
// screen refreshes every second, shows both sessions' copies/s at the
// rate tcpdump counts on the collector, the target and the queue; q
// quits. `top --once` prints the same rates as plain text.
func TestTopLive(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: q
    method: queue
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
  - name: d
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: device, device: e3}]
`)
	col := l.StartCapture(t, l.Col, "e0", "icmp[0] == 8", lab.Direction("in"))
	pinger := l.Start(t, l.Src, "ping", "-i", "0.1", "-q", lab.EngE0IP)

	x := newTmux(t, 160, 40, binary, "top", "--state-dir", d.stateDir)
	var frame string
	lab.WaitFor(t, 10*time.Second, func() bool {
		frame = x.capture()
		v, ok := sessionRate(frame, "q")
		return ok && v > 0
	}, "nfclone top in tmux to show session q copying")
	for _, want := range []string{"SESSION", "COPIES/S", "DROPS/S", "QUEUE", "TARGET", "q/0:gateway", "q quits"} {
		if !strings.Contains(frame, want) {
			t.Errorf("top screen lacks %q:\n%s", want, frame)
		}
	}
	if strings.Contains(frame, "\x1b") {
		t.Errorf("escape codes in the pane's text:\n%q", frame)
	}

	// Three refreshes; tcpdump counts the copies reaching the collector
	// meanwhile.
	n0, t0 := col.Count(), time.Now()
	var rates []float64
	var clocks []string
	lab.WaitFor(t, 10*time.Second, func() bool {
		f := x.capture()
		c := reClock.FindString(f)
		if len(clocks) == 0 || clocks[len(clocks)-1] != c {
			if v, ok := sessionRate(f, "q"); ok {
				clocks = append(clocks, c)
				rates = append(rates, v)
				frame = f
			}
		}
		time.Sleep(200 * time.Millisecond)
		return len(clocks) >= 4
	}, "four refreshes of the top screen")
	tcpdumpRate := float64(col.Count()-n0) / time.Since(t0).Seconds()
	t.Logf("last screen:\n%s", strings.TrimRight(frame, "\n"))
	t.Logf("top copies/s of q at %v: %v; tcpdump on the collector: %.1f copies/s", clocks, rates, tcpdumpRate)
	for i, v := range rates[1:] {
		if v < 0.6*tcpdumpRate || v > 1.4*tcpdumpRate {
			t.Errorf("frame %d (%s): q copies/s %v, tcpdump counts %.1f/s", i+2, clocks[i+1], v, tcpdumpRate)
		}
	}
	if v, ok := sessionRate(frame, "d"); !ok || v < 0.6*tcpdumpRate || v > 1.4*tcpdumpRate {
		t.Errorf("dup session d copies/s %v (ok %v), the ping sends %.1f/s:\n%s", v, ok, tcpdumpRate, frame)
	}

	// q quits and the pane's command exits.
	x.run("send-keys", "-t", x.target, "q")
	lab.WaitFor(t, 5*time.Second, func() bool { return !x.alive() }, "nfclone top to quit on q")

	// --once: plain text, rates over one interval.
	out, err := exec.Command(binary, "top", "--once", "--state-dir", d.stateDir).Output()
	if err != nil {
		t.Fatalf("top --once: %v", err)
	}
	if strings.Contains(string(out), "\x1b") {
		t.Errorf("top --once to a pipe prints escape codes:\n%q", out)
	}
	if v, ok := sessionRate(string(out), "q"); !ok || v < 0.6*tcpdumpRate || v > 1.4*tcpdumpRate {
		t.Errorf("top --once: q copies/s %v (ok %v), want about %.1f:\n%s", v, ok, tcpdumpRate, out)
	}

	if err := pinger.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	pinger.Wait(5 * time.Second)
	col.Finish()
	d.stop(t)
}
