package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
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

// status fetches `nfclone status --json` from the daemon.
func status(t *testing.T, l *lab.Lab, d *daemon) map[string]any {
	t.Helper()
	out, errOut, code := nfc(l, "status", "--state-dir", d.stateDir, "--json")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return m
}

// tunnelCut is status --json's tunnel_cut of the one-target session's
// target (nil: none): what the segment-size program on nfclone's VXLAN
// device counted.
func tunnelCut(t *testing.T, l *lab.Lab, d *daemon) map[string]any {
	t.Helper()
	for _, s := range status(t, l, d)["sessions"].([]any) {
		if ts, _ := s.(map[string]any)["targets"].([]any); len(ts) == 1 {
			if c, ok := ts[0].(map[string]any)["tunnel_cut"].(map[string]any); ok {
				return c
			}
		}
	}
	return nil
}

func generation(t *testing.T, l *lab.Lab, d *daemon) int {
	t.Helper()
	return int(status(t, l, d)["generation"].(float64))
}

// sessionField digs a number out of a session of status --json, e.g.
// ("keep", "ledger", "offered").
func sessionField(t *testing.T, st map[string]any, name string, path ...string) float64 {
	t.Helper()
	for _, s := range st["sessions"].([]any) {
		m := s.(map[string]any)
		if m["name"] != name {
			continue
		}
		var v any = m
		for _, p := range path {
			v = v.(map[string]any)[p]
		}
		f, _ := v.(float64)
		return f
	}
	t.Fatalf("no session %s in status", name)
	return 0
}

const reloadA = `
sessions:
  - name: keep
    method: queue
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
  - name: old
    method: log
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: device, device: e3}]
`

const reloadB = `
sessions:
  - name: keep
    method: queue
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
  - name: new
    sources: [{interface: e0, direction: egress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: device, device: e3}]
`

// rewrite replaces the daemon's config file (keeping its state_dir line).
func rewrite(t *testing.T, d *daemon, yaml string) {
	t.Helper()
	b, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	head := strings.SplitN(string(b), "\n", 3) // state_dir, metrics
	if err := os.WriteFile(d.cfgPath, []byte(head[0]+"\n"+head[1]+"\n"+yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// pingResult is what a ping run in the background saw.
type pingResult struct{ sent, recv, dupes int }

// pingInBackground pings eng's e0 address from src n times, 10 ms apart,
// and sends what it saw on the channel it returns.
func pingInBackground(t *testing.T, l *lab.Lab, n int) <-chan pingResult {
	done := make(chan pingResult, 1)
	go func() {
		s, r, du, err := lab.Ping(context.Background(), l, l.Src, lab.EngE0IP, n, 10*time.Millisecond)
		if err != nil {
			t.Error(err)
		}
		done <- pingResult{s, r, du}
	}()
	return done
}

// SIGHUP under steady traffic adds a session and removes another: no
// original lost, no copy of the unchanged session missing, its counters kept.
func TestReloadUnderTraffic(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, reloadA)
	keepCopies := l.StartCapture(t, l.Col, "e0", "icmp[0] == 8", lab.Direction("in"))
	col2 := l.StartCapture(t, l.Col2, "e0", "icmp", lab.Direction("in"))
	const n = 300
	done := pingInBackground(t, l, n)
	time.Sleep(time.Second)
	before := sessionField(t, status(t, l, d), "keep", "ledger", "offered")
	rewrite(t, d, reloadB)
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	lab.WaitFor(t, 10*time.Second, func() bool { return generation(t, l, d) == 2 }, "the reload to apply (generation 2)")
	r := <-done
	if r.sent != n || r.recv != n || r.dupes != 0 {
		t.Fatalf("originals during the reload: sent %d received %d duplicates %d", r.sent, r.recv, r.dupes)
	}
	after := sessionField(t, status(t, l, d), "keep", "ledger", "offered")
	if before == 0 || after < before+50 {
		t.Fatalf("the unchanged session's counters were not kept: offered %v before the reload, %v after", before, after)
	}
	deadline := time.Now().Add(5 * time.Second)
	for keepCopies.Count() < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	ps := keepCopies.Stop()
	var ledger string
	for _, f := range []string{"offered", "copied", "kernel_sent", "kernel_lost", "drops", "user"} {
		ledger += fmt.Sprintf(" %s=%v", f, sessionField(t, status(t, l, d), "keep", "ledger", f))
	}
	t.Logf("keep ledger: %s", ledger)
	// A packet queued while the tables are replaced is re-injected at a hook
	// position that now holds the new chain: it may be queued (and copied)
	// once more. Copies may repeat; none may be missing.
	if got := count(ps, echoReq(lab.SrcIP)); got < n || got > n+3 {
		t.Fatalf("copies of the unchanged session: %d, want %d (at most 3 repeated around the swap)", got, n)
	}
	seen := map[int]bool{}
	for _, p := range ps {
		seen[p.ICMPSeq] = true
	}
	for seq := 1; seq <= n; seq++ {
		if !seen[seq] {
			t.Fatalf("copy of echo request %d missing: a gap in the unchanged session (ledger %s)", seq, ledger)
		}
	}
	// The removed session (requests, by log) stopped; the added one (replies, by dup) runs.
	c2 := col2.Stop()
	reqs, reps := count(c2, echoReq(lab.SrcIP)), count(c2, echoRep(lab.SrcIP))
	if reqs == 0 || reps == 0 || reqs >= n || reps >= n {
		t.Fatalf("col2 saw %d requests (removed session) and %d replies (added session); want some of each, neither all", reqs, reps)
	}
	c3 := l.StartCapture(t, l.Col2, "e0", "icmp", lab.Direction("in"))
	ping(t, l, l.Src, lab.EngE0IP, pings)
	c3.WaitCount(pings, 5*time.Second)
	ps3 := c3.Stop()
	requireCount(t, "replies copied by the added session", ps3, echoRep(lab.SrcIP), pings)
	requireCount(t, "requests copied by the removed session", ps3, echoReq(lab.SrcIP), 0)
	if rendered, _, _ := nfc(l, "render", "-c", d.cfgPath); normalizeNft(nftRuleset(t, l)) != normalizeNft(rendered) {
		t.Fatalf("after the reload the kernel's rules differ from render of the new config")
	}
	d.stop(t)
}

// An invalid config is refused on SIGHUP: its errors are logged, the old
// rules stay, copying goes on.
func TestInvalidReloadKeepsOld(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, reloadA)
	rules := nftRuleset(t, l)
	rewrite(t, d, reloadA+"    colour: blue\n")
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	lab.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(d.Stderr(), "reload refused") }, "the reload to be refused")
	if !strings.Contains(d.Stderr(), "sessions[1].colour: unknown key") {
		t.Fatalf("the refusal does not name the key path:\n%s", d.Stderr())
	}
	if g := generation(t, l, d); g != 1 {
		t.Fatalf("generation %d after a refused reload", g)
	}
	if now := nftRuleset(t, l); normalizeNft(now) != normalizeNft(rules) {
		t.Fatalf("rules changed after a refused reload:\n%s", now)
	}
	requirePingCopies(t, l, l.Col, "e0", "copies after the refused reload")
	d.stop(t)
}

