package sink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/nfclone/nfclone/packet"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nfclone/nfclone/internal/mmsg"
	"golang.org/x/sys/unix"
)

// ERSPAN constants (draft-foschiano-erspan; the kernel's include/net/erspan.h).
const (
	// GREProtoERSPAN2 is the GRE protocol type of ERSPAN type II (and I).
	GREProtoERSPAN2 = 0x88be
	// GREProtoERSPAN3 is the GRE protocol type of ERSPAN type III.
	GREProtoERSPAN3 = 0x22eb
	// GREHdrLen is the GRE header ERSPAN uses: flags with S (sequence
	// number present), protocol type, sequence number.
	GREHdrLen = 8
	// ERSPAN2HdrLen and ERSPAN3HdrLen are the ERSPAN headers (type III
	// without the optional platform-specific subheader).
	ERSPAN2HdrLen = 8
	ERSPAN3HdrLen = 12
	// MaxERSPANSession is the largest session id (10 bits).
	MaxERSPANSession = 1023
	greFlagSeq       = 0x1000
)

// ERSPANHdrLen is the GRE and ERSPAN header of a version (2 or 3), without
// the inner Ethernet header.
func ERSPANHdrLen(version int) int {
	if version == 3 {
		return GREHdrLen + ERSPAN3HdrLen
	}
	return GREHdrLen + ERSPAN2HdrLen
}

// ERSPANHeader is what PutERSPAN writes besides constants.
type ERSPANHeader struct {
	Version   int    // 2 (type II) or 3 (type III)
	Seq       uint32 // GRE sequence number
	Session   uint16 // 10 bits
	COS       uint8  // 3 bits: the copy's IP precedence (TOS >> 5), as the kernel sets it
	Truncated bool   // T: the copy was cut (snaplen)
	// Type III only: BSO (2 bits: 1 short frame, 2 oversized), the
	// timestamp (units of 100 µs, granularity 00, the low 32 bits, as the
	// kernel's erspan devices send it: when the kernel saw the packet, if
	// it said, else when the batch is sent) and the direction D (1 for
	// copies taken at egress).
	BSO       uint8
	Timestamp uint32
	Egress    bool
}

// PutERSPAN writes a GRE header (flags: S, protocol 0x88be for type II or
// 0x22eb for type III, the sequence number) and the ERSPAN header into
// h[:ERSPANHdrLen(x.Version)]. Type II: version 1, VLAN 0, COS, En 0 (the
// frame carries no VLAN tag), T, the session id, index 0. Type III:
// version 2, VLAN 0, COS, BSO, T, the session id, the timestamp, SGT 0,
// P 1 (an Ethernet frame), FT 0, hardware id 0, D, Gra 00, O 0 (no
// platform-specific subheader) — field for field what the kernel's
// erspan_build_header_v2 writes.
func PutERSPAN(h []byte, x ERSPANHeader) {
	_ = h[ERSPANHdrLen(x.Version)-1]
	proto, ver := uint16(GREProtoERSPAN2), uint16(1)
	if x.Version == 3 {
		proto, ver = GREProtoERSPAN3, 2
	}
	binary.BigEndian.PutUint16(h[0:2], greFlagSeq)
	binary.BigEndian.PutUint16(h[2:4], proto)
	binary.BigEndian.PutUint32(h[4:8], x.Seq)
	binary.BigEndian.PutUint16(h[8:10], ver<<12) // vlan 0
	w := uint16(x.COS&7)<<13 | uint16(x.Session&0x3ff)
	if x.Truncated {
		w |= 1 << 10
	}
	if x.Version != 3 {
		binary.BigEndian.PutUint16(h[10:12], w)
		binary.BigEndian.PutUint32(h[12:16], 0) // reserved, index
		return
	}
	w |= uint16(x.BSO&3) << 11
	binary.BigEndian.PutUint16(h[10:12], w)
	binary.BigEndian.PutUint32(h[12:16], x.Timestamp)
	binary.BigEndian.PutUint16(h[16:18], 0) // SGT
	h[18] = 0x80                            // P 1, FT 0, hw id high bits 0
	h[19] = 0                               // hw id low bits, D, Gra 00, O 0
	if x.Egress {
		h[19] |= 1 << 3
	}
}

// erspanCOS is the kernel's tos_to_cos of an IP packet: the top 3 bits of
// the TOS / traffic class.
func erspanCOS(ip []byte) uint8 {
	if len(ip) < 2 {
		return 0
	}
	if ip[0]>>4 == 6 {
		return (ip[0]<<4 | ip[1]>>4) >> 5
	}
	return ip[1] >> 5
}

