package collect

import (
	"encoding/binary"
	"errors"
)

// KindERSPAN is ERSPAN over GRE (IP protocol 47), read from a raw socket.
const KindERSPAN = "erspan"

const (
	greProtoERSPAN2 = 0x88be // type I (no sequence number) and II
	greProtoERSPAN3 = 0x22eb
	greFlagCsum     = 0x8000
	greFlagKey      = 0x2000
	greFlagSeq      = 0x1000
)

// ERSPAN decoding errors.
var (
	ErrGREShort     = errors.New("collect: packet shorter than its GRE header")
	ErrGREVersion   = errors.New("collect: GRE version is not 0")
	ErrGREProto     = errors.New("collect: GRE payload is not ERSPAN (protocol type 0x88be or 0x22eb)")
	ErrERSPANShort  = errors.New("collect: packet shorter than its ERSPAN header")
	ErrERSPANVer    = errors.New("collect: ERSPAN version does not match the GRE protocol type")
	ErrERSPANFrame  = errors.New("collect: ERSPAN type III frame type is neither Ethernet nor IP")
	ErrERSPANIPVers = errors.New("collect: ERSPAN type III IP frame is neither IPv4 nor IPv6")
)

// DecodeERSPAN decodes a GRE packet (starting at the GRE header) carrying
// ERSPAN type I (protocol 0x88be without a sequence number: no ERSPAN
// header), type II (0x88be with one: an 8-byte header, version 1) or type
// III (0x22eb: a 12-byte header, version 2, plus the 8-byte
// platform-specific subheader when O is set). Frame.Kind is "erspan",
// Frame.VNI the session id (0 for type I), Frame.ERSPAN the type (1, 2 or
// 3). A type III frame of type IP (FT 2) is an L3 packet (EtherType set).
func DecodeERSPAN(b []byte) (Frame, error) {
	f, err := decodeERSPAN(b)
	f.OuterVNI = f.VNI
	return f, err
}

func decodeERSPAN(b []byte) (Frame, error) {
	if len(b) < 4 {
		return Frame{}, ErrGREShort
	}
	flags := binary.BigEndian.Uint16(b[0:2])
	if flags&0x7 != 0 {
		return Frame{}, ErrGREVersion
	}
	proto := binary.BigEndian.Uint16(b[2:4])
	off := 4
	for _, f := range []uint16{greFlagCsum, greFlagKey, greFlagSeq} {
		if flags&f != 0 {
			off += 4
		}
	}
	if len(b) < off {
		return Frame{}, ErrGREShort
	}
	f := Frame{Kind: KindERSPAN}
	h := b[off:]
	switch {
	case proto == greProtoERSPAN2 && flags&greFlagSeq == 0:
		f.ERSPAN, f.Inner = 1, h
	case proto == greProtoERSPAN2:
		if len(h) < 8 {
			return Frame{}, ErrERSPANShort
		}
		if h[0]>>4 != 1 {
			return Frame{}, ErrERSPANVer
		}
		f.ERSPAN, f.VNI, f.Inner = 2, uint32(binary.BigEndian.Uint16(h[2:4])&0x3ff), h[8:]
	case proto == greProtoERSPAN3:
		if len(h) < 12 {
			return Frame{}, ErrERSPANShort
		}
		if h[0]>>4 != 2 {
			return Frame{}, ErrERSPANVer
		}
		hl := 12
		if h[11]&1 != 0 {
			hl += 8 // platform-specific subheader
		}
		if len(h) < hl {
			return Frame{}, ErrERSPANShort
		}
		f.ERSPAN, f.VNI, f.Inner = 3, uint32(binary.BigEndian.Uint16(h[2:4])&0x3ff), h[hl:]
		switch ft := h[10] >> 2 & 0x1f; ft {
		case 0:
		case 2:
			if len(f.Inner) == 0 {
				return Frame{}, ErrInnerIPShort
			}
			switch f.Inner[0] >> 4 {
			case 4:
				f.EtherType = etherTypeIPv4
			case 6:
				f.EtherType = etherTypeIPv6
			default:
				return Frame{}, ErrERSPANIPVers
			}
			if !ipHeaderFits(f.Inner, f.EtherType) {
				return Frame{}, ErrInnerIPShort
			}
			return f, nil
		default:
			return Frame{}, ErrERSPANFrame
		}
	default:
		return Frame{}, ErrGREProto
	}
	if len(f.Inner) < minInner {
		return Frame{}, ErrInnerShort
	}
	return f, nil
}

// stripIPv4 returns the payload of an IPv4 packet as an IPv4 raw socket
// hands it over (header included), or nil if it is not one.
func stripIPv4(b []byte) []byte {
	if len(b) < 20 || b[0]>>4 != 4 {
		return nil
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || ihl > len(b) {
		return nil
	}
	return b[ihl:]
}
