package sink

import (
	"errors"
	"github.com/nfclone/nfclone/packet"
	"sync"
	"sync/atomic"

	"github.com/nfclone/nfclone/gso"
)

// Wire makes copies what a wire would carry before they reach the targets:
// the kernel hands the readers GSO/GRO super-packets of up to 64 KiB,
// packets whose TCP/UDP checksum it had not finished (CHECKSUM_PARTIAL:
// locally sent, or passed on by a veth) and datagrams that conntrack
// reassembled. Wire completes unfinished checksums (gso.FixPartial) and
// cuts every copy larger than the MTU into segments or fragments
// (gso.Split), sends them to the inner sink in chunks of at most
// wireChunk packets, and reports each copy as sent only if every one of
// its segments was. A copy that cannot be cut (IPv4 with DF set that is no
// TCP or UDP GSO packet, malformed, cut short by a copy range) is not sent
// and is marked too big (Packet.TooBig).
type Wire struct {
	inner  Sink
	mtu    int
	gso    bool // inner may take TCP super-packets whole (asked at each Send)
	maxSeg int
	fragID atomic.Uint32
	pool   sync.Pool
	split  atomic.Uint64 // copies cut
	segs   atomic.Uint64 // segments sent for them
	fixed  atomic.Uint64 // checksums completed
}

// wireChunk is how many packets Wire hands the inner sink at once (the
// inner sinks send with one sendmmsg per chunk).
const wireChunk = 256

// wireScratch is one Send's working set: the chunk being built, the copies
// the chunk's segments came from, and segment buffers owned by the scratch.
type wireScratch struct {
	out    []*packet.Packet
	parent []*packet.Packet // parent[i] of out[i]: the copy it is, or was cut from
	segs   []*packet.Packet // owned segment packets, reused
	bufs   [][]byte
	used   int
}

// NewWire returns inner behind a Wire that cuts copies to mtu bytes (the
// smallest MTU of the session's targets). mtu below 576 is taken as 576.
// When every inner target takes GSO packets (a packet socket with a
// virtio-net header), TCP super-packets are handed over whole instead,
// with Packet.GSO saying how the kernel is to cut them.
func NewWire(inner Sink, mtu int) *Wire {
	if mtu < 576 {
		mtu = 576
	}
	w := &Wire{inner: inner, mtu: mtu, maxSeg: gso.MaxSegments(mtu)}
	_, w.gso = inner.(gsoSink)
	w.pool.New = func() any {
		x := &wireScratch{
			out:    make([]*packet.Packet, 0, wireChunk+w.maxSeg),
			parent: make([]*packet.Packet, 0, wireChunk+w.maxSeg),
			segs:   make([]*packet.Packet, wireChunk+w.maxSeg),
			bufs:   make([][]byte, w.maxSeg),
		}
		for i := range x.segs {
			x.segs[i] = packet.Get(mtu)
		}
		return x
	}
	return w
}

// Name is the inner sink's name.
func (w *Wire) Name() string { return w.inner.Name() }

// MTU is the size copies are cut to.
func (w *Wire) MTU() int { return w.mtu }

// Inner is the sink Wire sends to.
func (w *Wire) Inner() Sink { return w.inner }

// WireStats are Wire's counters.
type WireStats struct {
	// Split counts copies cut to the MTU (by Wire, or by the kernel for
	// copies handed over whole); Segments the segments Wire cut.
	Split     uint64 `json:"split"`
	Segments  uint64 `json:"segments"`
	Checksums uint64 `json:"checksums_completed"`
}

// WireStats returns the counters.
func (w *Wire) WireStats() WireStats {
	return WireStats{Split: w.split.Load(), Segments: w.segs.Load(), Checksums: w.fixed.Load()}
}

var errTooBig = errors.New("copy cannot be cut to the target MTU")

// Send makes batch wire-sized and sends it. It returns the number of
// copies of batch that were sent whole.
func (w *Wire) Send(batch []*packet.Packet) (int, error) {
	x := w.pool.Get().(*wireScratch)
	defer w.pool.Put(x)
	var last error
	var nsplit, nsegs, nfixed uint64
	whole := w.gso && w.inner.(gsoSink).AcceptsGSO()
	for _, p := range batch {
		if len(p.Data) <= w.mtu || p.Truncated() {
			// A copy cut by the session's snaplen is sent as it is (its
			// lengths are fixed by the sinks); it cannot be segmented.
			if !p.Truncated() && gso.FixPartial(p.Data, p.Offload) {
				nfixed++
			}
			last = w.add(x, p, p, last)
			continue
		}
		if whole {
			// The target's kernel path cuts TCP super-packets itself (one
			// send instead of ~45, segmented in the kernel).
			if o, ok := gso.PrepareTCP(p.Data, w.mtu); ok {
				p.GSO = o
				nsplit++
				last = w.add(x, p, p, last)
				continue
			}
		}
		if x.used+w.maxSeg > len(x.segs) {
			last = w.flush(x, last)
		}
		for i := range x.bufs {
			x.bufs[i] = x.segs[x.used+i].Data[:0:cap(x.segs[x.used+i].Data)]
		}
		n, err := gso.Split(p.Data, w.mtu, p.Offload, w.fragID.Add(1), x.bufs)
		if err != nil {
			p.TooBig = true
			last = errors.Join(errTooBig, err)
			continue
		}
		nsplit++
		nsegs += uint64(n)
		for i := 0; i < n; i++ {
			s := x.segs[x.used+i]
			s.Data = x.bufs[i]
			s.CopyMeta(p)
			x.out = append(x.out, s)
			x.parent = append(x.parent, p)
		}
		x.used += n
		if len(x.out) >= wireChunk {
			last = w.flush(x, last)
		}
	}
	last = w.flush(x, last)
	if nsplit > 0 {
		w.split.Add(nsplit)
		w.segs.Add(nsegs)
	}
	if nfixed > 0 {
		w.fixed.Add(nfixed)
	}
	sent := 0
	for _, p := range batch {
		if p.Errs == 0 && !p.TooBig {
			sent++
		}
	}
	return sent, last
}

// add puts s (a copy, or a segment cut from copy p) in the chunk and sends
// the chunk when it is full.
func (w *Wire) add(x *wireScratch, s, p *packet.Packet, last error) error {
	x.out = append(x.out, s)
	x.parent = append(x.parent, p)
	if len(x.out) >= wireChunk {
		return w.flush(x, last)
	}
	return last
}

// flush sends the chunk and carries each segment's failure to its copy.
func (w *Wire) flush(x *wireScratch, last error) error {
	if len(x.out) == 0 {
		return last
	}
	if _, err := w.inner.Send(x.out); err != nil {
		last = err
	}
	for i, s := range x.out {
		if p := x.parent[i]; s != p && s.Errs > 0 && p.Errs == 0 {
			p.Errs++
		}
		if x.parent[i] != s {
			s.Errs = 0
		}
		x.out[i], x.parent[i] = nil, nil
	}
	x.out, x.parent, x.used = x.out[:0], x.parent[:0], 0
	return last
}

// Close closes the inner sink.
func (w *Wire) Close() error { return w.inner.Close() }
