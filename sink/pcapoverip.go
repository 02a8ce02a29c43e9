package sink

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pcapfile"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"
)

// PcapOverIPConfig configures a PcapOverIP sink.
type PcapOverIPConfig struct {
	// Name identifies the target (default "pcap-over-ip").
	Name string
	// Listen is the TCP address clients connect to.
	Listen netip.AddrPort
	// Allow restricts the clients (empty and not AllowAny: loopback
	// clients only).
	Allow    []netip.Prefix
	AllowAny bool
	// Format is "pcap" (default; microsecond timestamps) or "pcapng".
	Format string
	// Snaplen goes into the stream's header (0: 262144).
	Snaplen int
	// ClientBuffer bounds the bytes waiting for one client
	// (DefaultPcapOverIPBuffer); what does not fit is dropped for that
	// client only and counted.
	ClientBuffer int
	Logger       *slog.Logger
	// Annotate, with format pcapng, notes on every record where and how
	// the copy was taken, as for a pcapng file (PcapAnnotation): the
	// stream's header describes one interface per source interface.
	Annotate *PcapAnnotation
}

// DefaultPcapOverIPBuffer is the default per-client buffer: 4 MiB of
// records waiting (plus what the client's writer is writing, as much
// again), on top of the kernel's socket buffers. A client that keeps up
// uses 64 KiB buffers; they grow only for one that falls behind.
const DefaultPcapOverIPBuffer = 4 << 20

// PcapOverIP is a TCP server that streams the copies as a pcap (LINKTYPE_RAW:
// IPv4 and IPv6 in one stream) to every connected client: Arkime, Zeek,
// Malcolm, or `nc HOST PORT | tcpdump -r -`. Each client gets the stream
// header when it connects, then every record from that moment on.
//
// A slow or stopped client never holds back the others or the session: Send
// only appends whole records to each client's bounded buffer (under that
// client's lock, never blocking on the network), and a writer goroutine
// per client writes what accumulated. A record that does not fit in a
// client's buffer is dropped for that client and counted (ClientStats);
// the stream stays whole records. A copy counts as sent once it is in the
// stream (with no client connected, it is sent to nobody).
type PcapOverIP struct {
	counters
	cfg    PcapOverIPConfig
	ln     *net.TCPListener
	ng     bool
	header []byte // stream header every client gets first
	// annotation (pcapng with Annotate): the interface block of each name,
	// and scratch for one record's note and block (under mu)
	ann    *PcapAnnotation
	ifIDs  map[string]uint32
	note   pcapfile.Note
	nbuf   []byte
	blk    []byte
	mu     sync.Mutex
	cl     []*poiClient
	closed bool
	wg     sync.WaitGroup
	nextID atomic.Uint64
}

type poiClient struct {
	id     uint64
	remote netip.AddrPort
	since  time.Time
	conn   net.Conn
	limit  int

	mu      sync.Mutex
	pending []byte // records waiting (appended by Send)
	spare   []byte // the writer's buffer, given back after each write
	wake    chan struct{}
	done    bool

	sent, dropped, bytes atomic.Uint64
}

// PcapClientStats are one client's counters.
type PcapClientStats struct {
	ID      uint64    `json:"id"`
	Remote  string    `json:"remote"`
	Since   time.Time `json:"since"`
	Sent    uint64    `json:"sent"`
	Bytes   uint64    `json:"bytes"`
	Dropped uint64    `json:"dropped"`
}

