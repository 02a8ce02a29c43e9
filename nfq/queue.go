package nfq

import (
	"context"
	"sync/atomic"
)

// CopyQueue is the bounded queue of copies between readers (producers) and
// workers (consumers). Push never blocks: when the queue is full the copy is
// dropped (released) and counted. It is safe for any number of producers and
// consumers.
type CopyQueue struct {
	ch       chan *Packet
	maxBytes int64
	bytes    atomic.Int64 // buffer bytes of the queued copies
	dropped  atomic.Uint64
	pushed   atomic.Uint64
}

// NewCopyQueue returns a queue that holds at most capacity copies
// (capacity < 1 is taken as 1) and at most maxBytes bytes of their buffers
// (<= 0: no byte bound). Buffers are counted by their size, not the
// copy's: a copy over 2 KiB holds a 64 KiB buffer.
func NewCopyQueue(capacity int, maxBytes int64) *CopyQueue {
	if capacity < 1 {
		capacity = 1
	}
	return &CopyQueue{ch: make(chan *Packet, capacity), maxBytes: maxBytes}
}

// Push enqueues p and reports true, or, if the queue is full (in copies or
// in bytes), releases p, counts the drop and reports false. It never blocks.
func (q *CopyQueue) Push(p *Packet) bool {
	n := int64(len(p.buf))
	if q.maxBytes > 0 && q.bytes.Load()+n > q.maxBytes {
		q.dropped.Add(1)
		p.Release()
		return false
	}
	q.bytes.Add(n)
	select {
	case q.ch <- p:
		q.pushed.Add(1)
		return true
	default:
		q.bytes.Add(-n)
		q.dropped.Add(1)
		p.Release()
		return false
	}
}

// popped accounts a copy taken off the queue.
func (q *CopyQueue) popped(p *Packet) *Packet {
	q.bytes.Add(-int64(len(p.buf)))
	return p
}

// Full reports whether the queue is at capacity right now, in copies or in
// bytes (with room for one more large buffer): a cheap pre-check for
// producers that can skip copying a packet that would be dropped.
func (q *CopyQueue) Full() bool {
	return len(q.ch) >= cap(q.ch) || (q.maxBytes > 0 && q.bytes.Load()+Headroom+largePayload > q.maxBytes)
}

// Bytes is the buffer bytes of the queued copies.
func (q *CopyQueue) Bytes() int64 { return q.bytes.Load() }

// PopBatch blocks until at least one copy is available or ctx is done, then
// fills dst with as many queued copies as are available without blocking. It
// returns the number of copies written; 0 means ctx is done and the queue was
// empty.
func (q *CopyQueue) PopBatch(ctx context.Context, dst []*Packet) int {
	if len(dst) == 0 {
		return 0
	}
	select {
	case p := <-q.ch:
		dst[0] = q.popped(p)
	default:
		select {
		case p := <-q.ch:
			dst[0] = q.popped(p)
		case <-ctx.Done():
			// Prefer delivering what is already queued.
			select {
			case p := <-q.ch:
				dst[0] = q.popped(p)
			default:
				return 0
			}
		}
	}
	n := 1
	for n < len(dst) {
		select {
		case p := <-q.ch:
			dst[n] = q.popped(p)
			n++
		default:
			return n
		}
	}
	return n
}

// TryPopBatch is PopBatch without blocking.
func (q *CopyQueue) TryPopBatch(dst []*Packet) int {
	n := 0
	for n < len(dst) {
		select {
		case p := <-q.ch:
			dst[n] = q.popped(p)
			n++
		default:
			return n
		}
	}
	return n
}

// Len is the current depth of the queue.
func (q *CopyQueue) Len() int { return len(q.ch) }

// Cap is the queue's capacity.
func (q *CopyQueue) Cap() int { return cap(q.ch) }

// Dropped is the number of copies dropped because the queue was full.
func (q *CopyQueue) Dropped() uint64 { return q.dropped.Load() }

// Pushed is the number of copies accepted by Push.
func (q *CopyQueue) Pushed() uint64 { return q.pushed.Load() }