// ERSPANConfig configures an ERSPAN sink.
type ERSPANConfig struct {
	// Name identifies the target (default "erspan").
	Name string
	// Remotes are the collectors (flows spread by rendezvous hashing, as
	// for tunnels).
	Remotes []netip.Addr
	// Version is 2 (ERSPAN type II, default) or 3 (type III).
	Version int
	// Session is the ERSPAN session id (0-1023).
	Session uint16
	// Mark is SO_MARK on the sockets (default 0x80); NoMark: none.
	Mark   uint32
	NoMark bool
	// SrcMAC and DstMAC are the synthesized Ethernet header's addresses
	// (defaults DefaultTunnelSrcMAC, DefaultTunnelDstMAC).
	SrcMAC, DstMAC net.HardwareAddr
	Logger         *slog.Logger
}

// ERSPAN sends copies to collectors as ERSPAN type II or III over GRE (IP
// protocol 47), built in userspace: this kernel has no gre or erspan link
// kinds. Each copy (an L3 packet) gets the synthesized Ethernet header and
// the GRE and ERSPAN headers written into its headroom (no copy of the
// payload), and leaves through a raw IPPROTO_GRE socket per address family:
// the kernel builds the outer IP header, routes by the socket's mark and
// fragments when needed. The sockets never receive (a filter drops
// everything). GRE sequence numbers count the target's frames. The
// headers are those a kernel erspan device writes (see PutERSPAN).
type ERSPAN struct {
	counters
	v3      bool // type III
	session uint16
	src     [6]byte
	dst     [6]byte
	hdr     int
	remotes []tunRemote
	hrw     *Rendezvous
	fds     [2]int
	seq     atomic.Uint32
	send    sendmmsgFunc
	scratch sync.Pool
	now     func() time.Time
}

type erspanScratch struct {
	h   [2][]unix.Mmsghdr
	iov [2][]unix.Iovec
	p   [2][]*packet.Packet
}

// NewERSPAN opens the raw GRE sockets (one per address family the remotes
// use; CAP_NET_RAW).
func NewERSPAN(cfg ERSPANConfig) (*ERSPAN, error) {
	e, err := newERSPAN(cfg, mmsg.Send)
	if err != nil {
		return nil, err
	}
	mark := cfg.Mark
	if mark == 0 {
		mark = DefaultMark
	}
	if cfg.NoMark {
		mark = 0
	}
	for i := range e.remotes {
		fam := e.remotes[i].fam
		if e.fds[fam] >= 0 {
			continue
		}
		fd, err := greSocket(fam, mark)
		if err != nil {
			e.Close()
			return nil, err
		}
		e.fds[fam] = fd
	}
	return e, nil
}

// dropAll is a classic BPF program that accepts nothing: the send sockets
// of the ERSPAN sink never queue the host's GRE traffic.
var dropAll = []unix.SockFilter{{Code: 0x06, K: 0}} // ret #0

