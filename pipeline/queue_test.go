package pipeline

import (
	"context"
	"encoding/binary"
	"github.com/nfclone/nfclone/internal/testpkt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nfclone/nfclone/packet"
)

// A batch the queue cannot take whole is cut at its tail: the head is
// queued in order, the tail released and counted, in copies and in bytes.
func TestCopyQueuePushBatch(t *testing.T) {
	q := NewCopyQueue(5, 0)
	batch := make([]*packet.Packet, 8)
	for i := range batch {
		batch[i] = packet.New(testpkt.IPv4(40, [4]byte{}))
		binary.BigEndian.PutUint16(batch[i].Data[4:], uint16(i))
	}
	if n := q.PushBatch(batch); n != 5 || q.Len() != 5 || q.Dropped() != 3 || q.Pushed() != 5 {
		t.Fatalf("queued %d: len %d dropped %d pushed %d", n, q.Len(), q.Dropped(), q.Pushed())
	}
	for i, p := range batch {
		if p != nil {
			t.Fatalf("slot %d not cleared", i)
		}
	}
	dst := make([]*packet.Packet, 8)
	n := q.TryPopBatch(dst)
	for i, p := range dst[:n] {
		if id := binary.BigEndian.Uint16(p.Data[4:]); id != uint16(i) {
			t.Errorf("copy %d has id %d", i, id)
		}
		p.Release()
	}
	if n != 5 || q.Len() != 0 || q.Bytes() != 0 {
		t.Fatalf("popped %d, len %d, bytes %d", n, q.Len(), q.Bytes())
	}

	// The byte bound: two large buffers fit, the third and what follows
	// it in the batch do not.
	qb := NewCopyQueue(100, 2*packet.MaxBuf+100)
	big := []*packet.Packet{packet.Get(30000), packet.Get(30000), packet.Get(30000), packet.Get(100)}
	if n := qb.PushBatch(big); n != 2 || qb.Dropped() != 2 || qb.Bytes() != 2*packet.MaxBuf {
		t.Fatalf("queued %d, dropped %d, bytes %d", n, qb.Dropped(), qb.Bytes())
	}
	for qb.TryPopBatch(dst[:1]) == 1 {
		dst[0].Release()
	}

	// Batches longer than a chunk are pushed chunk by chunk.
	ql := NewCopyQueue(1000, 0)
	long := make([]*packet.Packet, 3*PushChunk+5)
	for i := range long {
		long[i] = packet.New(testpkt.IPv4(40, [4]byte{}))
	}
	if n := ql.PushBatch(long); n != len(long) || ql.Len() != len(long) {
		t.Fatalf("queued %d of %d", n, len(long))
	}
	all := make([]*packet.Packet, len(long))
	if n := ql.TryPopBatch(all); n != len(long) {
		t.Fatalf("popped %d", n)
	}
}

// Room counts what fits in copies and in bytes of buffers, is 0 exactly
// when the queue is Full, and at least 1 otherwise.
func TestCopyQueueRoom(t *testing.T) {
	q := NewCopyQueue(10, 0)
	if n := q.Room(1, packet.MaxBuf); n != 10 {
		t.Fatalf("empty, no byte bound: room %d, want 10", n)
	}
	if n := q.Room(4, packet.MaxBuf); n != 2 {
		t.Fatalf("datagrams of up to 4 copies: room %d, want 2", n)
	}
	q.PushBatch([]*packet.Packet{packet.New(testpkt.IPv4(40, [4]byte{})), packet.New(testpkt.IPv4(40, [4]byte{}))})
	if n := q.Room(4, packet.MaxBuf); n != 2 {
		t.Fatalf("8 copies free: room %d, want 2", n)
	}
	if n := q.Room(9, packet.MaxBuf); n != 1 {
		t.Fatalf("a datagram may bring more than fits, but one is read: room %d, want 1", n)
	}

	qb := NewCopyQueue(100, 3*packet.MaxBuf)
	if n := qb.Room(1, packet.MaxBuf); n != 2 {
		// Full keeps room for one large buffer: 3 - 1 more.
		t.Fatalf("byte bound: room %d, want 2", n)
	}
	qb.PushBatch([]*packet.Packet{packet.Get(30000), packet.Get(30000)})
	if qb.Full() || qb.Room(1, packet.MaxBuf) != 1 {
		t.Fatalf("one large buffer left: full %v room %d", qb.Full(), qb.Room(1, packet.MaxBuf))
	}
	qb.PushBatch([]*packet.Packet{packet.Get(30000)})
	if !qb.Full() || qb.Room(1, 1) != 0 {
		t.Fatalf("full: full %v room %d", qb.Full(), qb.Room(1, 1))
	}
	dst := make([]*packet.Packet, 8)
	for _, qq := range []*CopyQueue{q, qb} {
		n := qq.TryPopBatch(dst)
		for _, p := range dst[:n] {
			p.Release()
		}
	}
}

