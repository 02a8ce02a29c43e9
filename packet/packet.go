// Package packet is one copy in flight from a reader to the sinks: its
// pooled buffer (with headroom for the headers sinks put in front), the IP
// packet, and what the kernel said of it.
package packet

import (
	"sync"

	"github.com/nfclone/nfclone/gso"
)

// Headroom is the number of bytes reserved in every packet buffer in front of
// Data. Sinks build their link or encapsulation headers in place there
// (Ethernet: 14 bytes; VXLAN/GENEVE: 8+ bytes plus an inner Ethernet header)
// so that a copy is never copied a second time.
const Headroom = 64

// Buffer size classes. A copy of at most smallPayload bytes uses a small
// buffer, one of at most mediumPayload a medium one, anything larger (lo
// has an MTU of 64 KiB, snaplen 0 means 0xffff) a large one. A large
// buffer also holds a whole NFQUEUE message of the largest copy (65531
// bytes and the netlink headers before it), so that a reader can receive
// into it and hand the payload on where it lies (Recv, Keep). The medium
// class is for super-packets of a few segments (a TSO sender's packets
// averaged 13 KB in the lab): the copy queue is bounded in buffer bytes,
// and four times as many of them fit in it as in 64 KiB buffers.
const (
	smallPayload  = 2048
	mediumPayload = 16 << 10
	largePayload  = 65 << 10
)

// RecvSize is the length of a receive buffer (Recv).
const RecvSize = largePayload

// buffer classes (Packet.class)
const (
	classSmall uint8 = iota
	classMedium
	classLarge
)

// Directions of Packet.Dir.
const (
	DirUnknown uint8 = iota
	DirIngress
	DirEgress
)

// Packet is one copy in flight from a reader to the sinks. It lives in a
// pooled buffer and must be released (Release) by whoever consumes it last —
// the worker after sending.
type Packet struct {
	// Data is the IP packet (L3, starting at the IP header), possibly
	// truncated to the session's snaplen. It starts Headroom bytes into the
	// pooled buffer.
	Data []byte
	// OrigLen is the length of the original packet before truncation.
	OrigLen int
	// Family is 4 or 6, from the IP version nibble.
	Family uint8
	// InIf and OutIf are the input and output interface indexes (0 if the
	// kernel did not say).
	InIf, OutIf uint32
	// HwAddr[:HwAddrLen] is the link-layer source address if the kernel gave
	// one (input-side hooks on Ethernet devices).
	HwAddr    [8]byte
	HwAddrLen uint8
	// Mark is the packet mark of the original.
	Mark uint32
	// Session is the index of the session the copy belongs to.
	Session int
	// Offload is what the kernel said of the packet: gso.Known (NFQUEUE)
	// with gso.GSO for a super-packet and gso.CsumPartial for an unfinished
	// checksum; nothing for NFLOG, which does not say (see gso.FixPartial).
	Offload gso.Flags
	// GSO, when its Type is set, says the copy is a TCP super-packet that
	// the target's kernel path is to cut (sink.Wire sets it for targets
	// that take GSO packets whole).
	GSO gso.Offload
	// TooBig says the copy could not be made wire-sized and was not sent
	// (counted as too_big, not as a send error).
	TooBig bool
	// Dup says the copy was a duplicate within the session's dedup window
	// and was not sent (counted as dedup).
	Dup bool
	// Time is when the kernel saw the packet, in nanoseconds since the Unix
	// epoch (microsecond precision: the kernel's NFQA_TIMESTAMP /
	// NFULA_TIMESTAMP), or, when it gave no usable time, when the reader
	// received it. 0: unknown (a sink then uses the time it writes).
	Time int64
	// Dir is the direction the packet was copied in (DirIngress,
	// DirEgress; DirUnknown when the kernel did not say).
	Dir uint8
	// Rule is the ordinal (1, 2, …, in number order) of the session rule
	// that accepted the packet, when the session's rules mark it (log
	// sessions with annotated pcapng targets); 0: unknown.
	Rule uint8
	// UID and GID own the packet's local socket, when HasUID (NFLOG gives
	// them for the host's own packets).
	UID, GID uint32
	HasUID   bool
	// Errs counts targets that failed to send this copy. Sinks increment it;
	// the worker's accounting reads it (0 = copied everywhere).
	Errs uint8

	buf   []byte // whole pooled buffer; Data == buf[head:head+n]
	head  int    // where Data starts in buf: Headroom, or more after Keep
	class uint8
}

var (
	smallPool = sync.Pool{New: func() any {
		return &Packet{buf: make([]byte, Headroom+smallPayload)}
	}}
	mediumPool = sync.Pool{New: func() any {
		return &Packet{buf: make([]byte, Headroom+mediumPayload), class: classMedium}
	}}
	largePool = sync.Pool{New: func() any {
		return &Packet{buf: make([]byte, Headroom+largePayload), class: classLarge}
	}}
)

