package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Proc is a background process running inside a lab namespace, in its own process group.
type Proc struct {
	Name string // "[ns] name args..." for messages

	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
	err    error // from cmd.Wait, valid after done is closed
	code   int
}

// ErrTimeout is returned by Proc.Wait when the process is still running at the deadline.
var ErrTimeout = errors.New("timeout waiting for process")

// Start runs name with args inside namespace ns in the background ("ip netns exec", which
// execs the program: the Proc's pid is the program's own). The process gets its own process
// group and SIGKILL as parent-death signal; stdout and stderr are captured. If it is still
// running at cleanup it is killed; when the test failed, its output is logged (and the lab
// state dumped first, while the process is still alive).
func (l *Lab) Start(t testing.TB, ns, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{
		Name: fmt.Sprintf("[%s] %s %s", ns, name, strings.Join(args, " ")),
		done: make(chan struct{}),
	}
	p.cmd = nsCommand(context.Background(), ns, name, args...)
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.Name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		running := !p.Exited()
		if t.Failed() {
			if running && l != nil {
				l.Dump(t)
			}
		}
		if running {
			p.Kill()
		}
		if t.Failed() {
			state := "still running after kill"
			if p.Exited() {
				state = fmt.Sprintf("exit %d (%v)", p.code, p.err)
			}
			t.Logf("process %s (pid %d, %s, killed at cleanup: %v)\n--- stdout:\n%s\n--- stderr:\n%s",
				p.Name, p.Pid(), state, running, tail(p.Stdout(), 8192), tail(p.Stderr(), 8192))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "...\n" + s[len(s)-n:]
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited (and been reaped).
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done returns a channel closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Signal sends sig to the process (not to its group). Signalling an exited process is a no-op.
func (p *Proc) Signal(sig os.Signal) error {
	if p.Exited() {
		return nil
	}
	err := p.cmd.Process.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// Wait waits up to timeout for the process to exit and returns its exit code (-1 when it
// was ended by a signal). err is nil for any exit code; it is ErrTimeout if the process is
// still running (it is left running), or the error from starting/waiting otherwise.
func (p *Proc) Wait(timeout time.Duration) (int, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		return -1, ErrTimeout
	}
	var ee *exec.ExitError
	if p.err != nil && !errors.As(p.err, &ee) {
		return p.code, p.err
	}
	return p.code, nil
}

// Kill sends SIGKILL to the process group and waits (up to 10 s) for the process to be reaped.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// Stdout returns everything the process has written to stdout so far.
func (p *Proc) Stdout() string { return p.stdout.String() }

// Stderr returns everything the process has written to stderr so far.
func (p *Proc) Stderr() string { return p.stderr.String() }
