// Package gso turns the packets the kernel hands nfclone into the packets
// a wire would carry.
//
// nfclone reads packets from NFQUEUE and NFLOG as the stack holds them,
// which is not always as they will leave the host:
//
//   - GSO and GRO super-packets. A TCP sender with TSO or GSO builds
//     segments up to 64 KiB that the NIC (or the stack, just before the
//     driver) cuts at the MSS; GRO merges received segments into one skb
//     the same way; UDP_SEGMENT (UDP GSO) sends many datagrams as one. A
//     copy re-sent as is exceeds the MTU of the target and is dropped.
//   - CHECKSUM_PARTIAL. When the NIC finishes the L4 checksum, the stack
//     leaves in the TCP or UDP checksum field only the folded pseudo-header
//     sum (th->check = ~csum_tcpudp_magic(saddr, daddr, len, proto, 0)); a
//     copy with that field is corrupt on any other path. NFQUEUE says so
//     (NFQA_SKB_CSUMNOTREADY); NFLOG does not, so the partial form is
//     recognised by its value.
//   - Reassembled datagrams. Conntrack defragments IP before the hooks
//     nfclone uses, so a copy can be a datagram larger than the MTU that
//     no longer carries GSO state; it must be fragmented again.
//
// Checksum, Sum, Fold and the pseudo-header sums are the Internet checksum
// (RFC 1071), eight bytes at a time. FixPartial completes an unfinished
// checksum in place. Split cuts a packet into MTU-sized packets: TCP
// segmentation, UDP segmentation, or IPv4/IPv6 fragmentation, into buffers
// the caller owns; MaxSegments sizes them. Nothing allocates per packet,
// and malformed input returns an error instead of panicking.
//
// Packets are L3: they begin with the IPv4 or IPv6 header, as NFQUEUE and
// NFLOG deliver them.
package gso
