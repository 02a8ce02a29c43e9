package gso

import (
	"encoding/binary"
	"math/bits"
)

// Sum adds b to initial as a sequence of big-endian 16-bit words (RFC 1071),
// without folding: the result is a running one's complement sum that can be
// passed as initial to the next call. Chaining is only exact when every part
// but the last has an even length (an odd length is padded with a zero
// byte, as the last part of a checksummed range is).
//
// Eight bytes are added at a time with end-around carry, in two
// independent carry chains so that the additions overlap; 2^64 and 2^16
// are both congruent to 1 modulo 0xffff, so the 64-bit sums fold to the
// 16-bit one. The words are loaded little-endian, which needs no byte swap
// on the common machines: the one's complement sum commutes with swapping
// the bytes of every word (RFC 1071 section 2(B)), so the folded sum is
// swapped once at the end.
func Sum(b []byte, initial uint64) uint64 {
	var a0, a1, c0, c1 uint64
	for len(b) >= 64 {
		a0, c0 = bits.Add64(a0, binary.LittleEndian.Uint64(b[0:8]), c0)
		a1, c1 = bits.Add64(a1, binary.LittleEndian.Uint64(b[8:16]), c1)
		a0, c0 = bits.Add64(a0, binary.LittleEndian.Uint64(b[16:24]), c0)
		a1, c1 = bits.Add64(a1, binary.LittleEndian.Uint64(b[24:32]), c1)
		a0, c0 = bits.Add64(a0, binary.LittleEndian.Uint64(b[32:40]), c0)
		a1, c1 = bits.Add64(a1, binary.LittleEndian.Uint64(b[40:48]), c1)
		a0, c0 = bits.Add64(a0, binary.LittleEndian.Uint64(b[48:56]), c0)
		a1, c1 = bits.Add64(a1, binary.LittleEndian.Uint64(b[56:64]), c1)
		b = b[64:]
	}
	for len(b) >= 8 {
		a0, c0 = bits.Add64(a0, binary.LittleEndian.Uint64(b[0:8]), c0)
		b = b[8:]
	}
	if len(b) >= 4 {
		a1, c1 = bits.Add64(a1, uint64(binary.LittleEndian.Uint32(b[0:4])), c1)
		b = b[4:]
	}
	if len(b) >= 2 {
		a0, c0 = bits.Add64(a0, uint64(binary.LittleEndian.Uint16(b[0:2])), c0)
		b = b[2:]
	}
	if len(b) == 1 {
		// The high byte of a big-endian word, the low byte swapped.
		a1, c1 = bits.Add64(a1, uint64(b[0]), c1)
	}
	s, c := bits.Add64(a0, a1, 0)
	s, c = bits.Add64(s, c0, c)
	s, c = bits.Add64(s, c1, c)
	// The end-around carry: s+c overflows only when s is all ones, and
	// then the second addition cannot overflow again.
	s, c = bits.Add64(s, 0, c)
	s += c
	r, c := bits.Add64(initial, uint64(bits.ReverseBytes16(Fold(s))), 0)
	return r + c
}

// Fold reduces a running sum from Sum to the 16-bit one's complement sum,
// not inverted. A sum of anything but zeros never folds to 0x0000 (zero is
// then represented as 0xffff), the same convention as the kernel's
// csum_fold.
func Fold(sum uint64) uint16 {
	hi, lo := sum>>32, sum&0xffffffff
	s := hi + lo // at most 33 bits
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return uint16(s)
}

// Checksum is the Internet checksum of b added to initial: the inverted
// folded sum, ready to store in a header whose checksum field was zero
// when summed.
func Checksum(b []byte, initial uint64) uint16 {
	return ^Fold(Sum(b, initial))
}

// PseudoHeaderSum4 is the running sum of the IPv4 pseudo-header (RFC 793,
// RFC 768): source and destination address (4 bytes each), the protocol
// and the transport length. src and dst must hold at least 4 bytes.
func PseudoHeaderSum4(src, dst []byte, proto uint8, length int) uint64 {
	return uint64(binary.BigEndian.Uint32(src[:4])) +
		uint64(binary.BigEndian.Uint32(dst[:4])) +
		uint64(proto) + uint64(uint16(length))
}

// PseudoHeaderSum6 is the running sum of the IPv6 pseudo-header (RFC 8200
// 8.1): source and final destination address (16 bytes each), the 32-bit
// upper-layer length and the next header value. src and dst must hold at
// least 16 bytes.
func PseudoHeaderSum6(src, dst []byte, proto uint8, length int) uint64 {
	s := Sum(src[:16], uint64(proto)+uint64(uint32(length)))
	return Sum(dst[:16], s)
}
