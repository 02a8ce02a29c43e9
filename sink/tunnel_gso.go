package sink

import (
	"encoding/binary"
	"errors"
	"github.com/nfclone/nfclone/packet"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP GSO for tunnel copies.
//
// Wire cuts a TCP super-packet into ~45 MTU-sized segments, and each, inside
// its own VXLAN/GENEVE datagram, used to be one message of the socket's
// sendmmsg: 45 trips through the kernel's UDP, IP, netfilter and routing
// code per 64 KiB. With UDP GSO (Linux 4.18+) one sendmsg carries many
// datagrams of one size, back to back, with a UDP_SEGMENT control message
// saying the size; the kernel builds one GSO packet and cuts it just before
// the device (or the device does), so the stack is crossed once per run.
//
// The sink keeps sendmmsg: a message is a run of copies that leave through
// the same socket to the same remote, all of one frame size but the last,
// which may be shorter; at most udpMaxSegments datagrams and
// udpGSOMaxBytes bytes of UDP payload; and consecutive segments of one TCP
// stream: same addresses and ports, each one's sequence number where the
// one before ends — what Wire cut from one super-packet, or what GRO would
// have merged. Nothing else is packed: a GSO packet that meets a virtual
// device (a veth to a container, a tap) is not cut before the peer's stack,
// and a capture there shows it as one frame, so pings or small packets that
// happen to be of one size stay one datagram per message, exactly as the
// collector saw them before; TCP bulk arrives there as the originals do,
// and as gateway and device targets send it (whole super-packets). The run's frames are its iovecs, in
// order — the kernel reads them back to back into one buffer, so they need
// not be contiguous here and nothing is copied in userspace. A run of one
// copy is an ordinary message without a control message. The segments of
// one super-packet are consecutive in a batch and share a flow, hence a
// socket and a remote, so each super-packet leaves in one or two messages.
//
// Wire cuts copies so that each datagram fits the path MTU to its remote
// (engine.sessionMTU); the kernel refuses a GSO message whose segments do
// not (EMSGSIZE on Linux 6.18, EINVAL on older kernels; one datagram alone
// would be fragmented instead), and one it cannot send as GSO (EIO: e.g. an IPsec
// route; EINVAL: e.g. a checksum-less socket).
// Then the run, and the rest of that send, goes one datagram per message —
// today's path — and so does every later send of the sink: the fallback
// happens once and is logged once. Another error (no route, a firewall,
// ENOBUFS) fails the run's copies, all of them: the run crossed the stack as
// one packet, and retrying each copy alone would add syscalls just when the
// host is short of buffers.

const (
	// udpMaxSegments is the kernel's UDP_MAX_SEGMENTS before Linux 6.x
	// raised it to 128: the most datagrams in one GSO message.
	udpMaxSegments = 64
	// udpGSOMaxBytes bounds a GSO message's UDP payload: an IP datagram of
	// at most 65535 bytes with a 40-byte IPv6 (or smaller IPv4) header and
	// the UDP header.
	udpGSOMaxBytes = 0xffff - 40 - 8
)

// segCmsg is a control message carrying UDP_SEGMENT: a struct cmsghdr and
// the 16-bit segment size, padded to CMSG_SPACE(2) bytes.
type segCmsg struct {
	hdr  unix.Cmsghdr
	size uint16
	_    [6]byte
}

// segCmsgSpace is CMSG_SPACE(sizeof(uint16)).
var segCmsgSpace = unix.CmsgSpace(2)

func init() {
	if int(unsafe.Sizeof(segCmsg{})) != segCmsgSpace {
		panic("sink: segCmsg does not have the size of CMSG_SPACE(2)")
	}
}

// put makes c the control message for segments of size bytes.
func (c *segCmsg) put(size int) {
	*c = segCmsg{size: uint16(size)}
	c.hdr.Level = unix.SOL_UDP
	c.hdr.Type = unix.UDP_SEGMENT
	c.hdr.SetLen(unix.CmsgLen(2))
}

// tunMsg is one message of a GSO send: copies sc.p[first:first+n].
type tunMsg struct {
	first, n int32
}

// probeGSO reports whether the kernel knows UDP_SEGMENT on the sink's
// sockets (a kernel without it ignores the control message and would send
// a run as one big datagram).
func (t *Tunnel) probeGSO() bool {
	any := false
	for fam := range t.fds {
		for _, fd := range t.fds[fam] {
			if _, err := unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT); err != nil {
				return false
			}
			any = true
		}
	}
	return any
}

