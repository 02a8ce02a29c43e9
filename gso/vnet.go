package gso

import "encoding/binary"

// VirtioNetHdrLen is the length of struct virtio_net_hdr, the header a
// packet socket with PACKET_VNET_HDR takes in front of every frame.
const VirtioNetHdrLen = 10

// virtio_net_hdr flags and GSO types (include/uapi/linux/virtio_net.h).
const (
	vnetNeedsCsum = 1
	vnetGSOTCPv4  = 1
	vnetGSOTCPv6  = 4
	vnetGSOECN    = 0x80
)

// Offload is how the kernel is to cut and checksum a TCP super-packet that
// is handed to it whole: the fields of a virtio_net_hdr, offsets relative
// to the IP header.
type Offload struct {
	// Type is the GSO type (TCPv4 or TCPv6, with the ECN bit when the
	// packet has CWR set); 0 for none.
	Type uint8
	// Size is the payload of each segment (the MSS for the MTU).
	Size uint16
	// HdrLen is the length of the IP and TCP headers.
	HdrLen uint16
	// CsumStart and CsumOffset say where the checksum the kernel completes
	// is: CsumStart is the TCP header, CsumOffset 16.
	CsumStart, CsumOffset uint16
}

// PrepareTCP readies a TCP super-packet larger than mtu to be cut by the
// kernel (software GSO, or the NIC's TSO) instead of Split: it puts the
// partial form in the TCP checksum field (the folded pseudo-header sum
// over the whole TCP length, as the kernel's own TCP leaves it for GSO)
// and returns the Offload that says how to cut it into segments of at
// most mtu bytes. ok is false — and pkt untouched — for anything else:
// not TCP, a fragment, a truncated or malformed packet, not larger than
// mtu, or an mtu that leaves no room for payload.
func PrepareTCP(pkt []byte, mtu int) (o Offload, ok bool) {
	if len(pkt) <= mtu {
		return o, false
	}
	l, err := parse(pkt)
	if err != nil || l.frag || l.proto != protoTCP || l.ipLen <= mtu || l.ipLen > 0xffff {
		return o, false
	}
	pkt = pkt[:l.ipLen]
	if l.l4Off+20 > len(pkt) {
		return o, false
	}
	hdrLen := l.l4Off + int(pkt[l.l4Off+12]>>4)*4
	if hdrLen < l.l4Off+20 || hdrLen >= len(pkt) {
		return o, false
	}
	mss := mtu - hdrLen
	if mss < 8 {
		return o, false
	}
	o = Offload{Type: vnetGSOTCPv4, Size: uint16(mss), HdrLen: uint16(hdrLen), CsumStart: uint16(l.l4Off), CsumOffset: 16}
	if l.v6 {
		o.Type = vnetGSOTCPv6
	}
	if pkt[l.l4Off+13]&tcpCWR != 0 {
		o.Type |= vnetGSOECN
	}
	binary.BigEndian.PutUint16(pkt[l.l4Off+16:], Fold(pseudoSum(pkt, &l, len(pkt)-l.l4Off)))
	return o, true
}

// PutVirtioNetHdr writes the virtio_net_hdr for o into h[:VirtioNetHdrLen]
// (native byte order, as a packet socket reads it), with the offsets moved
// by linkHdr bytes (the frame's link-layer header in front of the IP
// header). A zero Offload writes the header of a packet sent as it is.
func PutVirtioNetHdr(h []byte, o Offload, linkHdr int) {
	clear(h[:VirtioNetHdrLen])
	if o.Type == 0 {
		return
	}
	h[0] = vnetNeedsCsum
	h[1] = o.Type
	ne := binary.NativeEndian
	ne.PutUint16(h[2:], o.HdrLen+uint16(linkHdr))
	ne.PutUint16(h[4:], o.Size)
	ne.PutUint16(h[6:], o.CsumStart+uint16(linkHdr))
	ne.PutUint16(h[8:], o.CsumOffset)
}
