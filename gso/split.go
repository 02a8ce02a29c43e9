package gso

import "encoding/binary"

// MaxPacket is the largest IP packet without a jumbogram: an IPv6 header and
// the largest payload length (an IPv4 total length is at most 65535).
const MaxPacket = 40 + 65535

// MaxHeaders is the header budget MaxSegments assumes: IP header with
// options or extension headers, plus the TCP or UDP header. 256 bytes hold
// IPv4 with 40 bytes of options and TCP with 40 bytes of options twice
// over; only IPv6 packets with long extension header chains exceed it.
const MaxHeaders = 256

// MaxSegments is the most packets Split produces for one packet of at most
// MaxPacket bytes whose headers fit in MaxHeaders, cut for mtu: the length
// to give out. Beyond it Split returns ErrTooMany rather than writing past
// out.
func MaxSegments(mtu int) int {
	per := (mtu - MaxHeaders - 8) &^ 7 // payload per packet; 8 covers an IPv6 fragment header
	if per < 8 {
		per = 8
	}
	return (MaxPacket + per - 1) / per
}

// Split cuts pkt into packets of at most mtu bytes, written into out[i]
// (resliced from out[i][:0]; each needs a capacity of at least mtu), and
// returns how many it wrote. When len(pkt) <= mtu it returns 0, nil: the
// caller sends pkt itself (after FixPartial). Bytes after the IP length
// are not copied.
//
//   - TCP over IPv4 or IPv6, GSO flag or not (TCP larger than the MTU can
//     only be a GSO/GRO super-packet): segments carrying at most
//     mtu - IP headers - TCP header (with options) bytes, with the sequence
//     number advanced, FIN and PSH on the last segment only, CWR on the
//     first only, IPv4 total length, ID (original + i) and header checksum,
//     IPv6 payload length, and a full TCP checksum on each (the
//     super-packet's own is ignored).
//   - UDP with f&GSO: UDP segmentation, datagrams of
//     mtu - IP headers - 8 bytes each with their own length and checksum
//     (an IPv4 checksum of zero stays zero). NFQUEUE does not pass the
//     sender's segment size (gso_size), so when it was smaller than the
//     mtu allows, the copies' datagram boundaries differ from those the
//     sender made.
//   - anything else, and any fragment: IP fragmentation of the datagram,
//     after completing its L4 checksum (FixPartial, in place in pkt).
//     IPv4 only with DF clear (else ErrDontFragment); all options on the
//     first fragment, the copied ones on the others; an existing offset and
//     MF are kept. IPv6 gets a fragment header with identification fragID
//     after the unfragmentable part (or keeps the one it has, with its
//     identification and offset).
//
// Errors wrap ErrMalformed, ErrTruncated, ErrDontFragment, ErrMTU,
// ErrTooMany or ErrShortBuffer; the contents of out are then undefined.
func Split(pkt []byte, mtu int, f Flags, fragID uint32, out [][]byte) (int, error) {
	if len(pkt) <= mtu {
		return 0, nil
	}
	l, err := parse(pkt)
	if err != nil {
		return 0, err
	}
	pkt = pkt[:l.ipLen]
	if len(pkt) <= mtu {
		// Trailing bytes beyond the IP length made pkt look too big.
		FixPartial(pkt, f)
		n, err := copyOut(pkt, out)
		if err == nil && !l.v6 {
			putIPv4Checksum(out[0][:l.l4Off])
		}
		return n, err
	}
	if !l.frag {
		switch {
		case l.proto == protoTCP:
			return splitTCP(pkt, &l, mtu, out)
		case l.proto == protoUDP && f&GSO != 0:
			return splitUDP(pkt, &l, mtu, out)
		}
		FixPartial(pkt, f)
	}
	if l.v6 {
		return fragment6(pkt, &l, mtu, fragID, out)
	}
	return fragment4(pkt, &l, mtu, out)
}

// copyOut writes pkt as the only output.
func copyOut(pkt []byte, out [][]byte) (int, error) {
	if len(out) < 1 {
		return 0, errTooMany
	}
	if cap(out[0]) < len(pkt) {
		return 0, errShortBuffer
	}
	out[0] = append(out[0][:0], pkt...)
	return 1, nil
}

// checkOut checks that out has n buffers of capacity at least size.
func checkOut(out [][]byte, n, size int) error {
	if n > len(out) {
		return errTooMany
	}
	for _, b := range out[:n] {
		if cap(b) < size {
			return errShortBuffer
		}
	}
	return nil
}

