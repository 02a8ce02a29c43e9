package rules

import (
	"net"
	"net/netip"
	"slices"

	"github.com/nfclone/nfclone/config"
)

// GatewayRoute is the policy routing of one distinct (gateway, device) of the
// userspace methods: copies sent with Mark are routed by `ip rule pref Pref
// fwmark Mark/MarkMask lookup Table` to `default via Gateway dev Device table
// Table`. The first gets mark+1 (in units of mark_mask's lowest bit) and the configured table and preference, each
// further one the next numbers. The configured mark itself stays unrouted:
// device and tunnel copies carry it. So every copy carries a mark in
// [cfg.Mark, cfg.Mark+len·unit] inside mark_mask — the range every capture
// rule skips.
type GatewayRoute struct {
	Gateway netip.Addr
	Device  string
	Mark    uint32
	Table   uint32
	Pref    uint32
}

// GatewayRoutes lists the policy routes the userspace gateway targets need,
// in config order, one per distinct (gateway, device).
func GatewayRoutes(c *config.Config) []GatewayRoute {
	var out []GatewayRoute
	seen := map[string]bool{}
	for _, s := range c.Sessions {
		if s.Method != config.MethodQueue && s.Method != config.MethodLog {
			continue
		}
		for _, t := range s.Targets {
			if t.Kind != config.KindGateway {
				continue
			}
			gw := t.GatewayIP
			if !gw.IsValid() {
				continue
			}
			key := gw.Unmap().String() + "%" + t.Device
			if seen[key] {
				continue
			}
			seen[key] = true
			k := uint32(len(out))
			out = append(out, GatewayRoute{Gateway: gw.Unmap(), Device: t.Device,
				Mark: c.Marks().GatewayMark(c.Mark, k), Table: c.RouteTable + k, Pref: c.RulePref + k})
		}
	}
	return out
}

// StableGatewayRoutes is GatewayRoutes keeping the mark, table and
// preference of every (gateway, device) that prev already had: on a reload
// a session whose gateways did not change keeps its marks (and so its
// sockets); new pairs take the lowest index neither kept nor in prev. The
// routes of prev stay in the kernel until the new rules are in (the new
// ones are added first), so a new pair must not take a retiring pair's
// table — a gateway whose address changed would find the old default
// route there — unless the marks have no other room.
func StableGatewayRoutes(c *config.Config, prev []GatewayRoute) []GatewayRoute {
	want := GatewayRoutes(c)
	used := map[uint32]bool{}
	retiring := map[uint32]bool{}
	for _, p := range prev {
		if p.Mark > c.Mark && p.Mark&^c.MarkMask == 0 {
			retiring[(p.Mark-c.Mark)/c.Marks().Unit()-1] = true
		}
	}
	room := uint32(max(c.Marks().GatewayRoom(c.Mark), len(want)))
	var out []GatewayRoute
	for _, w := range want {
		for _, p := range prev {
			if p.Gateway == w.Gateway && p.Device == w.Device && p.Mark > c.Mark && p.Mark&^c.MarkMask == 0 {
				out = append(out, p)
				used[(p.Mark-c.Mark)/c.Marks().Unit()-1] = true
				break
			}
		}
	}
	for _, w := range want {
		if _, ok := GatewayMark(out, w.Gateway, w.Device); ok {
			continue
		}
		k := uint32(0)
		for used[k] || retiring[k] && k < room {
			k++
		}
		if k >= room { // no room beside the retiring ones: share a table with one
			for k = 0; used[k]; k++ {
			}
		}
		used[k] = true
		out = append(out, GatewayRoute{Gateway: w.Gateway, Device: w.Device, Mark: c.Marks().GatewayMark(c.Mark, k), Table: c.RouteTable + k, Pref: c.RulePref + k})
	}
	return out
}

// GatewayMark returns the mark userspace copies to (gateway, device) carry;
// ok=false when the pair has no route.
func GatewayMark(routes []GatewayRoute, gw netip.Addr, device string) (uint32, bool) {
	for _, r := range routes {
		if r.Gateway == gw.Unmap() && r.Device == device {
			return r.Mark, true
		}
	}
	return 0, false
}

