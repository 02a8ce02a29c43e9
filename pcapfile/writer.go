// Package pcapfile writes pcap and pcapng files and streams: whole records
// only (a failed write is cut back to the last whole record), rotation by
// size and by time, annotated pcapng records, and files that are never
// emptied — appended to when their format allows, else moved aside.
package pcapfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/nfclone/nfclone/internal/strftime"
)

// Link types for pcap files. L3 copies (what NFQUEUE and NFLOG give) are
// written as LINKTYPE_RAW (101): each record starts with the IP header, and
// the version nibble tells IPv4 from IPv6 — tcpdump, tshark and Wireshark
// decode both in one file (LINKTYPE_IPV4/IPV6 would need one file per
// family). Whole frames (L2 copies, decapsulated tunnels) are written as
// LINKTYPE_ETHERNET.
const (
	LinkTypeRaw      = layers.LinkTypeRaw
	LinkTypeEthernet = layers.LinkTypeEthernet
)

// Config configures a Writer.
type Config struct {
	// Path is the file; "-" writes to standard output. Ignored when Writer
	// is set.
	Path string
	// Writer, if set, receives the stream instead of a file (no rotation).
	Writer io.Writer
	// Format is "pcap" (default; microsecond timestamps) or "pcapng".
	Format string
	// LinkType of the records (default LinkTypeRaw).
	LinkType layers.LinkType
	// Snaplen: records are cut to this many bytes (0: 262144), and the
	// file header says so.
	Snaplen int
	// RotateSize: when a record would make the file larger than this many
	// bytes, the file is rotated (0: never). Files only.
	RotateSize int64
	// RotateKeep is the number of rotated files kept: path.1 (newest) …
	// path.N (oldest); 0 counts as 1 (a file is never emptied in place).
	RotateKeep int
	// RotateEvery starts a new file at every multiple of this interval
	// since the Unix epoch (1h: on the hour), by the records' timestamps
	// (0: never). Path may hold strftime conversions (%Y%m%d-%H%M…, see
	// internal/strftime), expanded with the start of the interval in local
	// time, as `tcpdump -G` names its files; without them the finished file
	// is shifted to path.1 like a size rotation. Size rotation within an
	// interval shifts the interval's file. Files only.
	RotateEvery time.Duration
	// Interfaces (pcapng) get an interface block each after the default
	// one (id 0, "nfclone"), in this order, in every section: records name
	// them through Batch with a Note.
	Interfaces []string
}

const (
	// DefaultSnaplen is the snaplen a file header says when none is set.
	DefaultSnaplen = 262144
	pcapFlushAt    = 256 << 10 // buffered bytes that trigger a write
)

// Writer writes packets into a pcap or pcapng file (or stream). It is
// safe for concurrent use.
//
// Records are assembled in memory and written with one write per flush
// (WritePacket flushes when 256 KiB are pending; call Flush to make
// packets visible to a reader at once). A write error (ENOSPC, EIO, …) never
// leaves a partial record behind: a file is truncated back to its last
// complete record, and the records of the failed write are dropped and
// reported (see WriteError); the next write tries again, so capture
// resumes by itself when space is freed. On a stream (stdout, a pipe) the
// unwritten tail of a record cut short is written first on the next flush,
// so the stream stays well-formed. (A write to a closed stdout pipe ends the
// process with SIGPIPE, as for tcpdump.)
type Writer struct {
	mu      sync.Mutex
	cfg     Config
	ng      bool
	snaplen int
	out     io.Writer
	f       *os.File // nil for streams
	rec     bytes.Buffer
	ends    []int // end offsets of the records in rec (header excluded)
	hdrLen  int   // bytes of file header at the start of rec (0 if written)
	tail    []byte
	pw      *pcapgo.Writer
	ngw     *pcapgo.NgWriter
	size    int64 // bytes of the current file known written
	count   uint64
	dropped uint64
	hdrSize int            // size of the current file's header
	cur     string         // the current file: Path with its strftime conversions expanded
	until   time.Time      // the end of the current RotateEvery interval
	empty   bool           // the current file was created here and holds no record yet
	dev     *os.File       // a character device or fifo written as a stream (then f is nil)
	ifIDs   map[string]int // pcapng interface block of each of cfg.Interfaces
	repair  bool           // the file must be cut back to size before the next write
	closed  bool
	epb     [28]byte // scratch for an enhanced packet block's header
}

// WriteError reports records dropped by a failed write.
type WriteError struct {
	Path string
	Lost int // records lost
	Err  error
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("pcap %s: %v (%d records dropped)", e.Path, e.Err, e.Lost)
}

func (e *WriteError) Unwrap() error { return e.Err }

