// Package leaktest fails a test whose goroutines outlive it.
package leaktest

import (
	"runtime"
	"testing"
	"time"
)

// Check records how many goroutines run now and, when t ends, waits up to
// three seconds for the count to come back to it; past that the test fails
// with every goroutine's stack.
func Check(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
