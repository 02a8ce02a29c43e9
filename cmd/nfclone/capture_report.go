package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/nfclone/nfclone/pipeline"
)

// reason is one named count of a loss line.
type reason struct {
	name string
	n    uint64
}

// writeCaptureReport prints the end of a capture the way tcpdump does, from
// the session ledger: what was written, what the kernel offered (the rule
// counters: "received by filter"), and what was lost on each side, by the
// ledger's reasons. Copies held back because -c was reached are not losses
// and get a line of their own. Any loss ends with a warning line: a capture
// that missed packets must never look complete.
//
// written is the number of packets in the file: the kernel hands over
// GSO/GRO super-packets, which are written as the wire packets they stand
// for, so it can exceed the ledger's count (which is in the kernel's
// packets); then a line says so.
func writeCaptureReport(w io.Writer, s pipeline.Snapshot, limitCut, written uint64) {
	sendErr := s.Drops.SendError
	if limitCut > sendErr { // the limit's refusals are counted as send errors
		limitCut = sendErr
	}
	sendErr -= limitCut
	kernel := []reason{
		{"socket_overrun", s.Drops.SocketOverrun},
		{"kernel_queue", s.Drops.KernelQueue},
		{"user", s.Drops.User},
		{"kernel_lost", s.Drops.KernelLost},
		{"rate_limit", s.Drops.RateLimit},
	}
	own := []reason{
		{"queue_overflow", s.Drops.QueueOverflow},
		{"send_error", sendErr},
		{"malformed", s.Drops.Malformed},
		{"unsent_at_exit", s.InFlight},
	}
	kTotal, oTotal := sum(kernel), sum(own)
	fmt.Fprintf(w, "%d packets captured\n", written)
	if written != s.Copied {
		fmt.Fprintf(w, "(%d packets as the kernel handed them over: super-packets were cut into wire packets; the counts below are in those)\n", s.Copied)
	}
	fmt.Fprintf(w, "%d packets received by filter\n", s.Offered)
	if n := s.Skipped.Total(); n > 0 {
		var sel []reason
		for _, r := range s.Skipped.Reasons() {
			sel = append(sel, reason{r.Name, r.Packets})
		}
		fmt.Fprintf(w, "%d packets not selected%s\n", n, reasons(sel))
	}
	fmt.Fprintf(w, "%d packets dropped by kernel%s\n", kTotal, reasons(kernel))
	fmt.Fprintf(w, "%d packets dropped by nfclone%s\n", oTotal, reasons(own))
	if limitCut > 0 {
		fmt.Fprintf(w, "%d packets received after the -c count (not written)\n", limitCut)
	}
	accounted := s.Copied + kTotal + oTotal + limitCut
	if accounted != s.Offered {
		fmt.Fprintf(w, "nfclone: warning: the ledger does not balance: %d received by filter, %d accounted for\n", s.Offered, accounted)
	}
	if lost := kTotal + oTotal; lost > 0 {
		fmt.Fprintf(w, "nfclone: warning: %d of %d packets received by filter (%s) are not in the capture\n",
			lost, s.Offered, percent(lost, s.Offered))
	}
}

func sum(rs []reason) uint64 {
	var n uint64
	for _, r := range rs {
		n += r.n
	}
	return n
}

// reasons formats the non-zero reasons as " (a 1, b 2)", or "" when none.
func reasons(rs []reason) string {
	var parts []string
	for _, r := range rs {
		if r.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", r.name, r.n))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// percent formats part/whole with two decimals; a loss never rounds to 0 %
// or a partial loss to 100 %.
func percent(part, whole uint64) string {
	if whole == 0 {
		return "n/a"
	}
	p := float64(part) * 100 / float64(whole)
	switch {
	case part > 0 && p < 0.01:
		return "<0.01 %"
	case part < whole && p > 99.99:
		return ">99.99 %"
	}
	return fmt.Sprintf("%.2f %%", p)
}