func greSocket(fam int, mark uint32) (int, error) {
	af := unix.AF_INET
	if fam == 1 {
		af = unix.AF_INET6
	}
	fd, err := unix.Socket(af, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_GRE)
	if err != nil {
		return -1, fmt.Errorf("sink: raw GRE socket: %w", err)
	}
	prog := unix.SockFprog{Len: uint16(len(dropAll)), Filter: &dropAll[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("sink: raw GRE socket filter: %w", err)
	}
	if err := setMark(fd, mark); err != nil {
		unix.Close(fd)
		return -1, err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
	return fd, nil
}

// newERSPAN builds the sink without sockets (tests add fake descriptors).
func newERSPAN(cfg ERSPANConfig, send sendmmsgFunc) (*ERSPAN, error) {
	e := &ERSPAN{session: cfg.Session, send: send, fds: [2]int{-1, -1}, now: time.Now}
	switch cfg.Version {
	case 0, 2:
	case 3:
		e.v3 = true
	default:
		return nil, fmt.Errorf("sink: ERSPAN version %d: want 2 (type II) or 3 (type III)", cfg.Version)
	}
	e.hdr = ERSPANHdrLen(cfg.Version) + EthHdrLen
	if cfg.Session > MaxERSPANSession {
		return nil, fmt.Errorf("sink: ERSPAN session id %d does not fit in 10 bits", cfg.Session)
	}
	if len(cfg.Remotes) == 0 {
		return nil, errors.New("sink: ERSPAN without a remote")
	}
	var err error
	if e.src, e.dst, err = innerMACs(cfg.SrcMAC, cfg.DstMAC); err != nil {
		return nil, err
	}
	aps := make([]netip.AddrPort, len(cfg.Remotes))
	e.remotes = make([]tunRemote, len(cfg.Remotes))
	for i, r := range cfg.Remotes {
		a := r.Unmap()
		if !a.IsValid() || a.IsUnspecified() {
			return nil, fmt.Errorf("sink: ERSPAN remote %v is not an address", r)
		}
		aps[i] = netip.AddrPortFrom(a, 0)
		tr := &e.remotes[i]
		tr.addr = aps[i]
		if a.Is4() {
			// Raw sockets take the protocol in the port field: 0 is the
			// socket's own.
			tr.sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
		} else {
			tr.fam = 1
			tr.sa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()}
			if z := a.Zone(); z != "" {
				if ifi, err := net.InterfaceByName(z); err == nil {
					tr.sa6.Scope_id = uint32(ifi.Index)
				}
			}
		}
	}
	e.hrw = NewRendezvous(aps)
	name := cfg.Name
	if name == "" {
		name = "erspan"
	}
	e.init(name, cfg.Logger)
	e.scratch.New = func() any { return new(erspanScratch) }
	return e, nil
}

// Name is the target's name.
func (e *ERSPAN) Name() string { return e.name }

// Overhead is what the target adds around an L3 copy besides the outer IP
// header: GRE, ERSPAN and the inner Ethernet header.
func (e *ERSPAN) Overhead() int { return e.hdr }

// Send encapsulates the batch and sends it with one sendmmsg per address
// family.
func (e *ERSPAN) Send(batch []*packet.Packet) (int, error) {
	sc := e.scratch.Get().(*erspanScratch)
	defer e.scratch.Put(sc)
	for f := range 2 {
		sc.h[f], sc.iov[f], sc.p[f] = grow(sc.h[f], len(batch)), grow(sc.iov[f], len(batch)), sc.p[f][:0]
	}
	x := ERSPANHeader{Version: 2, Session: e.session}
	var batchTS uint32
	if e.v3 {
		x.Version = 3
		batchTS = uint32(e.now().UnixNano() / 100_000)
	}
	bad := 0
	var last error
	for _, p := range batch {
		var et uint16
		switch p.Family {
		case 4:
			et = unix.ETH_P_IP
		case 6:
			et = unix.ETH_P_IPV6
		}
		f := p.Frame(e.hdr)
		if et == 0 || f == nil || len(p.Data) == 0 {
			p.Errs++
			bad++
			last = errUnsendable
			continue
		}
		FixTruncated(p)
		r := &e.remotes[0]
		if len(e.remotes) > 1 {
			r = &e.remotes[e.hrw.Pick(FlowHash(p.Data))]
		}
		if e.fds[r.fam] < 0 {
			p.Errs++
			bad++
			last = errNoSocket
			continue
		}
		x.Seq = e.seq.Add(1)
		if e.v3 {
			if p.Time != 0 {
				x.Timestamp = uint32(p.Time / 100_000) // when the kernel saw it
			} else {
				x.Timestamp = batchTS
			}
			x.Egress = p.Dir == packet.DirEgress
		}
		x.COS = erspanCOS(p.Data)
		x.Truncated = p.Truncated()
		x.BSO = 0
		if n := EthHdrLen + len(p.Data); n < 60 {
			x.BSO = 1
		} else if n > 1514 {
			x.BSO = 2
		}
		PutERSPAN(f, x)
		PutEthernet(f[e.hdr-EthHdrLen:], e.dst, e.src, et)
		i := len(sc.p[r.fam])
		h := &sc.h[r.fam][i]
		mmsg.Point(h, &sc.iov[r.fam][i], f)
		if r.fam == 0 {
			mmsg.Inet4(h, &r.sa4)
		} else {
			mmsg.Inet6(h, &r.sa6)
		}
		sc.p[r.fam] = append(sc.p[r.fam], p)
	}
	if bad > 0 {
		e.fail(bad, last)
	}
	sent := 0
	for f := range 2 {
		k := len(sc.p[f])
		if k == 0 {
			continue
		}
		m, err := sendAll(e.send, e.fds[f], sc.h[f][:k], sc.p[f], &e.counters)
		sent += m
		if err != nil {
			last = err
		}
		clear(sc.p[f])
	}
	return sent, last
}

// Close closes the sockets.
func (e *ERSPAN) Close() error {
	var err error
	for i, fd := range e.fds {
		if fd >= 0 {
			err = errors.Join(err, unix.Close(fd))
			e.fds[i] = -1
		}
	}
	return err
}
