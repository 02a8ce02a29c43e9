package engine

import (
	"os"
	"runtime/debug"
)

// MemoryLimit is the Go runtime's soft memory limit while nfclone runs: the
// copy queues (queue.cap_bytes each), the readers' receive buffers and the
// buffer pools stay far below it, and the garbage collector works harder
// near it instead of letting the heap grow to twice what is live after a
// burst of 64 KiB super-packets. GOMEMLIMIT in the environment wins.
const MemoryLimit = 48 << 20

// SetMemoryLimit applies MemoryLimit unless GOMEMLIMIT is set.
func SetMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(MemoryLimit)
}
