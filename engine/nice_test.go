package engine

import (
	"os"
	"os/exec"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/nfq"
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

// SetCPUs sets GOMAXPROCS from queue.cpus; 0 and an explicit GOMAXPROCS in
// the environment leave it alone.
func TestSetCPUs(t *testing.T) {
	before := goruntime.GOMAXPROCS(0)
	defer goruntime.GOMAXPROCS(before)
	t.Setenv("GOMAXPROCS", "")
	os.Unsetenv("GOMAXPROCS")
	SetCPUs(0)
	if n := goruntime.GOMAXPROCS(0); n != before {
		t.Fatalf("cpus 0 changed GOMAXPROCS to %d", n)
	}
	SetCPUs(1)
	if n := goruntime.GOMAXPROCS(0); n != 1 {
		t.Fatalf("cpus 1: GOMAXPROCS %d", n)
	}
	goruntime.GOMAXPROCS(before)
	t.Setenv("GOMAXPROCS", strconv.Itoa(before))
	SetCPUs(1)
	if n := goruntime.GOMAXPROCS(0); n != before {
		t.Fatalf("GOMAXPROCS=%d in the environment, yet cpus 1 set %d", before, n)
	}
}

// The readers' own default buffer is queue.socket_buffer's default, so a
// reader opened without the config buffers as one opened with it.
func TestReaderBufferDefaultIsTheConfigs(t *testing.T) {
	d := config.Default().Queue
	n, err := config.ParseSize(config.DefaultSocketBuffer)
	if err != nil || n != d.SocketBufferBytes || n != nfq.DefaultRcvBuf {
		t.Errorf("queue.socket_buffer default %q = %d bytes (%v), Default() %d, nfq.DefaultRcvBuf %d", config.DefaultSocketBuffer, n, err, d.SocketBufferBytes, nfq.DefaultRcvBuf)
	}
}
