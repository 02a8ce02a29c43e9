package pipeline

import (
	"github.com/nfclone/nfclone/packet"
	"sync/atomic"
)

// Ledger counts what happened to the copies of one session. All methods are
// safe for concurrent use. Readers add what they receive and what the kernel
// or the socket lost; workers add what was copied or failed to send.
//
// The invariant, exact once the copy queue and workers are drained:
//
//	Offered = Copied + KernelQueue + User + SocketOverrun + QueueOverflow
//	          + Malformed + SendError + TooBig + Dedup   (+ InFlight while running)
//
// where Offered = Received + KernelQueue + User + SocketOverrun: every packet
// the kernel tried to hand to nfclone. The engine's final account adds what
// only the rules' counters know (Snapshot.WithMatched, WithRateLimited):
// KernelLost and RateLimit, to Offered and to the drops alike.
type Ledger struct {
	received      atomic.Uint64
	copied        atomic.Uint64
	bytes         atomic.Uint64
	kernelQueue   atomic.Uint64
	user          atomic.Uint64
	overrun       atomic.Uint64
	queueOverflow atomic.Uint64
	malformed     atomic.Uint64
	sendError     atomic.Uint64
	tooBig        atomic.Uint64
	dedup         atomic.Uint64
	enobufs       atomic.Uint64
	verdictErrors atomic.Uint64
}

// Drops are the lost copies by reason.
type Drops struct {
	// KernelQueue: the kernel queue was full (nfnetlink_queue
	// queue_dropped).
	KernelQueue uint64 `json:"kernel_queue"`
	// User: the kernel could not hand the packet to the socket
	// (nfnetlink_queue user_dropped).
	User uint64 `json:"user"`
	// SocketOverrun: lost to a full netlink receive buffer (ENOBUFS), counted
	// from gaps in NFQUEUE packet ids or NFLOG sequence numbers.
	SocketOverrun uint64 `json:"socket_overrun"`
	// QueueOverflow: the userspace copy queue was full.
	QueueOverflow uint64 `json:"queue_overflow"`
	// RateLimit: the session's rate (an nft limit before the copy
	// statement) kept the packet from being copied; from the rule's counter.
	RateLimit uint64 `json:"rate_limit"`
	// Malformed: the kernel's message or the packet in it did not parse.
	Malformed uint64 `json:"malformed"`
	// SendError: at least one target failed to send the copy.
	SendError uint64 `json:"send_error"`
	// TooBig: the copy could not be made whole and wire-sized: the kernel
	// handed over only part of it (over 65531 bytes, BIG TCP), or it cannot
	// be cut to the target's MTU (IPv4 with DF set that is no TCP or UDP
	// GSO packet). Never sent half.
	TooBig uint64 `json:"too_big"`
	// KernelLost: the copy rule matched the packet, but the kernel never
	// handed it to nfclone and no kernel counter says why: it could not
	// allocate the clone (dup) or the netlink message (NFQUEUE's -ENOMEM,
	// NFLOG's buffer), or no reader was bound to the queue or group. The
	// engine learns it from the rule's counter, read when the session stops:
	// matched − offered to the reader.
	KernelLost uint64 `json:"kernel_lost"`
	// Dedup: the session's dedup window had already seen the same packet
	// (differing at most in TTL / hop limit and the IPv4 checksum): sent
	// once, not twice.
	Dedup uint64 `json:"dedup"`
}

// Total is the sum of all drops.
func (d Drops) Total() uint64 {
	return d.KernelQueue + d.User + d.SocketOverrun + d.QueueOverflow + d.RateLimit + d.Malformed + d.SendError + d.TooBig + d.KernelLost + d.Dedup
}

// WithMatched accounts the packets the copy rule matched (the kernel's rule
// counter) that never reached the reader and no kernel counter counted
// (Drops.KernelLost). matched below what the reader saw (counters read at
// different moments) changes nothing.
func (s Snapshot) WithMatched(matched uint64) Snapshot {
	if matched > s.Offered {
		s.Drops.KernelLost = matched - s.Offered
		s.Offered = matched
	}
	return s
}

