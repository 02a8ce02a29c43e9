package pipeline

import (
	"context"
	"encoding/binary"
	"github.com/nfclone/nfclone/internal/leaktest"
	"github.com/nfclone/nfclone/internal/testpkt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nfclone/nfclone/packet"
)

func TestLedgerArithmetic(t *testing.T) {
	var l Ledger
	l.AddReceived(100)
	l.AddMalformed(3)
	l.AddQueueOverflow(7)
	l.AddOverruns(5)       // id gaps
	l.AddKernelDrops(2, 0) // queue full
	l.AddSendErrors(4)
	l.AddCopied(80, 8000)
	s := l.Snapshot()
	if s.Offered != 107 || s.InFlight != 6 || s.Drops.SocketOverrun != 5 || s.Drops.KernelQueue != 2 {
		t.Fatalf("%+v", s)
	}
	if !s.Balanced() {
		t.Fatalf("not balanced: %+v", s)
	}
	l.AddCopied(6, 600)
	s = l.Snapshot()
	if s.InFlight != 0 || !s.Balanced() || s.Copied != 86 || s.Bytes != 8600 || s.Drops.Total() != 21 {
		t.Fatalf("%+v", s)
	}
	// user_dropped and id gaps count the same lost packets: not added twice.
	l.AddKernelDrops(0, 3)
	s = l.Snapshot()
	if s.Drops.User != 3 || s.Drops.SocketOverrun != 2 || s.Offered != 107 || !s.Balanced() {
		t.Fatalf("%+v", s)
	}
	for _, c := range [][4]uint64{{0, 0, 0, 0}, {5, 0, 0, 5}, {5, 3, 3, 2}, {3, 5, 5, 0}} {
		u, o := attributeLoss(c[0], c[1])
		if u != c[2] || o != c[3] {
			t.Errorf("attributeLoss(%d,%d) = %d,%d", c[0], c[1], u, o)
		}
	}
}

func TestCopyQueue(t *testing.T) {
	q := NewCopyQueue(4, 0)
	for i := 0; i < 6; i++ {
		q.Push(packet.New(testpkt.IPv4(40, [4]byte{})))
	}
	if q.Len() != 4 || q.Dropped() != 2 || q.Pushed() != 4 || !q.Full() {
		t.Fatalf("len %d dropped %d", q.Len(), q.Dropped())
	}
	dst := make([]*packet.Packet, 3)
	if n := q.PopBatch(context.Background(), dst); n != 3 {
		t.Fatalf("pop %d", n)
	}
	if n := q.TryPopBatch(dst); n != 1 {
		t.Fatalf("trypop %d", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() { done <- q.PopBatch(ctx, dst) }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	select {
	case n := <-done:
		if n != 0 {
			t.Fatalf("pop after cancel %d", n)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("PopBatch not unblocked by cancel")
	}
}

func TestRunWorkersJoin(t *testing.T) {
	leaktest.Check(t)
	q := NewCopyQueue(100, 0)
	for i := 0; i < 50; i++ {
		q.Push(packet.New(testpkt.IPv4(40, [4]byte{})))
	}
	var n atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); RunWorkers(ctx, q, 4, func(b []*packet.Packet) { n.Add(int64(len(b))) }) }()
	waitFor(t, "all", func() bool { return n.Load() == 50 })
	cancel()
	<-done
	if q.Len() != 0 {
		t.Fatal("queue not drained")
	}
}

// The copy queue is bounded in buffer bytes too: large buffers fill it long
// before its count does, and popping gives the room back.
func TestCopyQueueBytes(t *testing.T) {
	q := NewCopyQueue(1000, 4*(packet.MaxBuf)+4096)
	for i := 0; i < 4; i++ {
		if !q.Push(packet.Get(30000)) {
			t.Fatalf("push %d refused", i)
		}
	}
	if !q.Full() {
		t.Error("not full at its byte bound")
	}
	if q.Push(packet.Get(30000)) || q.Dropped() != 1 {
		t.Errorf("a fifth large copy was queued (dropped %d)", q.Dropped())
	}
	if !q.Push(packet.Get(100)) {
		t.Error("a small copy that fits was refused")
	}
	dst := make([]*packet.Packet, 10)
	n := q.TryPopBatch(dst)
	if n != 5 || q.Bytes() != 0 {
		t.Errorf("popped %d, %d bytes left", n, q.Bytes())
	}
	for _, p := range dst[:n] {
		p.Release()
	}
}

// Both directions of a flow, and every fragment of a datagram, take one
// lane; each worker takes its own lane, so a flow's copies stay in order.
func TestFlowLanes(t *testing.T) {
	tcp := func(src, dst [4]byte, sport, dport uint16) []byte {
		b := testpkt.IPv4(60, dst)
		b[9] = 6
		copy(b[12:16], src[:])
		binary.BigEndian.PutUint16(b[20:], sport)
		binary.BigEndian.PutUint16(b[22:], dport)
		return b
	}
	a, b := [4]byte{10, 77, 1, 2}, [4]byte{10, 77, 4, 2}
	if FlowLane(tcp(a, b, 40000, 80)) != FlowLane(tcp(b, a, 80, 40000)) {
		t.Error("the two directions of a connection hash apart")
	}
	first, later := testpkt.IPv4(1500, b), testpkt.IPv4(500, b)
	copy(first[12:16], a[:])
	copy(later[12:16], a[:])
	first[6] = 0x20                            // MF
	binary.BigEndian.PutUint16(later[6:], 185) // offset
	if FlowLane(first) != FlowLane(later) {
		t.Error("fragments of one datagram hash apart")
	}
	lanes := map[uint32]bool{}
	for p := uint16(0); p < 64; p++ {
		lanes[FlowLane(tcp(a, b, 40000+p, 80))%4] = true
	}
	if len(lanes) != 4 {
		t.Errorf("64 flows over 4 lanes used %d", len(lanes))
	}
	// One flow through a 2-lane queue and 2 workers keeps its order.
	q := NewLaneQueue(1024, 0, 2)
	for i := 0; i < 500; i++ {
		p := packet.New(tcp(a, b, 40000, 80))
		binary.BigEndian.PutUint32(p.Data[24:], uint32(i))
		q.Push(p)
	}
	var mu sync.Mutex
	var seqs []uint32
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // drain what is queued, then stop
	RunWorkers(ctx, q, 2, func(batch []*packet.Packet) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range batch {
			seqs = append(seqs, binary.BigEndian.Uint32(p.Data[24:]))
		}
	})
	if len(seqs) != 500 {
		t.Fatalf("%d copies came out of 500", len(seqs))
	}
	for i, s := range seqs {
		if s != uint32(i) {
			t.Fatalf("copy %d has seq %d: the flow was reordered", i, s)
		}
	}
}

// waitFor polls cond for up to 3 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
