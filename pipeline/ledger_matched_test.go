package pipeline

import "testing"

// Packets the copy rule matched that never reached the reader, counted by no
// kernel counter, enter the ledger as KernelLost drops; it still balances.
func TestWithMatched(t *testing.T) {
	var l Ledger
	l.AddReceived(10)
	l.AddCopied(8, 800)
	l.AddQueueOverflow(2)
	s := l.Snapshot().WithMatched(25)
	if s.Offered != 25 || s.Drops.KernelLost != 15 || !s.Balanced() {
		t.Fatalf("offered %d kernel lost %d balanced %v", s.Offered, s.Drops.KernelLost, s.Balanced())
	}
	// A counter read before the reader caught up changes nothing.
	if s := l.Snapshot().WithMatched(5); s.Offered != 10 || s.Drops.KernelLost != 0 {
		t.Fatalf("offered %d kernel lost %d", s.Offered, s.Drops.KernelLost)
	}
}

// Packets the session's rate limit kept from the copy statement are offered
// and dropped for the rate; the ledger still balances.
func TestWithRateLimited(t *testing.T) {
	var l Ledger
	l.AddReceived(10)
	l.AddCopied(10, 640)
	s := l.Snapshot().WithMatched(10).WithRateLimited(7)
	if s.Offered != 17 || s.Drops.RateLimit != 7 || !s.Balanced() {
		t.Fatalf("offered %d rate limit %d balanced %v", s.Offered, s.Drops.RateLimit, s.Balanced())
	}
}

// A kernel-routed session's fail-open queue lets the kernel send what the
// reader never saw: the id gaps (full socket) and what the clones chain's
// counter queued beyond the reader's offer (full queue) are copies
// (KernelSent), not drops; what the copy rule matched beyond what was queued
// is still kernel_lost (no clone was made).
func TestWithQueued(t *testing.T) {
	var l Ledger
	l.AddReceived(10)
	l.AddCopied(10, 1000)
	l.AddOverruns(3) // ids 11-13 never arrived
	s := l.Snapshot()
	if s.Drops.SocketOverrun != 3 || s.Offered != 13 {
		t.Fatalf("before: %+v", s)
	}
	s = s.WithQueued(20, 2000).WithMatched(22)
	if s.KernelSent != 10 || s.Copied != 20 || s.Bytes != 2000 || s.Drops.SocketOverrun != 0 ||
		s.Drops.KernelLost != 2 || s.Offered != 22 || !s.Balanced() {
		t.Fatalf("after: %+v", s)
	}
	// A counter read before the reader caught up: only the gaps were sent
	// by the kernel, and the bytes stay the reader's.
	s = l.Snapshot().WithQueued(5, 500)
	if s.KernelSent != 3 || s.Copied != 13 || s.Offered != 13 || s.Bytes != 1000 || !s.Balanced() {
		t.Fatalf("early counter: %+v", s)
	}
}
