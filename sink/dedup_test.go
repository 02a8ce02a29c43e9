package sink

import (
	"encoding/binary"
	"github.com/nfclone/nfclone/packet"
	"testing"
	"time"

	"github.com/nfclone/nfclone/pipeline"
)

type countSink struct{ got [][]byte }

func (c *countSink) Name() string { return "count" }
func (c *countSink) Send(b []*packet.Packet) (int, error) {
	for _, p := range b {
		c.got = append(c.got, append([]byte(nil), p.Data...))
	}
	return len(b), nil
}
func (c *countSink) Close() error { return nil }

func TestDedup(t *testing.T) {
	inner := &countSink{}
	d := NewDedup(inner, 50*time.Millisecond)
	clock := time.Unix(1700000000, 0)
	d.now = func() time.Time { return clock }
	a := ipv4(100, [4]byte{10, 77, 3, 2})
	// The same packet one hop later: TTL one lower, checksum redone.
	a2 := append([]byte(nil), a...)
	a2[8]--
	binary.BigEndian.PutUint16(a2[10:12], 0)
	binary.BigEndian.PutUint16(a2[10:12], IPv4Checksum(a2[:20]))
	b := append([]byte(nil), a...)
	b[50] ^= 1 // another packet
	v6 := ipv6(80)
	v6b := append([]byte(nil), v6...)
	v6b[7] = 1 // hop limit
	send := func(datas ...[]byte) []bool {
		batch := pkts(datas...)
		d.Send(batch)
		var dup []bool
		for _, p := range batch {
			dup = append(dup, p.Dup)
			p.Release()
		}
		return dup
	}
	if got := send(a, a2, b, v6, v6b); !equalBools(got, []bool{false, true, false, false, true}) {
		t.Fatalf("dups %v", got)
	}
	clock = clock.Add(40 * time.Millisecond)
	if got := send(a); !equalBools(got, []bool{true}) {
		t.Fatalf("within the window: %v", got)
	}
	clock = clock.Add(20 * time.Millisecond) // 60 ms after the first sighting
	if got := send(a); !equalBools(got, []bool{false}) {
		t.Fatalf("after the window: %v", got)
	}
	if len(inner.got) != 4 || d.Duplicates() != 3 {
		t.Fatalf("inner got %d, dups %d", len(inner.got), d.Duplicates())
	}
	// The ledger counts them as dedup.
	var l pipeline.Ledger
	clock = clock.Add(time.Second)
	batch := pkts(a, a)
	l.AddReceived(2)
	d.Send(batch)
	l.Account(batch)
	if s := l.Snapshot(); s.Drops.Dedup != 1 || s.Copied != 1 || !s.Balanced() {
		t.Fatalf("%+v", s)
	}
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDedupNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	d := NewDedup(&nopSink{}, 50*time.Millisecond)
	batch := pkts(ipv4(1500, [4]byte{10, 0, 0, 1}), ipv6(1500))
	d.Send(batch)
	if n := testing.AllocsPerRun(100, func() { d.Send(batch) }); n != 0 {
		t.Fatalf("%v allocations per batch", n)
	}
}

func BenchmarkDedup1500(b *testing.B) {
	d := NewDedup(&nopSink{}, 50*time.Millisecond)
	batch := pkts(ipv4(1500, [4]byte{10, 0, 0, 1}))
	b.SetBytes(1500)
	for b.Loop() {
		d.Send(batch)
	}
}