// kill -9, then start again: one clean set of rules, nothing duplicated.
func TestKill9ThenRestart(t *testing.T) {
	l := lab.New(t)
	before := routingState(t, l)
	d := startNfclone(t, l, routedConfig)
	if err := d.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.Wait(10 * time.Second)
	p := l.Start(t, l.Eng, binary, "run", "-c", d.cfgPath)
	d2 := &daemon{Proc: p, l: l, cfgPath: d.cfgPath, stateDir: d.stateDir}
	lab.WaitFor(t, 15*time.Second, func() bool {
		if p.Exited() {
			t.Fatalf("restart failed:\n%s", p.Stderr())
		}
		return strings.Contains(p.Stderr(), "rules installed")
	}, "the restarted nfclone")
	if !strings.Contains(p.Stderr(), "removing leftovers of an earlier run") {
		t.Fatalf("the restart did not reconcile the killed run:\n%s", p.Stderr())
	}
	rules := l.MustExec(t, l.Eng, "ip", "rule")
	if n := strings.Count(rules, "fwmark 0x81/0xff"); n != 1 {
		t.Fatalf("%d fwmark rules after restart:\n%s", n, rules)
	}
	if n := strings.Count(rules, "lookup local"); n != 1 {
		t.Fatalf("%d local rules after restart:\n%s", n, rules)
	}
	rendered, _, _ := nfc(l, "render", "-c", d.cfgPath)
	if got, want := normalizeNft(nftRuleset(t, l)), normalizeNft(rendered); got != want {
		t.Fatalf("rules after restart differ from render:\n%s\n--- want:\n%s", got, want)
	}
	d2.stop(t)
	if after := routingState(t, l); after != before {
		t.Fatalf("routing state after restart+SIGTERM differs:\n%s\n--- before:\n%s", after, before)
	}
}

