package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *lockedBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *lockedBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a background process inside a lab namespace, in its own process
// group, killed if the harness dies (Pdeathsig).
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout lockedBuffer
	stderr lockedBuffer
	done   chan struct{}
	err    error
}

// startIn runs name args... in namespace ns ("ip netns exec" execs the
// program, so the pid is the program's own).
func startIn(ns, name string, args ...string) (*proc, error) {
	p := &proc{name: fmt.Sprintf("[%s] %s %s", ns, name, strings.Join(args, " ")), done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to timeout; it returns the exit code (-1 if signalled).
func (p *proc) wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
	case <-time.After(timeout):
		return -1, fmt.Errorf("%s: still running after %v", p.name, timeout)
	}
	return p.cmd.ProcessState.ExitCode(), nil
}

// stop sends sig to the process group (trafgen's workers are forked
// children), waits up to timeout, then kills the group.
func (p *proc) stop(sig syscall.Signal, timeout time.Duration) (int, error) {
	if !p.exited() {
		_ = syscall.Kill(-p.pid(), sig)
	}
	code, err := p.wait(timeout)
	if err != nil {
		p.kill()
	}
	return code, err
}

func (p *proc) kill() {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// runIn runs a command in a namespace and returns its stdout.
func runIn(ctx context.Context, ns, name string, args ...string) (string, error) {
	return runInFor(ctx, 30*time.Second, ns, name, args...)
}

// runInFor is runIn with a time limit other than 30 s.
func runInFor(ctx context.Context, limit time.Duration, ns, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.String(), fmt.Errorf("[%s] %s %s: %v: %s", ns, name, strings.Join(args, " "), err, strings.TrimSpace(e.String()))
	}
	return o.String(), nil
}

// readStatIn reads one interface counter (rx_packets...) inside namespace ns,
// from /proc/thread-self/net/dev of a thread switched into ns: no fork per
// sample. (/sys/class/net would show the namespace sysfs was mounted in.)
func readStatIn(ns, ifname, stat string) (uint64, error) {
	var v uint64
	err := inNetns(ns, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/dev")
		if err != nil {
			return err
		}
		v, err = parseNetDev(string(b), ifname, stat)
		return err
	})
	return v, err
}

// parseNetDev extracts one counter of one interface from /proc/net/dev.
func parseNetDev(s, ifname, stat string) (uint64, error) {
	col := map[string]int{"rx_bytes": 0, "rx_packets": 1, "rx_errors": 2, "rx_dropped": 3,
		"tx_bytes": 8, "tx_packets": 9, "tx_errors": 10, "tx_dropped": 11}
	c, ok := col[stat]
	if !ok {
		return 0, fmt.Errorf("unknown counter %s", stat)
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, ":")
		if i < 0 || strings.TrimSpace(line[:i]) != ifname {
			continue
		}
		f := strings.Fields(line[i+1:])
		if len(f) <= c {
			return 0, fmt.Errorf("short /proc/net/dev line %q", line)
		}
		return strconv.ParseUint(f[c], 10, 64)
	}
	return 0, fmt.Errorf("interface %s not in /proc/net/dev", ifname)
}

// procStatus returns a field of /proc/PID/status in KiB (VmHWM, VmRSS).
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field+":") {
			f := strings.Fields(line[len(field)+1:])
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// clkTck is USER_HZ, 100 on every Linux architecture Go supports here.
const clkTck = 100

// procCPU returns utime+stime of a process in seconds.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndex(s, ")")
	if i < 0 {
		return 0, errors.New("bad /proc/PID/stat")
	}
	f := strings.Fields(s[i+1:])
	// after ")": state(3) ppid(4) ... utime(14) stime(15): index 11, 12
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bad utime/stime")
	}
	return float64(u+st) / clkTck, nil
}

// Ledger is nfclone's "session ledger" log line of one userspace session.
type Ledger struct {
	Session string `json:"session"`
	Offered uint64 `json:"offered"`
	Copied  uint64 `json:"copied"`
	// KernelSent: of Copied, what a kernel-routed session's fail-open
	// queue let the kernel send unread.
	KernelSent    uint64 `json:"kernel_sent"`
	Drops         uint64 `json:"drops"`
	QueueOverflow uint64 `json:"queue_overflow"`
	SendErrors    uint64 `json:"send_errors"`
	KernelQueue   uint64 `json:"kernel_queue"`
	SocketOverrun uint64 `json:"socket_overrun"`
	RateLimit     uint64 `json:"rate_limit"`
	// User: the kernel's NFQUEUE queue_user_dropped (the netlink socket was
	// full: the reader did not keep up).
	User uint64 `json:"user"`
	// Other is drops not broken down above (malformed, kernel_lost, …).
	Other    uint64 `json:"other"`
	Balanced bool   `json:"balanced"`
}

// parseLedgers extracts every "session ledger" line from nfclone's JSON log.
func parseLedgers(stderr string) ([]Ledger, error) {
	var out []Ledger
	for _, line := range strings.Split(stderr, "\n") {
		if !strings.Contains(line, `"session ledger"`) {
			continue
		}
		var raw struct {
			Msg string `json:"msg"`
			Ledger
		}
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			return out, fmt.Errorf("ledger line %q: %w", line, err)
		}
		if raw.Msg != "session ledger" {
			continue
		}
		l := raw.Ledger
		listed := l.QueueOverflow + l.SendErrors + l.KernelQueue + l.SocketOverrun + l.RateLimit + l.User
		if l.Drops >= listed {
			l.Other = l.Drops - listed
		}
		l.Balanced = l.Offered == l.Copied+l.Drops && l.Drops >= listed
		out = append(out, l)
	}
	return out, nil
}

// nfqueueProc returns the lines of /proc/net/netfilter/nfnetlink_queue in ns.
func nfqueueProc(ns string) []string {
	var out []string
	_ = inNetns(ns, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/netfilter/nfnetlink_queue")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l = strings.Join(strings.Fields(l), " "); l != "" {
				out = append(out, l)
			}
		}
		return nil
	})
	return out
}

// hostIdle returns the time every CPU of the machine spent idle (idle and
// iowait of /proc/stat's "cpu" line), in seconds. With NO_HZ the kernel
// measures idle time exactly, while it samples the busy fields at each tick
// — and paced traffic works in bursts that end before the next tick, so
// that the busy fields missed most of a 4 Gbit/s iperf3 run — hence busy
// time is taken as wall time less idle time.
func hostIdle() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseHostIdle(string(b))
}

// hostSample is the machine's idle time (hostIdle) and when it was read.
type hostSample struct {
	idle float64
	at   time.Time
}

func sampleHost() (hostSample, error) {
	idle, err := hostIdle()
	return hostSample{idle: idle, at: time.Now()}, err
}

// busySince is the machine's busy CPU between prev and s (1.0 = one core):
// the CPUs' wall time less their idle time, per second.
func (s hostSample) busySince(prev hostSample) float64 {
	wall := s.at.Sub(prev.at).Seconds()
	if wall <= 0 {
		return 0
	}
	return max(0, float64(runtime.NumCPU())-(s.idle-prev.idle)/wall)
}

func parseHostIdle(stat string) (float64, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: first line %q is not the cpu sum", line)
	}
	var idle uint64
	for i, s := range f[4:6] { // user nice system idle iowait
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: cpu field %d %q: %w", i+4, s, err)
		}
		idle += v
	}
	return float64(idle) / clkTck, nil
}