// Open opens the file and writes the file header. An existing
// file is never emptied: it is appended to when its format allows, else
// moved aside (see openPcapFile). An unwritable path is an error that names
// it.
func Open(cfg Config) (*Writer, error) {
	w := &Writer{cfg: cfg}
	switch cfg.Format {
	case "", "pcap":
	case "pcapng":
		w.ng = true
	default:
		return nil, fmt.Errorf("sink: pcap format %q: want pcap or pcapng", cfg.Format)
	}
	if w.cfg.LinkType == 0 {
		w.cfg.LinkType = LinkTypeRaw
	}
	w.snaplen = cfg.Snaplen
	if w.snaplen <= 0 || w.snaplen > DefaultSnaplen {
		w.snaplen = DefaultSnaplen
	}
	switch {
	case cfg.Writer != nil:
		w.out = cfg.Writer
		if w.cfg.Path == "" {
			w.cfg.Path = "(writer)"
		}
	case cfg.Path == "-":
		w.out = os.Stdout
	case cfg.Path == "":
		return nil, errors.New("sink: pcap: no path")
	default:
		w.setPeriod(time.Now())
		f, size, header, err := w.openPcapFile()
		if err != nil {
			return nil, fmt.Errorf("sink: pcap %s: cannot open for writing: %w", w.cur, err)
		}
		w.f, w.out, w.size = f, f, size
		if size < 0 {
			w.f, w.dev, w.size = nil, f, 0
		}
		w.empty = size == 0
		if !header {
			w.pw = pcapgo.NewWriter(&w.rec) // records only: the file has its header
			return w, nil
		}
	}
	if err := w.header(); err != nil {
		w.closeFile()
		return nil, err
	}
	if _, err := w.flush(); err != nil {
		w.closeFile()
		return nil, fmt.Errorf("sink: pcap %s: cannot write the file header: %w", w.cfg.Path, err)
	}
	return w, nil
}

// header puts a file header (pcap) or section and interface blocks
// (pcapng) at the start of the (empty) buffer.
func (w *Writer) header() error {
	w.rec.Reset()
	w.ends = w.ends[:0]
	if w.ng {
		intf := pcapgo.DefaultNgInterface
		intf.Name = "nfclone"
		intf.LinkType = w.cfg.LinkType
		intf.SnapLength = uint32(w.snaplen)
		opts := pcapgo.DefaultNgWriterOptions
		opts.SectionInfo.Application = "nfclone"
		ngw, err := pcapgo.NewNgWriterInterface(&w.rec, intf, opts)
		if len(w.cfg.Interfaces) > 0 {
			w.ifIDs = make(map[string]int, len(w.cfg.Interfaces))
		}
		for _, name := range w.cfg.Interfaces {
			if _, dup := w.ifIDs[name]; dup || err != nil {
				continue
			}
			in := intf
			in.Name = name
			w.ifIDs[name], err = ngw.AddInterface(in)
		}
		if err == nil {
			err = ngw.Flush()
		}
		if err != nil {
			return fmt.Errorf("sink: pcapng header: %w", err)
		}
		w.ngw = ngw
	} else {
		w.pw = pcapgo.NewWriter(&w.rec)
		if err := w.pw.WriteFileHeader(uint32(w.snaplen), w.cfg.LinkType); err != nil {
			return fmt.Errorf("sink: pcap header: %w", err)
		}
	}
	w.hdrLen = w.rec.Len()
	w.hdrSize = w.hdrLen
	return nil
}

// Path is the output's path ("-" for stdout).
func (w *Writer) Path() string { return w.cfg.Path }

// LinkType is the records' link type.
func (w *Writer) LinkType() layers.LinkType { return w.cfg.LinkType }

// Count returns the number of records written to the output.
func (w *Writer) Count() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count
}

// Dropped returns the number of records lost to write errors.
func (w *Writer) Dropped() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dropped
}

// WritePacket adds one record: data (cut to the snaplen) captured at ts
// from a packet of origLen bytes (origLen < len(data) counts as len(data)).
// The record reaches the output at the next flush. The error, if any, is a
// *WriteError for records dropped by a write that failed.
func (w *Writer) WritePacket(ts time.Time, data []byte, origLen int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, _, err := w.write(ts, data, origLen)
	if w.rec.Len() >= pcapFlushAt {
		_, ferr := w.flush()
		err = errors.Join(err, ferr)
	}
	return err
}

// Flush writes the pending records.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := w.flush()
	return err
}

// Close flushes and closes the file (standard output and injected writers
// stay open).
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := w.flush()
	w.closed = true
	return errors.Join(err, w.closeFile())
}

func (w *Writer) closeFile() error {
	if w.dev != nil {
		err := w.dev.Close()
		w.dev, w.out = nil, nil
		return err
	}
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	w.out = nil
	return err
}

