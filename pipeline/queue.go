package pipeline

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/nfclone/nfclone/packet"
)

// CopyQueue is the bounded queue of copies between readers (producers) and
// workers (consumers). Pushing never blocks: when the queue is full the copy
// is dropped (released) and counted. It is safe for any number of producers
// and consumers.
//
// The queue has lanes, one per worker: a copy goes to the lane of its flow
// (FlowLane: both directions of a connection, and every fragment of a
// datagram, take the same lane), and each worker takes from its own lane,
// so the copies of a flow leave in the order the kernel handed them over
// (two workers sharing one FIFO sent a later super-packet's segments before
// an earlier one's, and a stream reassembler lost its start).
//
// A reader pushes what one read brought (PushBatch): one lock and at most
// one wake-up per lane for the whole batch, not one channel send per copy.
type CopyQueue struct {
	lanes    []*lane
	capacity int64
	maxBytes int64
	count    atomic.Int64 // copies queued in all lanes
	bytes    atomic.Int64 // buffer bytes of the queued copies
	dropped  atomic.Uint64
	pushed   atomic.Uint64
}

// lane is a ring of copies under a lock; wake (capacity 1) holds a token
// when copies arrived in the empty lane, for a worker waiting on it.
type lane struct {
	mu   sync.Mutex
	ring []*packet.Packet
	head int // index of the oldest copy
	n    int // copies in the ring
	wake chan struct{}
	_    [64]byte // keep the lanes' locks off each other's cache lines
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
	q := &CopyQueue{lanes: make([]*lane, lanes), capacity: int64(capacity), maxBytes: maxBytes}
	for i := range q.lanes {
		q.lanes[i] = &lane{ring: make([]*packet.Packet, capacity), wake: make(chan struct{}, 1)}
	}
	return q
}

// Lanes is the number of lanes.
func (q *CopyQueue) Lanes() int { return len(q.lanes) }

// Push enqueues p in its flow's lane and reports true, or, if the queue is
// full (in copies or in bytes), releases p, counts the drop and reports
// false. It never blocks.
func (q *CopyQueue) Push(p *packet.Packet) bool {
	one := [1]*packet.Packet{p}
	return q.PushBatch(one[:]) == 1
}

// PushChunk is the most copies PushBatch admits at once (a producer that
// collects a batch need collect no more).
const PushChunk = 64

// PushBatch enqueues the copies of batch, each in its flow's lane, and
// reports how many were queued. When the queue cannot take them all (in
// copies or in bytes), the batch's tail is released and counted as dropped.
// It never blocks, and clears batch's slots.
func (q *CopyQueue) PushBatch(batch []*packet.Packet) int {
	queued := 0
	for len(batch) > 0 {
		k := min(len(batch), PushChunk)
		queued += q.pushChunk(batch[:k])
		clear(batch[:k])
		batch = batch[k:]
	}
	return queued
}

func (q *CopyQueue) pushChunk(batch []*packet.Packet) int {
	k := len(batch)
	var total int64
	for _, p := range batch {
		total += int64(p.BufLen())
	}
	// Reserve room for the whole batch, then give back what does not fit.
	c := q.count.Add(int64(k))
	b := q.bytes.Add(total)
	keep := k
	if over := c - q.capacity; over > 0 {
		keep = k - int(min(over, int64(k)))
	}
	var dropBytes int64
	for _, p := range batch[keep:] {
		dropBytes += int64(p.BufLen())
	}
	if q.maxBytes > 0 {
		for keep > 0 && b-dropBytes > q.maxBytes {
			keep--
			dropBytes += int64(batch[keep].BufLen())
		}
	}
	q.drop(batch[keep:], dropBytes)
	batch = batch[:keep]
	if len(q.lanes) == 1 {
		return q.lanes[0].put(q, batch, nil, 0)
	}
	var laneOf [PushChunk]uint8
	var used uint64 // bit i: some copy goes to lane i (lanes past 64 are looked at always)
	for i, p := range batch {
		l := FlowLane(p.Data) % uint32(len(q.lanes))
		laneOf[i] = uint8(l)
		used |= 1 << (l & 63)
	}
	n := 0
	for i, ln := range q.lanes {
		if i < 64 && used&(1<<i) == 0 {
			continue
		}
		n += ln.put(q, batch, laneOf[:len(batch)], i)
	}
	return n
}

