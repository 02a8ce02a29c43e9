package collect

import (
	"context"
	"errors"
	"fmt"
	"github.com/nfclone/nfclone/dedup"
	"github.com/nfclone/nfclone/pcapfile"
	"hash/maphash"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/nfclone/nfclone/internal/mmsg"
	"golang.org/x/sys/unix"
)

// Config configures a Collector.
type Config struct {
	// Listen is host:port (an IP literal or "localhost"; "" host or
	// 0.0.0.0/:: = every address; port 0 = any free port). For kind
	// "erspan" it is an IP address without a port (0.0.0.0: every IPv4
	// address, ::, every IPv6 address).
	Listen string
	// Kind is "auto" (default: by header, see Decode), "vxlan", "geneve"
	// or "erspan" (GRE on a raw socket, CAP_NET_RAW).
	Kind string
	// VNIs keeps only these VNIs (empty: all).
	VNIs []uint32
	// Sessions keeps only these ERSPAN session ids (empty: all).
	Sessions []uint32
	// Dedup, when not 0, writes a frame seen again within this window
	// once (several senders mirroring one flow): see dedupID.
	Dedup time.Duration
	// Allow restricts the senders. Without it the collector refuses to
	// start unless it listens on loopback or AllowAny is set (Validate).
	Allow    []netip.Prefix
	AllowAny bool
	// PcapPath receives the inner frames (Ethernet link type); "-" is
	// standard output. PcapFormat is "pcap" (default) or "pcapng".
	PcapPath   string
	PcapFormat string
	// TapName is a TAP device created for the frames (removed on Close).
	TapName string
	Logger  *slog.Logger
}

// Stats are the collector's counters.
type Stats struct {
	Received     uint64 `json:"received"`
	Decapsulated uint64 `json:"decapsulated"`
	Written      uint64 `json:"written"`
	Malformed    uint64 `json:"malformed"`
	FilteredVNI  uint64 `json:"filtered_vni"`
	DeniedSender uint64 `json:"denied_sender"`
	WriteErrors  uint64 `json:"write_errors"`
	Duplicates   uint64 `json:"duplicates"`
}