// WithQueued accounts a kernel-routed session (queue.kernel_route), whose
// queue is fail-open: the clones its reader never saw were sent by the
// kernel, so they are copied (KernelSent), not lost. They are the gaps in
// the packet ids (the socket was full: counted as SocketOverrun until here)
// and what the clones chain's counter saw queued beyond what the reader was
// offered (the queue was full: the kernel gives those no id). queuedBytes,
// the counter's bytes, is every queued clone's length. Apply it before
// WithMatched: what the copy rule matched beyond what was queued is then
// clones the kernel never made (kernel_lost).
func (s Snapshot) WithQueued(queued, queuedBytes uint64) Snapshot {
	s.KernelSent = s.Drops.SocketOverrun
	s.Drops.SocketOverrun = 0
	if queued > s.Offered {
		s.KernelSent += queued - s.Offered
		s.Offered = queued
	}
	s.Copied += s.KernelSent
	s.Bytes = max(s.Bytes, queuedBytes)
	return s
}

// WithRateLimited accounts the packets the session's rate limit kept from
// the copy statement (the kernel's counter on the limit rule): offered to
// the session, dropped for the rate.
func (s Snapshot) WithRateLimited(n uint64) Snapshot {
	s.Offered += n
	s.Drops.RateLimit += n
	return s
}

// Snapshot is a point-in-time view of a Ledger.
type Snapshot struct {
	Offered  uint64 `json:"offered"`
	Received uint64 `json:"received"`
	Copied   uint64 `json:"copied"`
	Bytes    uint64 `json:"bytes"`
	InFlight uint64 `json:"in_flight"`
	Drops    Drops  `json:"drops"`
	// KernelSent: copies a kernel-routed session's kernel sent without
	// handing them to nfclone (its fail-open queue or socket was full),
	// included in Copied (WithQueued).
	KernelSent uint64 `json:"kernel_sent"`
	// ENOBUFS counts receive errors (events, not packets) reported by the
	// netlink socket; the packets lost are in Drops.SocketOverrun.
	ENOBUFS uint64 `json:"enobufs_events"`
	// VerdictErrors counts verdict messages the kernel refused.
	VerdictErrors uint64 `json:"verdict_errors"`
	// Skipped: what the session's selectors kept from being copied
	// (outside the invariant, like a filter's non-matches).
	Skipped Skipped `json:"skipped"`
}

// Balanced reports whether Offered = Copied + Drops + InFlight.
func (s Snapshot) Balanced() bool {
	return s.Offered == s.Copied+s.Drops.Total()+s.InFlight
}

// AddReceived counts n packet messages read from the kernel (parsed or not).
func (l *Ledger) AddReceived(n uint64) { l.received.Add(n) }

// AddCopied counts n copies sent to every target, totalling b bytes.
func (l *Ledger) AddCopied(n, b uint64) {
	l.copied.Add(n)
	l.bytes.Add(b)
}

// AddKernelDrops adds deltas of the kernel's queue_dropped and user_dropped.
func (l *Ledger) AddKernelDrops(queueDropped, userDropped uint64) {
	l.kernelQueue.Add(queueDropped)
	l.user.Add(userDropped)
}

// AddOverruns counts n packets lost to a full socket receive buffer.
func (l *Ledger) AddOverruns(n uint64) { l.overrun.Add(n) }

// AddENOBUFS counts one ENOBUFS event on the socket.
func (l *Ledger) AddENOBUFS() { l.enobufs.Add(1) }

// AddQueueOverflow counts n copies dropped because the copy queue was full.
func (l *Ledger) AddQueueOverflow(n uint64) { l.queueOverflow.Add(n) }

