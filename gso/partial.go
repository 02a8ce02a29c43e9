package gso

import "encoding/binary"

// Flags is what is known about a packet's offload state. CsumPartial and
// GSO have the bit values of NFQA_SKB_CSUMNOTREADY and NFQA_SKB_GSO in
// NFQUEUE's NFQA_SKB_INFO attribute, so Flags(info&3)|Known converts it.
type Flags uint8

const (
	// CsumPartial: the kernel said the L4 checksum is not finished
	// (NFQA_SKB_CSUMNOTREADY, CHECKSUM_PARTIAL).
	CsumPartial Flags = 1 << iota
	// GSO: the kernel said the packet is a GSO super-packet (NFQA_SKB_GSO).
	// For UDP it selects UDP segmentation over IP fragmentation.
	GSO
	// Known: the flags come from the kernel (NFQUEUE). Without it (NFLOG)
	// nothing is known, and FixPartial detects partial checksums by their
	// value. CsumPartial and GSO are honoured whether Known is set or not.
	Known
)

// FixPartial completes the TCP or UDP checksum of pkt in place when it is
// unfinished: when f has CsumPartial, or when f lacks Known and the
// checksum field holds the partial form, the folded (not inverted)
// pseudo-header sum that the kernel leaves for the device to finish. It
// reports whether pkt changed.
//
// A valid packet whose field happens to equal the partial form gets the
// same value back, so detection never damages a valid packet; a packet
// with a bad checksum that is not the partial form keeps it. A UDP
// checksum of zero over IPv4 means none and stays; a computed UDP checksum
// of zero is written as 0xffff. Only unfragmented TCP and UDP over IPv4 or
// IPv6 (hop-by-hop, routing and destination options headers walked) are
// touched; fragments, truncated copies (IP length beyond len(pkt)) and
// malformed packets are left alone.
func FixPartial(pkt []byte, f Flags) bool {
	if f&(CsumPartial|Known) == Known {
		return false
	}
	l, err := parse(pkt)
	if err != nil || l.frag {
		return false
	}
	return fixPartial(pkt[:l.ipLen], &l, f&CsumPartial != 0)
}

// fixPartial is FixPartial on a parsed packet; force says the kernel
// marked the checksum unfinished.
func fixPartial(pkt []byte, l *layout, force bool) bool {
	var field int
	switch l.proto {
	case protoTCP:
		field = l.l4Off + 16
	case protoUDP:
		field = l.l4Off + 6
	default:
		return false
	}
	if field+2 > len(pkt) {
		return false
	}
	old := binary.BigEndian.Uint16(pkt[field:])
	if old == 0 && l.proto == protoUDP && !l.v6 {
		return false
	}
	l4Len := len(pkt) - l.l4Off
	pseudo := pseudoSum(pkt, l, l4Len)
	if !force {
		// 0x0000 and 0xffff are both zero in one's complement.
		partial := Fold(pseudo)
		if old != partial && !(old == 0 && partial == 0xffff) && !(old == 0xffff && partial == 0) {
			return false
		}
	}
	pkt[field], pkt[field+1] = 0, 0
	sum := Checksum(pkt[l.l4Off:], pseudo)
	if sum == 0 && l.proto == protoUDP {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[field:], sum)
	return sum != old
}