// ParseAllow turns --allow values into prefixes: a CIDR or a bare address
// (a /32 or /128), or "any" (any = true).
func ParseAllow(values []string) (prefixes []netip.Prefix, any bool, err error) {
	for _, v := range values {
		v = strings.TrimSpace(v)
		if v == "any" {
			any = true
			continue
		}
		if p, err := netip.ParsePrefix(v); err == nil {
			prefixes = append(prefixes, p.Masked())
			continue
		}
		if a, err := netip.ParseAddr(v); err == nil {
			prefixes = append(prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		return nil, false, fmt.Errorf("--allow %q: not a CIDR, an address or \"any\"", v)
	}
	return prefixes, any, nil
}

// listenAddr parses Listen; loopback reports whether only this host can
// reach it. For ERSPAN (raw GRE) it is an address without a port.
func listenAddr(s, kind string) (addr netip.AddrPort, loopback bool, err error) {
	if kind == KindERSPAN {
		if s == "localhost" {
			s = "127.0.0.1"
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.AddrPort{}, false, fmt.Errorf("--listen %q: ERSPAN is GRE, not UDP: want an IP address without a port (e.g. 10.77.4.2, 0.0.0.0, ::)", s)
		}
		a = a.Unmap()
		return netip.AddrPortFrom(a, 0), a.IsLoopback(), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("--listen %q: want host:port (e.g. 127.0.0.1:4789, [::1]:6081, :4789)", s)
	}
	var p uint16
	if _, err := fmt.Sscan(port, &p); err != nil || fmt.Sprint(p) != port {
		return netip.AddrPort{}, false, fmt.Errorf("--listen %q: bad port %q", s, port)
	}
	switch host {
	case "":
		return netip.AddrPortFrom(netip.IPv6Unspecified(), p), false, nil
	case "localhost":
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p), true, nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("--listen %q: host must be an IP address or localhost", s)
	}
	a = a.Unmap()
	return netip.AddrPortFrom(a, p), a.IsLoopback(), nil
}

// Validate checks the configuration, including the refuse-to-start rule:
// a collector that anyone can reach must say whom it accepts frames from.
func Validate(cfg Config) error {
	var errs []error
	_, loop, err := listenAddr(cfg.Listen, cfg.Kind)
	if err != nil {
		errs = append(errs, err)
	} else if len(cfg.Allow) == 0 && !cfg.AllowAny && !loop {
		errs = append(errs, fmt.Errorf("--listen %s is reachable from other hosts and no --allow is given: "+
			"anyone could inject frames into the capture; give --allow CIDR (repeatable) for the senders, "+
			"listen on loopback, or say --allow any", cfg.Listen))
	}
	switch cfg.Kind {
	case "", KindAuto, KindVXLAN, KindGENEVE, KindERSPAN:
	default:
		errs = append(errs, fmt.Errorf("kind %q: want auto, vxlan, geneve or erspan", cfg.Kind))
	}
	if cfg.Kind == KindERSPAN && len(cfg.VNIs) > 0 {
		errs = append(errs, errors.New("--vni is for VXLAN and GENEVE; ERSPAN sessions are chosen with --session"))
	}
	if cfg.Kind != KindERSPAN && len(cfg.Sessions) > 0 {
		errs = append(errs, errors.New("--session is for --kind erspan"))
	}
	if cfg.Dedup < 0 || cfg.Dedup > 10*time.Second {
		errs = append(errs, fmt.Errorf("--dedup %v is out of range 0-10s", cfg.Dedup))
	}
	for _, v := range cfg.Sessions {
		if v > 1023 {
			errs = append(errs, fmt.Errorf("--session %d does not fit in 10 bits (0-1023)", v))
		}
	}
	for _, v := range cfg.VNIs {
		if v > 0xffffff {
			errs = append(errs, fmt.Errorf("--vni %d does not fit in 24 bits", v))
		}
	}
	for _, p := range cfg.Allow {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("--allow: invalid prefix"))
		}
	}
	if cfg.PcapPath == "" && cfg.TapName == "" {
		errs = append(errs, errors.New("no output: give -w FILE (or - for stdout) or --tap NAME"))
	}
	if len(cfg.TapName) >= unix.IFNAMSIZ {
		errs = append(errs, fmt.Errorf("--tap %q: longer than %d characters", cfg.TapName, unix.IFNAMSIZ-1))
	}
	return errors.Join(errs...)
}

// Listen opens a UDP socket for the collector: network "udp", "udp4" or
// "udp6"; an IPv6 or unspecified address listens on IPv6 (and IPv4, dual
// stack, for "udp" with an empty host or "::"). It asks for a large receive
// buffer.
func Listen(network, addr string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			// Best effort: 8 MiB absorbs bursts (capped by rmem_max
			// unless privileged).
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
			}
		})
	}}
	pc, err := lc.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, fmt.Errorf("collect: listen %s: %w", addr, err)
	}
	return pc.(*net.UDPConn), nil
}

// packetConn is the collector's socket: UDP, or raw GRE for ERSPAN.
type packetConn interface {
	SyscallConn() (syscall.RawConn, error)
	SetReadDeadline(time.Time) error
	LocalAddr() net.Addr
	Close() error
}

// ListenGRE opens a raw IPPROTO_GRE socket bound to addr (CAP_NET_RAW)
// with a large receive buffer. IPv4 raw sockets hand over the IP header
// with each packet; IPv6 ones do not.
func ListenGRE(addr netip.Addr) (*net.IPConn, error) {
	network := "ip4:gre"
	if addr.Is6() {
		network = "ip6:gre"
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
			}
		})
	}}
	pc, err := lc.ListenPacket(context.Background(), network, addr.String())
	if err != nil {
		return nil, fmt.Errorf("collect: listen %s %s: %w", network, addr, err)
	}
	return pc.(*net.IPConn), nil
}

