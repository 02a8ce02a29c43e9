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

	"github.com/nfclone/nfclone/internal/mmsg"
	"golang.org/x/sys/unix"
)

// Tunnel header constants.
const (
	// VXLANPort is the IANA port of VXLAN (RFC 7348).
	VXLANPort = 4789
	// GENEVEPort is the IANA port of GENEVE (RFC 8926).
	GENEVEPort = 6081
	// TunnelHdrLen is the length of the VXLAN header and of the GENEVE
	// header without options.
	TunnelHdrLen = 8
	// EtherTypeTEB is "Transparent Ethernet Bridging", GENEVE's protocol
	// type for an Ethernet payload.
	EtherTypeTEB = 0x6558
	// tunnelFrameHdr is what the Tunnel sink writes in a copy's headroom:
	// tunnel header + inner Ethernet header.
	tunnelFrameHdr = TunnelHdrLen + EthHdrLen
)

// Default inner Ethernet addresses of the Tunnel sink (locally
// administered unicast, "NC" in ASCII): copies of L3
// packets get a synthesized Ethernet header from 02:4e:43:00:00:01 to
// 02:4e:43:00:00:02.
var (
	DefaultTunnelSrcMAC = net.HardwareAddr{0x02, 0x4e, 0x43, 0x00, 0x00, 0x01}
	DefaultTunnelDstMAC = net.HardwareAddr{0x02, 0x4e, 0x43, 0x00, 0x00, 0x02}
)

// PutVXLAN writes an RFC 7348 VXLAN header into h[:8]: flags 0x08 (I: the
// VNI is valid), 24 reserved bits, the 24-bit VNI, 8 reserved bits.
func PutVXLAN(h []byte, vni uint32) {
	_ = h[7]
	h[0], h[1], h[2], h[3] = 0x08, 0, 0, 0
	binary.BigEndian.PutUint32(h[4:8], vni<<8)
}

// PutGENEVE writes an RFC 8926 GENEVE header without options into h[:8]:
// version 0, option length 0, O and C clear, protocol type 0x6558
// (Ethernet), the 24-bit VNI, 8 reserved bits.
func PutGENEVE(h []byte, vni uint32) {
	_ = h[7]
	h[0], h[1] = 0, 0
	binary.BigEndian.PutUint16(h[2:4], EtherTypeTEB)
	binary.BigEndian.PutUint32(h[4:8], vni<<8)
}

// TunnelConfig configures a Tunnel sink.
type TunnelConfig struct {
	// Name identifies the target (default: "vxlan" or "geneve").
	Name string
	// Kind is "vxlan" (default) or "geneve".
	Kind string
	// Remotes are the collectors; each flow always goes to the same one
	// (rendezvous hashing, see PickRemote). A remote without a port (0)
	// gets the kind's IANA port.
	Remotes []netip.AddrPort
	// VNI is the 24-bit virtual network identifier.
	VNI uint32
	// Mark is SO_MARK on every socket (default 0x80); NoMark: none.
	Mark   uint32
	NoMark bool
	// SrcMAC and DstMAC are the synthesized inner Ethernet header's
	// addresses (defaults DefaultTunnelSrcMAC, DefaultTunnelDstMAC).
	SrcMAC, DstMAC net.HardwareAddr
	// SourcePorts is the number of UDP sockets (hence outer source ports)
	// per address family the flows are spread over (default 8, at most
	// 64).
	SourcePorts int
	// NoGSO sends one datagram per message even where the kernel has UDP
	// GSO (benchmarks and tests).
	NoGSO  bool
	Logger *slog.Logger
}

// DefaultTunnelSourcePorts is the default number of outer source ports.
const DefaultTunnelSourcePorts = 8

const maxTunnelSockets = 64

