package route

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Kernel is the small boundary between this package and the kernel's
// routing netlink. The real implementation (Open, OpenNetNS) talks
// rtnetlink; Fake implements it in memory for unit tests.
//
// Errors for missing or duplicate objects wrap the kernel's errno
// (unix.ENOENT, unix.ESRCH, unix.ENODEV, unix.EEXIST) so that callers can
// use errors.Is; IsNotFound and IsExist classify them.
type Kernel interface {
	// Links lists all links of the namespace.
	Links() ([]Link, error)
	// Addrs lists the IP prefixes configured on the link with that index.
	Addrs(index int) ([]netip.Prefix, error)
	// SetLinkFlags sets the bits of mask in the link's flags to the values
	// they have in flags (ifi_flags / ifi_change).
	SetLinkFlags(index int, flags, mask uint32) error
	// CreateVeth creates a veth pair (fails with EEXIST if a name is taken).
	CreateVeth(v VethPair) error
	// CreateVXLAN creates and brings up a VXLAN device; underlay is the
	// ifindex of v.Device (0: none).
	CreateVXLAN(v VXLAN, underlay int) error
	// DeleteLink deletes the link with that index.
	DeleteLink(index int) error

	// Rules lists the policy rules of one family.
	Rules(f Family) ([]RuleInfo, error)
	// AddRule adds `pref P [fwmark M] lookup T` (EEXIST if identical).
	AddRule(r PolicyRule) error
	// DeleteRule deletes `pref P [fwmark M] lookup T`.
	DeleteRule(r PolicyRule) error

	// DefaultRoutes lists the default routes of one table (unicast and
	// unreachable ones).
	DefaultRoutes(f Family, table uint32) ([]RouteInfo, error)
	// AddDefaultRoute adds `default via gw dev <index> table T`, or an
	// unreachable default route with its metric.
	AddDefaultRoute(r RouteInfo) error
	// DeleteDefaultRoute deletes it.
	DeleteDefaultRoute(r RouteInfo) error

	// Neighbours lists the neighbour entries (both families) of one link.
	Neighbours(index int) ([]NeighInfo, error)
	// SetNeighbour creates or replaces an entry (`ip neigh replace`).
	SetNeighbour(n NeighInfo) error
	// DeleteNeighbour deletes the entry for addr on the link.
	DeleteNeighbour(index int, addr netip.Addr) error

	Close() error
}

// Link is a network interface as the kernel reports it.
type Link struct {
	Index int
	Name  string
	Kind  string // rtnetlink IFLA_INFO_KIND: "veth", "vxlan", ...; "" for plain devices
	MAC   net.HardwareAddr
	Flags uint32 // IFF_* flags
}

// Up reports IFF_UP.
func (l Link) Up() bool { return l.Flags&unix.IFF_UP != 0 }

// NoARP reports IFF_NOARP.
func (l Link) NoARP() bool { return l.Flags&unix.IFF_NOARP != 0 }

// Promisc reports IFF_PROMISC (the user-set flag, not the promiscuity count).
func (l Link) Promisc() bool { return l.Flags&unix.IFF_PROMISC != 0 }

// RuleInfo is a policy rule as the kernel lists it.
type RuleInfo struct {
	PolicyRule
	Mask   uint32 // fwmark mask (0xffffffff when a mark is set without one)
	Action uint8  // FR_ACT_*; unix.FR_ACT_TO_TBL for `lookup`
	// Other is true when the rule has selectors or flags this package does
	// not model (from/iif/oif/not/ports/...): such a rule never matches a
	// PolicyRule.
	Other bool
}

// Is reports whether the kernel rule is exactly `pref P [to D] [fwmark M/K]
// lookup T`.
func (ri RuleInfo) Is(r PolicyRule) bool {
	if ri.Other || ri.Action != unix.FR_ACT_TO_TBL || ri.Family != r.Family ||
		ri.Pref != r.Pref || ri.Table != r.Table || ri.Mark != r.Mark || ri.To != r.To {
		return false
	}
	return ri.Mask == r.FwMask()
}

// RouteInfo is a default route: `default via Gateway dev Index table Table`,
// or `unreachable default metric Metric table Table`.
type RouteInfo struct {
	Family      Family
	Table       uint32
	Gateway     netip.Addr // invalid for a route without gateway
	Index       int        // output interface, 0 if none
	Unreachable bool       // RTN_UNREACHABLE
	Metric      uint32     // RTA_PRIORITY; compared only for unreachable routes
}

// Is reports whether two default routes are the same route: family, table,
// type, and gateway and interface (unicast) or metric (unreachable). The
// metric of a unicast route is not compared: the kernel gives IPv6 routes
// added without one 1024.
func (r RouteInfo) Is(o RouteInfo) bool {
	if r.Family != o.Family || r.Table != o.Table || r.Unreachable != o.Unreachable {
		return false
	}
	if r.Unreachable {
		return r.Metric == o.Metric
	}
	return r.Gateway.Unmap() == o.Gateway.Unmap() && r.Index == o.Index
}

// NeighInfo is a neighbour entry.
type NeighInfo struct {
	Index int
	Addr  netip.Addr
	MAC   net.HardwareAddr // nil when the entry has no lladdr (INCOMPLETE, FAILED)
	State uint16           // NUD_* bits
}

// IsNotFound reports whether err is the kernel's answer for a missing
// object (link, rule, route, neighbour).
func IsNotFound(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) ||
		errors.Is(err, unix.ENODEV) || errors.Is(err, errLinkNotFound)
}

// IsExist reports whether err is the kernel's answer for a duplicate object.
func IsExist(err error) bool { return errors.Is(err, unix.EEXIST) }

var errLinkNotFound = errors.New("no such interface")

// LinkByName returns the link with that name.
func LinkByName(k Kernel, name string) (Link, error) {
	links, err := k.Links()
	if err != nil {
		return Link{}, fmt.Errorf("listing links: %w", err)
	}
	for _, l := range links {
		if l.Name == name {
			return l, nil
		}
	}
	return Link{}, fmt.Errorf("interface %s: %w", name, errLinkNotFound)
}

// LinkIndex returns the ifindex of a device.
func LinkIndex(k Kernel, name string) (int, error) {
	l, err := LinkByName(k, name)
	return l.Index, err
}

// Addrs returns the IP prefixes configured on a device (address and
// prefix length, e.g. 10.77.2.1/24 — not masked), for checks such as
// "the gateway is on a connected network".
func Addrs(k Kernel, name string) ([]netip.Prefix, error) {
	l, err := LinkByName(k, name)
	if err != nil {
		return nil, err
	}
	ps, err := k.Addrs(l.Index)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", name, err)
	}
	return ps, nil
}
