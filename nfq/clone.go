package nfq

import "encoding/binary"

// restoreTTL adds one to the TTL (IPv4, with the header checksum updated)
// or the hop limit (IPv6) of b: the kernel's dup took one off the clone
// of a packet it copied in prerouting or input.
func restoreTTL(b []byte) {
	if len(b) < 1 {
		return
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return
		}
		b[8]++
		// RFC 1624: HC' = ~(~HC + ~m + m'), m the 16-bit word holding the TTL.
		old := uint32(b[8]-1)<<8 | uint32(b[9])
		cur := uint32(b[8])<<8 | uint32(b[9])
		sum := uint32(^binary.BigEndian.Uint16(b[10:12])) + (^old & 0xffff) + cur
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(b[10:12], ^uint16(sum))
	case 6:
		if len(b) < 40 {
			return
		}
		b[7]++
	}
}

// clearDF clears the DF bit of an IPv4 header and updates its checksum
// (RFC 1624): the kernel's dup set it on the clone of a packet that had it
// clear.
func clearDF(b []byte) {
	if len(b) < 20 || b[0]>>4 != 4 || b[6]&0x40 == 0 {
		return
	}
	old := uint32(b[6])<<8 | uint32(b[7])
	b[6] &^= 0x40
	cur := uint32(b[6])<<8 | uint32(b[7])
	sum := uint32(^binary.BigEndian.Uint16(b[10:12])) + (^old & 0xffff) + cur
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[10:12], ^uint16(sum))
}
