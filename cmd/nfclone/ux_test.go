package main

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nfclone/nfclone/collect"
	"github.com/nfclone/nfclone/config"
)

// cli runs nfclone with args and returns stdout, stderr and the exit code.
func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := exitCode(run(args, &out, &errOut))
	return out.String(), errOut.String(), code
}

// writeYAML writes a config into a fresh directory; {{dir}} is replaced by
// that directory.
func writeYAML(t *testing.T, yaml string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "nfclone.yaml")
	yaml = strings.ReplaceAll(yaml, "{{dir}}", dir)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func wantLines(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s: missing %q in:\n%s", what, w, got)
		}
	}
}

// check (and run) refuse a pcap target whose directory does not exist:
// a host problem (exit 2) with its key path, and check never says ok.
func TestCheckPcapDirectoryMissing(t *testing.T) {
	cfg := writeYAML(t, `
table: nfclone_uxtest
state_dir: {{dir}}/state
metrics: {listen: ""}
queue: {nice: 0}
sessions:
  - name: p
    method: log
    sources: [{interface: lo}]
    targets: [{kind: pcap, path: /nonexistent-nfclone-dir/x.pcap}]
`)
	const want = "sessions[0].targets[0].path: directory /nonexistent-nfclone-dir does not exist (line 10)"
	out, errOut, code := cli(t, "check", "-c", cfg)
	if code != 2 {
		t.Fatalf("check: exit %d, want 2\n%s%s", code, out, errOut)
	}
	wantLines(t, "check", errOut, "problem(s) on this host:", want)
	if strings.Contains(out, "ok") {
		t.Fatalf("check said ok with a problem:\n%s", out)
	}
	out, errOut, code = cli(t, "run", "-c", cfg)
	if code != 2 {
		t.Fatalf("run: exit %d, want 2\n%s%s", code, out, errOut)
	}
	wantLines(t, "run", errOut, want)
	if strings.Contains(errOut, "clean exit") {
		t.Fatalf("run said clean exit on a failed start:\n%s", errOut)
	}
}

// A missing interface is a host problem: exit 2, with its key path.
func TestMissingInterfaceIsHostProblem(t *testing.T) {
	cfg := writeYAML(t, `
table: nfclone_uxtest
state_dir: {{dir}}/state
metrics: {listen: ""}
queue: {nice: 0}
sessions:
  - name: d
    sources: [{interface: nosuch0x}]
    targets: [{kind: device, device: lo}]
`)
	for _, cmd := range []string{"check", "run"} {
		out, errOut, code := cli(t, cmd, "-c", cfg)
		if code != 2 {
			t.Fatalf("%s: exit %d, want 2\n%s%s", cmd, code, out, errOut)
		}
		wantLines(t, cmd, errOut, `sessions[0].sources[0].interface: interface "nosuch0x" does not exist (line 8)`)
		if strings.Contains(out, "config: ok") || strings.Contains(errOut, "clean exit") {
			t.Fatalf("%s said ok on a failed check:\n%s%s", cmd, out, errOut)
		}
	}
}

// Configs that cannot work are refused with exit 1 and the key path.
func TestCannotWorkRefused(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"sample 0", `
sessions:
  - name: s
    sources: [{interface: e0}]
    sample: 0
    targets: [{kind: device, device: e1}]
`, "sessions[0].sample: 0 is out of range 1-1048576 (copy 1 packet in N; leave it out to copy every packet) (line 5)"},
		{"IPv6 gateway with IPv4-only rules", `
sessions:
  - name: s
    sources: [{interface: e0}]
    rules: [{number: 1, action: accept, source: 10.0.0.0/8}, {number: 2, action: accept, protocol: icmp}]
    targets: [{kind: gateway, gateway: "fd77:2::2", device: e1}]
`, "sessions[0].targets[0].gateway: fd77:2::2 is IPv6 but every accept rule of this session matches IPv4 only: its chains would copy nothing (add a rule for IPv6, or a gateway of the rules' family) (line 6)"},
		{"YAML error on line 6", "table: x\nsessions:\n  - name: s\n    sources:\n      - interface: e0\n     direction: in\n",
			"(file): not valid YAML: line 6: did not find expected key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := cli(t, "render", "-c", writeYAML(t, tc.yaml))
			if code != 1 {
				t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
			}
			wantLines(t, "render", errOut, "nfclone: the config has 1 problem(s):\n  "+tc.want+"\n")
		})
	}
}

