package gso

import "encoding/binary"

// IP protocol numbers and IPv6 extension headers the package looks at.
const (
	protoHopByHop = 0
	protoTCP      = 6
	protoUDP      = 17
	protoRouting  = 43
	protoFragment = 44
	protoDestOpts = 60
)

// IPv4 flag and offset bits (bytes 6-7 of the header).
const (
	ipv4DF         = 0x4000
	ipv4MF         = 0x2000
	ipv4OffsetMask = 0x1fff
)

// TCP flags (byte 13 of the header).
const (
	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpCWR = 0x80
)

// layout is where the headers of one IP packet are, found once by parse;
// nothing after it looks at an unchecked offset.
type layout struct {
	v6    bool
	ipLen int   // the length the IP header claims: IPv4 total length, IPv6 40 + payload length
	l4Off int   // where the transport header starts (after IPv4 options, IPv6 extension headers)
	proto uint8 // the transport protocol (for IPv6, the header after the walked extension headers)
	frag  bool  // pkt is a fragment: an IPv4 MF or offset, an IPv6 fragment header
	// dstOff is where the pseudo-header's destination address is: the IP
	// destination, or the final destination of an IPv4 source route or an
	// IPv6 routing header with addresses left.
	dstOff int
	// IPv6 only: unfrag is where the fragmentable part starts (after the
	// IPv6 header, hop-by-hop and routing headers and the destination
	// options before a routing header), nextOff the byte that names the
	// header found there. With a fragment header, unfrag is its offset.
	unfrag  int
	nextOff int
}

// parse checks the IP header (and IPv6 extension headers) of pkt. It
// returns errTotLen when the IP length is larger than pkt, with ipLen set.
func parse(pkt []byte) (layout, error) {
	var l layout
	if len(pkt) < 20 {
		return l, errShort
	}
	switch pkt[0] >> 4 {
	case 4:
		ihl := int(pkt[0]&0x0f) * 4
		l.ipLen = int(binary.BigEndian.Uint16(pkt[2:4]))
		if ihl < 20 || ihl > l.ipLen {
			return l, errIHL
		}
		if l.ipLen > len(pkt) {
			return l, errTotLen
		}
		l.l4Off = ihl
		l.proto = pkt[9]
		l.frag = binary.BigEndian.Uint16(pkt[6:8])&(ipv4MF|ipv4OffsetMask) != 0
		l.dstOff = 16
		if off := sourceRouteDst(pkt[20:ihl]); off >= 0 {
			l.dstOff = 20 + off
		}
		return l, nil
	case 6:
		if len(pkt) < 40 {
			return l, errShort
		}
		l.v6 = true
		l.ipLen = 40 + int(binary.BigEndian.Uint16(pkt[4:6]))
		if l.ipLen > len(pkt) {
			return l, errTotLen
		}
		l.dstOff = 24
		return l, walk6(pkt[:l.ipLen], &l)
	default:
		return l, errVersion
	}
}

// walk6 walks the IPv6 extension headers of pkt (cut to its IP length) up
// to the transport header or a fragment header.
func walk6(pkt []byte, l *layout) error {
	nh, off := pkt[6], 40
	l.unfrag, l.nextOff = 40, 6
	for {
		switch nh {
		case protoHopByHop, protoRouting, protoDestOpts:
			if off+8 > len(pkt) {
				return errExtHdr
			}
			n := (int(pkt[off+1]) + 1) * 8
			if off+n > len(pkt) {
				return errExtHdr
			}
			switch nh {
			case protoHopByHop:
				if off != 40 {
					return errHopByHop
				}
				l.unfrag, l.nextOff = off+n, off
			case protoRouting:
				if err := finalDst(pkt[off:off+n], off, l); err != nil {
					return err
				}
				l.unfrag, l.nextOff = off+n, off
			}
			nh = pkt[off]
			off += n
		case protoFragment:
			if off+8 > len(pkt) {
				return errExtHdr
			}
			l.frag = true
			l.unfrag = off
			l.proto = pkt[off]
			l.l4Off = off + 8
			return nil
		default:
			l.proto = nh
			l.l4Off = off
			return nil
		}
	}
}

// finalDst sets l.dstOff to the final destination of a routing header rh
// (at offset off) with segments left: the last address of types 0 and 2,
// the first segment of type 4 (RFC 8200 8.1, RFC 8754).
func finalDst(rh []byte, off int, l *layout) error {
	if rh[3] == 0 {
		return nil
	}
	addrs := (len(rh) - 8) / 16
	if addrs == 0 {
		return errRouting
	}
	switch rh[2] {
	case 0, 2:
		l.dstOff = off + 8 + (addrs-1)*16
	case 4:
		l.dstOff = off + 8
	default:
		return errRouting
	}
	return nil
}

// sourceRouteDst returns the offset in the IPv4 options opts of the final
// destination of a loose or strict source route that has addresses left
// (the pointer within the option): the last address of the option, which
// the pseudo-header uses while the IP destination is only the next hop
// (RFC 791, as Linux does). It returns -1 without one; malformed options
// end the search (fragment4 rejects them).
func sourceRouteDst(opts []byte) int {
	for i := 0; i < len(opts) && opts[i] != 0; {
		if opts[i] == 1 {
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return -1
		}
		n := int(opts[i+1])
		if (opts[i] == 0x83 || opts[i] == 0x89) && n >= 7 && i+2 < len(opts) && int(opts[i+2]) <= n {
			return i + n - 4
		}
		i += n
	}
	return -1
}

// pseudoSum is the running sum of pkt's pseudo-header for a transport
// length of length bytes.
func pseudoSum(pkt []byte, l *layout, length int) uint64 {
	if l.v6 {
		return PseudoHeaderSum6(pkt[8:24], pkt[l.dstOff:l.dstOff+16], l.proto, length)
	}
	return PseudoHeaderSum4(pkt[12:16], pkt[l.dstOff:l.dstOff+4], l.proto, length)
}

// putIPv4Checksum recomputes the header checksum of the IPv4 header h.
func putIPv4Checksum(h []byte) {
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:12], Checksum(h, 0))
}