// Collector receives tunnelled frames and writes the inner frames out.
type Collector struct {
	cfg       Config
	log       *slog.Logger
	conn      packetConn
	raw4      bool // an IPv4 raw socket: datagrams start with the IP header
	allowAll  bool
	vnis      map[uint32]bool
	pcap      *pcapfile.Writer
	tap       *tapDev
	running   atomic.Bool
	closeOnce sync.Once
	synth     []byte // Handle's buffer for L3 packets given an Ethernet header
	dedup     *dedup.Table
	seed      maphash.Seed

	received, decap, written, malformed, filtered, denied, writeErrs, dups atomic.Uint64
	lastWarn                                                               time.Time

	// The last denied sender and the last decode error, for the running
	// report (set only on those paths, never for a frame that is written).
	lastMu        sync.Mutex
	lastDenied    netip.Addr
	lastMalformed error
}

// New validates cfg, opens the listener and the outputs.
func New(cfg Config) (*Collector, error) {
	if err := Validate(cfg); err != nil {
		return nil, err
	}
	addr, loop, _ := listenAddr(cfg.Listen, cfg.Kind)
	c := &Collector{cfg: cfg, log: cfg.Logger}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.allowAll = cfg.AllowAny || (len(cfg.Allow) == 0 && loop)
	if cfg.Dedup > 0 {
		c.dedup, c.seed = dedup.NewTable(cfg.Dedup), maphash.MakeSeed()
	}
	if ids := append(append([]uint32(nil), cfg.VNIs...), cfg.Sessions...); len(ids) > 0 {
		// VNIs and ERSPAN session ids are both Frame.VNI.
		c.vnis = make(map[uint32]bool, len(ids))
		for _, v := range ids {
			c.vnis[v] = true
		}
	}
	if cfg.Kind == KindERSPAN {
		conn, err := ListenGRE(addr.Addr())
		if err != nil {
			return nil, err
		}
		c.conn, c.raw4 = conn, addr.Addr().Is4()
		return c, c.openOutputs()
	}
	network := "udp"
	if addr.Addr().Is4() {
		network = "udp4"
	}
	host := addr.Addr().String()
	if strings.HasPrefix(cfg.Listen, ":") {
		host = "" // every address, IPv4 and IPv6
	}
	conn, err := Listen(network, net.JoinHostPort(host, fmt.Sprint(addr.Port())))
	if err != nil {
		return nil, err
	}
	c.conn = conn
	return c, c.openOutputs()
}

// openOutputs opens the pcap writer and the TAP device; on failure it
// closes everything.
func (c *Collector) openOutputs() (err error) {
	cfg := c.cfg
	if cfg.PcapPath != "" {
		c.pcap, err = pcapfile.Open(pcapfile.Config{Path: cfg.PcapPath, Format: cfg.PcapFormat,
			LinkType: pcapfile.LinkTypeEthernet})
		if err != nil {
			c.conn.Close()
			return fmt.Errorf("collect: %w", err)
		}
	}
	if cfg.TapName != "" {
		c.tap, err = openTap(cfg.TapName)
		if err != nil {
			c.Close()
			return err
		}
	}
	return nil
}

// Addr is the address the collector listens on.
func (c *Collector) Addr() netip.AddrPort {
	switch a := c.conn.LocalAddr().(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case *net.IPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return netip.AddrPortFrom(ip.Unmap(), 0)
	}
	return netip.AddrPort{}
}

// TapName is the name of the TAP device ("" without one).
func (c *Collector) TapName() string {
	if c.tap == nil {
		return ""
	}
	return c.tap.name
}

// Last returns the last denied sender and the last decode error (zero
// and nil if none yet).
func (c *Collector) Last() (denied netip.Addr, malformed error) {
	c.lastMu.Lock()
	defer c.lastMu.Unlock()
	return c.lastDenied, c.lastMalformed
}