// A source with host bits set is a warning naming the network it becomes.
func TestCheckWarnsHostBits(t *testing.T) {
	cfg := writeYAML(t, `
table: nfclone_uxtest
state_dir: {{dir}}/state
sessions:
  - name: p
    method: log
    sources: [{interface: lo}]
    rules: [{number: 1, action: accept, source: 10.99.1.5/24}]
    targets: [{kind: pcap, path: {{dir}}/x.pcap}]
`)
	out, errOut, _ := cli(t, "check", "-c", cfg)
	wantLines(t, "check", out, `warning: sessions[0].rules[0].source: "10.99.1.5/24" has host bits set: it matches the whole network 10.99.1.0/24 (for the host alone write 10.99.1.5/32)`)
	if i, j := strings.Index(out, "warning:"), strings.Index(out, "config: ok"); j >= 0 && j < i {
		t.Fatalf("ok before the warning:\n%s%s", out, errOut)
	}
}

// --log-format json applies to start-up errors too: one JSON object.
func TestStartupErrorJSON(t *testing.T) {
	cfg := writeYAML(t, "sessions:\n  - name: s\n    sample: 0\n    sources: [{interface: e0}]\n    targets: [{kind: device, device: e1}]\n")
	_, errOut, code := cli(t, "render", "--log-format", "json", "-c", cfg)
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, errOut)
	}
	want := `"level":"ERROR","msg":"nfclone: the config has 1 problem(s)","exit":1,"problems":[{"key":"sessions[0].sample","line":3,"problem":"0 is out of range 1-1048576 (copy 1 packet in N; leave it out to copy every packet)"}]}`
	if lines := strings.Split(strings.TrimSpace(errOut), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], `{"time":`) || !strings.HasSuffix(lines[0], want) {
		t.Fatalf("not one JSON line ending %s:\n%s", want, errOut)
	}
}

// tap and capture report problems in the words the user typed: the
// argument or flag, never a YAML key path.
func TestErrorsInTheUsersWords(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tap", "e0->agg0"}, 1, "nfclone tap: 1 problem(s) with the arguments:\n" +
			`  argument 'e0->agg0': is not SOURCES>TARGETS: write '>' alone, like 'e0>agg0' (with '->' the source would be "e0-")` + "\n"},
		{[]string{"tap", "lo>nosuch9x", "--dry-run"}, 2, "nfclone tap: 1 problem(s) on this host:\n" +
			`  argument 'lo>nosuch9x': interface "nosuch9x" does not exist (pass --create, or write +nosuch9x, to have nfclone create it)` + "\n"},
		{[]string{"tap", "nosuch8x>lo", "--dry-run"}, 2, "nfclone tap: 1 problem(s) on this host:\n" +
			`  argument 'nosuch8x>lo': interface "nosuch8x" does not exist` + "\n"},
		{[]string{"tap", "lo>lo"}, 1, "nfclone tap: 1 problem(s) with the arguments:\n" +
			`  argument 'lo>lo': lo is both a source and a target: its copies would be copied again (a loop)` + "\n"},
		{[]string{"capture", "-i", "lo", "-w", "/nodir/x.pcap"}, 2, "nfclone capture: 1 problem(s) on this host:\n" +
			"  -w /nodir/x.pcap: directory /nodir does not exist\n"},
		{[]string{"capture", "-i", "nosuch7x", "-w", filepath.Join(dir, "x.pcap")}, 2, "nfclone capture: 1 problem(s) on this host:\n" +
			`  -i nosuch7x: interface "nosuch7x" does not exist` + "\n"},
		{[]string{"capture", "-i", "lo", "--src", "10.0.0.300", "-w", filepath.Join(dir, "x.pcap")}, 1, "nfclone capture: 1 problem(s) with the arguments:\n" +
			`  --src: "10.0.0.300" is not an address or CIDR` + "\n"},
		{[]string{"capture", "-i", "lo", "-w", filepath.Join(dir, "x.pcap"), "tcp", "port", "80", "and", "arp"}, 1, "nfclone capture: 1 problem(s) with the arguments:\n" +
			`  filter 'tcp port 80 and arp': "arp" is not supported: nfclone captures IP packets only` + "\n"},
		{[]string{"capture", "-i", "lo", "-w", filepath.Join(dir, "x.pcap"), "tcp port http"}, 1, "nfclone capture: 1 problem(s) with the arguments:\n" +
			`  filter 'tcp port http': "http" is not a port number (names are not looked up)` + "\n"},
		{[]string{"capture", "-i", "lo", "--duration", "5x", "-w", "-"}, 1,
			`nfclone: invalid argument "5x" for "--duration" flag: "5x" is not a number of seconds (5) or a duration (30s, 2m)` + "\n"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := cli(t, tc.args...)
			if code != tc.code || errOut != tc.want {
				t.Fatalf("exit %d, want %d\nstderr:\n%s\nwant:\n%s\nstdout:\n%s", code, tc.code, errOut, tc.want, out)
			}
			if strings.Contains(errOut+out, "packets captured") || strings.Contains(errOut, "sessions[") {
				t.Fatalf("statistics or a key path:\n%s%s", out, errOut)
			}
		})
	}
}

