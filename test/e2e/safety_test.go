package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// Issue 11: never act on what nfclone did not write.

// plantedState names a table with nfclone's prefix and a policy rule and
// route that are not nfclone's: a victim that only the state file's
// ownership can protect.
const plantedState = `{"pid": 999999, "table": "nfclone_victim", "journal": [
 {"op": "route-added", "route": {"family": "inet", "table": 77, "gateway": "10.77.2.2", "device": "e1"}},
 {"op": "rule-added", "rule": {"family": "inet", "pref": 50, "mark": 7, "table": 77}}
]}
`

// addVictim installs the victim in the engine namespace.
func addVictim(t *testing.T, l *lab.Lab) {
	t.Helper()
	l.MustExec(t, l.Eng, "nft", "add", "table", "ip", "nfclone_victim")
	l.MustExec(t, l.Eng, "ip", "route", "add", "default", "via", lab.ColIP, "dev", "e1", "table", "77")
	l.MustExec(t, l.Eng, "ip", "rule", "add", "pref", "50", "fwmark", "7", "lookup", "77")
}

// requireVictim fails unless the victim is still there.
func requireVictim(t *testing.T, l *lab.Lab, after string) {
	t.Helper()
	if out, err := l.Exec(t.Context(), l.Eng, "nft", "list", "table", "ip", "nfclone_victim"); err != nil {
		t.Fatalf("%s: the victim table is gone: %v %s", after, err, out)
	}
	if r := l.MustExec(t, l.Eng, "ip", "route", "show", "table", "77"); !strings.Contains(r, "default via "+lab.ColIP) {
		t.Fatalf("%s: the victim route is gone:\n%s", after, r)
	}
	if r := l.MustExec(t, l.Eng, "ip", "rule"); !strings.Contains(r, "fwmark 0x7 lookup 77") {
		t.Fatalf("%s: the victim rule is gone:\n%s", after, r)
	}
}

// plantDir writes the planted state file into a new directory; own is
// applied to it before use.
func plantDir(t *testing.T, own func(dir string)) string {
	t.Helper()
	base := t.TempDir()
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(plantedState), 0o600); err != nil {
		t.Fatal(err)
	}
	own(dir)
	return dir
}

