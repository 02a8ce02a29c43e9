package nfq

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"github.com/nfclone/nfclone/gso"
	"github.com/nfclone/nfclone/internal/leaktest"
	"github.com/nfclone/nfclone/internal/testpkt"
	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pipeline"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseQueuePacket(t *testing.T) {
	data := testpkt.IPv4(60, [4]byte{10, 77, 0, 2})
	msg := queuePacketMsg(qpkt{id: 42, data: data[:40], capLen: 60, inIf: 3, hw: []byte{2, 0, 0, 0, 0, 9}})
	m, rest, err := nextMsg(msg)
	if err != nil || len(rest) != 0 {
		t.Fatalf("nextMsg: %v rest=%d", err, len(rest))
	}
	var pi pktInfo
	if err := parseQueuePacket(m.body, &pi); err != nil {
		t.Fatal(err)
	}
	if pi.id != 42 || pi.capLen != 60 || pi.inIf != 3 || pi.mark != 7 || pi.hwLen != 6 || pi.hw[5] != 9 {
		t.Fatalf("bad info %+v", pi)
	}
	if !bytes.Equal(pi.payload, data[:40]) {
		t.Fatal("payload mismatch")
	}
}

func TestParseLogPacket(t *testing.T) {
	data := ipv6(80)
	m, _, err := nextMsg(logPacketMsg(9, data))
	if err != nil {
		t.Fatal(err)
	}
	var pi pktInfo
	if err := parseLogPacket(m.body, &pi); err != nil {
		t.Fatal(err)
	}
	if !pi.hasSeq || pi.seq != 9 || !bytes.Equal(pi.payload, data) {
		t.Fatalf("bad info %+v", pi)
	}
}