func (w *Writer) recordLen(n int) int64 {
	if w.ng && len(w.cfg.Interfaces) > 0 {
		return int64(32+(n+3)&^3) + 12 + 4 + 128 // the flags option and (about) a comment
	}
	if w.ng {
		return int64(32 + (n+3)&^3)
	}
	return int64(16 + n)
}

// write adds a record. added reports whether it went into the buffer (if
// not, it is counted as dropped); lost is the number of records added
// earlier that a flush (before a rotation) dropped.
func (w *Writer) write(ts time.Time, data []byte, origLen int) (added bool, lost int, err error) {
	return w.writeNote(ts, data, origLen, nil)
}

// Note annotates a pcapng record: the interface the copy was taken on (one
// of Config.Interfaces; others are written as interface 0), its
// direction (the EPB flags: pcapgo.NgEpbFlagDirectionInbound/Outbound, 0
// unknown) and a comment.
type Note struct {
	Interface string
	Direction pcapgo.NgEpbFlag
	Comment   []byte
}

func (w *Writer) writeNote(ts time.Time, data []byte, origLen int, note *Note) (added bool, lost int, err error) {
	if w.out == nil && !w.closed {
		err = w.reopen()
	}
	if w.out == nil {
		w.dropped++
		if err == nil {
			err = os.ErrClosed
		}
		return false, 0, &WriteError{Path: w.cfg.Path, Lost: 1, Err: err}
	}
	if len(data) > w.snaplen {
		data = data[:w.snaplen]
	}
	if origLen < len(data) {
		origLen = len(data)
	}
	if w.f != nil && w.cfg.RotateEvery > 0 && !ts.Before(w.until) {
		lost, err = w.rotateTime(ts)
		if w.out == nil {
			w.dropped++
			return false, lost, err
		}
	}
	if w.f != nil && w.cfg.RotateSize > 0 {
		pending := w.size + int64(w.rec.Len())
		if pending > int64(w.hdrSize) && pending+w.recordLen(len(data)) > w.cfg.RotateSize {
			lost, err = w.rotate()
			if w.out == nil {
				w.dropped++
				return false, lost, err
			}
		}
	}
	ci := gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(data), Length: origLen}
	var werr error
	if w.ng {
		if note == nil {
			werr = w.ngw.WritePacket(ci, data)
		} else {
			werr = w.writeEPB(ci, data, w.ifIDs[note.Interface], note)
		}
		if werr == nil {
			werr = w.ngw.Flush()
		}
	} else {
		werr = w.pw.WritePacket(ci, data)
	}
	if werr != nil { // cannot happen with an in-memory buffer
		w.dropped++
		return false, lost, errors.Join(err, werr)
	}
	w.ends = append(w.ends, w.rec.Len())
	return true, lost, err
}

// reopen starts the file anew after a failed rotation.
func (w *Writer) reopen() error {
	if w.cfg.Writer != nil || w.cfg.Path == "-" {
		return nil
	}
	f, size, header, err := w.openPcapFile()
	if err != nil {
		return err
	}
	w.f, w.out = f, f
	w.size = size
	if size < 0 {
		w.f, w.dev, w.size = nil, f, 0
	}
	w.empty = size == 0
	w.repair = false
	w.rec.Reset()
	w.ends = w.ends[:0]
	w.hdrLen, w.hdrSize = 0, 0
	if !header {
		w.pw = pcapgo.NewWriter(&w.rec) // records only: the file has its header
		return nil
	}
	return w.header()
}

func (w *Writer) pendingError(lost int, err error) error {
	return &WriteError{Path: w.cfg.Path, Lost: lost, Err: err}
}

