package sink

import (
	"encoding/binary"
	"fmt"
	"github.com/nfclone/nfclone/packet"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/nfclone/nfclone/gso"
	"github.com/nfclone/nfclone/internal/mmsg"
	"golang.org/x/sys/unix"
)

// EthHdrLen is the length of the Ethernet header the Device sink writes in
// front of each copy (in the packet's headroom).
const EthHdrLen = 14

// DeviceConfig configures a Device sink.
type DeviceConfig struct {
	// Name identifies the target (default: the device name).
	Name string
	// Device is the egress interface name; Ifindex may be given instead.
	Device  string
	Ifindex int
	// DstMAC is the frames' destination (nil: the device's own address, so
	// a promiscuous receiver sees them).
	DstMAC net.HardwareAddr
	// SrcMAC overrides the source address (nil: the device's own).
	SrcMAC net.HardwareAddr
	// Mark is SO_MARK on the socket (default 0x80).
	Mark   uint32
	NoMark bool
	// VLAN, when not 0, tags every frame 802.1Q with this id (a mirror
	// VLAN, as Open vSwitch's output-vlan or a switch's RSPAN). Tagged
	// frames are sent without a virtio-net header: TCP super-packets are
	// cut by nfclone (sink.Wire), not the kernel.
	VLAN   uint16
	Logger *slog.Logger
}

// Device writes copies as Ethernet frames on an interface through an
// AF_PACKET socket (protocol 0, so it never receives). The Ethernet header is
// built in place in each packet's headroom: no copy.
type Device struct {
	counters
	fd      int
	ifindex int
	src     [6]byte
	send    sendmmsgFunc
	scratch sync.Pool
	to      atomic.Pointer[devDst] // the destination (a gateway's may change)
	vnet    bool                   // the socket takes a virtio-net header: TCP super-packets go whole
	vlan    uint16                 // 802.1Q tag of every frame (0: none)
}

// devDst is where a Device's frames go: the destination address and the
// socket addresses of each family that carry it.
type devDst struct {
	dst      [6]byte
	sa4, sa6 unix.RawSockaddrLinklayer
}

type devScratch struct {
	h   []unix.Mmsghdr
	iov []unix.Iovec
	p   []*packet.Packet
}

// NewDevice opens the packet socket on the device.
func NewDevice(cfg DeviceConfig) (*Device, error) {
	var ifi *net.Interface
	var err error
	if cfg.Ifindex > 0 {
		ifi, err = net.InterfaceByIndex(cfg.Ifindex)
	} else {
		ifi, err = net.InterfaceByName(cfg.Device)
	}
	if err != nil {
		return nil, fmt.Errorf("sink: device %q: %w", cfg.Device, err)
	}
	src := cfg.SrcMAC
	if src == nil {
		src = ifi.HardwareAddr
	}
	dst := cfg.DstMAC
	if dst == nil {
		dst = ifi.HardwareAddr
	}
	if len(src) != 6 || len(dst) != 6 {
		return nil, fmt.Errorf("sink: device %s has no Ethernet address", ifi.Name)
	}
	mark := cfg.Mark
	if mark == 0 {
		mark = DefaultMark
	}
	if cfg.NoMark {
		mark = 0
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sink: packet socket: %w", err)
	}
	if err := setMark(fd, mark); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: 0, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sink: bind packet socket to %s: %w", ifi.Name, err)
	}
	// A virtio-net header in front of each frame lets the kernel cut TCP
	// super-packets (and finish their checksums) on the way out, as for
	// its own traffic: one send per 64 KiB instead of one per segment.
	// Not for tagged frames: the kernel would have to find the IP header
	// behind the tag of a packet it takes for untagged IP.
	vnet := cfg.VLAN == 0 && unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1) == nil
	name := cfg.Name
	if name == "" {
		name = "device:" + ifi.Name
	}
	d := newDevice(name, fd, ifi.Index, dst, src, mmsg.Send, cfg.Logger)
	d.vnet = vnet
	if cfg.VLAN != 0 {
		d.setVLAN(cfg.VLAN)
	}
	return d, nil
}