// Get returns a pooled packet whose Data has length n (n is clamped to
// the largest buffer class, 65 KiB). The contents of Data are undefined.
func Get(n int) *Packet {
	var p *Packet
	switch {
	case n <= smallPayload:
		p = smallPool.Get().(*Packet)
	case n <= mediumPayload:
		p = mediumPool.Get().(*Packet)
	default:
		if n > largePayload {
			n = largePayload
		}
		p = largePool.Get().(*Packet)
	}
	p.Data = p.buf[Headroom : Headroom+n]
	p.head = Headroom
	return p
}

// Recv returns a pooled packet whose Data is a receive buffer of RecvSize
// bytes: a reader receives a datagram into it and, when the datagram holds
// one large packet, keeps the packet where it lies (Keep) instead of
// copying it out.
func Recv() *Packet { return Get(RecvSize) }

// Keep makes Data the part of it from off to end — the payload of the
// message received into it — so that the bytes before are headroom for the
// sinks' headers. It panics if the range is outside Data (a caller's bug).
func (p *Packet) Keep(off, end int) {
	p.Data = p.Data[off:end:end]
	p.head += off
}

// New returns a pooled packet holding a copy of data, with Family and
// OrigLen derived from the IP header (see IPInfo).
func New(data []byte) *Packet {
	p := Get(len(data))
	n := copy(p.Data, data)
	p.Data = p.Data[:n]
	p.Family, p.OrigLen, _ = IPInfo(p.Data)
	return p
}

// Release returns the packet to its pool. The packet must not be used after.
func (p *Packet) Release() {
	buf, class := p.buf, p.class
	*p = Packet{buf: buf, class: class}
	switch class {
	case classLarge:
		largePool.Put(p)
	case classMedium:
		mediumPool.Put(p)
	default:
		smallPool.Put(p)
	}
}

// CopyMeta gives p the metadata of from (interfaces, link address, mark,
// session, family, time, direction, rule, uid/gid) for a segment cut from it: p.Data must hold the segment;
// OrigLen becomes its length and its offload state complete.
func (p *Packet) CopyMeta(from *Packet) {
	p.OrigLen = len(p.Data)
	p.Family = from.Family
	p.InIf, p.OutIf = from.InIf, from.OutIf
	p.HwAddr, p.HwAddrLen = from.HwAddr, from.HwAddrLen
	p.Mark = from.Mark
	p.Session = from.Session
	// A segment was seen when and where its super-packet was.
	p.Time, p.Dir, p.Rule = from.Time, from.Dir, from.Rule
	p.UID, p.GID, p.HasUID = from.UID, from.GID, from.HasUID
	p.Offload = gso.Known
	p.TooBig = false
	p.Dup = false
	p.Errs = 0
}

// Truncated reports whether the copy is shorter than the original.
func (p *Packet) Truncated() bool { return len(p.Data) < p.OrigLen }

// Frame returns a slice that starts hdrLen bytes before Data and ends where
// Data ends; the caller writes its header into the first hdrLen bytes. It
// returns nil if hdrLen exceeds the headroom (at least Headroom bytes).
func (p *Packet) Frame(hdrLen int) []byte {
	if hdrLen < 0 || hdrLen > p.head || len(p.buf) < p.head+len(p.Data) {
		return nil
	}
	return p.buf[p.head-hdrLen : p.head+len(p.Data)]
}

// IPInfo returns the IP version (4 or 6) of an L3 packet and the original
// length its header claims (IPv4 total length, IPv6 payload length + 40; an
// IPv6 jumbogram or a header that claims less than was captured gives
// len(b)). ok is false when b is too short for its IP header or the version
// nibble is neither 4 nor 6.
func IPInfo(b []byte) (family uint8, origLen int, ok bool) {
	if len(b) < 1 {
		return 0, 0, false
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 || int(b[0]&0x0f) < 5 {
			return 4, len(b), false
		}
		l := int(b[2])<<8 | int(b[3])
		if l < len(b) {
			l = len(b)
		}
		return 4, l, true
	case 6:
		if len(b) < 40 {
			return 6, len(b), false
		}
		l := int(b[4])<<8 | int(b[5])
		if l == 0 {
			return 6, len(b), true
		}
		l += 40
		if l < len(b) {
			l = len(b)
		}
		return 6, l, true
	}
	return 0, len(b), false
}

// BufLen is the size of the packet's pooled buffer (the copy queue bounds
// its bytes by it).
func (p *Packet) BufLen() int { return len(p.buf) }

// MaxBuf is the largest buffer a packet can have.
const MaxBuf = Headroom + largePayload
