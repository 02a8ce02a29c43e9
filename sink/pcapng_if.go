package sink

import (
	"encoding/binary"
	"net"
	"strconv"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/pcapgo"
)

// writeOnInterface appends an enhanced packet block for a packet seen on
// the kernel interface ifindex in direction dir. The interface is
// described (an interface description block named as in the kernel) the
// first time the file meets it. The block is written here rather than by
// pcapgo, whose per-packet options allocate: only the flags option
// (direction) is set. Timestamps are in nanoseconds (if_tsresol 9, as the
// writer's interfaces).
func (w *PcapWriter) writeOnInterface(ci gopacket.CaptureInfo, data []byte, ifindex uint32, dir pcapgo.NgEpbFlag) error {
	id, ok := w.ifids[ifindex]
	if !ok {
		intf := pcapgo.DefaultNgInterface
		intf.Name = interfaceName(ifindex)
		intf.LinkType = w.cfg.LinkType
		intf.SnapLength = uint32(w.snaplen)
		var err error
		if id, err = w.ngw.AddInterface(intf); err != nil {
			return err
		}
		if err := w.ngw.Flush(); err != nil {
			return err
		}
		if w.ifids == nil {
			w.ifids = map[uint32]int{}
		}
		w.ifids[ifindex] = id
	}
	pad := (4 - len(data)&3) & 3
	const opts = 8 + 4 // epb_flags (code 2, length 4, value) and opt_endofopt
	total := uint32(28 + len(data) + pad + opts + 4)
	le := binary.LittleEndian
	ts := ci.Timestamp.UnixNano()
	b := w.epb[:]
	le.PutUint32(b[0:], 6) // enhanced packet block
	le.PutUint32(b[4:], total)
	le.PutUint32(b[8:], uint32(id))
	le.PutUint32(b[12:], uint32(ts>>32))
	le.PutUint32(b[16:], uint32(ts))
	le.PutUint32(b[20:], uint32(ci.CaptureLength))
	le.PutUint32(b[24:], uint32(ci.Length))
	w.rec.Write(b)
	w.rec.Write(data)
	var tail [4 + opts + 4]byte
	t := tail[4-pad:]
	le.PutUint16(t[pad:], 2) // epb_flags
	le.PutUint16(t[pad+2:], 4)
	le.PutUint32(t[pad+4:], uint32(dir)&uint32(pcapgo.NgEpbFlagDirectionMask))
	// opt_endofopt: 4 zero bytes, already zero
	le.PutUint32(t[pad+opts:], total)
	w.rec.Write(t[:pad+opts+4])
	return nil
}

// interfaceName is the kernel's name of an interface index (or its number
// when it is gone).
func interfaceName(ifindex uint32) string {
	if ifi, err := net.InterfaceByIndex(int(ifindex)); err == nil {
		return ifi.Name
	}
	return "if" + strconv.Itoa(int(ifindex))
}