// A target interface deleted and re-created: mirroring resumes by itself;
// while it is gone, status and metrics say so.
func TestTargetInterfaceRecreated(t *testing.T) {
	l := lab.New(t)
	mk := func() {
		l.MustExec(t, l.Eng, "ip", "link", "add", "mon0", "type", "veth", "peer", "name", "mon1")
		l.MustExec(t, l.Eng, "ip", "link", "set", "mon0", "up")
		l.MustExec(t, l.Eng, "ip", "link", "set", "mon1", "up")
	}
	mk()
	d := startNfclone(t, l, `
metrics: {listen: "127.0.0.1:9464"}
sessions:
  - name: mon
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: device, device: mon0}]
`)
	check := func(what string) {
		t.Helper()
		requirePingCopies(t, l, l.Eng, "mon1", what)
	}
	check("copies on mon1 at start")
	l.MustExec(t, l.Eng, "ip", "link", "del", "mon0")
	lab.WaitFor(t, 10*time.Second, func() bool {
		st := status(t, l, d)
		for _, s := range st["sessions"].([]any) {
			if s.(map[string]any)["state"] == "waiting" {
				return true
			}
		}
		return false
	}, "status to report the session waiting for mon0")
	if m := scrape(t, l); !strings.Contains(m, `nfclone_interface_up{interface="mon0"} 0`) {
		t.Fatalf("metrics do not report mon0 down:\n%s", grepLines(m, "interface_up"))
	}
	ping(t, l, l.Src, lab.EngE0IP, 3) // originals flow while the target is gone
	mk()
	lab.WaitFor(t, 10*time.Second, func() bool { return generation(t, l, d) >= 3 }, "nfclone to re-bind after mon0 came back")
	check("copies on mon1 after re-creating it")
	d.stop(t)
}

func scrape(t *testing.T, l *lab.Lab) string {
	t.Helper()
	return l.MustExec(t, l.Eng, "curl", "-sf", "http://127.0.0.1:9464/metrics")
}

