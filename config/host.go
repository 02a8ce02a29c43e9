package config

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Host answers what the checks against the running system need to know. The
// real one reads the current network namespace; tests use a map.
type Host interface {
	// Interface reports whether the interface exists and its prefixes.
	Interface(name string) (exists bool, prefixes []netip.Prefix, err error)
}

// CheckHost checks a validated config against the host: every interface a
// session names exists (unless nfclone creates it), a gateway sits on a network
// connected to its device, and interfaces nfclone would create do not exist yet.
// owned lists interfaces nfclone itself created earlier (they may exist).
func CheckHost(c *Config, h Host, owned map[string]bool) Errors {
	var p problems
	look := func(path, name string) (bool, []netip.Prefix) {
		ok, pfx, err := h.Interface(name)
		if err != nil {
			p.add(path, "looking up interface %q: %v", name, err)
			return false, nil
		}
		return ok, pfx
	}
	for i, s := range c.Sessions {
		if s.Method == MethodQueue && !s.Hold && !c.KernelRouted(&c.Sessions[i]) && !loopbackReady(look) {
			p.add(fmt.Sprintf("sessions[%d].method", i), "queue needs the loopback interface up with 127.0.0.1 (the kernel's copies are routed to lo and read there): ip link set lo up")
		}
		created := map[string]bool{}
		for _, t := range s.Targets {
			if t.Kind == KindDevice && t.Create {
				created[t.Device] = true
			}
		}
		for j, src := range s.Sources {
			path := fmt.Sprintf("sessions[%d].sources[%d].interface", i, j)
			if created[src.Interface] || createdAnywhere(c, src.Interface) {
				continue
			}
			if ok, _ := look(path, src.Interface); !ok {
				p.add(path, "interface %q does not exist", src.Interface)
			}
		}
		for j, t := range s.Targets {
			tp := fmt.Sprintf("sessions[%d].targets[%d]", i, j)
			switch t.Kind {
			case KindDevice:
				exists, _ := look(tp+".device", t.Device)
				switch {
				case t.Create && exists && !owned[t.Device]:
					p.add(tp+".device", "interface %q already exists and was not created by nfclone; refusing to touch it (remove create: true to mirror into it)", t.Device)
				case !t.Create && !exists && !createdAnywhere(c, t.Device):
					p.add(tp+".device", "interface %q does not exist (create: true makes nfclone create it)", t.Device)
				}
			case KindGateway:
				exists, pfxs := look(tp+".device", t.Device)
				if !exists {
					p.add(tp+".device", "interface %q does not exist", t.Device)
					continue
				}
				gw, err := netip.ParseAddr(t.Gateway)
				if err != nil {
					continue // reported by Validate
				}
				gw = gw.Unmap()
				if !onLink(gw, pfxs) {
					p.add(tp+".gateway", "%s is not on a network connected to %s (%s)", gw, t.Device, describe(gw, pfxs))
				}
			}
		}
	}
	return p.list
}

// loopbackReady: lo exists and holds 127.0.0.1, so that the kernel can route
// a queue session's clones to it (`dup to 127.0.0.1 device "lo"`); a
// kernel-routed session's go to its gateway, a hold session queues originals.
func loopbackReady(look func(path, name string) (bool, []netip.Prefix)) bool {
	ok, pfxs := look("lo", "lo")
	if !ok {
		return false
	}
	for _, p := range pfxs {
		if p.Addr() == netip.AddrFrom4([4]byte{127, 0, 0, 1}) {
			return true
		}
	}
	return false
}

func createdAnywhere(c *Config, name string) bool {
	for _, s := range c.Sessions {
		for _, t := range s.Targets {
			if t.Kind == KindDevice && t.Create && t.Device == name {
				return true
			}
		}
	}
	return false
}

func onLink(gw netip.Addr, pfxs []netip.Prefix) bool {
	for _, p := range pfxs {
		if p.Addr().Is4() == gw.Is4() && p.Masked().Contains(gw) {
			return true
		}
	}
	// IPv6 link-local gateways are always on link.
	return gw.Is6() && gw.IsLinkLocalUnicast()
}

func describe(gw netip.Addr, pfxs []netip.Prefix) string {
	var same []string
	for _, p := range pfxs {
		if p.Addr().Is4() == gw.Is4() {
			same = append(same, p.Masked().String())
		}
	}
	fam := "IPv4"
	if gw.Is6() {
		fam = "IPv6"
	}
	if len(same) == 0 {
		return fmt.Sprintf("it has no %s address: address family mismatch", fam)
	}
	return fmt.Sprintf("its %s networks: %v", fam, same)
}