// NewPcapOverIP starts listening and accepting clients.
func NewPcapOverIP(cfg PcapOverIPConfig) (*PcapOverIP, error) {
	s, err := newPcapOverIP(cfg)
	if err != nil {
		return nil, err
	}
	// SO_REUSEPORT: a reload that replaces the session opens the new
	// server before the old one is closed.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", cfg.Listen.String())
	if err != nil {
		return nil, fmt.Errorf("sink: pcap-over-ip: listen %s: %w", cfg.Listen, err)
	}
	s.ln = ln.(*net.TCPListener)
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func newPcapOverIP(cfg PcapOverIPConfig) (*PcapOverIP, error) {
	if cfg.ClientBuffer <= 0 {
		cfg.ClientBuffer = DefaultPcapOverIPBuffer
	}
	if cfg.Snaplen <= 0 {
		cfg.Snaplen = pcapfile.DefaultSnaplen
	}
	s := &PcapOverIP{cfg: cfg}
	switch cfg.Format {
	case "", "pcap":
		s.header = pcapGlobalHeader(cfg.Snaplen)
	case "pcapng":
		s.ng = true
		s.header = pcapngHeader(cfg.Snaplen)
		if a := cfg.Annotate; a != nil {
			s.ann = a
			s.ifIDs = map[string]uint32{}
			for i, name := range a.interfaces() {
				s.ifIDs[name] = uint32(i + 1)
				s.header = appendIDB(s.header, name, cfg.Snaplen)
			}
		}
	default:
		return nil, fmt.Errorf("sink: pcap-over-ip format %q: want pcap or pcapng", cfg.Format)
	}
	name := cfg.Name
	if name == "" {
		name = "pcap-over-ip"
	}
	s.init(name, cfg.Logger)
	return s, nil
}

// Name is the target's name.
func (s *PcapOverIP) Name() string { return s.name }

// Addr is the address the server listens on.
func (s *PcapOverIP) Addr() netip.AddrPort {
	return s.ln.Addr().(*net.TCPAddr).AddrPort()
}

func (s *PcapOverIP) allowed(a netip.Addr) bool {
	a = a.Unmap()
	if s.cfg.AllowAny {
		return true
	}
	if len(s.cfg.Allow) == 0 {
		return a.IsLoopback()
	}
	for _, p := range s.cfg.Allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// accept runs until the listener is closed.
func (s *PcapOverIP) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("pcap-over-ip: accept", "target", s.name, "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		remote := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
		if !s.allowed(remote.Addr()) {
			s.log.Warn("pcap-over-ip: client refused (not in allow)", "target", s.name, "client", remote.String())
			conn.Close()
			continue
		}
		conn.SetNoDelay(false)
		// The buffers start small and grow (by append, a few times) up to
		// the limit only for a client that falls behind.
		initial := min(s.cfg.ClientBuffer, 64<<10)
		c := &poiClient{
			id: s.nextID.Add(1), remote: remote, since: time.Now(), conn: conn, limit: s.cfg.ClientBuffer,
			pending: make([]byte, 0, initial), spare: make([]byte, 0, initial),
			wake: make(chan struct{}, 1),
		}
		c.pending = append(c.pending, s.header...)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return
		}
		s.cl = append(s.cl, c)
		s.wg.Add(1)
		s.mu.Unlock()
		s.log.Info("pcap-over-ip: client connected", "target", s.name, "client", remote.String())
		go s.write(c)
		c.signal()
	}
}

