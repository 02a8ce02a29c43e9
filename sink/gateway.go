package sink

import (
	"errors"
	"fmt"
	"github.com/nfclone/nfclone/packet"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/nfclone/nfclone/internal/mmsg"
	"golang.org/x/sys/unix"
)

const ipv6HdrIncl = 36 // IPV6_HDRINCL

// GatewayConfig configures a Gateway sink.
type GatewayConfig struct {
	// Name identifies the target in counters and warnings.
	Name string
	// Mark is put on every copy with SO_MARK (default 0x80); the policy
	// rule "fwmark Mark lookup T" routes the copies to the gateway, and
	// nfclone's capture rules skip marked packets.
	Mark uint32
	// NoMark sends copies without SO_MARK (tests only).
	NoMark bool
	// NoIPv6 skips the IPv6 socket (IPv6 copies then fail and are counted).
	NoIPv6 bool
	// Family, if 4 or 6, makes the target take copies of that family only:
	// the other family's copies are skipped (not errors) — a gateway's
	// policy route exists for its own family only, and a copy sent without
	// one would be delivered back to this host.
	Family uint8
	// Device and Gateway, when both are set, let copies go straight to the
	// gateway's link-layer address on Device (see gwDirect) whenever the
	// kernel has it; otherwise through the raw socket.
	Device  string
	Gateway netip.Addr
	Logger  *slog.Logger
}

// DefaultMark is nfclone's default fwmark (config.DefaultMark: inside the
// default mark_mask 0x000000ff).
const DefaultMark = 0x00000080

// Gateway sends copies at the IP layer through raw sockets (AF_INET and
// AF_INET6, IPPROTO_RAW, header included) to the copy's own destination
// address; the fwmark policy route takes them to the gateway. Copies are sent
// byte-identical: the TTL/hop limit is untouched. (With IP_HDRINCL the
// kernel fills an IPv4 ID of 0 and recomputes the IPv4 header checksum; for
// an unchanged header that is the same checksum.) Truncated copies are made
// consistent with FixTruncated.
type Gateway struct {
	counters
	fd4, fd6 int
	only     uint8 // 4 or 6: copies of the other family are skipped
	send     sendmmsgFunc
	scratch  sync.Pool
	direct   *gwDirect // nil: raw sockets only
}

type gwScratch struct {
	h4, h6     []unix.Mmsghdr
	iov4, iov6 []unix.Iovec
	sa4        []unix.RawSockaddrInet4
	sa6        []unix.RawSockaddrInet6
	p4, p6     []*packet.Packet
}

// NewGateway opens the raw sockets.
func NewGateway(cfg GatewayConfig) (*Gateway, error) {
	mark := cfg.Mark
	if mark == 0 {
		mark = DefaultMark
	}
	if cfg.NoMark {
		mark = 0
	}
	fd4 := -1
	if cfg.Family != 6 {
		var err error
		fd4, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return nil, fmt.Errorf("sink: raw IPv4 socket: %w", err)
		}
		if err := setMark(fd4, mark); err != nil {
			unix.Close(fd4)
			return nil, err
		}
	}
	fd6 := -1
	var err error
	if !cfg.NoIPv6 && cfg.Family != 4 {
		fd6, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err == nil {
			err = unix.SetsockoptInt(fd6, unix.IPPROTO_IPV6, ipv6HdrIncl, 1)
			if err == nil {
				err = setMark(fd6, mark)
			}
		}
		if err != nil {
			if fd4 >= 0 {
				unix.Close(fd4)
			}
			if fd6 >= 0 {
				unix.Close(fd6)
			}
			return nil, fmt.Errorf("sink: raw IPv6 socket: %w", err)
		}
	}
	g := newGateway(cfg.Name, fd4, fd6, mmsg.Send, cfg.Logger)
	g.only = cfg.Family
	if cfg.Device != "" && cfg.Gateway.IsValid() {
		// Without the packet socket (the device is gone, no virtio-net
		// header) copies take the raw socket, as they always could.
		if d, err := openDirect(g.name, mark, cfg); err == nil {
			g.direct = d
		} else {
			g.log.Debug("sink: gateway copies take the raw socket only", "target", g.name, "err", err)
		}
	}
	return g, nil
}

// Stats are the target's counters, both paths together (a super-packet
// handed over whole counts once).
func (g *Gateway) Stats() Stats {
	s := g.counters.Stats()
	if g.direct != nil {
		d := g.direct.dev.Stats()
		s.Sent += d.Sent
		s.Bytes += d.Bytes
		s.Errors += d.Errors
		if s.LastError == "" {
			s.LastError = d.LastError
		}
	}
	return s
}