// setIPLength writes the length of the packet seg into its IP header and,
// for IPv4, the ID and header checksum.
func setIPLength(seg []byte, l *layout, id uint16) {
	if l.v6 {
		binary.BigEndian.PutUint16(seg[4:6], uint16(len(seg)-40))
		return
	}
	binary.BigEndian.PutUint16(seg[2:4], uint16(len(seg)))
	binary.BigEndian.PutUint16(seg[4:6], id)
	putIPv4Checksum(seg[:l.l4Off])
}

// splitTCP segments a TCP super-packet.
func splitTCP(pkt []byte, l *layout, mtu int, out [][]byte) (int, error) {
	if l.l4Off+20 > len(pkt) {
		return 0, errTCPHdr
	}
	hdrLen := l.l4Off + int(pkt[l.l4Off+12]>>4)*4
	if hdrLen < l.l4Off+20 || hdrLen > len(pkt) {
		return 0, errTCPHdr
	}
	mss := mtu - hdrLen
	if mss < 8 {
		return 0, errMTUSegment
	}
	payload := pkt[hdrLen:]
	n := (len(payload) + mss - 1) / mss
	if err := checkOut(out, n, mtu); err != nil {
		return 0, err
	}
	seq := binary.BigEndian.Uint32(pkt[l.l4Off+4:])
	flags := pkt[l.l4Off+13]
	id := binary.BigEndian.Uint16(pkt[4:6])
	base := pseudoSum(pkt, l, 0) // the length is added per segment
	for i := 0; i < n; i++ {
		start := i * mss
		chunk := payload[start:min(start+mss, len(payload))]
		seg := append(append(out[i][:0], pkt[:hdrLen]...), chunk...)
		th := seg[l.l4Off:]
		binary.BigEndian.PutUint32(th[4:8], seq+uint32(start))
		fl := flags
		if i != n-1 {
			fl &^= tcpFIN | tcpPSH
		}
		if i != 0 {
			fl &^= tcpCWR
		}
		th[13] = fl
		th[16], th[17] = 0, 0
		binary.BigEndian.PutUint16(th[16:18], Checksum(th, base+uint64(len(th))))
		setIPLength(seg, l, id+uint16(i))
		out[i] = seg
	}
	return n, nil
}

// splitUDP segments a UDP GSO super-packet.
func splitUDP(pkt []byte, l *layout, mtu int, out [][]byte) (int, error) {
	hdrLen := l.l4Off + 8
	if hdrLen > len(pkt) {
		return 0, errUDPHdr
	}
	size := mtu - hdrLen
	if size < 8 {
		return 0, errMTUSegment
	}
	payload := pkt[hdrLen:]
	n := (len(payload) + size - 1) / size
	if err := checkOut(out, n, mtu); err != nil {
		return 0, err
	}
	noSum := !l.v6 && binary.BigEndian.Uint16(pkt[l.l4Off+6:]) == 0
	id := binary.BigEndian.Uint16(pkt[4:6])
	base := pseudoSum(pkt, l, 0)
	for i := 0; i < n; i++ {
		start := i * size
		chunk := payload[start:min(start+size, len(payload))]
		seg := append(append(out[i][:0], pkt[:hdrLen]...), chunk...)
		uh := seg[l.l4Off:]
		binary.BigEndian.PutUint16(uh[4:6], uint16(len(uh)))
		uh[6], uh[7] = 0, 0
		if !noSum {
			sum := Checksum(uh, base+uint64(len(uh)))
			if sum == 0 {
				sum = 0xffff
			}
			binary.BigEndian.PutUint16(uh[6:8], sum)
		}
		setIPLength(seg, l, id+uint16(i))
		out[i] = seg
	}
	return n, nil
}