// DeviceRoute is how the kernel sends the clones of kernel-routed sessions
// to a device target: `dup` routes each clone to a made-up next hop on the
// device (NH4, NH6: 169.254.77.k, fe80::4e43:k), whose lookup `ip rule pref
// Pref to NH lookup Table` ends in `default dev Device table Table`; a
// permanent neighbour entry gives NH the frames' destination address (the
// target's mac, or the device's own). Without the rule, the lookup of NH
// would take the host's default route (another device's router).
type DeviceRoute struct {
	Device string
	// Created: nfclone creates Device (its VXLAN device, the near end of
	// a veth pair), so its address is not known to the plan; unless the
	// target has a mac, the frames go to the inner destination address of
	// nfclone's tunnel frames (the engine fills it in).
	Created  bool
	MAC      net.HardwareAddr // the target's mac; nil: the device's own address
	NH4, NH6 netip.Addr
	Table    uint32
	Pref     uint32
}

// deviceTableOffset puts the device tables above every gateway table.
const deviceTableOffset = 1000

// DeviceRoutes lists the device routes of the kernel-routed device targets
// of c, one per device, in config order.
func DeviceRoutes(c *config.Config) []DeviceRoute {
	var out []DeviceRoute
	for i := range c.Sessions {
		s := &c.Sessions[i]
		if !c.RoutesClones(s) || s.Targets[0].Kind == config.KindGateway {
			continue
		}
		t := s.Targets[0]
		dev := RoutedDevice(t)
		if slices.ContainsFunc(out, func(d DeviceRoute) bool { return d.Device == dev }) {
			continue
		}
		k := len(out) + 1
		out = append(out, DeviceRoute{
			Device: dev, MAC: t.HWAddr, Created: t.Kind == config.KindVXLAN || t.Create,
			NH4:   deviceNextHop4(k),
			NH6:   netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 12: 0x4e, 13: 0x43, 14: byte(k >> 8), 15: byte(k)}),
			Table: c.RouteTable + deviceTableOffset + uint32(k-1),
			Pref:  c.RulePref,
		})
	}
	return out
}

// deviceNextHop4 is the k-th device's IPv4 next hop (k from 1):
// 169.254.77.1–254, then on through 169.254.78.1 and up, so that next hops
// never repeat (as many devices as the mark mask has queue slots; the IPv6
// ones, fe80::4e43:k, hold 65 535).
func deviceNextHop4(k int) netip.Addr {
	return netip.AddrFrom4([4]byte{169, 254, byte(77 + (k-1)/254), byte((k-1)%254 + 1)})
}

// IsDeviceNextHop reports whether a is a next hop DeviceRoutes makes up:
// 169.254.77.1 and up (deviceNextHop4), or fe80::4e43:k.
func IsDeviceNextHop(a netip.Addr) bool {
	if a.Is4() {
		b := a.As4()
		return b[0] == 169 && b[1] == 254 && b[2] >= 77
	}
	b := a.As16()
	return a.Is6() && b == [16]byte{0: 0xfe, 1: 0x80, 12: 0x4e, 13: 0x43, 14: b[14], 15: b[15]}
}

// RoutedDevice is the device a kernel-routed session's clones leave by,
// other than a gateway's: the device target (the near end of a pair
// nfclone creates), or the VXLAN device nfclone creates for a vxlan target.
func RoutedDevice(t config.Target) string {
	if t.Kind == config.KindVXLAN {
		return VXLANDevice(t)
	}
	return DeviceTargetName(t)
}

// DeviceNextHop returns the made-up next hop of device in family f.
func DeviceNextHop(routes []DeviceRoute, device string, v6 bool) (netip.Addr, bool) {
	for _, r := range routes {
		if r.Device == device {
			if v6 {
				return r.NH6, true
			}
			return r.NH4, true
		}
	}
	return netip.Addr{}, false
}