// AcceptsGSO reports whether TCP super-packets can go whole right now: the
// gateway's link-layer address is known and the packet socket takes a
// virtio-net header.
func (g *Gateway) AcceptsGSO() bool {
	if g.direct == nil {
		return false
	}
	g.direct.refresh(g.direct.now().UnixNano())
	return g.direct.have.Load()
}

func newGateway(name string, fd4, fd6 int, send sendmmsgFunc, log *slog.Logger) *Gateway {
	if name == "" {
		name = "gateway"
	}
	g := &Gateway{fd4: fd4, fd6: fd6, send: send}
	g.init(name, log)
	g.scratch.New = func() any { return new(gwScratch) }
	return g
}

// Name is the target's name.
func (g *Gateway) Name() string { return g.name }

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// Send sends the batch: straight to the gateway's link-layer address when
// it is known (gwDirect), else with one sendmmsg per address family
// through the raw sockets.
func (g *Gateway) Send(batch []*packet.Packet) (int, error) {
	if g.direct != nil && g.direct.use(batch) {
		n, err := g.direct.send(batch, g.only)
		return n, err
	}
	sc := g.scratch.Get().(*gwScratch)
	defer g.scratch.Put(sc)
	n := len(batch)
	sc.h4, sc.iov4, sc.sa4, sc.p4 = grow(sc.h4, n), grow(sc.iov4, n), grow(sc.sa4, n), sc.p4[:0]
	sc.h6, sc.iov6, sc.sa6, sc.p6 = grow(sc.h6, n), grow(sc.iov6, n), grow(sc.sa6, n), sc.p6[:0]
	var bad int
	var badErr error
	for _, p := range batch {
		FixTruncated(p)
		d := p.Data
		switch {
		case g.only != 0 && (p.Family == 4 || p.Family == 6) && p.Family != g.only:
			// not this target's family: nothing to send, nothing failed
		case p.GSO.Type != 0:
			// a super-packet handed over whole, and the gateway's address
			// went away meanwhile: the raw socket cannot send it
			p.Errs++
			bad++
			badErr = errNoNeighbour
		case p.Family == 4 && len(d) >= 20 && g.fd4 >= 0:
			i := len(sc.p4)
			sa := &sc.sa4[i]
			*sa = unix.RawSockaddrInet4{Family: unix.AF_INET}
			copy(sa.Addr[:], d[16:20])
			mmsg.Point(&sc.h4[i], &sc.iov4[i], d)
			mmsg.Inet4(&sc.h4[i], sa)
			sc.p4 = append(sc.p4, p)
		case p.Family == 6 && len(d) >= 40 && g.fd6 >= 0:
			i := len(sc.p6)
			sa := &sc.sa6[i]
			*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6}
			copy(sa.Addr[:], d[24:40])
			mmsg.Point(&sc.h6[i], &sc.iov6[i], d)
			mmsg.Inet6(&sc.h6[i], sa)
			sc.p6 = append(sc.p6, p)
		default:
			p.Errs++
			bad++
			badErr = errUnsendable
		}
	}
	if bad > 0 {
		g.fail(bad, badErr)
	}
	var sent int
	var last error = badErr
	if k := len(sc.p4); k > 0 {
		s, err := sendAll(g.send, g.fd4, sc.h4[:k], sc.p4, &g.counters)
		sent += s
		if err != nil {
			last = err
		}
	}
	if k := len(sc.p6); k > 0 {
		s, err := sendAll(g.send, g.fd6, sc.h6[:k], sc.p6, &g.counters)
		sent += s
		if err != nil {
			last = err
		}
	}
	clear(sc.p4)
	clear(sc.p6)
	return sent, last
}

var (
	errUnsendable  = errors.New("sink: copy is not a sendable IPv4/IPv6 packet")
	errNoNeighbour = errors.New("sink: the gateway's link-layer address went away under a super-packet")
)

// Close closes the sockets.
func (g *Gateway) Close() error {
	var err error
	if g.fd4 >= 0 {
		err = unix.Close(g.fd4)
		g.fd4 = -1
	}
	if g.fd6 >= 0 {
		err = errors.Join(err, unix.Close(g.fd6))
		g.fd6 = -1
	}
	if g.direct != nil {
		err = errors.Join(err, g.direct.dev.Close())
	}
	return err
}