// AddMalformed counts n packets that failed to parse.
func (l *Ledger) AddMalformed(n uint64) { l.malformed.Add(n) }

// AddSendErrors counts n copies that at least one target failed to send.
func (l *Ledger) AddSendErrors(n uint64) { l.sendError.Add(n) }

// AddTooBig counts n copies that could not be made whole and wire-sized.
func (l *Ledger) AddTooBig(n uint64) { l.tooBig.Add(n) }

// AddVerdictErrors counts n verdicts refused by the kernel.
func (l *Ledger) AddVerdictErrors(n uint64) { l.verdictErrors.Add(n) }

// AddDedup counts n copies not sent because they were duplicates.
func (l *Ledger) AddDedup(n uint64) { l.dedup.Add(n) }

// Account records the outcome of a sent batch: copies with Errs == 0 are
// copied, those marked Dup duplicates, those marked TooBig too big, the
// others send errors.
func (l *Ledger) Account(batch []*packet.Packet) {
	var ok, b, bad, big, dup uint64
	for _, p := range batch {
		switch {
		case p.Dup:
			dup++
		case p.TooBig:
			big++
		case p.Errs == 0:
			ok++
			b += uint64(len(p.Data))
		default:
			bad++
		}
	}
	if ok > 0 {
		l.AddCopied(ok, b)
	}
	if bad > 0 {
		l.AddSendErrors(bad)
	}
	if big > 0 {
		l.AddTooBig(big)
	}
	if dup > 0 {
		l.AddDedup(dup)
	}
}

// AccountRouted records clones the kernel sends itself (a Route reader's
// reads): each is copied, with the length the kernel gave (OrigLen).
func (l *Ledger) AccountRouted(batch []*packet.Packet) {
	var b uint64
	for _, p := range batch {
		b += uint64(p.OrigLen)
	}
	l.AddCopied(uint64(len(batch)), b)
}

// Snapshot returns the current counters. Outcome counters are read before
// Received, so InFlight is never understated by a concurrent update.
func (l *Ledger) Snapshot() Snapshot {
	var s Snapshot
	s.Copied = l.copied.Load()
	s.Bytes = l.bytes.Load()
	s.Drops = Drops{
		QueueOverflow: l.queueOverflow.Load(),
		Malformed:     l.malformed.Load(),
		SendError:     l.sendError.Load(),
		TooBig:        l.tooBig.Load(),
		Dedup:         l.dedup.Load(),
	}
	s.Received = l.received.Load()
	s.Drops.KernelQueue = l.kernelQueue.Load()
	s.Drops.User, s.Drops.SocketOverrun = attributeLoss(l.overrun.Load(), l.user.Load())
	s.ENOBUFS = l.enobufs.Load()
	s.VerdictErrors = l.verdictErrors.Load()
	done := s.Copied + s.Drops.QueueOverflow + s.Drops.Malformed + s.Drops.SendError + s.Drops.TooBig + s.Drops.Dedup
	if s.Received > done {
		s.InFlight = s.Received - done
	} else {
		// A concurrent update raced the loads; report the outcomes as they
		// are and let Received catch up on the next snapshot.
		s.Received = done
	}
	s.Offered = s.Received + s.Drops.KernelQueue + s.Drops.User + s.Drops.SocketOverrun
	return s
}

// attributeLoss splits packets the kernel numbered but never delivered.
// gaps is what the reader saw missing from the NFQUEUE id (or NFLOG
// sequence) stream; userDropped is the kernel's own count of failed
// deliveries (nfnetlink_queue user_dropped). Both count the same losses,
// seen from two sides and at different times, so they are not added: the
// kernel's count is attributed to User and the gaps beyond it to
// SocketOverrun (NFLOG's losses, which the kernel does not count at all).
func attributeLoss(gaps, userDropped uint64) (user, overrun uint64) {
	if gaps > userDropped {
		return userDropped, gaps - userDropped
	}
	return userDropped, 0
}