// flush writes the buffer; lost is the number of records it dropped.
func (w *Writer) flush() (lost int, err error) {
	if w.out == nil {
		return w.dropAll(os.ErrClosed)
	}
	if len(w.tail) > 0 {
		// The rest of a record that a stream write cut short.
		n, err := w.out.Write(w.tail)
		w.tail = w.tail[n:]
		if err != nil {
			return w.dropAll(err)
		}
	}
	if w.repair {
		if err := w.truncate(); err != nil {
			return w.dropAll(err)
		}
	}
	if w.rec.Len() == 0 {
		return 0, nil
	}
	b := w.rec.Bytes()
	n, err := w.out.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err == nil {
		w.size += int64(n)
		w.count += uint64(len(w.ends))
		if len(w.ends) > 0 {
			w.empty = false
		}
		w.hdrLen = 0
		w.rec.Reset()
		w.ends = w.ends[:0]
		return 0, nil
	}
	// Records written in full.
	done := 0
	for done < len(w.ends) && w.ends[done] <= n {
		done++
	}
	var hdr []byte
	if w.f != nil {
		// Cut the file back to its last complete record. A header cut
		// short is written again with the next records. The file is
		// opened for appending (another writer of the same target may
		// have appended during a reload), so the cut is measured back
		// from its end: the n bytes this write put there.
		if st, serr := w.f.Stat(); serr == nil && st.Size() >= int64(n) {
			w.size = st.Size() - int64(n)
		}
		switch {
		case n < w.hdrLen:
			hdr = append(hdr, b[:w.hdrLen]...)
		case done > 0:
			w.size += int64(w.ends[done-1])
		default:
			w.size += int64(w.hdrLen)
		}
		w.repair = true
		if terr := w.truncate(); terr != nil {
			err = errors.Join(err, terr)
		}
	} else {
		// A stream cannot be cut back: the cut header or record is
		// completed first at the next flush.
		switch {
		case n < w.hdrLen:
			w.tail = append(w.tail[:0], b[n:w.hdrLen]...)
		case done < len(w.ends):
			start := w.hdrLen
			if done > 0 {
				start = w.ends[done-1]
			}
			if n > start {
				w.tail = append(w.tail[:0], b[n:w.ends[done]]...)
				done++
			}
		}
	}
	w.count += uint64(done)
	lost = len(w.ends) - done
	w.dropped += uint64(lost)
	w.rec.Reset()
	w.ends = w.ends[:0]
	w.hdrLen = len(hdr)
	w.rec.Write(hdr)
	return lost, w.pendingError(lost, err)
}

// dropAll drops the pending records (a pending header stays: the file must
// start with it).
func (w *Writer) dropAll(err error) (int, error) {
	lost := len(w.ends)
	w.dropped += uint64(lost)
	if w.hdrLen > 0 {
		w.rec.Truncate(w.hdrLen)
	} else {
		w.rec.Reset()
	}
	w.ends = w.ends[:0]
	return lost, w.pendingError(lost, err)
}

func (w *Writer) truncate() error {
	if w.f == nil {
		return nil
	}
	if err := w.f.Truncate(w.size); err != nil {
		return err
	}
	if _, err := w.f.Seek(w.size, io.SeekStart); err != nil {
		return err
	}
	w.repair = false
	return nil
}

// rotate flushes and closes the current file, shifts path → path.1 → … →
// path.keep (the oldest is deleted; keep 0 counts as 1) and starts a
// new file with a header. lost counts records the flush dropped. If the new
// file cannot be created the writer has no output until a later write
// manages to create it.
func (w *Writer) rotate() (lost int, err error) {
	lost, err = w.flush()
	w.rec.Reset() // a pending header belongs to the old file
	w.hdrLen = 0
	p := w.cur
	w.f.Close()
	w.f, w.out = nil, nil
	if rerr := shiftAside(p, max(w.cfg.RotateKeep, 1)); rerr != nil {
		err = errors.Join(err, fmt.Errorf("rotate %s: %w", p, rerr))
	}
	if oerr := w.reopen(); oerr != nil {
		return lost, errors.Join(err, w.pendingError(0, fmt.Errorf("rotate: %w", oerr)))
	}
	return lost, err
}

// setPeriod sets the current file (and, with RotateEvery, the end of its
// interval) for a record at t.
func (w *Writer) setPeriod(t time.Time) {
	start := t
	if e := w.cfg.RotateEvery; e > 0 {
		start = t.Truncate(e)
		w.until = start.Add(e)
	}
	w.cur = strftime.Format(w.cfg.Path, start.Local())
}

// rotateTime ends the current file at the end of its interval and starts
// the file of the interval of ts.
func (w *Writer) rotateTime(ts time.Time) (lost int, err error) {
	lost, err = w.flush()
	w.rec.Reset()
	w.hdrLen = 0
	w.f.Close()
	w.f, w.out = nil, nil
	if w.empty {
		// Only the header this writer put in a file it created (no
		// record came in its interval): nothing to keep.
		os.Remove(w.cur)
	} else if !strftime.Has(w.cfg.Path) {
		if rerr := shiftAside(w.cur, max(w.cfg.RotateKeep, 1)); rerr != nil {
			err = errors.Join(err, fmt.Errorf("rotate %s: %w", w.cur, rerr))
		}
	}
	w.setPeriod(ts)
	if oerr := w.reopen(); oerr != nil {
		return lost, errors.Join(err, w.pendingError(0, fmt.Errorf("rotate: %w", oerr)))
	}
	return lost, err
}

// Batch writes records under the writer's lock: f calls add for each
// record (add reports whether it went into the buffer, and how many records
// added earlier a rotation's flush dropped), then the writer flushes; lost
// is the number of records that flush dropped.
func (w *Writer) Batch(f func(add func(ts time.Time, data []byte, origLen int, note *Note) (added bool, lost int, err error))) (lost int, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f(w.writeNote)
	return w.flush()
}