func (c *poiClient) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// write sends the client's records until the connection fails or the
// sink closes, then removes the client.
func (s *PcapOverIP) write(c *poiClient) {
	defer s.wg.Done()
	var err error
	for range c.wake {
		c.mu.Lock()
		buf := c.pending
		c.pending = c.spare[:0]
		done := c.done
		c.mu.Unlock()
		if len(buf) > 0 {
			_, err = c.conn.Write(buf)
		}
		c.mu.Lock()
		c.spare = buf[:0]
		c.mu.Unlock()
		if err != nil || done {
			break
		}
	}
	c.conn.Close()
	c.mu.Lock()
	c.done = true
	c.mu.Unlock()
	s.mu.Lock()
	for i, x := range s.cl {
		if x == c {
			s.cl = append(s.cl[:i], s.cl[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
	s.log.Info("pcap-over-ip: client gone", "target", s.name, "client", c.remote.String(),
		"sent", c.sent.Load(), "dropped", c.dropped.Load(), "err", err)
}

// Send appends every copy as a record to each client's buffer.
func (s *PcapOverIP) Send(batch []*packet.Packet) (int, error) {
	ts := time.Now()
	var rec [28]byte
	bad, sent, bytes := 0, 0, 0
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.cl {
		c.mu.Lock()
	}
	for _, p := range batch {
		if len(p.Data) == 0 || (p.Family != 4 && p.Family != 6) {
			p.Errs++
			bad++
			continue
		}
		FixTruncated(p)
		orig := max(p.OrigLen, len(p.Data))
		t := ts // when the kernel saw the packet, if it said
		if p.Time != 0 {
			t = time.Unix(0, p.Time)
		}
		var h []byte
		var pad int
		if s.ann != nil {
			// An annotated block is built whole in s.blk (no allocation
			// once it has grown), then appended to each client.
			s.nbuf = s.ann.note(p, &s.note, s.nbuf)
			s.blk = appendAnnotatedEPB(s.blk[:0], s.ifIDs[s.note.Interface], uint64(t.UnixMicro()), p.Data, orig, &s.note)
			n := len(s.blk)
			for _, c := range s.cl {
				if c.done || len(c.pending)+n > c.limit {
					c.dropped.Add(1)
					continue
				}
				c.pending = append(c.pending, s.blk...)
				c.sent.Add(1)
				c.bytes.Add(uint64(n))
			}
			sent++
			bytes += len(p.Data)
			continue
		}
		if s.ng {
			h, pad = pcapngEPBHeader(rec[:], t, len(p.Data), orig)
		} else {
			h = pcapRecordHeader(rec[:16], t, len(p.Data), orig)
		}
		n := len(h) + len(p.Data) + pad
		if s.ng {
			n += 4
		}
		for _, c := range s.cl {
			if c.done || len(c.pending)+n > c.limit {
				c.dropped.Add(1)
				continue
			}
			c.pending = append(c.pending, h...)
			c.pending = append(c.pending, p.Data...)
			if s.ng {
				c.pending = append(c.pending, zeros[:pad]...)
				c.pending = binary.LittleEndian.AppendUint32(c.pending, uint32(n))
			}
			c.sent.Add(1)
			c.bytes.Add(uint64(n))
		}
		sent++
		bytes += len(p.Data)
	}
	for _, c := range s.cl {
		c.mu.Unlock()
		c.signal()
	}
	s.ok(sent, bytes)
	if bad > 0 {
		s.fail(bad, errUnsendable)
		return sent, errUnsendable
	}
	return sent, nil
}

var zeros [4]byte

// Clients returns each connected client's counters.
func (s *PcapOverIP) Clients() []PcapClientStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PcapClientStats, 0, len(s.cl))
	for _, c := range s.cl {
		out = append(out, PcapClientStats{ID: c.id, Remote: c.remote.String(), Since: c.since,
			Sent: c.sent.Load(), Bytes: c.bytes.Load(), Dropped: c.dropped.Load()})
	}
	return out
}

// Close stops accepting, lets each client's writer send what is pending
// (for at most closeFlush: a write blocked on a stopped client times out),
// disconnects every client and joins the goroutines.
func (s *PcapOverIP) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var err error
	if s.ln != nil {
		err = s.ln.Close()
	}
	// Each writer sends what is still pending, for at most closeFlush (a
	// stopped client's write times out), then closes its connection.
	deadline := time.Now().Add(closeFlush)
	for _, c := range s.cl {
		c.mu.Lock()
		c.done = true
		c.mu.Unlock()
		c.conn.SetWriteDeadline(deadline)
		c.signal()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// closeFlush bounds how long Close lets writers send what is pending.
const closeFlush = 500 * time.Millisecond

// pcapGlobalHeader is a classic pcap file header (little endian,
// microseconds, version 2.4, LINKTYPE_RAW).
func pcapGlobalHeader(snaplen int) []byte {
	h := make([]byte, 24)
	le := binary.LittleEndian
	le.PutUint32(h[0:], 0xa1b2c3d4)
	le.PutUint16(h[4:], 2)
	le.PutUint16(h[6:], 4)
	le.PutUint32(h[16:], uint32(snaplen))
	le.PutUint32(h[20:], uint32(LinkTypeRaw))
	return h
}

// pcapRecordHeader fills h[:16] with a classic pcap record header.
func pcapRecordHeader(h []byte, ts time.Time, capLen, origLen int) []byte {
	le := binary.LittleEndian
	le.PutUint32(h[0:], uint32(ts.Unix()))
	le.PutUint32(h[4:], uint32(ts.Nanosecond()/1000))
	le.PutUint32(h[8:], uint32(capLen))
	le.PutUint32(h[12:], uint32(origLen))
	return h[:16]
}

// pcapngHeader is a section header block and one interface description
// block (LINKTYPE_RAW, microsecond timestamps by default).
func pcapngHeader(snaplen int) []byte {
	le := binary.LittleEndian
	h := make([]byte, 0, 48)
	h = le.AppendUint32(h, 0x0a0d0d0a)
	h = le.AppendUint32(h, 28)
	h = le.AppendUint32(h, 0x1a2b3c4d)
	h = le.AppendUint16(h, 1)
	h = le.AppendUint16(h, 0)
	h = le.AppendUint64(h, ^uint64(0)) // section length unknown
	h = le.AppendUint32(h, 28)
	h = le.AppendUint32(h, 1) // IDB
	h = le.AppendUint32(h, 20)
	h = le.AppendUint16(h, uint16(LinkTypeRaw))
	h = le.AppendUint16(h, 0)
	h = le.AppendUint32(h, uint32(snaplen))
	h = le.AppendUint32(h, 20)
	return h
}

// appendIDB appends an interface description block for an interface
// named name (LINKTYPE_RAW, microsecond timestamps as the stream's first
// interface).
func appendIDB(b []byte, name string, snaplen int) []byte {
	le := binary.LittleEndian
	npad := (4 - len(name)%4) % 4
	total := 20 + 4 + len(name) + npad + 4
	b = le.AppendUint32(b, 1)
	b = le.AppendUint32(b, uint32(total))
	b = le.AppendUint16(b, uint16(LinkTypeRaw))
	b = le.AppendUint16(b, 0)
	b = le.AppendUint32(b, uint32(snaplen))
	b = le.AppendUint16(b, 2) // if_name
	b = le.AppendUint16(b, uint16(len(name)))
	b = append(b, name...)
	b = append(b, zeros[:npad]...)
	b = le.AppendUint32(b, 0) // opt_endofopt
	return le.AppendUint32(b, uint32(total))
}

// appendAnnotatedEPB appends an enhanced packet block on interface id at
// us microseconds, with the note's direction (epb_flags) and comment.
func appendAnnotatedEPB(b []byte, id uint32, us uint64, data []byte, origLen int, n *pcapfile.Note) []byte {
	le := binary.LittleEndian
	pad := (4 - len(data)%4) % 4
	cpad := (4 - len(n.Comment)%4) % 4
	opts := 4
	if n.Direction != 0 {
		opts += 8
	}
	if len(n.Comment) > 0 {
		opts += 4 + len(n.Comment) + cpad
	}
	total := 28 + len(data) + pad + opts + 4
	b = le.AppendUint32(b, 6)
	b = le.AppendUint32(b, uint32(total))
	b = le.AppendUint32(b, id)
	b = le.AppendUint32(b, uint32(us>>32))
	b = le.AppendUint32(b, uint32(us))
	b = le.AppendUint32(b, uint32(len(data)))
	b = le.AppendUint32(b, uint32(origLen))
	b = append(b, data...)
	b = append(b, zeros[:pad]...)
	if n.Direction != 0 {
		b = le.AppendUint16(b, 2) // epb_flags
		b = le.AppendUint16(b, 4)
		b = le.AppendUint32(b, uint32(n.Direction)&uint32(pcapgo.NgEpbFlagDirectionMask))
	}
	if len(n.Comment) > 0 {
		b = le.AppendUint16(b, 1) // opt_comment
		b = le.AppendUint16(b, uint16(len(n.Comment)))
		b = append(b, n.Comment...)
		b = append(b, zeros[:cpad]...)
	}
	b = le.AppendUint32(b, 0) // opt_endofopt
	return le.AppendUint32(b, uint32(total))
}

// pcapngEPBHeader fills h[:28] with an enhanced packet block's header
// (interface 0) and returns it with the padding the data needs; the
// block ends with the padding and its total length again.
func pcapngEPBHeader(h []byte, ts time.Time, capLen, origLen int) ([]byte, int) {
	pad := (4 - capLen%4) % 4
	total := 28 + capLen + pad + 4
	us := uint64(ts.UnixMicro())
	le := binary.LittleEndian
	le.PutUint32(h[0:], 6)
	le.PutUint32(h[4:], uint32(total))
	le.PutUint32(h[8:], 0)
	le.PutUint32(h[12:], uint32(us>>32))
	le.PutUint32(h[16:], uint32(us))
	le.PutUint32(h[20:], uint32(capLen))
	le.PutUint32(h[24:], uint32(origLen))
	return h[:28], pad
}
