// Package collect is nfclone's receiving end: a UDP listener that
// decapsulates VXLAN (RFC 7348) and GENEVE (RFC 8926) datagrams and writes
// the inner Ethernet frames to a pcap file or a TAP device that tcpdump,
// Zeek or Suricata attach to.
package collect

import (
	"encoding/binary"
	"errors"
)

// Frame is a decapsulated datagram.
type Frame struct {
	// Kind is "vxlan", "geneve" or "erspan" (the outer tunnel).
	Kind string
	// ERSPAN is the ERSPAN type (1, 2 or 3) of an "erspan" frame.
	ERSPAN uint8
	// VNI is the ERSPAN session id of an "erspan" frame, else the 24-bit
	// virtual network identifier of the innermost
	// tunnel: for VXLAN carried inside GENEVE (a Gateway Load Balancer
	// carrying Traffic Mirroring) the VXLAN VNI.
	VNI uint32
	// OuterVNI is the outer GENEVE VNI when Nested (else VNI).
	OuterVNI uint32
	// Nested says a VXLAN datagram inside the GENEVE payload was decoded
	// down to its inner frame.
	Nested bool
	// Inner is the inner frame (a sub-slice of the datagram): an Ethernet
	// frame, or, when EtherType is not 0, an L3 packet of that type (GENEVE
	// protocol type 0x0800 or 0x86DD) that needs an Ethernet header in front
	// (the collector writes a synthesized one, see PutEthernet).
	Inner     []byte
	EtherType uint16
}

// Kinds of tunnel.
const (
	KindAuto   = "auto"
	KindVXLAN  = "vxlan"
	KindGENEVE = "geneve"
)

// minInner is the shortest inner frame accepted: an Ethernet header.
const minInner = 14

// Decoding errors (all mean: malformed, count and drop).
var (
	ErrShort         = errors.New("collect: datagram shorter than a tunnel header")
	ErrUnknown       = errors.New("collect: neither a VXLAN nor a GENEVE header")
	ErrVXLANFlags    = errors.New("collect: VXLAN header without the I (valid VNI) flag")
	ErrGENEVEVersion = errors.New("collect: GENEVE version is not 0")
	ErrGENEVEProto   = errors.New("collect: GENEVE payload is not Ethernet, IPv4 or IPv6 (protocol type 0x6558, 0x0800, 0x86dd)")
	ErrGENEVEOptions = errors.New("collect: GENEVE options run past the datagram")
	ErrGENEVEOAM     = errors.New("collect: GENEVE control (OAM) packet")
	ErrInnerShort    = errors.New("collect: inner frame shorter than an Ethernet header")
	ErrInnerIPShort  = errors.New("collect: inner IP packet shorter than an IP header")
	ErrKind          = errors.New("collect: unknown tunnel kind")
)

const (
	etherTypeTEB  = 0x6558
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100
	vxlanPort     = 4789
)

// SynthSrcMAC and SynthDstMAC are the addresses of the Ethernet header the
// collector writes in front of L3 inner packets: the same as nfclone's
// tunnel targets give L3 copies (sink.DefaultTunnelSrcMAC/DstMAC).
var (
	SynthSrcMAC = [6]byte{0x02, 0x4e, 0x43, 0x00, 0x00, 0x01}
	SynthDstMAC = [6]byte{0x02, 0x4e, 0x43, 0x00, 0x00, 0x02}
)

// PutEthernet writes the synthesized Ethernet header for an L3 packet of
// ethertype et into h[:14].
func PutEthernet(h []byte, et uint16) {
	copy(h[0:6], SynthDstMAC[:])
	copy(h[6:12], SynthSrcMAC[:])
	binary.BigEndian.PutUint16(h[12:14], et)
}

func geneveProto(p uint16) bool {
	return p == etherTypeTEB || p == etherTypeIPv4 || p == etherTypeIPv6
}

// Decode decapsulates a UDP payload, telling VXLAN from GENEVE by the
// header: a GENEVE header has version 0 and protocol type 0x6558 (or
// 0x0800, 0x86dd) in bytes 2–3, where a VXLAN header has reserved bits that
// are zero; anything else with the VXLAN I flag is VXLAN. (The UDP port is not needed: the two are
// unambiguous for conforming senders.)
func Decode(b []byte) (Frame, error) {
	return DecodeKind(b, KindAuto)
}

// DecodeKind decapsulates a UDP payload of the given kind ("auto", "" =
// auto, "vxlan", "geneve"), or a GRE packet ("erspan"). Inner aliases b.
func DecodeKind(b []byte, kind string) (Frame, error) {
	if kind == KindERSPAN {
		return DecodeERSPAN(b)
	}
	if len(b) < 8 {
		return Frame{}, ErrShort
	}
	switch kind {
	case "", KindAuto:
		if b[0]>>6 == 0 && geneveProto(binary.BigEndian.Uint16(b[2:4])) {
			return decodeGENEVE(b)
		}
		if b[0]&0x08 != 0 {
			return decodeVXLAN(b)
		}
		return Frame{}, ErrUnknown
	case KindVXLAN:
		return decodeVXLAN(b)
	case KindGENEVE:
		return decodeGENEVE(b)
	}
	return Frame{}, ErrKind
}