func grepLines(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func metricValue(t *testing.T, m, name string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`)
	sm := re.FindStringSubmatch(m)
	if sm == nil {
		t.Fatalf("no %s in metrics:\n%s", name, grepLines(m, "nfclone_session"))
	}
	v, _ := strconv.ParseFloat(sm[1], 64)
	return v
}

// /metrics passes promtool check metrics, and its counters equal the
// packets sent.
func TestMetrics(t *testing.T) {
	lab.RequireTools(t, "promtool", "curl")
	l := lab.New(t)
	d := startNfclone(t, l, `
metrics: {listen: "127.0.0.1:9464"}
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
	const n = 25
	ping(t, l, l.Src, lab.EngE0IP, n)
	lab.WaitFor(t, 5*time.Second, func() bool {
		return metricValue(t, scrape(t, l), `nfclone_target_sent_packets_total{kind="gateway",method="queue",session="q",target="q/0:gateway"}`) == n
	}, "the queue session's target to have sent every copy")
	m := scrape(t, l)
	for name, want := range map[string]float64{
		`nfclone_session_copied_packets_total{method="queue",session="q"}`:                          n,
		`nfclone_session_offered_packets_total{method="queue",session="q"}`:                         n,
		`nfclone_session_dropped_packets_total{method="queue",reason="queue_overflow",session="q"}`: 0,
		`nfclone_session_copied_packets_total{method="dup",session="d"}`:                            n,
		`nfclone_rule_generation`: 1,
	} {
		if got := metricValue(t, m, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	// seen counts every frame entering the session's filter (ARP and
	// neighbour discovery too), so at least the pings.
	if seen := metricValue(t, m, `nfclone_session_seen_packets_total{method="dup",session="d"}`); seen < n {
		t.Errorf("dup session saw %v packets, want at least %d", seen, n)
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(m)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	// The human table shows the same numbers.
	table, errOut, code := nfc(l, "status", "--state-dir", d.stateDir)
	if code != 0 || !strings.Contains(table, "q ") || !strings.Contains(table, fmt.Sprint(n)) {
		t.Fatalf("status table (exit %d, %s):\n%s", code, errOut, table)
	}
	d.stop(t)
}

// nfclone run with only CAP_NET_ADMIN and CAP_NET_RAW, as an unprivileged
// user, works: rules, policy routing, copies, clean exit.
func TestOnlyTwoCapabilities(t *testing.T) {
	lab.RequireTools(t, "setpriv")
	l := lab.New(t)
	path, stateDir := writeConfig(t, routedConfig)
	// The unprivileged user must reach the config, the binary and its state dir.
	for _, p := range []string{filepath.Dir(path), filepath.Dir(filepath.Dir(path)), filepath.Dir(binary)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(stateDir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	before := routingState(t, l)
	p := l.Start(t, l.Eng, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all,+net_admin,+net_raw", "--ambient-caps=-all,+net_admin,+net_raw",
		"--bounding-set=-all,+net_admin,+net_raw", binary, "run", "-c", path)
	d := &daemon{Proc: p, l: l, cfgPath: path, stateDir: stateDir}
	lab.WaitFor(t, 15*time.Second, func() bool {
		if p.Exited() {
			t.Fatalf("nfclone with two capabilities exited:\n%s", p.Stderr())
		}
		return strings.Contains(p.Stderr(), "rules installed")
	}, "nfclone (two capabilities) to install its rules")
	requirePingCopies(t, l, l.Col, "e0", "copies by the unprivileged nfclone")
	d.stop(t)
	if after := routingState(t, l); after != before {
		t.Fatalf("routing state after exit differs:\n%s\n--- before:\n%s", after, before)
	}
	if rs := nftRuleset(t, l); strings.TrimSpace(rs) != "" {
		t.Fatalf("rules left:\n%s", rs)
	}
}

// watch: true reloads when the file changes, without a signal.
func TestWatchReloads(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, "watch: true\n"+reloadA)
	rewrite(t, d, "watch: true\n"+reloadB)
	lab.WaitFor(t, 10*time.Second, func() bool { return generation(t, l, d) == 2 }, "the file change to reload the config")
	if !strings.Contains(d.Stderr(), "config file changed: reloading") {
		t.Fatalf("no reload log line:\n%s", d.Stderr())
	}
	rendered, _, _ := nfc(l, "render", "-c", d.cfgPath)
	if normalizeNft(nftRuleset(t, l)) != normalizeNft(rendered) {
		t.Fatalf("after the watched reload the kernel's rules differ from render of the new file")
	}
	d.stop(t)
}

// A second SIGTERM during shutdown exits at once; the rules are gone either
// way (the kernel drops owned tables with the process) and flush restores
// the rest.
func TestSecondSignal(t *testing.T) {
	l := lab.New(t)
	before := routingState(t, l)
	d := startNfclone(t, l, routedConfig)
	_ = d.Signal(syscall.SIGTERM)
	_ = d.Signal(syscall.SIGTERM)
	code, err := d.Wait(15 * time.Second)
	if err != nil || (code != 0 && code != 130) {
		t.Fatalf("exit %d %v after two signals:\n%s", code, err, d.Stderr())
	}
	lab.WaitFor(t, 5*time.Second, func() bool { return strings.TrimSpace(nftRuleset(t, l)) == "" }, "no nfclone table after the fast exit")
	if _, errOut, code := nfc(l, "flush", "-c", d.cfgPath); code != 0 {
		t.Fatalf("flush: %s", errOut)
	}
	if after := routingState(t, l); after != before {
		t.Fatalf("routing state after two signals and flush differs:\n%s\n--- before:\n%s", after, before)
	}
}

const countersA = `
sessions:
  - name: tap
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: device, device: e3}]
  - name: routed
    method: queue
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
`

// A reload replaces nfclone's tables, and the kernel's counters with them:
// the figures of the sessions that go on (a dup session's copied count, a
// kernel-routed session's queued count in its ledger) must go on too, not
// start again. The capture at each target is the oracle.
func TestCountersGoOnAcrossReload(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, countersA)
	tap := l.StartCapture(t, l.Col2, "e0", "icmp[0] == 8", lab.Direction("in"))
	gw := l.StartCapture(t, l.Col, "e0", "icmp[0] == 8", lab.Direction("in"))
	const n = 10
	ping(t, l, l.Src, lab.EngE0IP, n)
	if got := sessionField(t, status(t, l, d), "tap", "copied", "packets"); got != n {
		t.Fatalf("tap copied %v before the reload, want %d", got, n)
	}
	// A session added: the tables are replaced, tap and routed go on.
	rewrite(t, d, countersA+`  - name: other
    sources: [{interface: e2, direction: ingress}]
    targets: [{kind: device, device: e3}]
`)
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	lab.WaitFor(t, 10*time.Second, func() bool { return generation(t, l, d) == 2 }, "the reload to apply (generation 2)")
	ping(t, l, l.Src, lab.EngE0IP, n)
	tap.WaitCount(2*n, 5*time.Second)
	gw.WaitCount(2*n, 5*time.Second)
	requireCount(t, "copies at the device target", tap.Stop(), echoReq(lab.SrcIP), 2*n)
	requireCount(t, "copies at the gateway", gw.Stop(), echoReq(lab.SrcIP), 2*n)
	st := status(t, l, d)
	if got := sessionField(t, st, "tap", "copied", "packets"); got != 2*n {
		t.Errorf("dup session: copied %v after the reload, want %d (the counter started again?)", got, 2*n)
	}
	for _, f := range []string{"offered", "copied"} {
		if got := sessionField(t, st, "routed", "ledger", f); got != 2*n {
			t.Errorf("kernel-routed session: ledger %s %v after the reload, want %d", f, got, 2*n)
		}
	}
	d.stop(t)
}
