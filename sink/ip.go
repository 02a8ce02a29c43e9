package sink

import (
	"encoding/binary"
	"github.com/nfclone/nfclone/packet"
)

// IPv4Checksum computes the header checksum of an IPv4 header (the checksum
// field is included as it is; zero it first to compute a fresh one).
func IPv4Checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	if len(h)%2 == 1 {
		sum += uint32(h[len(h)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// FixTruncated makes a truncated copy (snaplen) a consistent IP packet: the
// IPv4 total length is set to the copy's length and the header checksum
// recomputed; the IPv6 payload length is set to the copy's length - 40.
// Untruncated copies are left byte-identical. Transport checksums are not
// touched (the payload they cover is gone). The fix is idempotent, so
// several sinks may apply it to the same copy.
//
// Why: a raw IPv4 socket with IP_HDRINCL rewrites tot_len and the checksum
// itself, but raw IPv6 and AF_PACKET send the header as given, and a frame
// whose header claims more bytes than it carries is dropped by most
// receivers.
func FixTruncated(p *packet.Packet) {
	if !p.Truncated() {
		return
	}
	d := p.Data
	switch p.Family {
	case 4:
		if len(d) < 20 {
			return
		}
		ihl := int(d[0]&0x0f) * 4
		if ihl < 20 || ihl > len(d) {
			return
		}
		binary.BigEndian.PutUint16(d[2:4], uint16(len(d)))
		d[10], d[11] = 0, 0
		binary.BigEndian.PutUint16(d[10:12], IPv4Checksum(d[:ihl]))
	case 6:
		if len(d) < 40 {
			return
		}
		binary.BigEndian.PutUint16(d[4:6], uint16(len(d)-40))
	}
}