// decodeVXLAN: flags(8: I = 0x08) reserved(24) VNI(24) reserved(8). The
// reserved bits are ignored on receipt (RFC 7348 §5).
func decodeVXLAN(b []byte) (Frame, error) {
	if b[0]&0x08 == 0 {
		return Frame{}, ErrVXLANFlags
	}
	f := Frame{Kind: KindVXLAN, VNI: binary.BigEndian.Uint32(b[4:8]) >> 8, Inner: b[8:]}
	f.OuterVNI = f.VNI
	if len(f.Inner) < minInner {
		return Frame{}, ErrInnerShort
	}
	return f, nil
}

// decodeGENEVE: ver(2) optlen(6, in 4-byte words) O(1) C(1) rsvd(6)
// protocol(16) VNI(24) reserved(8) options(optlen*4). The options (a
// Gateway Load Balancer adds 32 bytes of TLVs) are skipped. The payload is
// an Ethernet frame (0x6558) or an IPv4/IPv6 packet (0x0800/0x86dd: a
// Gateway Load Balancer sends IP without Ethernet); either carrying a UDP
// datagram to port 4789 with a valid VXLAN header (Traffic Mirroring
// through a Gateway Load Balancer) is decoded down to the VXLAN's inner
// frame.
func decodeGENEVE(b []byte) (Frame, error) {
	if b[0]>>6 != 0 {
		return Frame{}, ErrGENEVEVersion
	}
	proto := binary.BigEndian.Uint16(b[2:4])
	if !geneveProto(proto) {
		return Frame{}, ErrGENEVEProto
	}
	if b[1]&0x80 != 0 {
		// Control messages are for the tunnel endpoints, not the tenant
		// (RFC 8926 §3.4); a mirror never sends them.
		return Frame{}, ErrGENEVEOAM
	}
	hl := 8 + int(b[0]&0x3f)*4
	if hl > len(b) {
		return Frame{}, ErrGENEVEOptions
	}
	vni := binary.BigEndian.Uint32(b[4:8]) >> 8
	f := Frame{Kind: KindGENEVE, VNI: vni, OuterVNI: vni, Inner: b[hl:]}
	var ip []byte
	switch proto {
	case etherTypeTEB:
		if len(f.Inner) < minInner {
			return Frame{}, ErrInnerShort
		}
		ip = ethPayloadIP(f.Inner)
	default:
		f.EtherType = proto
		if !ipHeaderFits(f.Inner, proto) {
			return Frame{}, ErrInnerIPShort
		}
		ip = f.Inner
	}
	if v := vxlanInIP(ip); v != nil {
		if in, err := decodeVXLAN(v); err == nil {
			f.Nested, f.VNI, f.Inner, f.EtherType = true, in.VNI, in.Inner, 0
		}
	}
	return f, nil
}

// ipHeaderFits reports whether b starts with a whole IP header of the
// ethertype's version.
func ipHeaderFits(b []byte, et uint16) bool {
	switch et {
	case etherTypeIPv4:
		return len(b) >= 20 && b[0]>>4 == 4 && int(b[0]&0x0f)*4 >= 20 && int(b[0]&0x0f)*4 <= len(b)
	case etherTypeIPv6:
		return len(b) >= 40 && b[0]>>4 == 6
	}
	return false
}

// ethPayloadIP returns the IPv4/IPv6 packet of an Ethernet frame (one VLAN
// tag skipped), or nil.
func ethPayloadIP(e []byte) []byte {
	et, off := binary.BigEndian.Uint16(e[12:14]), 14
	if et == etherTypeVLAN && len(e) >= 18 {
		et, off = binary.BigEndian.Uint16(e[16:18]), 18
	}
	if (et == etherTypeIPv4 || et == etherTypeIPv6) && ipHeaderFits(e[off:], et) {
		return e[off:]
	}
	return nil
}

// vxlanInIP returns the UDP payload of ip when ip is an unfragmented UDP
// datagram to port 4789 whose UDP length reaches exactly to the end of ip
// (so the inner frame is the datagram's tail); else nil.
func vxlanInIP(ip []byte) []byte {
	if len(ip) == 0 {
		return nil
	}
	var udp []byte
	switch ip[0] >> 4 {
	case 4:
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != 17 || binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
			return nil // not UDP, or a fragment
		}
		udp = ip[ihl:]
	case 6:
		if ip[6] != 17 {
			return nil // not UDP (extension headers are not followed)
		}
		udp = ip[40:]
	default:
		return nil
	}
	if len(udp) < 8+8 || binary.BigEndian.Uint16(udp[2:4]) != vxlanPort || int(binary.BigEndian.Uint16(udp[4:6])) != len(udp) {
		return nil
	}
	return udp[8:]
}
