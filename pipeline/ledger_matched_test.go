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