func chownNobody(t *testing.T) func(string) {
	return func(dir string) {
		for _, p := range []string{dir, filepath.Join(dir, "state.json")} {
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func symlinked(t *testing.T) func(string) {
	return func(dir string) {
		real := dir + ".real"
		if err := os.Rename(dir, real); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(real, dir); err != nil {
			t.Fatal(err)
		}
	}
}

const simpleDup = `
sessions:
  - name: d
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: device, device: e1}]
`

// A planted state file (directory owned by nobody, or a symlink) naming a
// victim table, route and rule: run, flush and capture leave the victim
// alone and exit 2 with the reason.
func TestPlantedStateRefused(t *testing.T) {
	l := lab.New(t)
	addVictim(t, l)
	for _, tc := range []struct {
		name string
		own  func(*testing.T) func(string)
		want string
	}{
		{"owned by nobody", chownNobody, "belongs to uid 65534"},
		{"symlink", symlinked, "is a symlink"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := plantDir(t, tc.own(t))
			check := func(what, stderr string, code int) {
				t.Helper()
				if code != 2 || !strings.Contains(stderr, tc.want) {
					t.Fatalf("%s: exit %d, want 2 with %q:\n%s", what, code, tc.want, stderr)
				}
				requireVictim(t, l, what)
			}
			_, errOut, code := nfc(l, "flush", "--state-dir", dir)
			check("flush", errOut, code)

			cfg, _ := writeConfig(t, simpleDup)
			_, errOut, code = runIn(l.Eng, "env", "NFCLONE_STATE_DIR="+dir, binary, "run", "-c", cfg)
			check("run", errOut, code)

			_, errOut, code = runIn(l.Eng, "env", "NFCLONE_STATE_DIR="+dir, binary, "capture", "-i", "e0", "--duration", "1s", "-w", os.DevNull)
			if tc.name == "owned by nobody" {
				check("capture (NFCLONE_STATE_DIR owned by nobody)", errOut, code)
			} else {
				// A symlinked parent: capture makes its own fresh directory
				// under it or refuses; either way the victim stays.
				requireVictim(t, l, "capture")
			}
		})
	}
}

// capture's state directory used to be /tmp/nfclone-capture-<pid>, which
// anyone could create first. A directory planted at that name (by pid:
// sh execs nfclone) is never read.
func TestCapturePlantedTmpDirIgnored(t *testing.T) {
	l := lab.New(t)
	addVictim(t, l)
	planted := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(planted, []byte(plantedState), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `d=/tmp/nfclone-capture-$$; mkdir -p $d; cp "$1" $d/state.json; chown -R 65534:65534 $d; chmod 0777 $d; exec "$2" capture -i e0 --duration 1s -w /dev/null`
	_, errOut, code := runIn(l.Eng, "sh", "-c", script, "sh", planted, binary)
	t.Cleanup(func() {
		dirs, _ := filepath.Glob("/tmp/nfclone-capture-*")
		for _, d := range dirs {
			if b, err := os.ReadFile(filepath.Join(d, "state.json")); err == nil && string(b) == plantedState {
				os.RemoveAll(d)
			}
		}
	})
	if code != 0 {
		t.Fatalf("capture: exit %d\n%s", code, errOut)
	}
	requireVictim(t, l, "capture beside a planted /tmp/nfclone-capture-<pid>")
}

// `run` with watch: true and a missing interface exits within 5 s with the
// problem's key path (it used to hang, deaf to SIGTERM and SIGINT).
func TestWatchMissingInterfaceExits(t *testing.T) {
	l := lab.New(t)
	cfg, _ := writeConfig(t, `watch: true
sessions:
  - name: d
    sources: [{interface: nosuch0, direction: ingress}]
    targets: [{kind: device, device: e1}]
`)
	p := l.Start(t, l.Eng, binary, "run", "-c", cfg)
	code, err := p.Wait(5 * time.Second)
	if err != nil {
		t.Fatalf("run with watch: true and a missing interface: %v\n%s", err, p.Stderr())
	}
	if code != 1 && code != 2 {
		t.Fatalf("exit %d, want 1 or 2:\n%s", code, p.Stderr())
	}
	if !strings.Contains(p.Stderr(), "sessions[0].sources[0]") || !strings.Contains(p.Stderr(), "nosuch0") {
		t.Fatalf("the problem or its key path is missing:\n%s", p.Stderr())
	}
}

// Two `run`s with one state_dir started together: one runs, the other
// exits 2 at once naming the pid of the one that holds the state_dir; the
// winner's state file is untouched and it stops cleanly.
func TestTwoRunsOneStateDir(t *testing.T) {
	l := lab.New(t)
	cfg, stateDir := writeConfig(t, routedConfig)
	a := l.Start(t, l.Eng, binary, "run", "-c", cfg)
	b := l.Start(t, l.Eng, binary, "run", "-c", cfg)
	var winner, loser *lab.Proc
	lab.WaitFor(t, 15*time.Second, func() bool {
		switch {
		case a.Exited():
			winner, loser = b, a
		case b.Exited():
			winner, loser = a, b
		}
		return loser != nil
	}, "one of two runs to exit")
	code, _ := loser.Wait(time.Second)
	want := "pid " + strconv.Itoa(winner.Pid())
	if code != 2 || !strings.Contains(loser.Stderr(), "already running") || !strings.Contains(loser.Stderr(), want) {
		t.Fatalf("the second run: exit %d, want 2 naming %q:\n%s", code, want, loser.Stderr())
	}
	lab.WaitFor(t, 15*time.Second, func() bool {
		if winner.Exited() {
			t.Fatalf("the winner exited:\n%s", winner.Stderr())
		}
		return strings.Contains(winner.Stderr(), "rules installed")
	}, "the winner to install its rules")
	st, err := os.ReadFile(filepath.Join(stateDir, "state.json"))
	if err != nil || !strings.Contains(string(st), `"pid": `+strconv.Itoa(winner.Pid())) {
		t.Fatalf("the winner's state file: %v\n%s", err, st)
	}
	// flush too is refused while the winner runs, and touches nothing.
	if _, errOut, code := nfc(l, "flush", "-c", cfg); code != 2 || !strings.Contains(errOut, want) {
		t.Fatalf("flush beside a running nfclone: exit %d\n%s", code, errOut)
	}
	requirePingCopies(t, l, l.Col, "e0", "copies of the winner after flush was refused")
	d := &daemon{Proc: winner, l: l, cfgPath: cfg, stateDir: stateDir}
	d.stop(t)
}

const createdVeth = `
sessions:
  - name: t
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: device, device: agg0, create: true}]
`

// killBeforeConfirm runs nfclone with the test hook that kills it (SIGKILL)
// after making a change of kind op and before confirming it in the state
// file, and waits for that death.
func killBeforeConfirm(t *testing.T, l *lab.Lab, cfg, op string) {
	t.Helper()
	p := l.Start(t, l.Eng, "env", "NFCLONE_TEST_KILL_BEFORE_CONFIRM="+op, binary, "run", "-c", cfg)
	code, err := p.Wait(15 * time.Second)
	if err != nil || code != -1 || !strings.Contains(p.Stderr(), "killing this process before confirming") {
		t.Fatalf("the test hook did not kill nfclone at %s: exit %d %v\n%s", op, code, err, p.Stderr())
	}
}

// kill -9 between a change and its confirmation in the journal: flush (or
// the next start) undoes it. The journal used to be written only after the
// change, so a created veth was then refused as "not created by nfclone".
func TestKill9BetweenJournalSteps(t *testing.T) {
	l := lab.New(t)
	before := routingState(t, l)

	t.Run("veth, then flush", func(t *testing.T) {
		cfg, stateDir := writeConfig(t, createdVeth)
		killBeforeConfirm(t, l, cfg, "link-created")
		if _, err := l.Exec(t.Context(), l.Eng, "ip", "link", "show", "agg0"); err != nil {
			t.Fatalf("the hook fired but agg0 does not exist: %v", err)
		}
		st, _ := os.ReadFile(filepath.Join(stateDir, "state.json"))
		if !strings.Contains(string(st), `"pending": true`) {
			t.Fatalf("the state file has no intent:\n%s", st)
		}
		if out, errOut, code := nfc(l, "flush", "-c", cfg); code != 0 {
			t.Fatalf("flush: exit %d\n%s%s", code, out, errOut)
		}
		if after := routingState(t, l); after != before {
			t.Fatalf("after flush:\n%s\n--- before:\n%s", after, before)
		}
	})

	t.Run("policy rule, then the next start", func(t *testing.T) {
		cfg, _ := writeConfig(t, routedConfig)
		killBeforeConfirm(t, l, cfg, "rule-added")
		// The first rule nfclone adds: the lookup of the made-up next hop
		// of lg's device target (the kernel sends its TCP copies), a rule
		// without a mark, which the next start must take as nfclone's.
		const rule = "to 169.254.77.1 lookup 21035"
		if r := l.MustExec(t, l.Eng, "ip", "rule"); !strings.Contains(r, rule) {
			t.Fatalf("the hook fired but the rule is not there:\n%s", r)
		}
		d := startNfclone2(t, l, cfg)
		if !strings.Contains(d.Stderr(), "removing leftovers of an earlier run") {
			t.Fatalf("the restart did not reconcile:\n%s", d.Stderr())
		}
		r := l.MustExec(t, l.Eng, "ip", "rule")
		if strings.Count(r, rule) != 1 || strings.Count(r, "fwmark 0x81/0xff") != 1 {
			t.Fatalf("after the restart, want one of each rule:\n%s", r)
		}
		d.stop(t)
		if after := routingState(t, l); after != before {
			t.Fatalf("after restart and SIGTERM:\n%s\n--- before:\n%s", after, before)
		}
	})

	t.Run("veth, then the next start", func(t *testing.T) {
		cfg, _ := writeConfig(t, createdVeth)
		killBeforeConfirm(t, l, cfg, "link-created")
		d := startNfclone2(t, l, cfg)
		d.stop(t)
		if after := routingState(t, l); after != before {
			t.Fatalf("after restart and SIGTERM:\n%s\n--- before:\n%s", after, before)
		}
	})
}

// startNfclone2 starts `run` on an existing config file.
func startNfclone2(t *testing.T, l *lab.Lab, cfg string) *daemon {
	t.Helper()
	p := l.Start(t, l.Eng, binary, "run", "-c", cfg)
	lab.WaitFor(t, 15*time.Second, func() bool {
		if p.Exited() {
			t.Fatalf("nfclone exited early:\n%s", p.Stderr())
		}
		return strings.Contains(p.Stderr(), "rules installed")
	}, "nfclone to install its rules")
	return &daemon{Proc: p, l: l, cfgPath: cfg}
}

// State belongs to one network namespace: with the state of a killed
// nfclone in eng, flush and run in another namespace (src) with the same
// state_dir exit 2 and leave eng's state file and routing alone; flush in
// eng then undoes it all.
func TestStateOfAnotherNamespace(t *testing.T) {
	l := lab.New(t)
	before := routingState(t, l)
	d := startNfclone(t, l, routedConfig)
	if err := d.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.Wait(10 * time.Second)
	left := routingState(t, l)
	stateFile := filepath.Join(d.stateDir, "state.json")
	st, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{binary, "flush", "--state-dir", d.stateDir},
		{binary, "flush", "-c", d.cfgPath},
		{binary, "run", "-c", d.cfgPath},
	} {
		_, errOut, code := runIn(l.Src, args...)
		if code != 2 || !strings.Contains(errOut, "belongs to network namespace") {
			t.Fatalf("%v in another namespace: exit %d, want 2 naming the namespace:\n%s", args[1:], code, errOut)
		}
		if now, err := os.ReadFile(stateFile); err != nil || string(now) != string(st) {
			t.Fatalf("%v in another namespace changed eng's state file: %v", args[1:], err)
		}
		if now := routingState(t, l); now != left {
			t.Fatalf("%v in another namespace changed eng's routing:\n%s\n--- before:\n%s", args[1:], now, left)
		}
	}
	if _, errOut, code := nfc(l, "flush", "-c", d.cfgPath); code != 0 {
		t.Fatalf("flush in eng: exit %d\n%s", code, errOut)
	}
	if after := routingState(t, l); after != before {
		t.Fatalf("after flush in eng:\n%s\n--- before:\n%s", after, before)
	}
}

// With the default state_dir, nfclones in two network namespaces both run:
// each has a state_dir of its own (it used to be one path for the whole
// file system, and the second was refused as "already running").
func TestDefaultStateDirPerNamespace(t *testing.T) {
	l := lab.New(t)
	dir := t.TempDir()
	start := func(ns, yaml string) *lab.Proc {
		t.Helper()
		cfg := filepath.Join(dir, ns+".yaml")
		if err := os.WriteFile(cfg, []byte("metrics: {listen: \"\"}\n"+yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		ino := strings.Trim(strings.TrimPrefix(strings.TrimSpace(l.MustExec(t, ns, "readlink", "/proc/self/ns/net")), "net:"), "[]")
		t.Cleanup(func() { os.RemoveAll("/run/nfclone/netns-" + ino) })
		p := l.Start(t, ns, binary, "run", "-c", cfg)
		lab.WaitFor(t, 15*time.Second, func() bool {
			if p.Exited() {
				t.Fatalf("nfclone in %s exited:\n%s", ns, p.Stderr())
			}
			return strings.Contains(p.Stderr(), "rules installed")
		}, "nfclone in "+ns)
		lock, err := os.ReadFile("/run/nfclone/netns-" + ino + "/lock")
		if err != nil || !strings.HasPrefix(string(lock), strconv.Itoa(p.Pid())+" ") {
			t.Fatalf("nfclone in %s does not hold /run/nfclone/netns-%s/lock: %v %q", ns, ino, err, lock)
		}
		return p
	}
	a := start(l.Eng, simpleDup)
	b := start(l.Src, `
sessions:
  - name: p
    method: log
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: pcap, path: `+filepath.Join(dir, "src.pcap")+`}]
`)
	for _, p := range []*lab.Proc{a, b} {
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code, err := p.Wait(15 * time.Second); code != 0 || err != nil {
			t.Fatalf("%s: exit %d %v\n%s", p.Name, code, err, p.Stderr())
		}
	}
}

// A target that blocks (a pcap "file" that is a FIFO nobody reads: every
// write hangs once the pipe is full) does not block shutdown: SIGTERM
// exits within the 2 s drain and its grace, and the ledger line counts what
// was left.
func TestBlockedTargetDoesNotBlockExit(t *testing.T) {
	l := lab.New(t)
	fifo := filepath.Join(t.TempDir(), "blocked.pcap")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A reader that opens the FIFO and never reads.
	holder := l.Start(t, "", "sh", "-c", `exec sleep 600 < "$0"`, fifo)
	defer holder.Kill()
	d := startNfclone(t, l, `
sessions:
  - name: p
    method: log
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: pcap, path: `+fifo+`}]
`)
	// 300 × 1.4 kB: far more than a pipe holds (64 KiB).
	l.MustExec(t, l.Src, "ping", "-q", "-c", "300", "-i", "0.002", "-s", "1400", "-W", "1", lab.EngE0IP)
	start := time.Now()
	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := d.Wait(8 * time.Second)
	if err != nil {
		t.Fatalf("SIGTERM with a blocked target: %v after %v\n%s", err, time.Since(start), d.Stderr())
	}
	if el := time.Since(start); code != 0 || el > 5*time.Second {
		t.Fatalf("exit %d after %v, want 0 within the drain bound\n%s", code, el, d.Stderr())
	}
	if !strings.Contains(d.Stderr(), "a target is blocked") {
		t.Fatalf("no word of the blocked target:\n%s", d.Stderr())
	}
}