// Ports without a protocol mean TCP and UDP, as tcpdump's port; a bare
// --duration is seconds.
func TestCapturePortsWithoutProtocol(t *testing.T) {
	o := captureOpts("lo")
	o.DPort = "80"
	c, _, err := captureConfig(&o, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := c.Sessions[0].Rules
	if len(r) != 2 || r[0].Protocol != "tcp" || r[1].Protocol != "udp" || r[0].DestinationPorts != "80" || r[1].DestinationPorts != "80" {
		t.Fatalf("rules %+v, want tcp and udp dport 80", r)
	}
	var d time.Duration
	for in, want := range map[string]time.Duration{"5": 5 * time.Second, "0.5": 500 * time.Millisecond, "2m": 2 * time.Minute} {
		if err := (secondsFlag{&d}).Set(in); err != nil || d != want {
			t.Errorf("--duration %s: %v %v, want %v", in, d, err, want)
		}
	}
}

// captureOpts are the capture's defaults on interfaces (for tests).
func captureOpts(ifaces ...string) config.CaptureOptions {
	return config.CaptureOptions{Interfaces: ifaces, Direction: "both", Method: "log", Output: "-", Format: "pcap"}
}

// collect says while it runs that it denies senders and cannot decode
// datagrams, with the last of each, once per change.
func TestCollectProgressWhileRunning(t *testing.T) {
	c, err := collect.New(collect.Config{Listen: "127.0.0.1:0", Allow: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/16")},
		PcapPath: filepath.Join(t.TempDir(), "c.pcap")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	var buf bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) })
	read := func() string { mu.Lock(); defer mu.Unlock(); return buf.String() }
	c.Handle(time.Now(), netip.MustParseAddr("192.0.2.9"), []byte("x"))
	c.Handle(time.Now(), netip.MustParseAddr("10.77.4.1"), []byte{1, 2, 3})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); collectProgress(ctx, w, c, 10*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	want := "nfclone collect: so far received 2, written 0; denied senders 1 (last 192.0.2.9, not in --allow), malformed 1 (last: "
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(read(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no progress line %q in:\n%s", want, read())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // several ticks: no change, no new line
	if n := strings.Count(read(), "\n"); n != 1 {
		t.Fatalf("%d lines without a change, want 1:\n%s", n, read())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// -v and --version print the version, as `nfclone version`.
func TestVersionFlag(t *testing.T) {
	for _, f := range []string{"-v", "--version"} {
		if out, errOut, code := cli(t, f); code != 0 || out != "nfclone dev\n" {
			t.Errorf("%s: exit %d %q %q", f, code, out, errOut)
		}
	}
}

// Several interfaces into pcap: a note says pcapng would record where.
func TestCaptureNotes(t *testing.T) {
	for _, tc := range []struct {
		format, method string
		ifaces         []string
		want           string
	}{
		{"pcap", "log", []string{"lo", "lo2"}, "nfclone: note: a pcap file does not say on which interface each packet was seen; --format pcapng records it, with the direction\n"},
		{"pcapng", "queue", []string{"lo", "lo2"}, "nfclone: note: with --method queue the pcapng file does not say on which interface each packet was seen (--method log does)\n"},
		{"pcapng", "log", []string{"lo", "lo2"}, ""},
		{"pcap", "log", []string{"lo"}, ""},
	} {
		o := captureOpts(tc.ifaces...)
		o.Format, o.Method = tc.format, tc.method
		c, err := config.Capture(o, 1)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		captureNotes(&b, c, o)
		if b.String() != tc.want {
			t.Errorf("%+v: %q, want %q", tc, b.String(), tc.want)
		}
	}
}