// drop releases copies the queue could not take and gives their reserved
// room back.
func (q *CopyQueue) drop(ps []*packet.Packet, bytes int64) {
	if len(ps) == 0 {
		return
	}
	q.count.Add(-int64(len(ps)))
	q.bytes.Add(-bytes)
	q.dropped.Add(uint64(len(ps)))
	for _, p := range ps {
		p.Release()
	}
}

// put appends to the lane the copies of batch whose laneOf is idx (all of
// them when laneOf is nil), in order, and wakes a waiting worker if the lane
// was empty. Copies the ring has no room for (concurrent pushers may
// reserve more than a lane holds) are dropped.
func (l *lane) put(q *CopyQueue, batch []*packet.Packet, laneOf []uint8, idx int) int {
	var rejected [PushChunk]*packet.Packet
	nrej := 0
	n := 0
	l.mu.Lock()
	wasEmpty := l.n == 0
	for i, p := range batch {
		if laneOf != nil && int(laneOf[i]) != idx {
			continue
		}
		if l.n == len(l.ring) {
			rejected[nrej] = p
			nrej++
			continue
		}
		j := l.head + l.n
		if j >= len(l.ring) {
			j -= len(l.ring)
		}
		l.ring[j] = p
		l.n++
		n++
	}
	l.mu.Unlock()
	if n > 0 {
		q.pushed.Add(uint64(n))
		if wasEmpty {
			select {
			case l.wake <- struct{}{}:
			default:
			}
		}
	}
	if nrej > 0 {
		var b int64
		for _, p := range rejected[:nrej] {
			b += int64(p.BufLen())
		}
		q.drop(rejected[:nrej], b)
	}
	return n
}

// take moves up to len(dst) of the lane's oldest copies to dst.
func (l *lane) take(dst []*packet.Packet) int {
	l.mu.Lock()
	k := min(l.n, len(dst))
	for i := 0; i < k; i++ {
		dst[i] = l.ring[l.head]
		l.ring[l.head] = nil
		l.head++
		if l.head == len(l.ring) {
			l.head = 0
		}
	}
	l.n -= k
	l.mu.Unlock()
	return k
}

// popped accounts copies taken off the queue.
func (q *CopyQueue) popped(ps []*packet.Packet) {
	if len(ps) == 0 {
		return
	}
	var b int64
	for _, p := range ps {
		b += int64(p.BufLen())
	}
	q.count.Add(-int64(len(ps)))
	q.bytes.Add(-b)
}

// Full reports whether the queue is at capacity right now, in copies or in
// bytes (with room for one more large buffer): a cheap pre-check for
// producers that can skip copying a packet that would be dropped.
func (q *CopyQueue) Full() bool {
	return q.count.Load() >= q.capacity || (q.maxBytes > 0 && q.bytes.Load()+packet.MaxBuf > q.maxBytes)
}

// Room is how many more units of up to copies copies holding bufBytes of
// buffers in all (a datagram's worth) fit right now: 0 when Full, at least
// 1 otherwise. A producer that reads only that many leaves the rest to the
// kernel, whose socket buffer holds them, instead of reading them only to
// drop them.
func (q *CopyQueue) Room(copies, bufBytes int) int {
	if q.Full() {
		return 0
	}
	n := (q.capacity - q.count.Load()) / int64(max(copies, 1))
	if q.maxBytes > 0 {
		n = min(n, (q.maxBytes-q.bytes.Load()-packet.MaxBuf)/int64(max(bufBytes, 1)))
	}
	return int(max(n, 1))
}

// AddDropped counts n copies a producer did not make because the queue was
// Full.
func (q *CopyQueue) AddDropped(n uint64) { q.dropped.Add(n) }

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
	l := q.lanes[lane%len(q.lanes)]
	for {
		if n := l.take(dst); n > 0 {
			q.popped(dst[:n])
			return n
		}
		select {
		case <-l.wake:
		case <-ctx.Done():
			// Prefer delivering what is already queued.
			n := l.take(dst)
			q.popped(dst[:n])
			return n
		}
	}
}

// TryPopBatch takes what is queued in any lane, without blocking.
func (q *CopyQueue) TryPopBatch(dst []*packet.Packet) int {
	n := 0
	for _, l := range q.lanes {
		n += l.take(dst[n:])
	}
	q.popped(dst[:n])
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
