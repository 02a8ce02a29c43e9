package engine

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/nfq"
	"golang.org/x/sys/unix"
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

// SetRealtime puts every thread, also those created afterwards, in
// SCHED_FIFO at the priority asked; 0 changes nothing. Run in a child
// process (the class would stay on the test's threads).
func TestSetRealtime(t *testing.T) {
	policies := func() map[int]string {
		m := map[int]string{}
		if err := eachThread("read scheduling", func(tid int) error {
			a, err := unix.SchedGetAttr(tid, 0)
			if err == nil {
				m[tid] = fmt.Sprintf("policy %d priority %d", a.Policy, a.Priority)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if os.Getenv("NFCLONE_RT_CHILD") == "1" {
		if err := SetRealtime(0); err != nil {
			t.Fatal(err)
		}
		for tid, p := range policies() {
			if p != "policy 0 priority 0" {
				t.Fatalf("realtime 0: thread %d has %s", tid, p)
			}
		}
		// A priority the kernel refuses is the host's problem (exit 2), named by its key.
		if err := SetRealtime(100); !errors.Is(err, ErrHost) || !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "queue.realtime") {
			t.Fatalf("SetRealtime(100): %v", err)
		}
		if err := SetRealtime(3); err != nil {
			t.Fatal(err)
		}
		// A thread started now, from a realtime thread, inherits the class.
		started, done := make(chan struct{}), make(chan struct{})
		go func() {
			goruntime.LockOSThread()
			close(started)
			<-done
		}()
		<-started
		want := fmt.Sprintf("policy %d priority 3", unix.SCHED_FIFO)
		got := policies()
		for tid, p := range got {
			if p != want {
				t.Errorf("thread %d has %s, want %s", tid, p, want)
			}
		}
		close(done)
		t.Logf("%d threads realtime", len(got))
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("SCHED_FIFO needs CAP_SYS_NICE")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSetRealtime$", "-test.v")
	cmd.Env = append(os.Environ(), "NFCLONE_RT_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PASS") || !strings.Contains(string(out), "threads realtime") {
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

// The scheduling class is set once at start: a reload that changes
// queue.realtime (or the table, or the state directory) is refused with
// the key's path, and the running config stays.
func TestReloadRefusesRealtimeChange(t *testing.T) {
	old := config.Default()
	e := &Engine{rt: &runtime{cfg: &old}}
	c := config.Default()
	c.Queue.Realtime = 5
	c.Table = "other"
	err := e.validateReload(&c)
	var errs config.Errors
	if !errors.As(err, &errs) || len(errs) != 2 || errs[0].Path != "table" || errs[1].Path != "queue.realtime" ||
		!strings.Contains(errs[1].Msg, "restart nfclone") {
		t.Fatalf("reload changing table and queue.realtime: %v", err)
	}
}