// fragment4 fragments an IPv4 datagram (or refragments a fragment).
func fragment4(pkt []byte, l *layout, mtu int, out [][]byte) (int, error) {
	fo := binary.BigEndian.Uint16(pkt[6:8])
	if fo&ipv4DF != 0 {
		return 0, errDF
	}
	ihl := l.l4Off
	later, err := copiedOptionsLen(pkt[20:ihl])
	if err != nil {
		return 0, err
	}
	later += 20
	first := (mtu - ihl) &^ 7
	rest := (mtu - later) &^ 7
	if first < 8 {
		return 0, errMTUFragment
	}
	payload := pkt[ihl:]
	n := 1 + (len(payload)-first+rest-1)/rest // len(payload) > first: pkt is larger than mtu
	baseOff := int(fo&ipv4OffsetMask) * 8
	if baseOff+first+(n-2)*rest > ipv4OffsetMask*8 {
		return 0, errFragOffset
	}
	if err := checkOut(out, n, mtu); err != nil {
		return 0, err
	}
	keep := fo &^ (ipv4MF | ipv4OffsetMask) // the reserved bit
	start := 0
	for i := 0; i < n; i++ {
		var seg []byte
		size := rest
		if i == 0 {
			size = first
			seg = append(out[i][:0], pkt[:ihl]...)
		} else {
			seg = append(out[i][:0], pkt[:20]...)
			seg = appendCopiedOptions(seg, pkt[20:ihl])
			seg[0] = 0x40 | byte(len(seg)/4)
		}
		hl := len(seg)
		end := min(start+size, len(payload))
		seg = append(seg, payload[start:end]...)
		v := keep | uint16((baseOff+start)/8)
		if end < len(payload) || fo&ipv4MF != 0 {
			v |= ipv4MF
		}
		binary.BigEndian.PutUint16(seg[6:8], v)
		binary.BigEndian.PutUint16(seg[2:4], uint16(len(seg)))
		putIPv4Checksum(seg[:hl])
		out[i] = seg
		start = end
	}
	return n, nil
}

// copiedOptionsLen checks the IPv4 options opts and returns the length of
// those with the copied bit, padded to a multiple of 4.
func copiedOptionsLen(opts []byte) (int, error) {
	n := 0
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0: // end of options
			return (n + 3) &^ 3, nil
		case 1: // no operation
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return 0, errOptions
		}
		if opts[i]&0x80 != 0 {
			n += int(opts[i+1])
		}
		i += int(opts[i+1])
	}
	return (n + 3) &^ 3, nil
}

// appendCopiedOptions appends the options of opts (checked by
// copiedOptionsLen) that have the copied bit, padded with end-of-options
// bytes to a multiple of 4.
func appendCopiedOptions(dst, opts []byte) []byte {
	n := 0
	for i := 0; i < len(opts) && opts[i] != 0; {
		if opts[i] == 1 {
			i++
			continue
		}
		ol := int(opts[i+1])
		if opts[i]&0x80 != 0 {
			dst = append(dst, opts[i:i+ol]...)
			n += ol
		}
		i += ol
	}
	for ; n%4 != 0; n++ {
		dst = append(dst, 0)
	}
	return dst
}

// fragment6 fragments an IPv6 packet: a fragment header after the
// unfragmentable part, or, when pkt is a fragment, its own fragment header
// with new offsets.
func fragment6(pkt []byte, l *layout, mtu int, fragID uint32, out [][]byte) (int, error) {
	hdr := l.unfrag
	var (
		nh      byte
		id      = fragID
		baseOff int
		more    bool
		payload []byte
	)
	if l.frag {
		fh := pkt[hdr : hdr+8]
		nh = fh[0]
		v := binary.BigEndian.Uint16(fh[2:4])
		baseOff = int(v &^ 7)
		more = v&1 != 0
		id = binary.BigEndian.Uint32(fh[4:8])
		payload = pkt[hdr+8:]
	} else {
		nh = pkt[l.nextOff]
		payload = pkt[hdr:]
	}
	size := (mtu - hdr - 8) &^ 7
	if size < 8 {
		return 0, errMTUFragment
	}
	n := (len(payload) + size - 1) / size
	if baseOff+(n-1)*size > 0xfff8 {
		return 0, errFragOffset
	}
	if err := checkOut(out, n, mtu); err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		start := i * size
		end := min(start+size, len(payload))
		seg := append(out[i][:0], pkt[:hdr]...)
		if !l.frag {
			seg[l.nextOff] = protoFragment
		}
		v := uint16(baseOff + start)
		if end < len(payload) || more {
			v |= 1
		}
		seg = append(seg, nh, 0, byte(v>>8), byte(v), byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
		seg = append(seg, payload[start:end]...)
		binary.BigEndian.PutUint16(seg[4:6], uint16(len(seg)-40))
		out[i] = seg
	}
	return n, nil
}
