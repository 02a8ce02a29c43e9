package engine

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// SetNice makes every thread of this process at least as nice as n (Linux
// priorities are per thread; threads created later inherit theirs from the
// thread that creates them, so eachThread's two passes cover threads born
// meanwhile). A thread already nicer is left alone, so that
// `nice -n 19 nfclone run` keeps its 19 without needing CAP_SYS_NICE.
func SetNice(n int) error {
	return eachThread("set niceness", func(tid int) error {
		// The raw getpriority returns 20 - nice.
		if p, err := unix.Getpriority(unix.PRIO_PROCESS, tid); err == nil && 20-p >= n {
			return nil
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, n); err != nil {
			return fmt.Errorf("setting niceness %d of thread %d (below 0 needs CAP_SYS_NICE): %w", n, tid, err)
		}
		return nil
	})
}

// SetRealtime puts every thread of this process in the SCHED_FIFO class at
// priority prio (1-99; 0 leaves the scheduling class alone). A realtime
// thread runs as soon as it is woken, ahead of every normal thread and of
// ksoftirqd, so the readers drain their sockets before the kernel's buffer
// fills: copies come before the host's work (config.Queue.Realtime).
// Threads created later inherit the class.
func SetRealtime(prio int) error {
	if prio == 0 {
		return nil
	}
	attr := &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
	return eachThread("make realtime", func(tid int) error {
		if err := unix.SchedSetAttr(tid, attr, 0); err != nil {
			return hostErr("queue.realtime: setting SCHED_FIFO priority %d of thread %d (needs CAP_SYS_NICE or an RLIMIT_RTPRIO "+
				"of at least %d, and in a cgroup with realtime group scheduling a cpu.rt_runtime_us budget): %v", prio, tid, prio, err)
		}
		return nil
	})
}

// eachThread calls fn for every thread of this process, twice over, so that
// threads created during the first pass (which inherit their creator's
// scheduling, changed or not) are covered by the second. A thread that
// exited meanwhile (ESRCH) is skipped.
func eachThread(what string, fn func(tid int) error) error {
	for pass := 0; pass < 2; pass++ {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("listing threads to %s: %w", what, err)
		}
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if err := fn(tid); err != nil && !errors.Is(err, unix.ESRCH) {
				return err
			}
		}
	}
	return nil
}
