package nfq

import "testing"

// Packets the rule matched that never reached the reader (fail-open with a
// full kernel queue) enter the ledger as FailOpen drops; it still balances.
func TestWithMatched(t *testing.T) {
	var l Ledger
	l.AddReceived(10)
	l.AddCopied(8, 800)
	l.AddQueueOverflow(2)
	s := l.Snapshot().WithMatched(25)
	if s.Offered != 25 || s.Drops.FailOpen != 15 || !s.Balanced() {
		t.Fatalf("offered %d fail-open %d balanced %v", s.Offered, s.Drops.FailOpen, s.Balanced())
	}
	// A counter read before the reader caught up changes nothing.
	if s := l.Snapshot().WithMatched(5); s.Offered != 10 || s.Drops.FailOpen != 0 {
		t.Fatalf("offered %d fail-open %d", s.Offered, s.Drops.FailOpen)
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
