package sink

import (
	"github.com/nfclone/nfclone/dedup"
	"github.com/nfclone/nfclone/packet"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// Dedup passes a copy on to its inner sink unless the same packet passed
// within the window — a forwarded packet copied at ingress on one source
// and at egress on another, one packet seen on two aggregated ports — and
// marks the duplicate (Packet.Dup, counted as dedup in the ledger). Two
// copies are the same packet when they differ at most in TTL / hop limit
// and the IPv4 header checksum, as packet brokers decide (copies are L3:
// VLAN tags are never part of them).
//
// The table is direct-mapped on a 64-bit keyed hash of the packet (the
// window is counted from the first sighting): a packet whose slot another
// packet took meanwhile is sent again — dedup never drops a packet it has
// not seen, it may at worst let a duplicate through. One lock per batch.
type Dedup struct {
	inner Sink
	seed  maphash.Seed
	now   func() time.Time
	mu    sync.Mutex
	table *dedup.Table
	pool  sync.Pool
	dups  atomic.Uint64
}

type dedupScratch struct{ out []*packet.Packet }

// NewDedup returns inner behind a Dedup with the given window.
func NewDedup(inner Sink, window time.Duration) *Dedup {
	d := &Dedup{inner: inner, seed: maphash.MakeSeed(), now: time.Now, table: dedup.NewTable(window)}
	d.pool.New = func() any { return new(dedupScratch) }
	return d
}

// Name is the inner sink's name.
func (d *Dedup) Name() string { return d.inner.Name() }

// Inner is the sink Dedup sends to.
func (d *Dedup) Inner() Sink { return d.inner }

// Duplicates is how many copies were not sent as duplicates.
func (d *Dedup) Duplicates() uint64 { return d.dups.Load() }

// Send marks the batch's duplicates and sends the rest to the inner sink.
// It returns the number of copies the inner sink sent.
func (d *Dedup) Send(batch []*packet.Packet) (int, error) {
	x := d.pool.Get().(*dedupScratch)
	defer d.pool.Put(x)
	now := d.now().UnixNano()
	var dups uint64
	d.mu.Lock()
	for _, p := range batch {
		if d.table.Seen(dedup.ID(d.seed, p.Data), now) {
			p.Dup = true
			dups++
			continue
		}
		x.out = append(x.out, p)
	}
	d.mu.Unlock()
	if dups > 0 {
		d.dups.Add(dups)
	}
	var sent int
	var err error
	if len(x.out) > 0 {
		sent, err = d.inner.Send(x.out)
	}
	clear(x.out)
	x.out = x.out[:0]
	return sent, err
}

// Close closes the inner sink.
func (d *Dedup) Close() error { return d.inner.Close() }
