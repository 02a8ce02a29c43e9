package engine

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// SetNice raises the niceness of every thread, never lowers it. Run in a
// child process (niceness cannot be undone without privilege).
func TestSetNice(t *testing.T) {
	if os.Getenv("NFCLONE_NICE_CHILD") == "1" {
		if err := SetNice(7); err != nil {
			t.Fatal(err)
		}
		ents, _ := os.ReadDir("/proc/self/task")
		for _, e := range ents {
			b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/stat")
			if err != nil {
				continue
			}
			// fields after the ")" of comm: state is 3, nice is 19
			f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
			if n, _ := strconv.Atoi(f[16]); n != 7 {
				t.Fatalf("thread %s nice %d, want 7", e.Name(), n)
			}
		}
		if err := SetNice(3); err != nil { // less nice than now: left alone
			t.Fatal(err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSetNice$", "-test.v")
	cmd.Env = append(os.Environ(), "NFCLONE_NICE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
