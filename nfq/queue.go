package nfq

import (
	"context"
	"encoding/binary"
	"github.com/nfclone/nfclone/packet"
	"sync/atomic"
)

// CopyQueue is the bounded queue of copies between readers (producers) and
// workers (consumers). Push never blocks: when the queue is full the copy is
// dropped (released) and counted. It is safe for any number of producers and
// consumers.
//
// The queue has lanes, one per worker: a copy goes to the lane of its flow
// (FlowLane: both directions of a connection, and every fragment of a
// datagram, take the same lane), and each worker takes from its own lane,
// so the copies of a flow leave in the order the kernel handed them over
// (two workers sharing one FIFO sent a later super-packet's segments before
// an earlier one's, and a stream reassembler lost its start).
type CopyQueue struct {
	lanes    []chan *packet.Packet
	capacity int64
	maxBytes int64
	count    atomic.Int64 // copies queued in all lanes
	bytes    atomic.Int64 // buffer bytes of the queued copies
	dropped  atomic.Uint64
	pushed   atomic.Uint64
}

// NewCopyQueue returns a one-lane queue that holds at most capacity copies
// (capacity < 1 is taken as 1) and at most maxBytes bytes of their buffers
// (<= 0: no byte bound). Buffers are counted by their size, not the
// copy's: a copy over 2 KiB holds a 64 KiB buffer.
func NewCopyQueue(capacity int, maxBytes int64) *CopyQueue {
	return NewLaneQueue(capacity, maxBytes, 1)
}

// NewLaneQueue is NewCopyQueue with lanes lanes (< 1 is taken as 1), one
// per worker; the bounds are for all lanes together.
func NewLaneQueue(capacity int, maxBytes int64, lanes int) *CopyQueue {
	if capacity < 1 {
		capacity = 1
	}
	if lanes < 1 {
		lanes = 1
	}
	q := &CopyQueue{lanes: make([]chan *packet.Packet, lanes), capacity: int64(capacity), maxBytes: maxBytes}
	for i := range q.lanes {
		q.lanes[i] = make(chan *packet.Packet, capacity)
	}
	return q
}

// Lanes is the number of lanes.
func (q *CopyQueue) Lanes() int { return len(q.lanes) }

// Push enqueues p in its flow's lane and reports true, or, if the queue is
// full (in copies or in bytes), releases p, counts the drop and reports
// false. It never blocks.
func (q *CopyQueue) Push(p *packet.Packet) bool {
	n := int64(p.BufLen())
	over := q.count.Add(1) > q.capacity
	if b := q.bytes.Add(n); q.maxBytes > 0 && b > q.maxBytes {
		over = true
	}
	if over {
		q.count.Add(-1)
		q.bytes.Add(-n)
		q.dropped.Add(1)
		p.Release()
		return false
	}
	lane := 0
	if len(q.lanes) > 1 {
		lane = int(FlowLane(p.Data) % uint32(len(q.lanes)))
	}
	q.lanes[lane] <- p // cannot block: the lane holds capacity copies, the count bounds all lanes
	q.pushed.Add(1)
	return true
}

// popped accounts a copy taken off the queue.
func (q *CopyQueue) popped(p *packet.Packet) *packet.Packet {
	q.count.Add(-1)
	q.bytes.Add(-int64(p.BufLen()))
	return p
}

// Full reports whether the queue is at capacity right now, in copies or in
// bytes (with room for one more large buffer): a cheap pre-check for
// producers that can skip copying a packet that would be dropped.
func (q *CopyQueue) Full() bool {
	return q.count.Load() >= q.capacity || (q.maxBytes > 0 && q.bytes.Load()+packet.MaxBuf > q.maxBytes)
}

// Bytes is the buffer bytes of the queued copies.
func (q *CopyQueue) Bytes() int64 { return q.bytes.Load() }

// PopBatch takes from lane 0; see PopLane.
func (q *CopyQueue) PopBatch(ctx context.Context, dst []*packet.Packet) int {
	return q.PopLane(ctx, 0, dst)
}

// PopLane blocks until at least one copy is available in lane (modulo the
// number of lanes) or ctx is done, then fills dst with as many of the
// lane's queued copies as are available without blocking. It returns the
// number of copies written; 0 means ctx is done and the lane was empty.
func (q *CopyQueue) PopLane(ctx context.Context, lane int, dst []*packet.Packet) int {
	if len(dst) == 0 {
		return 0
	}
	ch := q.lanes[lane%len(q.lanes)]
	select {
	case p := <-ch:
		dst[0] = q.popped(p)
	default:
		select {
		case p := <-ch:
			dst[0] = q.popped(p)
		case <-ctx.Done():
			// Prefer delivering what is already queued.
			select {
			case p := <-ch:
				dst[0] = q.popped(p)
			default:
				return 0
			}
		}
	}
	n := 1
	for n < len(dst) {
		select {
		case p := <-ch:
			dst[n] = q.popped(p)
			n++
		default:
			return n
		}
	}
	return n
}

// TryPopBatch takes what is queued in any lane, without blocking.
func (q *CopyQueue) TryPopBatch(dst []*packet.Packet) int {
	n := 0
	for _, ch := range q.lanes {
		for n < len(dst) {
			select {
			case p := <-ch:
				dst[n] = q.popped(p)
				n++
				continue
			default:
			}
			break
		}
	}
	return n
}

// Len is the current depth of the queue (all lanes).
func (q *CopyQueue) Len() int { return int(q.count.Load()) }

// Cap is the queue's capacity.
func (q *CopyQueue) Cap() int { return int(q.capacity) }

// Dropped is the number of copies dropped because the queue was full.
func (q *CopyQueue) Dropped() uint64 { return q.dropped.Load() }

// Pushed is the number of copies accepted by Push.
func (q *CopyQueue) Pushed() uint64 { return q.pushed.Load() }

// FlowLane hashes what identifies an IP packet's flow, the same for both
// directions: the two addresses and the protocol, and the two ports of an
// unfragmented TCP, UDP or SCTP packet (a fragment carries no ports, so
// every fragment of a datagram hashes alike; so do IPv6 packets whose
// transport header is behind extension headers).
func FlowLane(b []byte) uint32 {
	var h uint32
	var proto byte
	var l4 []byte
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0x0f) * 4
		h = binary.BigEndian.Uint32(b[12:16]) ^ binary.BigEndian.Uint32(b[16:20])
		proto = b[9]
		if binary.BigEndian.Uint16(b[6:8])&0x3fff == 0 && ihl >= 20 && len(b) >= ihl+4 {
			l4 = b[ihl:]
		}
	case len(b) >= 40 && b[0]>>4 == 6:
		for i := 8; i < 24; i += 4 {
			h ^= binary.BigEndian.Uint32(b[i:]) ^ binary.BigEndian.Uint32(b[i+16:])
		}
		proto = b[6]
		if len(b) >= 44 {
			l4 = b[40:]
		}
	default:
		return 0
	}
	h ^= uint32(proto)
	if l4 != nil && (proto == 6 || proto == 17 || proto == 132) {
		h ^= uint32(binary.BigEndian.Uint16(l4[0:2]) ^ binary.BigEndian.Uint16(l4[2:4]))
	}
	// fmix32 (MurmurHash3's finaliser): spread the bits over the lanes.
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
