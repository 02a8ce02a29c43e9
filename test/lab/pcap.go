package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Link-layer header types (LINKTYPE_* values of the pcap format).
const (
	LinkTypeNull     = 0
	LinkTypeEthernet = 1
	LinkTypeRawOld   = 12 // DLT_RAW on some BSDs
	LinkTypeRaw      = 101
	LinkTypeLinuxSLL = 113
	LinkTypeIPv4     = 228
	LinkTypeIPv6     = 229
	LinkTypeSLL2     = 276
)

// Record is one packet of a pcap or pcapng file.
type Record struct {
	Time     time.Time
	LinkType int    // link type of the interface the packet was captured on
	OrigLen  int    // length on the wire
	Data     []byte // captured bytes (CapLen = len(Data))
}

// IP returns the IP-layer bytes of the record (from the IPv4/IPv6 header on), skipping the
// link header (Ethernet with up to two VLAN tags, Linux cooked SLL/SLL2, raw IP, BSD null).
// ok is false when the frame carries no IP packet or the link type is unknown.
func (r Record) IP() (ip []byte, ok bool) {
	return IPLayer(r.LinkType, r.Data)
}

// IPLayer returns the IP-layer bytes of a frame of the given link type; see Record.IP.
func IPLayer(linkType int, data []byte) ([]byte, bool) {
	isIP := func(proto uint16) bool { return proto == 0x0800 || proto == 0x86dd }
	switch linkType {
	case LinkTypeEthernet:
		if len(data) < 14 {
			return nil, false
		}
		off := 12
		proto := binary.BigEndian.Uint16(data[off:])
		for i := 0; i < 2 && (proto == 0x8100 || proto == 0x88a8); i++ {
			off += 4
			if len(data) < off+2 {
				return nil, false
			}
			proto = binary.BigEndian.Uint16(data[off:])
		}
		if !isIP(proto) {
			return nil, false
		}
		return data[off+2:], true
	case LinkTypeLinuxSLL:
		if len(data) < 16 || !isIP(binary.BigEndian.Uint16(data[14:])) {
			return nil, false
		}
		return data[16:], true
	case LinkTypeSLL2:
		if len(data) < 20 || !isIP(binary.BigEndian.Uint16(data[0:])) {
			return nil, false
		}
		return data[20:], true
	case LinkTypeRaw, LinkTypeRawOld, LinkTypeIPv4, LinkTypeIPv6:
		if len(data) < 1 {
			return nil, false
		}
		if v := data[0] >> 4; v != 4 && v != 6 {
			return nil, false
		}
		return data, true
	case LinkTypeNull:
		if len(data) < 5 {
			return nil, false
		}
		if v := data[4] >> 4; v != 4 && v != 6 {
			return nil, false
		}
		return data[4:], true
	}
	return nil, false
}

// ReadPcapFile reads a classic pcap or a pcapng file; see ReadPcap.
func ReadPcapFile(path string) ([]Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ReadPcap(b)
}

// ErrTruncated is returned (with the records read so far) when the data ends inside a
// record, as a file still being written by tcpdump may.
var ErrTruncated = errors.New("pcap: truncated record")

// ReadPcap parses a classic libpcap file (either byte order, microsecond or nanosecond
// timestamps) or a pcapng file (SHB, IDB, EPB, SPB blocks; either byte order; other blocks
// are skipped). A truncated last record yields the records before it and ErrTruncated.
func ReadPcap(b []byte) ([]Record, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("pcap: file too short (%d bytes)", len(b))
	}
	if binary.LittleEndian.Uint32(b) == 0x0a0d0d0a {
		return readPcapng(b)
	}
	return readClassic(b)
}

func readClassic(b []byte) ([]Record, error) {
	if len(b) < 24 {
		return nil, fmt.Errorf("pcap: header too short (%d bytes)", len(b))
	}
	var bo binary.ByteOrder
	nano := false
	switch m := binary.LittleEndian.Uint32(b); m {
	case 0xa1b2c3d4:
		bo = binary.LittleEndian
	case 0xa1b23c4d:
		bo, nano = binary.LittleEndian, true
	case 0xd4c3b2a1:
		bo = binary.BigEndian
	case 0x4d3cb2a1:
		bo, nano = binary.BigEndian, true
	default:
		return nil, fmt.Errorf("pcap: bad magic %#08x", m)
	}
	// The link type is the low 16 bits; the upper bits may carry FCS information.
	linkType := int(bo.Uint32(b[20:]) & 0xffff)
	var recs []Record
	off := 24
	for off < len(b) {
		if len(b)-off < 16 {
			return recs, ErrTruncated
		}
		sec := int64(bo.Uint32(b[off:]))
		frac := int64(bo.Uint32(b[off+4:]))
		capLen := int(bo.Uint32(b[off+8:]))
		origLen := int(bo.Uint32(b[off+12:]))
		off += 16
		if capLen > len(b)-off {
			return recs, ErrTruncated
		}
		if !nano {
			frac *= 1000
		}
		recs = append(recs, Record{
			Time:     time.Unix(sec, frac),
			LinkType: linkType,
			OrigLen:  origLen,
			Data:     b[off : off+capLen],
		})
		off += capLen
	}
	return recs, nil
}