// Stats returns the counters.
func (c *Collector) Stats() Stats {
	return Stats{
		Received:     c.received.Load(),
		Decapsulated: c.decap.Load(),
		Written:      c.written.Load(),
		Malformed:    c.malformed.Load(),
		FilteredVNI:  c.filtered.Load(),
		DeniedSender: c.denied.Load(),
		WriteErrors:  c.writeErrs.Load(),
		Duplicates:   c.dups.Load(),
	}
}

const (
	batchLen = 32
	bufLen   = 65536
)

// Run receives until ctx is done (then it returns nil) or the socket
// fails. It reads batches with recvmmsg into buffers reused for the whole
// run; a watcher goroutine unblocks the read when ctx ends and is joined
// before Run returns.
func (c *Collector) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("collect: Run called twice")
	}
	rc, err := c.conn.SyscallConn()
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			c.conn.SetReadDeadline(time.Unix(1, 0))
		case <-stop:
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()

	// The kernel's time of receipt of each datagram (SO_TIMESTAMPNS)
	// stamps its records; without it, the time the batch was read.
	var tsErr error
	if err := rc.Control(func(fd uintptr) {
		tsErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		tsErr = err
	}
	bufs := make([][]byte, batchLen)
	iovs := make([]unix.Iovec, batchLen)
	names := make([]unix.RawSockaddrInet6, batchLen)
	hdrs := make([]unix.Mmsghdr, batchLen)
	oobs := make([][]byte, batchLen)
	for i := range oobs {
		oobs[i] = make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))
	}
	for i := range bufs {
		bufs[i] = make([]byte, bufLen)
	}
	for {
		for i := range hdrs {
			// Afresh each time: recvmmsg rewrites the lengths.
			mmsg.Point(&hdrs[i], &iovs[i], bufs[i])
			mmsg.Inet6(&hdrs[i], &names[i])
			if tsErr == nil {
				mmsg.Control(&hdrs[i], oobs[i])
			}
		}
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			var e unix.Errno
			n, e = mmsg.Recv(int(fd), hdrs, unix.MSG_DONTWAIT)
			rerr = nil
			if e != 0 {
				rerr = e
			}
			return e != unix.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.ECONNREFUSED) {
				continue
			}
			return fmt.Errorf("collect: receive: %w", err)
		}
		now := time.Now()
		for i := range n {
			from := sockaddrAddr(&names[i], hdrs[i].Hdr.Namelen)
			ts := now
			if k := kernelTime(oobs[i][:hdrs[i].Hdr.Controllen]); k != 0 {
				ts = time.Unix(0, k)
			}
			b := bufs[i][:hdrs[i].Len]
			if c.raw4 {
				if b = stripIPv4(b); b == nil {
					c.received.Add(1)
					c.malformed.Add(1)
					continue
				}
			}
			c.Handle(ts, from, b)
		}
		c.flush()
	}
}

// kernelTime returns the SCM_TIMESTAMPNS time in a control message, in
// nanoseconds (0 if there is none). It does not allocate.
func kernelTime(oob []byte) int64 {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l >= unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))) {
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			return ts.Nano()
		}
		al := unix.CmsgSpace(l - unix.CmsgLen(0))
		if al > len(oob) {
			return 0
		}
		oob = oob[al:]
	}
	return 0
}

func sockaddrAddr(sa *unix.RawSockaddrInet6, n uint32) netip.Addr {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrFrom4(sa4.Addr)
	case unix.AF_INET6:
		return netip.AddrFrom16(sa.Addr).Unmap()
	}
	return netip.Addr{}
}

// allowed reports whether from may send frames.
func (c *Collector) allowed(from netip.Addr) bool {
	if c.allowAll {
		return true
	}
	for _, p := range c.cfg.Allow {
		if p.Contains(from) {
			return true
		}
	}
	return false
}