// Tunnel sends copies to one or more collectors inside VXLAN or GENEVE.
//
// Each copy (an L3 packet) gets a synthesized inner Ethernet header and the
// tunnel header, both written into the packet's headroom (no copy of the
// payload), and leaves through an ordinary UDP socket: the kernel builds the
// outer IP/UDP headers, computes the UDP checksum, routes by the socket's
// mark and fragments when needed. Where the kernel has UDP GSO, each run of
// equal-sized copies to one remote (the segments Wire cut from one
// super-packet) leaves as one message with a UDP_SEGMENT control message,
// and crosses the kernel's stack once (tunnel_gso.go).
//
// Outer source port. RFC 7348/8926 ask for a source port derived from the
// inner flow so that receivers spread flows over cores (RSS). A UDP socket
// has one source port, so the sink opens a small pool of unconnected
// sockets per address family (SourcePorts, default 8), each bound to its
// own ephemeral port, and a copy leaves through socket FlowHash%N: one flow
// always has the same outer source port, different flows spread over N
// ports. The alternative — a raw socket building the outer IP and UDP
// headers itself — gives 16 bits of entropy but needs CAP_NET_RAW, its own
// UDP checksum (mandatory over IPv6) and its own fragmentation, and loses
// the kernel's ICMP/PMTU handling. The price of the pool is one sendmmsg per
// socket used in a batch instead of one per batch; 8 ports are enough
// entropy for RSS over a collector's cores and keep the syscall count low.
// Measured (BenchmarkTunnelLoopback, 64 flows per batch of 64, loopback,
// 2 vCPUs): 1 port ≈ 1.0 µs/copy, 8 ports ≈ 1.4–1.8 µs, 16 ports ≈ 2.5–3.3
// µs; building a batch without the syscall costs ≈ 35 ns/copy
// (BenchmarkTunnelBuildBatch; Gateway ≈ 8 ns).
//
// Errors. The sockets are unconnected and have no IP_RECVERR, so an ICMP
// error (port or host unreachable) caused by an earlier datagram is never
// reported on a later send and never poisons a socket; errors the kernel
// reports synchronously (no route: ENETUNREACH, EHOSTUNREACH; EPERM from a
// firewall; ENOBUFS) are counted per copy (p.Errs++, the target's error
// counter, a rate-limited warning) and the rest of the batch is still sent.
type Tunnel struct {
	counters
	geneve  bool
	vni     uint32
	src     [6]byte
	dst     [6]byte
	remotes []tunRemote
	hrw     *Rendezvous
	fds     [2][]int    // per family (0: IPv4, 1: IPv6): the socket pool
	ports   [2][]uint16 // the pool's local ports
	send    sendmmsgFunc
	scratch sync.Pool
	gso     atomic.Bool // UDP GSO: runs of equal-sized copies leave as one message
	gsoOff  sync.Once   // logs the fallback to one datagram per message
}

type tunRemote struct {
	fam  int // 0: IPv4, 1: IPv6
	sa4  unix.RawSockaddrInet4
	sa6  unix.RawSockaddrInet6
	addr netip.AddrPort
}

type tunScratch struct {
	h    []unix.Mmsghdr // GSO messages
	h1   []unix.Mmsghdr // one message per copy
	iov  []unix.Iovec   // per copy, in sending order (grouped by socket)
	p    []*packet.Packet
	r    []*tunRemote // per copy, in sending order
	msg  []tunMsg     // per message: which copies (UDP GSO)
	ctl  []segCmsg    // per message: its UDP_SEGMENT control message
	sock []uint8      // per copy: socket slot (fam*maxTunnelSockets + index); 0xff: skipped
	ent  []tunEnt
	cnt  [2 * maxTunnelSockets]int
	pos  [2 * maxTunnelSockets]int
}

type tunEnt struct {
	r *tunRemote
	f []byte // tunnel header + inner frame
}

// NewTunnel opens the socket pools (one per address family the remotes
// use).
func NewTunnel(cfg TunnelConfig) (*Tunnel, error) {
	t, err := newTunnel(cfg, mmsg.Send)
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
	n := cfg.SourcePorts
	if n <= 0 {
		n = DefaultTunnelSourcePorts
	}
	if n > maxTunnelSockets {
		n = maxTunnelSockets
	}
	var need [2]bool
	for _, r := range t.remotes {
		need[r.fam] = true
	}
	for fam := range 2 {
		if !need[fam] {
			continue
		}
		for range n {
			fd, port, err := tunnelSocket(fam, mark)
			if err != nil {
				t.Close()
				return nil, err
			}
			t.fds[fam] = append(t.fds[fam], fd)
			t.ports[fam] = append(t.ports[fam], port)
		}
	}
	t.gso.Store(!cfg.NoGSO && t.probeGSO())
	return t, nil
}