type pcapngIface struct {
	linkType int
	tsUnit   int64 // nanoseconds per timestamp unit; 0 = units of 1/tsDiv s
	tsDiv    int64
}

func readPcapng(b []byte) ([]Record, error) {
	var (
		bo     binary.ByteOrder
		ifaces []pcapngIface
		recs   []Record
	)
	off := 0
	for off < len(b) {
		if len(b)-off < 12 {
			return recs, ErrTruncated
		}
		typ := binary.LittleEndian.Uint32(b[off:])
		if typ == 0x0a0d0d0a { // section header: byte order from its magic
			switch binary.LittleEndian.Uint32(b[off+8:]) {
			case 0x1a2b3c4d:
				bo = binary.LittleEndian
			case 0x4d3c2b1a:
				bo = binary.BigEndian
			default:
				return recs, errors.New("pcapng: bad byte-order magic")
			}
			ifaces = ifaces[:0]
		} else if bo == nil {
			return nil, errors.New("pcapng: block before section header")
		} else {
			typ = bo.Uint32(b[off:])
		}
		blen := int(bo.Uint32(b[off+4:]))
		if blen < 12 || blen%4 != 0 {
			return recs, fmt.Errorf("pcapng: bad block length %d", blen)
		}
		if blen > len(b)-off {
			return recs, ErrTruncated
		}
		body := b[off+8 : off+blen-4]
		switch typ {
		case 1: // interface description
			if len(body) < 8 {
				return recs, errors.New("pcapng: short IDB")
			}
			ifc := pcapngIface{linkType: int(bo.Uint16(body)), tsUnit: 1000} // default: microseconds
			opts := body[8:]
			for len(opts) >= 4 {
				code, l := bo.Uint16(opts), int(bo.Uint16(opts[2:]))
				if code == 0 || 4+l > len(opts) {
					break
				}
				if code == 9 && l >= 1 { // if_tsresol
					v := opts[4]
					if v&0x80 == 0 {
						div := int64(1)
						for i := 0; i < int(v); i++ {
							div *= 10
						}
						ifc.tsUnit, ifc.tsDiv = 0, div
						if div <= 1e9 {
							ifc.tsUnit = 1e9 / div
						}
					} else {
						ifc.tsUnit, ifc.tsDiv = 0, int64(1)<<(v&0x7f)
					}
				}
				opts = opts[4+(l+3)&^3:]
			}
			ifaces = append(ifaces, ifc)
		case 6: // enhanced packet
			if len(body) < 20 {
				return recs, errors.New("pcapng: short EPB")
			}
			id := int(bo.Uint32(body))
			if id >= len(ifaces) {
				return recs, fmt.Errorf("pcapng: EPB for unknown interface %d", id)
			}
			ts := int64(bo.Uint32(body[4:]))<<32 | int64(bo.Uint32(body[8:]))
			capLen := int(bo.Uint32(body[12:]))
			origLen := int(bo.Uint32(body[16:]))
			if capLen > len(body)-20 {
				return recs, errors.New("pcapng: EPB captured length past block end")
			}
			recs = append(recs, Record{
				Time:     ifaces[id].time(ts),
				LinkType: ifaces[id].linkType,
				OrigLen:  origLen,
				Data:     body[20 : 20+capLen],
			})
		case 3: // simple packet
			if len(body) < 4 || len(ifaces) == 0 {
				return recs, errors.New("pcapng: bad SPB")
			}
			origLen := int(bo.Uint32(body))
			capLen := min(origLen, len(body)-4)
			recs = append(recs, Record{LinkType: ifaces[0].linkType, OrigLen: origLen, Data: body[4 : 4+capLen]})
		}
		off += blen
	}
	return recs, nil
}

func (i pcapngIface) time(ts int64) time.Time {
	if i.tsUnit > 0 {
		return time.Unix(0, ts*i.tsUnit)
	}
	sec := ts / i.tsDiv
	frac := ts % i.tsDiv
	return time.Unix(sec, int64(float64(frac)*1e9/float64(i.tsDiv)))
}

// WritePcap writes records as a classic little-endian microsecond pcap with the given link
// type (for building test inputs).
func WritePcap(w io.Writer, linkType int, recs []Record) error {
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], 262144)
	binary.LittleEndian.PutUint32(hdr[20:], uint32(linkType))
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	for _, r := range recs {
		rh := make([]byte, 16)
		binary.LittleEndian.PutUint32(rh[0:], uint32(r.Time.Unix()))
		binary.LittleEndian.PutUint32(rh[4:], uint32(r.Time.Nanosecond()/1000))
		binary.LittleEndian.PutUint32(rh[8:], uint32(len(r.Data)))
		orig := r.OrigLen
		if orig == 0 {
			orig = len(r.Data)
		}
		binary.LittleEndian.PutUint32(rh[12:], uint32(orig))
		if _, err := w.Write(rh); err != nil {
			return err
		}
		if _, err := w.Write(r.Data); err != nil {
			return err
		}
	}
	return nil
}
