package pcapfile

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"
)

// Opening a capture file never empties it. A file that already holds
// records (written before a restart, a reload that re-opened the target, or
// by an earlier capture) is appended to when its format allows — a pcap
// file with the same link type and snaplen whose last record is whole, any
// well-formed pcapng file (the new records go into a new section) — and
// otherwise moved aside to path.1 (older ones shift, as rotation does)
// before a new file is started. nfclone writes only regular files it owns:
// a symbolic link, a device or fifo, or a file of another user at the path
// is an error, never followed, truncated or moved.

// openPcapFile opens w.cur for w. It returns the file, its size (-1: a
// character device or fifo of nfclone's user, written as a stream), and
// whether the writer must start with a header (a new file, or a new pcapng
// section).
func (w *Writer) openPcapFile() (f *os.File, size int64, header bool, err error) {
	p := w.cur
	f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_APPEND|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, 0, false, fmt.Errorf("%s is a symbolic link: nfclone writes only files it creates or owns", p)
		}
		return nil, 0, false, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, false, err
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		f.Close()
		return nil, 0, false, fmt.Errorf("%s belongs to uid %d, not to nfclone (uid %d): it is left alone; remove it or choose another path", p, sys.Uid, os.Geteuid())
	}
	if !st.Mode().IsRegular() {
		if st.Mode()&(os.ModeCharDevice|os.ModeNamedPipe) != 0 {
			// /dev/null, a fifo a reader waits on: a stream, written
			// from its start, never cut back or rotated.
			return f, -1, true, nil
		}
		f.Close()
		return nil, 0, false, fmt.Errorf("%s is not a regular file (%v)", p, st.Mode().Type())
	}
	size = st.Size()
	if size == 0 {
		return f, 0, true, nil
	}
	if w.appendable(f, size) {
		return f, size, w.ng, nil
	}
	f.Close()
	if err := shiftAside(p, max(w.cfg.RotateKeep, 1)); err != nil {
		return nil, 0, false, fmt.Errorf("moving the existing %s aside: %w", p, err)
	}
	f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, 0, false, err
	}
	return f, 0, true, nil
}

// shiftAside renames path → path.1 → … → path.keep (the oldest is
// deleted).
func shiftAside(p string, keep int) error {
	os.Remove(p + "." + strconv.Itoa(keep))
	for i := keep - 1; i >= 1; i-- {
		os.Rename(p+"."+strconv.Itoa(i), p+"."+strconv.Itoa(i+1))
	}
	return os.Rename(p, p+".1")
}

// appendable reports whether records in w's format can go at the end of
// the existing file f of size bytes, and a reader still reads every record
// before them.
func (w *Writer) appendable(f *os.File, size int64) bool {
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 64<<10)
	var hdr [24]byte
	if w.ng {
		return pcapngWhole(r, size)
	}
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return false
	}
	le := binary.LittleEndian
	// pcapgo writes little-endian, microsecond magic, version 2.4.
	if le.Uint32(hdr[0:4]) != 0xa1b2c3d4 || le.Uint16(hdr[4:6]) != 2 || le.Uint16(hdr[6:8]) != 4 ||
		le.Uint32(hdr[16:20]) != uint32(w.snaplen) || le.Uint32(hdr[20:24]) != uint32(w.cfg.LinkType) {
		return false
	}
	off := int64(24)
	var rec [16]byte
	for off < size {
		if _, err := io.ReadFull(r, rec[:]); err != nil {
			return false
		}
		n := int64(le.Uint32(rec[8:12]))
		if n > int64(w.snaplen) {
			return false
		}
		if _, err := r.Discard(int(n)); err != nil {
			return false
		}
		off += 16 + n
	}
	return off == size
}

// pcapngWhole reports whether r holds size bytes of little-endian pcapng
// blocks starting with a section header, the last one whole.
func pcapngWhole(r *bufio.Reader, size int64) bool {
	le := binary.LittleEndian
	var b [12]byte
	off := int64(0)
	for off < size {
		if _, err := io.ReadFull(r, b[:8]); err != nil {
			return false
		}
		typ, n := le.Uint32(b[0:4]), int64(le.Uint32(b[4:8]))
		if n < 12 || n%4 != 0 || off+n > size {
			return false
		}
		rest := n - 8
		if off == 0 {
			if typ != 0x0a0d0d0a {
				return false
			}
			if _, err := io.ReadFull(r, b[8:12]); err != nil || le.Uint32(b[8:12]) != 0x1a2b3c4d {
				return false // not a section header in this byte order
			}
			rest -= 4
		}
		if _, err := r.Discard(int(rest)); err != nil {
			return false
		}
		off += n
	}
	return off == size
}

// writeEPB appends an enhanced packet block on interface id with the
// note's direction (epb_flags) and comment (opt_comment). It is written
// here rather than by pcapgo, whose per-packet options allocate.
func (w *Writer) writeEPB(ci gopacket.CaptureInfo, data []byte, id int, n *Note) error {
	le := binary.LittleEndian
	pad := (4 - len(data)&3) & 3
	opts := 4 // opt_endofopt
	if n.Direction != 0 {
		opts += 8
	}
	cpad := (4 - len(n.Comment)&3) & 3
	if len(n.Comment) > 0 {
		opts += 4 + len(n.Comment) + cpad
	}
	total := uint32(28 + len(data) + pad + opts + 4)
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
	var zero [4]byte
	w.rec.Write(zero[:pad])
	var o [8]byte
	if n.Direction != 0 {
		le.PutUint16(o[0:], 2) // epb_flags
		le.PutUint16(o[2:], 4)
		le.PutUint32(o[4:], uint32(n.Direction)&uint32(pcapgo.NgEpbFlagDirectionMask))
		w.rec.Write(o[:8])
	}
	if len(n.Comment) > 0 {
		le.PutUint16(o[0:], 1) // opt_comment
		le.PutUint16(o[2:], uint16(len(n.Comment)))
		w.rec.Write(o[:4])
		w.rec.Write(n.Comment)
		w.rec.Write(zero[:cpad])
	}
	w.rec.Write(zero[:]) // opt_endofopt
	le.PutUint32(o[0:], total)
	w.rec.Write(o[:4])
	return nil
}
