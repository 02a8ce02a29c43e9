package nfq

import (
	"encoding/binary"
	"github.com/nfclone/nfclone/internal/testpkt"
	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pipeline"
	"testing"
	"time"
)

// tsAttr encodes struct nfqnl_msg_packet_timestamp (the NFLOG one is the same).
func tsAttr(sec, usec uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, sec)
	return binary.BigEndian.AppendUint64(b, usec)
}

// The kernel's timestamp reaches the copy: NFQA_TIMESTAMP and
// NFULA_TIMESTAMP parse to nanoseconds, at microsecond precision.
func TestParseTimestamps(t *testing.T) {
	var pi pktInfo
	msg := queuePacketMsg(qpkt{id: 1, data: testpkt.IPv4(60, [4]byte{10, 77, 2, 2}), ts: tsAttr(1_800_000_000, 123456)})
	m, _, err := nextMsg(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := parseQueuePacket(m.body, &pi); err != nil {
		t.Fatal(err)
	}
	if want := int64(1_800_000_000_123_456_000); pi.ts != want {
		t.Fatalf("NFQA_TIMESTAMP: got %d, want %d", pi.ts, want)
	}
	var a []byte
	a = appendAttr(a, nfulaTimestamp, tsAttr(1_800_000_001, 7))
	a = appendAttr(a, nfulaPayload, testpkt.IPv4(60, [4]byte{10, 77, 2, 2}))
	m, _, err = nextMsg(nlMessage(subsysUlog<<8|nfulnlMsgPacket, 0, 0, 2, 5, a))
	if err != nil {
		t.Fatal(err)
	}
	if err := parseLogPacket(m.body, &pi); err != nil {
		t.Fatal(err)
	}
	if want := int64(1_800_000_001_000_007_000); pi.ts != want {
		t.Fatalf("NFULA_TIMESTAMP: got %d, want %d", pi.ts, want)
	}
	// Garbage is no time.
	for _, v := range [][]byte{tsAttr(1, 1e6), tsAttr(1<<40, 0), {1, 2, 3}} {
		if got := parseTimestamp(v); got != 0 {
			t.Errorf("parseTimestamp(%x) = %d, want 0", v, got)
		}
	}
}

// A copy carries the time the kernel saw the packet: a wall-clock stamp
// as it is, TCP's monotonic departure time moved to the wall clock, and
// otherwise the time the reader received the batch.
func TestStamp(t *testing.T) {
	real := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC).UnixNano()
	mono := int64(5000 * time.Second)
	r := &reader{realNow: real, monoNow: mono}
	for _, c := range []struct {
		name   string
		ts     int64
		expect int64
	}{
		{"none", 0, real},
		{"wall clock, 3 ms earlier", real - 3e6, real - 3e6},
		{"monotonic, 2 ms earlier", mono - 2e6, real - 2e6},
		{"monotonic departure time 1 ms ahead", mono + 1e6, real + 1e6},
		{"far from either clock", real - int64(time.Hour), real},
	} {
		if got := r.stamp(c.ts); got != c.expect {
			t.Errorf("%s: stamp = %d, want %d (off by %v)", c.name, got, c.expect, time.Duration(got-c.expect))
		}
	}
}

// The reader stamps every copy of a batch, reading the clocks once per
// batch.
func TestReaderStampsCopies(t *testing.T) {
	q := pipeline.NewCopyQueue(16, 0)
	var led pipeline.Ledger
	sock := newFakeSock()
	r := newReader(kindQueue, sock, q, &led, 0, 0, 4, 4096, 64, nil)
	calls := 0
	now := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC).UnixNano()
	r.clock = func() (int64, int64) { calls++; return now, 1e12 }
	kt := now - 1500e3
	d1 := queuePacketMsg(qpkt{id: 1, data: testpkt.IPv4(60, [4]byte{10, 77, 2, 2}), ts: tsAttr(uint64(kt/1e9), uint64(kt%1e9/1e3))})
	d2 := queuePacketMsg(qpkt{id: 2, data: testpkt.IPv4(60, [4]byte{10, 77, 2, 2})})
	copy(r.bufs[0], d1)
	copy(r.bufs[1], d2)
	r.lens[0], r.lens[1] = len(d1), len(d2)
	r.process(2)
	if calls != 1 {
		t.Fatalf("clocks read %d times for one batch", calls)
	}
	var got [2]*packet.Packet
	if n := q.TryPopBatch(got[:]); n != 2 {
		t.Fatalf("%d copies queued, want 2", n)
	}
	if got[0].Time != kt || got[1].Time != now {
		t.Fatalf("times %d, %d; want the kernel's %d and the batch's %d", got[0].Time, got[1].Time, kt, now)
	}
	got[0].Release()
	got[1].Release()
}
