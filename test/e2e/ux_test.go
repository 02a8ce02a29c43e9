package e2e

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// Issue 17: status needs only the running daemon. After a reload refused
// because the file no longer parses, `nfclone status -c FILE` still reaches
// the daemon (through the state_dir line of the broken file) and shows the
// refused reload with its error; exit 0.
func TestStatusWithBrokenConfig(t *testing.T) {
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: d
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: device, device: e3}]
`)
	defer d.stop(t)
	// Not YAML any more (an unclosed flow sequence on line 5).
	rewrite(t, d, "sessions:\n  - name: d\n    sources: [{interface: e0, direction: ingress}\n")
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	lab.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(d.Stderr(), "reload refused") }, "the reload to be refused")
	if _, _, code := nfc(l, "check", "-c", d.cfgPath); code != 1 {
		t.Fatalf("check on the broken file: exit %d, want 1", code)
	}
	out, errOut, code := nfc(l, "status", "-c", d.cfgPath)
	if code != 0 {
		t.Fatalf("status -c on a broken file: exit %d, want 0\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"last reload: FAILED at ", "(the previous configuration still runs):\n  (file): not valid YAML: line 5: did not find expected ',' or ']'\n", "d  "} {
		if !strings.Contains(out, want) {
			t.Errorf("status: missing %q in:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "does not load") {
		t.Errorf("status: no note that the file does not load:\n%s", errOut)
	}
	// The file valid again but for the host (an interface that does not
	// exist): status reads its state_dir as usual and shows that error.
	rewrite(t, d, "sessions:\n  - name: d\n    sources: [{interface: nope0, direction: ingress}]\n    targets: [{kind: device, device: e3}]\n")
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	lab.WaitFor(t, 10*time.Second, func() bool { return strings.Count(d.Stderr(), "reload refused") >= 2 }, "the second reload to be refused")
	out, errOut, code = nfc(l, "status", "-c", d.cfgPath)
	if code != 0 || !strings.Contains(out, `  sessions[0].sources[0].interface: interface "nope0" does not exist`) {
		t.Fatalf("status after a reload refused by the host: exit %d\n%s%s", code, out, errOut)
	}
	// Without the file at all, --state-dir is enough.
	if err := os.Remove(d.cfgPath); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := nfc(l, "status", "--state-dir", d.stateDir); code != 0 || !strings.Contains(out, "last reload: FAILED") {
		t.Fatalf("status --state-dir: exit %d\n%s%s", code, out, errOut)
	}
}
