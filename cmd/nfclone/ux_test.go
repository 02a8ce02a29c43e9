package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	const want = "sessions[0].targets[0].path: directory /nonexistent-nfclone-dir does not exist"
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
		wantLines(t, cmd, errOut, `sessions[0].sources[0].interface: interface "nosuch0x" does not exist`)
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
`, "sessions[0].sample: 0 is out of range 1-1048576 (copy 1 packet in N; leave it out to copy every packet)"},
		{"IPv6 gateway with IPv4-only rules", `
sessions:
  - name: s
    sources: [{interface: e0}]
    rules: [{number: 1, action: accept, source: 10.0.0.0/8}, {number: 2, action: accept, protocol: icmp}]
    targets: [{kind: gateway, gateway: "fd77:2::2", device: e1}]
`, "sessions[0].targets[0].gateway: fd77:2::2 is IPv6 but every accept rule of this session matches IPv4 only: its chains would copy nothing (add a rule for IPv6, or a gateway of the rules' family)"},
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
	want := `"level":"ERROR","msg":"nfclone: the config has 1 problem(s)","exit":1,"problems":[{"key":"sessions[0].sample","problem":"0 is out of range 1-1048576 (copy 1 packet in N; leave it out to copy every packet)"}]}`
	if lines := strings.Split(strings.TrimSpace(errOut), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], `{"time":`) || !strings.HasSuffix(lines[0], want) {
		t.Fatalf("not one JSON line ending %s:\n%s", want, errOut)
	}
}
