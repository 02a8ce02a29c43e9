package e2e

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/nfclone/nfclone/test/lab"
)

// trimPrograms counts the BPF programs of nfclone's segment-size program
// (package gsotrim) the kernel holds, host-wide: BPF programs belong to no
// network namespace.
func trimPrograms(t *testing.T) int {
	t.Helper()
	n := 0
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return n
		}
		if err != nil {
			t.Fatalf("listing BPF programs: %v", err)
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone in between
		}
		if info, err := p.Info(); err == nil && info.Name == "nfclone_gsotrim" {
			n++
		}
		p.Close()
	}
}

// The segment-size program on nfclone's VXLAN device lives with the
// process: one while it runs (one device), none once it is killed with
// SIGKILL, with nothing for flush or the next start to remove (the kernel
// holds a tcx link only for its file descriptor).
func TestTrimProgramGoesWithTheProcess(t *testing.T) {
	l := lab.New(t)
	if n := trimPrograms(t); n != 0 {
		t.Fatalf("%d segment-size programs before nfclone started (another nfclone runs on this host?)", n)
	}
	d := startNfclone(t, l, `
sessions:
  - name: vx
    method: queue
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 41}]
`)
	if out, errOut, code := nfc(l, "check", "-c", d.cfgPath); code != 0 || !strings.Contains(out, "cuts the TCP super-packets entering the tunnel") {
		t.Fatalf("check: exit %d, want the note that the kernel cuts super-packets to the 1500-byte path:\n%s%s", code, out, errOut)
	}
	lab.WaitFor(t, 10*time.Second, func() bool { return trimPrograms(t) == 1 }, "one segment-size program while nfclone runs")
	if err := d.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.Wait(10 * time.Second)
	lab.WaitFor(t, 10*time.Second, func() bool { return trimPrograms(t) == 0 }, "the kernel to free the program of the killed nfclone")
	if _, errOut, code := nfc(l, "flush", "-c", d.cfgPath); code != 0 {
		t.Fatalf("flush after SIGKILL: exit %d: %s", code, errOut)
	}
}