func tunnelSocket(fam int, mark uint32) (int, uint16, error) {
	af := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{}
	if fam == 1 {
		af = unix.AF_INET6
		sa = &unix.SockaddrInet6{}
	}
	fd, err := unix.Socket(af, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, 0, fmt.Errorf("sink: UDP socket: %w", err)
	}
	if err := setMark(fd, mark); err != nil {
		unix.Close(fd)
		return -1, 0, err
	}
	if fam == 1 {
		// IPv6 only: IPv4 remotes use the IPv4 pool.
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	}
	// A bigger send buffer absorbs bursts of a batch.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("sink: bind UDP socket: %w", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("sink: UDP socket name: %w", err)
	}
	var port int
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	return fd, uint16(port), nil
}

// newTunnel builds the sink without sockets (tests add fake descriptors).
func newTunnel(cfg TunnelConfig, send sendmmsgFunc) (*Tunnel, error) {
	t := &Tunnel{vni: cfg.VNI, send: send}
	port := uint16(VXLANPort)
	switch cfg.Kind {
	case "", "vxlan":
	case "geneve":
		t.geneve = true
		port = GENEVEPort
	default:
		return nil, fmt.Errorf("sink: tunnel kind %q: want vxlan or geneve", cfg.Kind)
	}
	if cfg.VNI > 0xffffff {
		return nil, fmt.Errorf("sink: VNI %d does not fit in 24 bits", cfg.VNI)
	}
	if len(cfg.Remotes) == 0 {
		return nil, errors.New("sink: tunnel without a remote")
	}
	var err error
	if t.src, t.dst, err = innerMACs(cfg.SrcMAC, cfg.DstMAC); err != nil {
		return nil, err
	}
	remotes := make([]netip.AddrPort, len(cfg.Remotes))
	t.remotes = make([]tunRemote, len(cfg.Remotes))
	for i, r := range cfg.Remotes {
		a := r.Addr().Unmap()
		if !a.IsValid() || a.IsUnspecified() {
			return nil, fmt.Errorf("sink: tunnel remote %v is not an address", r)
		}
		p := r.Port()
		if p == 0 {
			p = port
		}
		remotes[i] = netip.AddrPortFrom(a, p)
		tr := &t.remotes[i]
		tr.addr = remotes[i]
		if a.Is4() {
			tr.sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: htons(p), Addr: a.As4()}
		} else {
			tr.fam = 1
			tr.sa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(p), Addr: a.As16()}
			if z := a.Zone(); z != "" {
				if ifi, err := net.InterfaceByName(z); err == nil {
					tr.sa6.Scope_id = uint32(ifi.Index)
				}
			}
		}
	}
	t.hrw = NewRendezvous(remotes)
	name := cfg.Name
	if name == "" {
		name = "vxlan"
		if t.geneve {
			name = "geneve"
		}
	}
	t.init(name, cfg.Logger)
	t.scratch.New = func() any { return new(tunScratch) }
	return t, nil
}

// Name is the target's name.
func (t *Tunnel) Name() string { return t.name }

// Remotes returns the collectors (ports filled in).
func (t *Tunnel) Remotes() []netip.AddrPort {
	out := make([]netip.AddrPort, len(t.remotes))
	for i, r := range t.remotes {
		out[i] = r.addr
	}
	return out
}

// SourcePorts returns the outer UDP source ports of the IPv4 and IPv6
// socket pools.
func (t *Tunnel) SourcePorts() (v4, v6 []uint16) {
	return append([]uint16(nil), t.ports[0]...), append([]uint16(nil), t.ports[1]...)
}

const skipSock = 0xff