// A worker waiting on an empty lane wakes for a batch pushed to it.
func TestCopyQueueWakesWorker(t *testing.T) {
	q := NewLaneQueue(64, 0, 2)
	got := make(chan int)
	go func() {
		dst := make([]*packet.Packet, 64)
		n := 0
		for n < 10 {
			k := q.PopLane(context.Background(), int(FlowLane(testpkt.IPv4(40, [4]byte{10, 77, 0, 2}))%2), dst)
			n += k
		}
		got <- n
	}()
	time.Sleep(20 * time.Millisecond) // let it wait
	batch := make([]*packet.Packet, 10)
	for i := range batch {
		batch[i] = packet.New(testpkt.IPv4(40, [4]byte{10, 77, 0, 2}))
	}
	q.PushBatch(batch)
	select {
	case n := <-got:
		if n != 10 {
			t.Fatalf("got %d", n)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the waiting worker was not woken")
	}
}

// Concurrent pushers and workers: every copy is either popped once or
// counted as dropped, the queue's counts end at zero, and each flow keeps
// its order within each pusher.
func TestCopyQueueConcurrent(t *testing.T) {
	q := NewLaneQueue(256, 0, 3)
	const pushers, perPusher = 3, 20000
	var popped atomic.Int64
	lastSeq := make([]map[uint32]uint32, 3) // per worker: flow key -> last seq
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		lastSeq[w] = map[uint32]uint32{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := make([]*packet.Packet, WorkerBatch)
			for {
				n := q.PopLane(ctx, w, dst)
				if n == 0 {
					return
				}
				for _, p := range dst[:n] {
					key := binary.BigEndian.Uint32(p.Data[12:]) // pusher id in the source address
					seq := binary.BigEndian.Uint32(p.Data[24:])
					if last, ok := lastSeq[w][key]; ok && seq <= last {
						t.Errorf("pusher %x: seq %d after %d", key, seq, last)
					}
					lastSeq[w][key] = seq
					p.Release()
				}
				popped.Add(int64(n))
			}
		}()
	}
	var pw sync.WaitGroup
	var queued atomic.Int64
	for pu := 0; pu < pushers; pu++ {
		pw.Add(1)
		go func() {
			defer pw.Done()
			batch := make([]*packet.Packet, 0, 48)
			for i := 0; i < perPusher; {
				batch = batch[:0]
				for j := 0; j < 48 && i < perPusher; j, i = j+1, i+1 {
					p := packet.Get(64)
					p.Data = p.Data[:copy(p.Data, testpkt.IPv4(64, [4]byte{10, 77, 9, 9}))]
					p.Data[9] = 17
					binary.BigEndian.PutUint32(p.Data[12:], uint32(pu+1))
					binary.BigEndian.PutUint32(p.Data[24:], uint32(i+1))
					batch = append(batch, p)
				}
				queued.Add(int64(q.PushBatch(batch)))
			}
		}()
	}
	pw.Wait()
	cancel()
	wg.Wait()
	if popped.Load() != queued.Load() || queued.Load()+int64(q.Dropped()) != pushers*perPusher {
		t.Fatalf("popped %d, queued %d, dropped %d of %d", popped.Load(), queued.Load(), q.Dropped(), pushers*perPusher)
	}
	if q.Len() != 0 || q.Bytes() != 0 || q.Pushed() != uint64(queued.Load()) {
		t.Fatalf("len %d bytes %d pushed %d", q.Len(), q.Bytes(), q.Pushed())
	}
}