// planGSO groups the copies sc.p[from:to] (one socket's) into messages,
// written to sc.h, sc.msg and sc.ctl from index from on; it returns the
// index after the last message.
func planGSO(sc *tunScratch, from, to int) int {
	m := from
	for j := from; j < to; {
		r := sc.r[j]
		size := int(sc.iov[j].Len)
		total := size
		k := 1
		for j+k < to && k < udpMaxSegments && sc.r[j+k] == r {
			l := int(sc.iov[j+k].Len)
			if l > size || total+l > udpGSOMaxBytes || !tcpFollows(sc.p[j+k-1], sc.p[j+k]) {
				break
			}
			total += l
			k++
			if l < size {
				break // a shorter one ends the run
			}
		}
		setTunMsg(&sc.h[m], r, &sc.iov[j], k)
		if k > 1 {
			sc.ctl[m].put(size)
			sc.h[m].Hdr.Control = (*byte)(unsafe.Pointer(&sc.ctl[m]))
			sc.h[m].Hdr.SetControllen(segCmsgSpace)
		}
		sc.msg[m] = tunMsg{first: int32(j), n: int32(k)}
		m++
		j += k
	}
	return m
}

// sendGSO sends the copies sc.p[from:to] through fd, each run planGSO
// found (consecutive segments of one TCP stream) as one message.
func (t *Tunnel) sendGSO(fd int, sc *tunScratch, from, to int) (sent int, last error) {
	end := planGSO(sc, from, to)
	bytes, whole := 0, 0 // sent in GSO messages (sendEach counts its own)
	i := from
	for i < end {
		n, err := t.send(fd, sc.h[i:end])
		if n > 0 {
			for _, m := range sc.msg[i : i+n] {
				for _, p := range sc.p[m.first : m.first+m.n] {
					bytes += len(p.Data)
				}
				whole += int(m.n)
			}
			i += n
			continue
		}
		if err == nil {
			err = unix.EIO // 0 sent and no error: should not happen
		}
		m := sc.msg[i]
		first := int(m.first)
		if errors.Is(err, unix.EAGAIN) {
			// As sendAll: drop the rest rather than spin.
			for _, p := range sc.p[first:to] {
				p.Errs++
			}
			t.fail(to-first, err)
			last = err
			break
		}
		if m.n == 1 {
			sc.p[first].Errs++
			t.fail(1, err)
			last = err
			i++
			continue
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.EIO) {
			// The kernel takes no GSO message here: this run and the
			// rest go one datagram each, and so do later sends.
			t.gso.Store(false)
			t.gsoOff.Do(func() {
				t.log.Info("sink: UDP GSO refused, tunnel copies go one datagram per message",
					"target", t.name, "err", err)
			})
			s, err := t.sendEach(fd, sc, first, to)
			sent += s
			if err != nil {
				last = err
			}
			break
		}
		// Another error (no route, a firewall, ENOBUFS): the run went
		// through the stack as one packet and failed as one; its copies
		// are counted as failed, the rest is still sent.
		for _, p := range sc.p[first : first+int(m.n)] {
			p.Errs++
		}
		t.fail(int(m.n), err)
		last = err
		i++
	}
	t.ok(whole, bytes)
	return sent + whole, last
}

// tcpFollows reports whether b is the TCP segment that comes right after a
// in the same stream: both complete (not cut by a snaplen) IPv4 or IPv6 TCP
// packets, not fragments, with the same addresses and ports, a carrying
// data and b's sequence number where a's data ends.
func tcpFollows(a, b *packet.Packet) bool {
	if a.Truncated() || b.Truncated() {
		return false
	}
	ao, aseq, aend, ok := tcpSpan(a.Data)
	if !ok || aend == aseq {
		return false
	}
	bo, bseq, _, ok := tcpSpan(b.Data)
	if !ok || ao != bo || bseq != aend {
		return false
	}
	x, y := a.Data, b.Data
	if x[0]>>4 == 4 {
		// addresses, then the ports
		return string(x[12:20]) == string(y[12:20]) && string(x[ao:ao+4]) == string(y[bo:bo+4])
	}
	return string(x[8:40]) == string(y[8:40]) && string(x[ao:ao+4]) == string(y[bo:bo+4])
}

// tcpSpan parses an IPv4 packet (not a fragment) or an IPv6 packet whose
// first next header is TCP: the TCP header's offset, the sequence number
// and where the segment's data ends in sequence space.
func tcpSpan(b []byte) (off int, seq, end uint32, ok bool) {
	var ipLen int
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		off = int(b[0]&0x0f) * 4
		if b[9] != unix.IPPROTO_TCP || binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 || off < 20 {
			return 0, 0, 0, false
		}
		ipLen = int(binary.BigEndian.Uint16(b[2:4]))
	case len(b) >= 40 && b[0]>>4 == 6:
		if b[6] != unix.IPPROTO_TCP {
			return 0, 0, 0, false
		}
		off = 40
		ipLen = 40 + int(binary.BigEndian.Uint16(b[4:6]))
	default:
		return 0, 0, 0, false
	}
	if ipLen > len(b) || off+20 > ipLen {
		return 0, 0, 0, false
	}
	hl := int(b[off+12]>>4) * 4
	if hl < 20 || off+hl > ipLen {
		return 0, 0, 0, false
	}
	seq = binary.BigEndian.Uint32(b[off+4 : off+8])
	return off, seq, seq + uint32(ipLen-off-hl), true
}
