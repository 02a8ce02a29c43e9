package engine

import (
	"context"
	"github.com/nfclone/nfclone/packet"
	"sync"

	"github.com/nfclone/nfclone/sink"
)

// limit lets exactly n copies through (shared by every session) and then
// stops the engine: `capture -c N` writes N packets, as tcpdump does.
type limit struct {
	mu     sync.Mutex
	left   uint64
	cut    uint64 // copies not let through: the count was reached
	cancel context.CancelFunc
}

func newLimit(n uint64, cancel context.CancelFunc) *limit { return &limit{left: n, cancel: cancel} }

// take reserves up to n copies and reports how many may pass.
func (l *limit) take(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := uint64(n)
	if k > l.left {
		k = l.left
	}
	l.left -= k
	l.cut += uint64(n) - k
	if l.left == 0 {
		l.cancel()
	}
	return int(k)
}

// refused is how many copies the limit kept back (counted as send errors
// by the ledger, but not losses: the capture had what it asked for).
func (l *limit) refused() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cut
}

func (l *limit) wrap(s sink.Sink) sink.Sink { return &limitSink{Sink: s, l: l} }

type limitSink struct {
	sink.Sink
	l *limit
}

// Send passes the first copies the limit allows; the rest are not sent and
// count as not delivered.
func (s *limitSink) Send(batch []*packet.Packet) (int, error) {
	k := s.l.take(len(batch))
	for _, p := range batch[k:] {
		p.Errs++
	}
	if k == 0 {
		return 0, nil
	}
	return s.Sink.Send(batch[:k])
}
