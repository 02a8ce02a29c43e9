package engine

import (
	"os"
	goruntime "runtime"
	"runtime/debug"
)

// MemoryLimit is the Go runtime's soft memory limit while nfclone runs: the
// copy queues (queue.cap_bytes each), the readers' receive buffers and the
// buffer pools stay far below it, and the garbage collector works harder
// near it instead of letting the heap grow to twice what is live after a
// burst of 64 KiB super-packets. GOMEMLIMIT in the environment wins.
const MemoryLimit = 48 << 20

// SetCPUs lets nfclone's Go code run on at most n CPUs at once (n > 0;
// queue.cpus) unless GOMAXPROCS is set in the environment.
func SetCPUs(n int) {
	if n <= 0 || os.Getenv("GOMAXPROCS") != "" {
		return
	}
	goruntime.GOMAXPROCS(n)
}

// SetMemoryLimit applies MemoryLimit unless GOMEMLIMIT is set.
func SetMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(MemoryLimit)
}