// Handle processes one datagram from a sender (exported for tests and
// fuzzing: it must survive any input). Pcap output is flushed by Run after
// each batch; call Flush when feeding Handle directly.
func (c *Collector) Handle(ts time.Time, from netip.Addr, b []byte) {
	c.received.Add(1)
	if !c.allowed(from) {
		c.denied.Add(1)
		c.lastMu.Lock()
		c.lastDenied = from
		c.lastMu.Unlock()
		return
	}
	f, err := DecodeKind(b, c.cfg.Kind)
	if err != nil {
		c.malformed.Add(1)
		c.lastMu.Lock()
		c.lastMalformed = err
		c.lastMu.Unlock()
		return
	}
	c.decap.Add(1)
	if c.vnis != nil && !c.vnis[f.VNI] {
		c.filtered.Add(1)
		return
	}
	if c.dedup != nil && c.dedup.Seen(c.dedupID(f), ts.UnixNano()) {
		c.dups.Add(1)
		return
	}
	frame := f.Inner
	if f.EtherType != 0 {
		// An L3 packet (GENEVE protocol 0x0800/0x86dd): both outputs take
		// Ethernet frames, so it gets the synthesized header nfclone's own
		// tunnel targets give L3 copies.
		if cap(c.synth) < 14+len(f.Inner) {
			c.synth = make([]byte, 14+max(len(f.Inner), bufLen))
		}
		frame = c.synth[:14+len(f.Inner)]
		PutEthernet(frame, f.EtherType)
		copy(frame[14:], f.Inner)
	}
	ok := true
	if c.pcap != nil {
		if err := c.pcap.WritePacket(ts, frame, len(frame)); err != nil {
			ok = false
			c.warn("pcap", err)
		}
	}
	if c.tap != nil {
		if err := c.tap.write(frame); err != nil {
			ok = false
			c.warn("tap", err)
		}
	}
	if ok {
		c.written.Add(1)
	} else {
		c.writeErrs.Add(1)
	}
}

// dedupID identifies a decapsulated frame for --dedup: its IP packet
// without TTL / hop limit and IPv4 checksum (dedup.ID), found behind
// the Ethernet header and any 802.1Q/802.1ad tags, so copies that differ
// only in those — or in their Ethernet addresses, or in which sender and
// tunnel carried them — are one; a frame that is not IP counts whole,
// tags aside.
func (c *Collector) dedupID(f Frame) uint64 {
	if f.EtherType != 0 {
		return dedup.ID(c.seed, f.Inner)
	}
	e := f.Inner
	off := 12
	for off+4 <= len(e) {
		et := uint16(e[off])<<8 | uint16(e[off+1])
		if et != 0x8100 && et != 0x88a8 {
			break
		}
		off += 4
	}
	if off+2 <= len(e) {
		et := uint16(e[off])<<8 | uint16(e[off+1])
		if et == etherTypeIPv4 || et == etherTypeIPv6 {
			return dedup.ID(c.seed, e[off+2:])
		}
	}
	return dedup.ID(c.seed, e)
}

// Flush writes buffered pcap records.
func (c *Collector) Flush() error { return c.flush() }

func (c *Collector) flush() error {
	if c.pcap == nil {
		return nil
	}
	if err := c.pcap.Flush(); err != nil {
		var pe *pcapfile.WriteError
		if errors.As(err, &pe) && pe.Lost > 0 {
			// Those frames were counted written when buffered.
			c.written.Add(^uint64(pe.Lost - 1))
			c.writeErrs.Add(uint64(pe.Lost))
		}
		c.warn("pcap", err)
		return err
	}
	return nil
}

// warn logs at most one warning every 10 s (Handle runs on Run's goroutine
// only; tests calling Handle concurrently may race on lastWarn harmlessly
// but do not).
func (c *Collector) warn(out string, err error) {
	now := time.Now()
	if now.Sub(c.lastWarn) < 10*time.Second {
		return
	}
	c.lastWarn = now
	c.log.Warn("collect: cannot write frames", "output", out, "err", err)
}

// Close stops the listener (a running Run returns) and closes the outputs;
// the TAP device disappears.
func (c *Collector) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if c.conn != nil {
			err = c.conn.Close()
		}
		if c.pcap != nil {
			err = errors.Join(err, c.pcap.Close())
		}
		if c.tap != nil {
			err = errors.Join(err, c.tap.close())
		}
	})
	return err
}