// Send encapsulates and sends the batch: one sendmmsg per socket used. With
// UDP GSO (see tunnel_gso.go) each run of equal-sized copies to one remote
// is one message of that sendmmsg.
func (t *Tunnel) Send(batch []*packet.Packet) (int, error) {
	sc := t.scratch.Get().(*tunScratch)
	defer t.scratch.Put(sc)
	n := len(batch)
	sc.h, sc.h1, sc.iov, sc.p = grow(sc.h, n), grow(sc.h1, n), grow(sc.iov, n), grow(sc.p, n)
	sc.sock, sc.ent, sc.r = grow(sc.sock, n), grow(sc.ent, n), grow(sc.r, n)
	sc.msg, sc.ctl = grow(sc.msg, n), grow(sc.ctl, n)
	clear(sc.cnt[:])
	bad := 0
	var last error
	// Pass 1: headers in place; socket and remote of each copy; counts per
	// socket.
	for i, p := range batch {
		sc.sock[i] = skipSock
		var et uint16
		switch p.Family {
		case 4:
			et = unix.ETH_P_IP
		case 6:
			et = unix.ETH_P_IPV6
		}
		f := p.Frame(tunnelFrameHdr)
		if et == 0 || f == nil || len(p.Data) == 0 {
			p.Errs++
			bad++
			last = errUnsendable
			continue
		}
		FixTruncated(p)
		flow := FlowHash(p.Data)
		r := &t.remotes[t.hrw.Pick(flow)]
		pool := t.fds[r.fam]
		if len(pool) == 0 {
			p.Errs++
			bad++
			last = errNoSocket
			continue
		}
		if t.geneve {
			PutGENEVE(f, t.vni)
		} else {
			PutVXLAN(f, t.vni)
		}
		PutEthernet(f[TunnelHdrLen:], t.dst, t.src, et)
		s := r.fam*maxTunnelSockets + int((flow>>8)%uint32(len(pool)))
		sc.sock[i] = uint8(s)
		sc.cnt[s]++
		sc.ent[i] = tunEnt{r: r, f: f}
	}
	if bad > 0 {
		t.fail(bad, last)
	}
	// Pass 2: place the copies grouped by socket (a stable counting sort):
	// sc.p, sc.iov and sc.r in sending order.
	off := 0
	for s := range sc.cnt {
		sc.pos[s] = off
		off += sc.cnt[s]
	}
	for i, p := range batch {
		s := sc.sock[i]
		if s == skipSock {
			continue
		}
		j := sc.pos[s]
		sc.pos[s]++
		e := &sc.ent[i]
		sc.p[j] = p
		sc.r[j] = e.r
		mmsg.Iov(&sc.iov[j], e.f)
		*e = tunEnt{}
	}
	// Pass 3: per socket, the messages (one per copy, or one per run of
	// copies with UDP GSO) and one sendmmsg for them.
	sent := 0
	start := 0
	for s := range sc.cnt {
		k := sc.cnt[s]
		if k == 0 {
			continue
		}
		fd := t.fds[s/maxTunnelSockets][s%maxTunnelSockets]
		var m int
		var err error
		if t.gso.Load() {
			m, err = t.sendGSO(fd, sc, start, start+k)
		} else {
			m, err = t.sendEach(fd, sc, start, start+k)
		}
		sent += m
		if err != nil {
			last = err
		}
		start += k
	}
	clear(sc.p)
	clear(sc.r)
	return sent, last
}

// sendEach sends the copies sc.p[from:to] one datagram each.
func (t *Tunnel) sendEach(fd int, sc *tunScratch, from, to int) (int, error) {
	for j := from; j < to; j++ {
		setTunMsg(&sc.h1[j], sc.r[j], &sc.iov[j], 1)
	}
	return sendAll(t.send, fd, sc.h1[from:to], sc.p[from:to], &t.counters)
}

// setTunMsg makes h a message of n iovecs from iov to remote r.
func setTunMsg(h *unix.Mmsghdr, r *tunRemote, iov *unix.Iovec, n int) {
	*h = unix.Mmsghdr{}
	if r.fam == 0 {
		mmsg.Inet4(h, &r.sa4)
	} else {
		mmsg.Inet6(h, &r.sa6)
	}
	h.Hdr.Iov = iov
	h.Hdr.SetIovlen(n)
}

var errNoSocket = errors.New("sink: no socket for the remote's address family")

// Close closes the sockets.
func (t *Tunnel) Close() error {
	var err error
	for fam := range t.fds {
		for _, fd := range t.fds[fam] {
			if fd >= 0 {
				err = errors.Join(err, unix.Close(fd))
			}
		}
		t.fds[fam] = nil
	}
	return err
}

// innerMACs are the addresses of the synthesized inner Ethernet header of
// tunnelled L3 copies: src and dst, or DefaultTunnelSrcMAC and
// DefaultTunnelDstMAC where nil.
func innerMACs(src, dst net.HardwareAddr) (s, d [6]byte, err error) {
	if src == nil {
		src = DefaultTunnelSrcMAC
	}
	if dst == nil {
		dst = DefaultTunnelDstMAC
	}
	if len(src) != 6 || len(dst) != 6 {
		return s, d, errors.New("sink: inner Ethernet addresses must have 6 bytes")
	}
	copy(s[:], src)
	copy(d[:], dst)
	return s, d, nil
}