func TestParseMalformed(t *testing.T) {
	good := queuePacketMsg(qpkt{id: 1, data: testpkt.IPv4(40, [4]byte{})})
	var pi pktInfo
	for name, b := range map[string][]byte{
		"empty":      nil,
		"short hdr":  good[:10],
		"len>buf":    good[:len(good)-4],
		"bad attr":   append(append([]byte(nil), good[:20]...), 0xff, 0xff, 1, 0),
		"tiny attr":  append(append([]byte(nil), good[:20]...), 2, 0, 1, 0),
		"no pkt hdr": nlMessage(subsysQueue<<8, 0, 0, 2, 0, appendAttr(nil, nfqaPayload, []byte{0x45})),
	} {
		b := append([]byte(nil), b...)
		if len(b) >= 4 && name != "len>buf" && name != "short hdr" {
			ne.PutUint32(b[0:4], uint32(len(b)))
		}
		m, _, err := nextMsg(b)
		if err == nil {
			err = parseQueuePacket(m.body, &pi)
		}
		if err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}

func TestVerdictBatchMessage(t *testing.T) {
	var b [verdictBatchLen]byte
	msg := putVerdictBatch(b[:], 3, nfDrop, 0x01020304)
	m, rest, err := nextMsg(msg)
	if err != nil || len(rest) != 0 {
		t.Fatal(err)
	}
	if m.typ != 0x0303 || m.flags != nlmFRequest {
		t.Fatalf("type %#x flags %#x", m.typ, m.flags)
	}
	if m.body[2] != 0 || m.body[3] != 3 {
		t.Fatalf("res id %v", m.body[:4])
	}
	typ, val, rest, err := nextAttr(m.body[4:])
	if err != nil || typ != nfqaVerdictHdr || be32(val) != nfDrop || be32(val[4:]) != 0x01020304 || len(rest) != 0 {
		t.Fatalf("attr %d %x %v, %d bytes after", typ, val, err, len(rest))
	}
}

func TestIPInfo(t *testing.T) {
	for _, c := range []struct {
		b       []byte
		fam     uint8
		orig    int
		ok      bool
		comment string
	}{
		{testpkt.IPv4(100, [4]byte{}), 4, 100, true, "v4"},
		{testpkt.IPv4(100, [4]byte{})[:40], 4, 100, true, "v4 truncated"},
		{ipv6(100), 6, 100, true, "v6"},
		{ipv6(100)[:60], 6, 100, true, "v6 truncated"},
		{[]byte{0x45, 0}, 4, 2, false, "v4 short"},
		{[]byte{0x20, 0, 0, 0}, 0, 4, false, "bad version"},
		{nil, 0, 0, false, "empty"},
	} {
		f, o, ok := packet.IPInfo(c.b)
		if f != c.fam || o != c.orig || ok != c.ok {
			t.Errorf("%s: got %d %d %v", c.comment, f, o, ok)
		}
	}
}

func TestParseQueueStats(t *testing.T) {
	in := []byte("    0  12345     2 2 65535     0     0       17  1\n" +
		"    5   4242     0 2   128    11    22  4294967295  1\n\n")
	st, err := ParseQueueStats(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].Queue != 0 || st[0].PortID != 12345 || st[0].Total != 2 || st[0].CopyRange != 65535 ||
		st[0].IDSequence != 17 || st[1].Queue != 5 || st[1].QueueDropped != 11 || st[1].UserDropped != 22 ||
		st[1].IDSequence != 4294967295 {
		t.Fatalf("%+v", st)
	}
	for _, bad := range []string{"1 2 3\n", "0 1 2 3 4 x 6 7 1\n", "70000 1 2 3 4 5 6 7 1\n"} {
		if _, err := ParseQueueStats([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if st, err := ParseQueueStats(nil); err != nil || len(st) != 0 {
		t.Fatal("empty file")
	}
}

func TestPacketHeadroom(t *testing.T) {
	p := packet.New(testpkt.IPv4(100, [4]byte{1, 2, 3, 4}))
	defer p.Release()
	f := p.Frame(14)
	if len(f) != 114 || &f[14] != &p.Data[0] {
		t.Fatal("frame does not end at data")
	}
	if p.Frame(packet.Headroom+1) != nil {
		t.Fatal("frame beyond headroom")
	}
	big := packet.New(testpkt.IPv4(9000, [4]byte{}))
	if len(big.Data) != 9000 || big.OrigLen != 9000 || big.Family != 4 {
		t.Fatal("large packet")
	}
	big.Release()
}

type recorder struct {
	mu      sync.Mutex
	got     [][]byte
	marks   []uint32
	offload []gso.Flags
	dirs    []uint8
	n       atomic.Int64
	fail    func(p *packet.Packet) bool
}

func (r *recorder) send(batch []*packet.Packet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range batch {
		if r.fail != nil && r.fail(p) {
			p.Errs++
			continue
		}
		r.got = append(r.got, append([]byte(nil), p.Data...))
		r.marks = append(r.marks, p.Mark)
		r.offload = append(r.offload, p.Offload)
		r.dirs = append(r.dirs, p.Dir)
	}
	r.n.Add(int64(len(batch)))
}

// runPath runs reader → queue → workers until cancelled.
func runPath(t *testing.T, sock *fakeSock, qcap int, rec *recorder, led *pipeline.Ledger) (qr *QueueReader, stop func()) {
	t.Helper()
	return runPathCfg(t, sock, QueueConfig{Num: 0, Batch: 4, Snaplen: 2048}, qcap, rec, led)
}

func runPathCfg(t *testing.T, sock *fakeSock, cfg QueueConfig, qcap int, rec *recorder, led *pipeline.Ledger) (qr *QueueReader, stop func()) {
	t.Helper()
	q := pipeline.NewCopyQueue(qcap, 0)
	qr, err := newQueueReader(cfg, sock, q, led)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := qr.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		pipeline.RunWorkers(ctx, q, 2, func(b []*packet.Packet) {
			rec.send(b)
			led.Account(b)
		})
	}()
	return qr, func() {
		cancel()
		wg.Wait()
		qr.Close()
	}
}

func TestQueuePathWithFakes(t *testing.T) {
	leaktest.Check(t)
	sock := newFakeSock()
	var led pipeline.Ledger
	rec := &recorder{}
	_, stop := runPath(t, sock, 1024, rec, &led)
	// A single clone is dropped at once (drained socket → flush).
	sock.feedDgrams(queuePacketMsg(qpkt{id: 1, data: testpkt.IPv4(64, [4]byte{10, 77, 0, 2})}))
	waitFor(t, "first verdict", func() bool { v := sock.verdictList(); return len(v) == 1 && v[0] == 1 })
	// A burst of 10 with Batch=4: verdicts at 5, 9 (full recvmmsg batches),
	// then 11 (drained).
	var ds [][]byte
	for id := uint32(2); id <= 11; id++ {
		ds = append(ds, queuePacketMsg(qpkt{id: id, data: testpkt.IPv4(60+int(id), [4]byte{10, 77, 0, 2})}))
	}
	sock.feedDgrams(ds...)
	waitFor(t, "copies", func() bool { return rec.n.Load() == 11 })
	waitFor(t, "verdicts", func() bool { v := sock.verdictList(); return len(v) > 0 && v[len(v)-1] == 11 })
	stop()
	v := sock.verdictList()
	if len(v) != 4 || v[1] != 5 || v[2] != 9 || v[3] != 11 {
		t.Errorf("verdicts %v, want [1 5 9 11]", v)
	}
	s := led.Snapshot()
	if s.Offered != 11 || s.Copied != 11 || s.InFlight != 0 || !s.Balanced() {
		t.Fatalf("ledger %+v", s)
	}
	if !bytes.Equal(rec.got[0], testpkt.IPv4(64, [4]byte{10, 77, 0, 2})) {
		t.Error("copy differs from original")
	}
}

func TestQueueENOBUFSAttributed(t *testing.T) {
	leaktest.Check(t)
	sock := newFakeSock()
	var led pipeline.Ledger
	rec := &recorder{}
	qr, stop := runPath(t, sock, 1024, rec, &led)
	p := func(id uint32) fakeItem {
		return fakeItem{dgram: queuePacketMsg(qpkt{id: id, data: testpkt.IPv4(40, [4]byte{10, 77, 0, 2})})}
	}
	// ids 3,4,5 were lost in the overrun the ENOBUFS reports.
	sock.feed(p(1), p(2), fakeItem{err: unix.ENOBUFS}, p(6), p(7))
	waitFor(t, "copies", func() bool { return rec.n.Load() == 4 })
	waitFor(t, "verdict 7", func() bool { v := sock.verdictList(); return len(v) > 0 && v[len(v)-1] == 7 })
	stop()
	s := led.Snapshot()
	if s.Drops.SocketOverrun != 3 || s.ENOBUFS != 1 || s.Offered != 7 || s.Copied != 4 || !s.Balanced() {
		t.Fatalf("ledger %+v", s)
	}
	if qr.Stats().ENOBUFS != 1 {
		t.Fatalf("stats %+v", qr.Stats())
	}
}

func TestQueueMalformedAndOverflow(t *testing.T) {
	leaktest.Check(t)
	sock := newFakeSock()
	var led pipeline.Ledger
	rec := &recorder{fail: func(p *packet.Packet) bool { return len(p.Data) == 99 }}
	_, stop := runPath(t, sock, 1024, rec, &led)
	garbage := []byte{1, 2, 3}
	notIP := queuePacketMsg(qpkt{id: 2, data: []byte{0x20, 1, 2, 3}})
	huge := queuePacketMsg(qpkt{id: 3, data: testpkt.IPv4(4000, [4]byte{})}) // > 2048+1024 buffer: truncated
	sock.feedDgrams(queuePacketMsg(qpkt{id: 1, data: testpkt.IPv4(40, [4]byte{})}), garbage, notIP, huge,
		queuePacketMsg(qpkt{id: 4, data: testpkt.IPv4(99, [4]byte{})}))
	waitFor(t, "verdict 4", func() bool { v := sock.verdictList(); return len(v) > 0 && v[len(v)-1] == 4 })
	waitFor(t, "sent", func() bool { return rec.n.Load() == 2 })
	stop()
	s := led.Snapshot()
	if s.Drops.Malformed != 3 || s.Drops.SendError != 1 || s.Copied != 1 || !s.Balanced() || s.Offered != 5 {
		t.Fatalf("ledger %+v", s)
	}
}

// drained runs the workers over what q holds and returns when it is empty
// (RunWorkers on a done context drains, then returns).
func drained(q *pipeline.CopyQueue, led *pipeline.Ledger) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	pipeline.RunWorkers(ctx, q, 1, led.Account)
}

// readSmall binds a queue reader over q on a fake socket holding n small
// clones (ids 1..n, the bind's reads not counted) and runs it until stop,
// which waits for it to return.
func readSmall(t *testing.T, q *pipeline.CopyQueue, led *pipeline.Ledger, n int) (sock *fakeSock, stop func()) {
	t.Helper()
	sock = newFakeSock()
	qr, err := newQueueReader(QueueConfig{Num: 1, Batch: 64}, sock, q, led)
	if err != nil {
		t.Fatal(err)
	}
	sock.mu.Lock()
	sock.reads = 0
	sock.mu.Unlock()
	ds := make([][]byte, n)
	for i := range ds {
		ds[i] = queuePacketMsg(qpkt{id: uint32(i + 1), data: testpkt.IPv4(40, [4]byte{})})
	}
	sock.feedDgrams(ds...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { qr.Run(ctx); close(done) }()
	return sock, func() { cancel(); <-done; qr.Close() }
}

// A clone the full copy queue cannot take is counted as queue_overflow
// (here: the ones the reader drains from the socket when it stops).
func TestQueueOverflowCounted(t *testing.T) {
	var led pipeline.Ledger
	q := pipeline.NewCopyQueue(2, 0)
	sock, stop := readSmall(t, q, &led, 5)
	waitFor(t, "verdict", func() bool { return len(sock.verdictList()) == 1 })
	stop()
	s := led.Snapshot()
	if s.Drops.QueueOverflow != 3 || s.InFlight != 2 || !s.Balanced() || q.Dropped() != 3 {
		t.Fatalf("ledger %+v dropped %d", s, q.Dropped())
	}
	drained(q, &led)
	if s := led.Snapshot(); s.InFlight != 0 || s.Copied != 2 || !s.Balanced() {
		t.Fatalf("after drain %+v", s)
	}
}

// TestQueueReadsOnlyWhatFits: with room in the copy queue for two copies,
// the reader reads two of five waiting datagrams and leaves the other three
// in the socket (kernel memory) until the queue has room again, instead of
// reading them and dropping them as queue_overflow.
func TestQueueReadsOnlyWhatFits(t *testing.T) {
	leaktest.Check(t)
	var led pipeline.Ledger
	q := pipeline.NewCopyQueue(2, 0)
	sock, stop := readSmall(t, q, &led, 5)
	defer stop()
	waitFor(t, "two copies queued", func() bool { return q.Len() == 2 })
	if n := sock.left(); n != 3 {
		t.Fatalf("%d datagrams left in the socket, want 3 (the reader read what the queue could not take)", n)
	}
	var got atomic.Int64
	wctx, wcancel := context.WithCancel(context.Background())
	wdone := make(chan struct{})
	go func() {
		pipeline.RunWorkers(wctx, q, 1, func(b []*packet.Packet) { got.Add(int64(len(b))); led.Account(b) })
		close(wdone)
	}()
	waitFor(t, "five copies", func() bool { return got.Load() == 5 })
	wcancel()
	<-wdone
	s := led.Snapshot()
	if s.Drops.QueueOverflow != 0 || q.Dropped() != 0 || s.Copied != 5 || s.Offered != 5 || !s.Balanced() {
		t.Fatalf("ledger %+v, dropped %d", s, q.Dropped())
	}
}

// TestQueueRoomLearnsCopySize: the first read, not knowing what comes,
// reckons each datagram a super-packet's buffer and reads 3 into a queue
// with room for 4 such buffers; having seen small packets, the reader
// halves its reckoning with every read and takes the 40 in at most 6 reads
// (reckoning on super-packets all along, it read two at a time: 23 reads).
func TestQueueRoomLearnsCopySize(t *testing.T) {
	leaktest.Check(t)
	var led pipeline.Ledger
	q := pipeline.NewCopyQueue(1000, 4*packet.MaxBuf)
	sock, stop := readSmall(t, q, &led, 40)
	waitFor(t, "40 copies queued", func() bool { return q.Len() == 40 })
	stop()
	sock.mu.Lock()
	reads := sock.reads
	sock.mu.Unlock()
	if reads > 6 {
		t.Errorf("%d reads, want at most 6", reads)
	}
	drained(q, &led)
	if s := led.Snapshot(); s.Copied != 40 || s.Drops.QueueOverflow != 0 || !s.Balanced() {
		t.Fatalf("ledger %+v", s)
	}
}

func TestQueueBindError(t *testing.T) {
	sock := newFakeSock()
	sock.ackErr = -int32(unix.EBUSY)
	_, err := newQueueReader(QueueConfig{Num: 1}, sock, pipeline.NewCopyQueue(1, 0), &pipeline.Ledger{})
	if !errors.Is(err, unix.EBUSY) {
		t.Fatalf("err %v", err)
	}
}

func TestVerdictRetriedAfterSendError(t *testing.T) {
	sock := newFakeSock()
	var led pipeline.Ledger
	qr, err := newQueueReader(QueueConfig{Num: 1}, sock, pipeline.NewCopyQueue(16, 0), &led)
	if err != nil {
		t.Fatal(err)
	}
	sock.sendErr = unix.ENOMEM
	sock.feedDgrams(queuePacketMsg(qpkt{id: 1, data: testpkt.IPv4(40, [4]byte{})}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { qr.Run(ctx); close(done) }()
	waitFor(t, "verdict error", func() bool { return qr.Stats().VerdictErrors > 0 })
	sock.mu.Lock()
	sock.sendErr = nil
	sock.mu.Unlock()
	cancel()
	<-done
	if v := sock.verdictList(); len(v) != 1 || v[0] != 1 {
		t.Fatalf("verdicts %v", v)
	}
}

func TestCancelUnblocksRead(t *testing.T) {
	leaktest.Check(t)
	sock := newFakeSock()
	qr, err := newQueueReader(QueueConfig{Num: 1}, sock, pipeline.NewCopyQueue(16, 0), &pipeline.Ledger{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- qr.Run(ctx) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run not unblocked by cancel")
	}
	qr.Close()
}

func TestLogReaderSeqGaps(t *testing.T) {
	leaktest.Check(t)
	sock := newFakeSock()
	var led pipeline.Ledger
	q := pipeline.NewCopyQueue(64, 0)
	lr, err := newLogReader(LogConfig{Group: 5}, sock, q, &led)
	if err != nil {
		t.Fatal(err)
	}
	// One NFLOG datagram carries several messages and ends with DONE.
	d1 := append(append(logPacketMsg(0, testpkt.IPv4(40, [4]byte{})), logPacketMsg(1, ipv6(60))...), doneMsg()...)
	d2 := append(logPacketMsg(4, testpkt.IPv4(50, [4]byte{})), doneMsg()...) // 2,3 lost
	sock.feedDgrams(d1, d2)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); lr.Run(ctx) }()
	var n atomic.Int64
	go func() {
		defer wg.Done()
		pipeline.RunWorkers(ctx, q, 1, func(b []*packet.Packet) {
			for _, p := range b {
				if p.Family == 6 && p.OrigLen != 60 {
					t.Errorf("v6 origlen %d", p.OrigLen)
				}
			}
			n.Add(int64(len(b)))
			led.Account(b)
		})
	}()
	waitFor(t, "copies", func() bool { return n.Load() == 3 })
	cancel()
	wg.Wait()
	lr.Close()
	s := led.Snapshot()
	if s.Drops.SocketOverrun != 2 || s.Offered != 5 || s.Copied != 3 || !s.Balanced() {
		t.Fatalf("%+v", s)
	}
	if len(sock.verdictList()) != 0 {
		t.Fatal("NFLOG must not send verdicts")
	}
}

func TestHotPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race")
	}
	sock := newFakeSock()
	q := pipeline.NewCopyQueue(1024, 0)
	qr, err := newQueueReader(QueueConfig{Num: 1, Batch: 64, Snaplen: 2048}, sock, q, &pipeline.Ledger{})
	if err != nil {
		t.Fatal(err)
	}
	if allocs := readerAllocs(qr.r, q, queuePacketMsg(qpkt{id: 1, data: testpkt.IPv4(100, [4]byte{10, 77, 0, 2})})); allocs > 0 {
		t.Errorf("hot path allocates %.1f per packet", allocs)
	}
}

// readerAllocs is the allocations per packet of reader r receiving msg (a
// queue packet message) again and again, once the pools are warm.
func readerAllocs(r *reader, q *pipeline.CopyQueue, msg []byte) float64 {
	dst := make([]*packet.Packet, 1)
	id := uint32(1)
	step := func() {
		receive(r, 0, msg)
		binaryPutID(r.bufs[0], id)
		id++
		r.process(1)
		r.flush()
		if q.TryPopBatch(dst) == 1 {
			dst[0].Release()
		}
	}
	for i := 0; i < 10; i++ {
		step()
	}
	return testing.AllocsPerRun(1000, step)
}

// binaryPutID rewrites the packet id of a canned queue packet message.
func binaryPutID(msg []byte, id uint32) {
	// nlmsghdr 16 + nfgenmsg 4 + nlattr 4 → packet id
	msg[24], msg[25], msg[26], msg[27] = byte(id>>24), byte(id>>16), byte(id>>8), byte(id)
}

// A queue of clones: every packet gets a drop verdict (its original went on
// in the kernel), the marker leaves the mark, the bytes are the clone's as
// the rules left them, and the marker tells ingress from egress.
func TestQueueClonesWithFakes(t *testing.T) {
	leaktest.Check(t)
	sock := newFakeSock()
	var led pipeline.Ledger
	rec := &recorder{}
	cfg := QueueConfig{Num: 0, Batch: 4, Snaplen: 2048, Clones: CloneMarks{Mask: 0xff000000, TTLDecremented: 0x01000000}}
	_, stop := runPathCfg(t, sock, cfg, 1024, rec, &led)
	orig := testpkt.IPv4(64, [4]byte{10, 77, 0, 2})
	binary.BigEndian.PutUint16(orig[10:], ipChecksum(orig[:20]))
	sock.feedDgrams(
		queuePacketMsg(qpkt{id: 1, data: orig, mark: 0x05000007}), // prerouting clone
		queuePacketMsg(qpkt{id: 2, data: orig, mark: 0x04000007}), // postrouting clone
	)
	waitFor(t, "copies", func() bool { return rec.n.Load() == 2 })
	waitFor(t, "verdict", func() bool { v := sock.verdictList(); return len(v) > 0 && v[len(v)-1] == 2 })
	stop()
	onlyVerdicts(t, sock, nfDrop, "their originals went on in the kernel")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	dirs := map[uint8]int{}
	for i := range rec.got {
		if !bytes.Equal(rec.got[i], orig) {
			t.Errorf("copy %d:\n% x\nwant\n% x", i, rec.got[i][:20], orig[:20])
		}
		if rec.marks[i] != 7 {
			t.Errorf("copy %d mark %#x, want 7 (the marker cleared)", i, rec.marks[i])
		}
		dirs[rec.dirs[i]]++
	}
	if dirs[packet.DirIngress] != 1 || dirs[packet.DirEgress] != 1 {
		t.Errorf("directions %v, want one ingress, one egress", dirs)
	}
}

// A queue of held originals (hold): every packet gets an accept verdict,
// and its copy is the packet as the kernel holds it — no marker to clear,
// no TTL to restore (whatever the mark says), the direction from the hook.
func TestQueueHoldAcceptsOriginals(t *testing.T) {
	leaktest.Check(t)
	sock := newFakeSock()
	var led pipeline.Ledger
	rec := &recorder{}
	cfg := QueueConfig{Num: 0, Batch: 4, Snaplen: 2048, Hold: true, Clones: CloneMarks{Mask: 0xff000000, TTLDecremented: 0x01000000},
		Send: func(b []*packet.Packet) { rec.send(b); led.Account(b) }}
	_, stop := runPathCfg(t, sock, cfg, 1024, rec, &led)
	orig := testpkt.IPv4(64, [4]byte{10, 77, 0, 2})
	binary.BigEndian.PutUint16(orig[10:], ipChecksum(orig[:20]))
	const (
		hookPrerouting  = 0
		hookPostrouting = 4
	)
	sock.feedDgrams(
		// a mark that would be a TTL marker on a clone: left alone
		queuePacketMsg(qpkt{id: 1, data: orig, mark: 0x03000007, hook: hookPrerouting}),
		queuePacketMsg(qpkt{id: 2, data: orig, mark: 0x00000007, hook: hookPostrouting}),
	)
	waitFor(t, "copies", func() bool { return rec.n.Load() == 2 })
	waitFor(t, "verdict", func() bool { v := sock.verdictList(); return len(v) > 0 && v[len(v)-1] == 2 })
	stop()
	onlyVerdicts(t, sock, nfAccept, "the originals must go on")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	wantMarks := []uint32{0x03000007, 7}
	wantDirs := []uint8{packet.DirIngress, packet.DirEgress}
	for i := range rec.got {
		if !bytes.Equal(rec.got[i], orig) {
			t.Errorf("copy %d:\n% x\nwant the original\n% x", i, rec.got[i][:20], orig[:20])
		}
		if rec.marks[i] != wantMarks[i] {
			t.Errorf("copy %d mark %#x, want %#x (unchanged)", i, rec.marks[i], wantMarks[i])
		}
		if rec.dirs[i] != wantDirs[i] {
			t.Errorf("copy %d direction %v, want %v (from the hook)", i, rec.dirs[i], wantDirs[i])
		}
	}
	if s := led.Snapshot(); s.Copied != 2 || !s.Balanced() {
		t.Errorf("ledger %+v", s)
	}
}

// A hold reader sends each copy itself (QueueConfig.Send), before the
// verdict that lets its original go, never through the copy queue; a reader
// has Send if and only if it holds.
func TestHoldDeliverSendsCopiesBeforeVerdicts(t *testing.T) {
	leaktest.Check(t)
	sock := newFakeSock()
	var led pipeline.Ledger
	q := pipeline.NewCopyQueue(1, 0) // no workers: a copy queued here would never be sent
	rec := &recorder{}
	send := func(b []*packet.Packet) {
		v := sock.verdictList()
		for _, p := range b {
			if id := uint32(p.Data[19]); len(v) > 0 && v[len(v)-1] >= id {
				t.Errorf("the copy of packet %d was sent after the verdict up to %d let it go", id, v[len(v)-1])
			}
		}
		rec.send(b)
		led.Account(b)
	}
	qr, err := newQueueReader(QueueConfig{Num: 0, Batch: 4, Snaplen: 2048, Hold: true, Send: send}, sock, q, &led)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- qr.Run(ctx) }()
	for _, bad := range []QueueConfig{{Num: 1, Hold: true}, {Num: 1, Send: send}} {
		if _, err := newQueueReader(bad, newFakeSock(), q, &led); err == nil || !strings.Contains(err.Error(), "Send if and only if") {
			t.Errorf("Hold %t, Send set %t: %v, want refused", bad.Hold, bad.Send != nil, err)
		}
	}
	var burst [][]byte
	for id := 1; id <= 10; id++ {
		orig := testpkt.IPv4(64, [4]byte{10, 77, 0, byte(id)}) // the id in the last byte of the destination
		burst = append(burst, queuePacketMsg(qpkt{id: uint32(id), data: orig}))
	}
	sock.feedDgrams(burst[:3]...)
	sock.feedDgrams(burst[3:]...)
	waitFor(t, "copies", func() bool { return rec.n.Load() == 10 })
	waitFor(t, "verdicts", func() bool { v := sock.verdictList(); return len(v) > 0 && v[len(v)-1] == 10 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
	qr.Close()
	onlyVerdicts(t, sock, nfAccept, "the originals must go on")
	if n := q.Pushed(); n != 0 {
		t.Errorf("%d copies went to the copy queue", n)
	}
	rec.mu.Lock()
	for i, c := range rec.got {
		if c[19] != byte(i+1) {
			t.Errorf("copy %d is of packet %d: out of order", i+1, c[19])
		}
	}
	rec.mu.Unlock()
	if s := led.Snapshot(); s.Copied != 10 || !s.Balanced() || s.Drops.Total() != 0 {
		t.Errorf("ledger %+v", s)
	}
}

// onlyVerdicts fails unless every verdict the reader sent is want.
func onlyVerdicts(t *testing.T, sock *fakeSock, want uint32, why string) {
	t.Helper()
	sock.mu.Lock()
	kinds := append([]uint32(nil), sock.verdictKinds...)
	sock.mu.Unlock()
	for _, k := range kinds {
		if k != want {
			t.Fatalf("verdicts %v, want only %d: %s", kinds, want, why)
		}
	}
}

func ipChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		if i != 10 {
			s += uint32(h[i])<<8 | uint32(h[i+1])
		}
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// What the kernel says of a clone reaches the workers: NFQA_SKB_INFO's GSO
// and checksum-not-ready flags; and a packet the kernel cut short
// (NFQA_CAP_LEN) is too big, never a copy.
func TestQueueCloneOffload(t *testing.T) {
	leaktest.Check(t)
	sock := newFakeSock()
	var led pipeline.Ledger
	rec := &recorder{}
	cfg := QueueConfig{Num: 0, Batch: 4, Clones: CloneMarks{Mask: 0xff000000, TTLDecremented: 0x01000000}}
	_, stop := runPathCfg(t, sock, cfg, 1024, rec, &led)
	// Two packets told apart by their IP ID (two workers may reorder).
	mk := func(id uint16) []byte {
		b := testpkt.IPv4(1400, [4]byte{10, 77, 0, 2})
		binary.BigEndian.PutUint16(b[4:], id)
		binary.BigEndian.PutUint16(b[10:], ipChecksum(b[:20]))
		return b
	}
	sock.feedDgrams(
		queuePacketMsg(qpkt{id: 1, data: mk(1), mark: 0x04000007, info: skbGSO | skbCsumNotReady}),
		queuePacketMsg(qpkt{id: 2, data: mk(2), mark: 0x04000007}),
		queuePacketMsg(qpkt{id: 3, data: mk(3), mark: 0x04000007, capLen: 70000}), // cut short
	)
	waitFor(t, "copies", func() bool { return rec.n.Load() == 2 })
	waitFor(t, "verdict", func() bool { v := sock.verdictList(); return len(v) > 0 && v[len(v)-1] == 3 })
	stop()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, got := range rec.got {
		want := gso.Known
		switch id := binary.BigEndian.Uint16(got[4:]); id {
		case 1:
			want |= gso.GSO | gso.CsumPartial
		case 2:
		default:
			t.Errorf("copy with IP ID %d", id)
		}
		if rec.offload[i] != want {
			t.Errorf("copy %d: offload flags %v, want %v", i, rec.offload[i], want)
		}
	}
	if s := led.Snapshot(); s.Drops.TooBig != 1 || s.Copied != 2 || !s.Balanced() {
		t.Errorf("ledger %+v, want 2 copied and 1 too big", s)
	}
	// Never fail-open: a clone routed to lo must not go on.
	sock.mu.Lock()
	defer sock.mu.Unlock()
	if len(sock.cfgFlags) != 1 || sock.cfgFlags[0] != cfgFlagGSO {
		t.Errorf("bind flags %#x, want GSO only (%#x)", sock.cfgFlags, cfgFlagGSO)
	}
}

// A Route reader lets the kernel send the clones: it binds its queue
// fail-open (what the queue cannot take, the kernel sends), reads their
// headers, hands them to Send (which counts them, whole: NFQA_CAP_LEN), and
// accepts each read with one plain verdict (the rules gave the clones their
// mark) — never a drop, and nothing goes to the copy queue.
func TestQueueRouteAcceptsFailOpen(t *testing.T) {
	leaktest.Check(t)
	sock := newFakeSock()
	var led pipeline.Ledger
	var mu sync.Mutex
	var lens []int
	send := func(b []*packet.Packet) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range b {
			lens = append(lens, p.OrigLen)
		}
		led.AccountRouted(b)
	}
	cfg := QueueConfig{Num: 0, Batch: 4, Snaplen: RouteSnaplen, Route: true, Send: send,
		Clones: CloneMarks{Mask: 0xff, TTLDecremented: 0x01}}
	rec := &recorder{}
	_, stop := runPathCfg(t, sock, cfg, 1024, rec, &led)
	big := testpkt.IPv4(RouteSnaplen, [4]byte{10, 77, 0, 2})
	sock.feedDgrams(
		queuePacketMsg(qpkt{id: 1, data: big, mark: 0x05, capLen: 65000}), // a super-packet, its headers
		queuePacketMsg(qpkt{id: 2, data: testpkt.IPv4(60, [4]byte{10, 77, 0, 2}), mark: 0x04}),
	)
	waitFor(t, "verdict", func() bool { v := sock.verdictList(); return len(v) > 0 && v[len(v)-1] == 2 })
	stop()
	onlyVerdicts(t, sock, nfAccept, "the kernel sends the clones")
	sock.mu.Lock()
	flags, vlens := append([]uint32(nil), sock.cfgFlags...), append([]int(nil), sock.verdictLens...)
	sock.mu.Unlock()
	if len(flags) != 1 || flags[0] != cfgFlagGSO|cfgFlagFailOpen {
		t.Errorf("bind flags %#x, want GSO|FAIL_OPEN (%#x)", flags, cfgFlagGSO|cfgFlagFailOpen)
	}
	for _, n := range vlens {
		if n != verdictBatchLen {
			t.Errorf("verdict lengths %v, want each %d (no attribute but the verdict)", vlens, verdictBatchLen)
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(lens, []int{65000, 60}) {
		t.Errorf("counted lengths %v, want [65000 60]", lens)
	}
	if n := rec.n.Load(); n != 0 {
		t.Errorf("%d copies went through the copy queue", n)
	}
	if s := led.Snapshot(); s.Copied != 2 || s.Bytes != 65060 || !s.Balanced() {
		t.Errorf("ledger %+v, want 2 copied, 65060 bytes", s)
	}
}

// keepReader is an NFQUEUE reader of whole packets over a fake socket, and
// its copy queue.
func keepReader(t *testing.T) (*reader, *fakeSock, *pipeline.CopyQueue) {
	t.Helper()
	sock := newFakeSock()
	q := pipeline.NewCopyQueue(1024, 0)
	qr, err := newQueueReader(QueueConfig{Num: 1, Batch: 4}, sock, q, &pipeline.Ledger{})
	if err != nil {
		t.Fatal(err)
	}
	if qr.r.slots == nil {
		t.Fatal("a reader of whole packets has no receive slots")
	}
	return qr.r, sock, q
}

// receive puts the datagram d into slot i as if recvmmsg had.
func receive(r *reader, i int, d []byte) {
	r.lens[i] = copy(r.bufs[i], d)
	r.trunc[i] = false
}

// A large packet is handed on in the buffer it was received into: the
// copy is its payload, with headroom for a sink's headers, and the slot
// gets a fresh buffer, so the next datagram cannot overwrite the copy.
// Small packets, and a large one followed by another message in its
// datagram, are copied out and leave the slot as it was.
func TestQueueKeepsLargePacketsInPlace(t *testing.T) {
	r, sock, q := keepReader(t)
	big := testpkt.IPv4(40000, [4]byte{10, 77, 0, 2})
	small := testpkt.IPv4(300, [4]byte{10, 77, 0, 2})
	pop := func() *packet.Packet {
		t.Helper()
		dst := make([]*packet.Packet, 1)
		if q.TryPopBatch(dst) != 1 {
			t.Fatal("no copy queued")
		}
		return dst[0]
	}

	slot0 := &r.bufs[0][0]
	receive(r, 0, queuePacketMsg(qpkt{id: 1, data: big}))
	r.process(1)
	kept := pop()
	if sock.rebufs != 1 || &r.bufs[0][0] == slot0 {
		t.Fatalf("large packet: %d buffers replaced, slot moved %v; want 1, true", sock.rebufs, &r.bufs[0][0] != slot0)
	}
	if whole := kept.Frame(len(queuePacketMsg(qpkt{id: 1, data: big})) - len(big)); whole == nil || &whole[0] != slot0 {
		t.Fatal("the copy is not the payload where it was received")
	}
	if !bytes.Equal(kept.Data, big) || kept.OrigLen != len(big) || kept.Family != 4 {
		t.Fatalf("kept copy: %d bytes, orig %d, family %d", len(kept.Data), kept.OrigLen, kept.Family)
	}
	f := kept.Frame(packet.Headroom)
	if f == nil || &f[packet.Headroom] != &kept.Data[0] || len(f) != packet.Headroom+len(big) {
		t.Fatal("kept copy has no headroom for a sink's headers")
	}
	if cap(kept.Data) != len(kept.Data) {
		t.Fatal("kept copy can grow into the rest of its receive buffer")
	}

	// The next datagram in slot 0 lands in the fresh buffer.
	other := testpkt.IPv4(40000, [4]byte{10, 77, 0, 3})
	receive(r, 0, queuePacketMsg(qpkt{id: 2, data: other}))
	r.process(1)
	second := pop()
	if !bytes.Equal(kept.Data, big) || !bytes.Equal(second.Data, other) {
		t.Fatal("a later datagram overwrote a kept copy")
	}
	kept.Release()
	second.Release()

	// Copied out: a small packet, and a large one not last in its datagram.
	n := sock.rebufs
	receive(r, 0, queuePacketMsg(qpkt{id: 3, data: small}))
	receive(r, 1, append(queuePacketMsg(qpkt{id: 4, data: big}), queuePacketMsg(qpkt{id: 5, data: small})...))
	r.process(2)
	for _, want := range [][]byte{small, big, small} {
		p := pop()
		if !bytes.Equal(p.Data, want) {
			t.Fatalf("copied-out packet: %d bytes, want %d", len(p.Data), len(want))
		}
		p.Release()
	}
	if sock.rebufs != n {
		t.Fatalf("%d buffers replaced for copied-out packets", sock.rebufs-n)
	}
}

// Keeping a packet in place allocates nothing once the pool is warm.
func TestKeepAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race")
	}
	r, _, q := keepReader(t)
	if allocs := readerAllocs(r, q, queuePacketMsg(qpkt{id: 1, data: testpkt.IPv4(60000, [4]byte{10, 77, 0, 2})})); allocs > 0 {
		t.Errorf("keeping a packet allocates %.1f per packet", allocs)
	}
}

// WaitQueuesEmpty returns once the queues it waits for hold nothing, whatever
// other queues hold, and names the busy queue when the time is up.
func TestWaitQueuesEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nfnetlink_queue")
	write := func(s string) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	busy := "    0  12345     2 2 128 0 0 40 1\n    7  54321     9 2 65531 0 0 99 1\n"
	write(busy)
	err := WaitQueuesEmpty(path, []uint16{0, 1}, 20*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "queue 0 holds 2") || strings.Contains(err.Error(), "queue 7") {
		t.Fatalf("busy queue 0: %v, want it named (and not queue 7, not waited for)", err)
	}
	done := make(chan error, 1)
	go func() { done <- WaitQueuesEmpty(path, []uint16{0, 1}, 10*time.Second) }()
	write("    0  12345     0 2 128 0 0 42 1\n    7  54321     9 2 65531 0 0 99 1\n")
	if err := <-done; err != nil {
		t.Fatalf("queue 0 emptied: %v", err)
	}
	if err := WaitQueuesEmpty(filepath.Join(t.TempDir(), "absent"), []uint16{0}, time.Millisecond); err == nil {
		t.Error("a missing proc file is not an error")
	}
}