// KernelRouteMTU keeps the kernel from sending the copies of a session
// whose gateway device has a smaller MTU than one of its sources (mtu gives
// an interface's MTU, 0 when unknown): a copy longer than the route's MTU
// with DF set would be dropped, and the kernel would tell the original's
// sender to send smaller packets (ICMP "fragmentation needed") — on the
// path of the originals, which have the larger MTU. nfclone sends such a
// session's copies itself (cut or fragmented to the MTU, too_big counted).
// A dup session's gateway copies have no other way: it gets a warning.
// It also decides, for queue.vxlan_kernel_route auto, whose vxlan target's
// path (path gives the MTU of the route to a remote, 0 when unknown) takes
// the outer datagram of the sources' largest packet whole: the kernel
// sends those sessions' copies into their VXLAN device.
// Where the path does not, but trim says the host lowers the segment size
// of the TCP super-packets entering nfclone's VXLAN devices to the path
// (package gsotrim) and the path has room for an inner packet of
// MinTrimLimit bytes, the kernel sends them too.
// Call it once on a loaded config, before it is used; it returns a note for
// each session the kernel does not send for because of an MTU.
func KernelRouteMTU(c *Config, mtu func(name string) int, path func(remote netip.AddrPort) int, trim bool) Errors {
	var p problems
	for i := range c.Sessions {
		s := &c.Sessions[i]
		s.smallTargetMTU, s.tunnelPathFits, s.tunnelTrim = false, false, false // decided again
		src, srcName := 0, ""
		for _, so := range s.Sources {
			if m := mtu(so.Interface); m > src {
				src, srcName = m, so.Interface
			}
		}
		if len(s.Targets) == 1 && s.Targets[0].OwnVXLAN() && src > 0 {
			ap := s.Targets[0].RemoteAddrs[0]
			pm := path(ap)
			s.tunnelPathFits = pm >= src+TunnelOverhead(ap.Addr())
			s.tunnelTrim = trim && pm-TunnelOverhead(ap.Addr()) >= MinTrimLimit
		}
		for j, t := range s.Targets {
			dst := mtu(t.Device)
			if !t.kernelRoutable() || dst == 0 || dst >= src {
				continue
			}
			path := fmt.Sprintf("sessions[%d].targets[%d].device", i, j)
			switch {
			case c.RoutesClones(s):
				s.smallTargetMTU = true
				p.add(path, "%s has MTU %d, below %d of source %s: nfclone sends this session's copies, not the kernel (a longer copy with DF set would make the kernel tell the original's sender to shrink its packets)", t.Device, dst, src, srcName)
			case s.Method == MethodDup && t.Kind == KindGateway:
				p.add(path, "%s has MTU %d, below %d of source %s: the kernel's dup drops a longer copy with DF set and tells the original's sender to shrink its packets (ICMP \"fragmentation needed\"); use method queue, or give %s the sources' MTU", t.Device, dst, src, srcName, t.Device)
			}
		}
	}
	return p.list
}

// MinTrimLimit is the shortest inner packet the path to a vxlan target's
// remote must take for the kernel to send into nfclone's VXLAN device with
// the segment size lowered (KernelRouteMTU): IPv6's minimum MTU.
const MinTrimLimit = 1280

// TunnelOverhead is what VXLAN (or GENEVE without options) puts around an
// IP packet toward remote: the outer IP and UDP headers, the tunnel header
// and the inner Ethernet header.
func TunnelOverhead(remote netip.Addr) int {
	if remote.Unmap().Is4() {
		return 20 + 8 + 8 + 14
	}
	return 40 + 8 + 8 + 14
}

// SystemPathMTU is the MTU of the current network namespace's route to
// remote for packets with mark (0: none): what a connected UDP socket
// learns (the route's MTU, or a smaller one the path reported); 0 when
// unknown.
func SystemPathMTU(remote netip.AddrPort, mark uint32) int {
	a := remote.Addr().Unmap()
	fam, lvl, opt := unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_MTU
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(remote.Port()), Addr: a.As16()}
	if a.Is4() {
		fam, lvl, opt = unix.AF_INET, unix.IPPROTO_IP, unix.IP_MTU
		sa = &unix.SockaddrInet4{Port: int(remote.Port()), Addr: a.As4()}
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	if mark != 0 {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark))
	}
	if err := unix.Connect(fd, sa); err != nil {
		return 0
	}
	m, err := unix.GetsockoptInt(fd, lvl, opt)
	if err != nil {
		return 0
	}
	return m
}

// SystemTunnelPathMTU is SystemPathMTU without a mark: the path of the
// outer datagrams of a kernel VXLAN device, which carry none.
func SystemTunnelPathMTU(remote netip.AddrPort) int { return SystemPathMTU(remote, 0) }

// SystemMTU is the MTU of an interface of the current network namespace (0
// if there is none of that name).
func SystemMTU(name string) int {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0
	}
	return ifi.MTU
}

// SystemHost is the Host of the current network namespace.
type SystemHost struct{}

// Interface implements Host with the standard library (netlink underneath).
func (SystemHost) Interface(name string) (bool, []netip.Prefix, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return false, nil, nil
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return true, nil, fmt.Errorf("listing addresses of %s: %w", name, err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ip, _ := netip.AddrFromSlice(n.IP)
			ones, _ := n.Mask.Size()
			out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
		}
	}
	return true, out, nil
}