func newDevice(name string, fd, ifindex int, dst, src net.HardwareAddr, send sendmmsgFunc, log *slog.Logger) *Device {
	d := &Device{fd: fd, ifindex: ifindex, send: send}
	copy(d.src[:], src)
	d.init(name, log)
	d.scratch.New = func() any { return new(devScratch) }
	var to [6]byte
	copy(to[:], dst)
	d.setDst(to)
	return d
}

// setDst makes to the destination of the frames sent from now on.
func (d *Device) setDst(to [6]byte) {
	t := &devDst{dst: to}
	for _, x := range []struct {
		sa    *unix.RawSockaddrLinklayer
		proto uint16
	}{{&t.sa4, unix.ETH_P_IP}, {&t.sa6, unix.ETH_P_IPV6}} {
		if d.vlan != 0 {
			x.proto = unix.ETH_P_8021Q // the frames are tagged
		}
		*x.sa = unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Protocol: htons(x.proto), Ifindex: int32(d.ifindex), Halen: 6}
		copy(x.sa.Addr[:], to[:])
	}
	d.to.Store(t)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Name is the target's name.
func (d *Device) Name() string { return d.name }

// PutEthernet writes an Ethernet header (dst, src, ethertype) into h[:14].
func PutEthernet(h []byte, dst, src [6]byte, ethertype uint16) {
	copy(h[0:6], dst[:])
	copy(h[6:12], src[:])
	binary.BigEndian.PutUint16(h[12:14], ethertype)
}

// Send writes the batch as frames with one sendmmsg.
func (d *Device) Send(batch []*packet.Packet) (int, error) {
	sc := d.scratch.Get().(*devScratch)
	defer d.scratch.Put(sc)
	n := len(batch)
	sc.h, sc.iov, sc.p = grow(sc.h, n), grow(sc.iov, n), sc.p[:0]
	bad := 0
	to := d.to.Load()
	for _, p := range batch {
		var et uint16
		var sa *unix.RawSockaddrLinklayer
		switch p.Family {
		case 4:
			et, sa = unix.ETH_P_IP, &to.sa4
		case 6:
			et, sa = unix.ETH_P_IPV6, &to.sa6
		}
		hdr := EthHdrLen
		if d.vnet {
			hdr += gso.VirtioNetHdrLen
		}
		if d.vlan != 0 {
			hdr += VLANTagLen
		}
		f := p.Frame(hdr)
		if sa == nil || f == nil || len(p.Data) == 0 {
			p.Errs++
			bad++
			continue
		}
		FixTruncated(p)
		switch {
		case d.vlan != 0:
			PutEthernetVLAN(f, to.dst, d.src, d.vlan, et)
		case d.vnet:
			gso.PutVirtioNetHdr(f, p.GSO, EthHdrLen)
			PutEthernet(f[gso.VirtioNetHdrLen:], to.dst, d.src, et)
		default:
			PutEthernet(f, to.dst, d.src, et)
		}
		i := len(sc.p)
		mmsg.Point(&sc.h[i], &sc.iov[i], f)
		mmsg.Linklayer(&sc.h[i], sa)
		sc.p = append(sc.p, p)
	}
	var last error
	if bad > 0 {
		last = errUnsendable
		d.fail(bad, last)
	}
	sent := 0
	if k := len(sc.p); k > 0 {
		s, err := sendAll(d.send, d.fd, sc.h[:k], sc.p, &d.counters)
		sent = s
		if err != nil {
			last = err
		}
	}
	clear(sc.p)
	return sent, last
}

// AcceptsGSO reports whether TCP super-packets go out whole (the kernel
// cuts them): the socket takes a virtio-net header.
func (d *Device) AcceptsGSO() bool { return d.vnet }

// Close closes the socket.
func (d *Device) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}
