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
	// Kind is "vxlan" or "geneve".
	Kind string
	// VNI is the 24-bit virtual network identifier.
	VNI uint32
	// Inner is the inner Ethernet frame (a sub-slice of the datagram).
	Inner []byte
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
	ErrGENEVEProto   = errors.New("collect: GENEVE payload is not Ethernet (protocol type 0x6558)")
	ErrGENEVEOptions = errors.New("collect: GENEVE options run past the datagram")
	ErrGENEVEOAM     = errors.New("collect: GENEVE control (OAM) packet")
	ErrInnerShort    = errors.New("collect: inner frame shorter than an Ethernet header")
	ErrKind          = errors.New("collect: unknown tunnel kind")
)

const etherTypeTEB = 0x6558

// Decode decapsulates a UDP payload, telling VXLAN from GENEVE by the
// header: a GENEVE header has version 0 and protocol type 0x6558 in bytes
// 2–3, where a VXLAN header has reserved bits that are zero; anything else
// with the VXLAN I flag is VXLAN. (The UDP port is not needed: the two are
// unambiguous for conforming senders.)
func Decode(b []byte) (Frame, error) {
	return DecodeKind(b, KindAuto)
}

// DecodeKind decapsulates a UDP payload of the given kind ("auto", "" =
// auto, "vxlan", "geneve"). Inner aliases b.
func DecodeKind(b []byte, kind string) (Frame, error) {
	if len(b) < 8 {
		return Frame{}, ErrShort
	}
	switch kind {
	case "", KindAuto:
		if b[0]>>6 == 0 && binary.BigEndian.Uint16(b[2:4]) == etherTypeTEB {
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
	if len(f.Inner) < minInner {
		return Frame{}, ErrInnerShort
	}
	return f, nil
}

// decodeGENEVE: ver(2) optlen(6, in 4-byte words) O(1) C(1) rsvd(6)
// protocol(16) VNI(24) reserved(8) options(optlen*4).
func decodeGENEVE(b []byte) (Frame, error) {
	if b[0]>>6 != 0 {
		return Frame{}, ErrGENEVEVersion
	}
	if binary.BigEndian.Uint16(b[2:4]) != etherTypeTEB {
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
	f := Frame{Kind: KindGENEVE, VNI: binary.BigEndian.Uint32(b[4:8]) >> 8, Inner: b[hl:]}
	if len(f.Inner) < minInner {
		return Frame{}, ErrInnerShort
	}
	return f, nil
}
