package config

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
)

// DeviceUse is what else an interface carries besides nfclone's copies.
type DeviceUse struct {
	// Addrs are its addresses, IPv6 link-local ones included: IFF_NOARP
	// turns off IPv6 neighbour discovery on the device as well as ARP.
	Addrs []netip.Prefix
	// Routes counts the routes through it (any table but the kernel's
	// local table and nfclone's copy tables).
	Routes int
	// Neighbours counts its resolved neighbour entries.
	Neighbours int
}

// Busy reports whether the device carries traffic of its own.
func (u DeviceUse) Busy() bool { return len(u.Addrs) > 0 || u.Routes > 0 || u.Neighbours > 0 }

func (u DeviceUse) String() string {
	var parts []string
	if len(u.Addrs) > 0 {
		var a []string
		for _, p := range u.Addrs {
			a = append(a, p.String())
		}
		parts = append(parts, "addresses "+strings.Join(a, ", "))
	}
	if u.Routes > 0 {
		parts = append(parts, fmt.Sprintf("%d routes", u.Routes))
	}
	if u.Neighbours > 0 {
		parts = append(parts, fmt.Sprintf("%d neighbours", u.Neighbours))
	}
	return strings.Join(parts, ", ")
}

// UseHost tells what else an interface carries.
type UseHost interface {
	DeviceUse(name string, skipTables func(table uint32) bool) (DeviceUse, bool, error)
}

// ARPWarnings returns a warning for every gateway target with `arp: off`
// whose device carries other traffic (addresses, routes, neighbours):
// IFF_NOARP is a property of the device, not of the copies, so the host's
// own traffic through it can no longer resolve its next hops (the engine's
// pings to the collector's address: 100 % loss). A warning, not an error:
// on a device that only carries copies it is what the user wants.
func ARPWarnings(c *Config, h UseHost) Errors {
	var p problems
	warned := map[string]bool{}
	// nfclone's copy tables: one per distinct gateway, from route_table up.
	n := uint32(0)
	for _, s := range c.Sessions {
		n += uint32(len(s.Targets))
	}
	skip := func(t uint32) bool {
		return t == unix.RT_TABLE_LOCAL || (t >= c.RouteTable && t < c.RouteTable+n)
	}
	for i, s := range c.Sessions {
		for j, t := range s.Targets {
			if t.Kind != KindGateway || t.ARP != ARPOff || warned[t.Device] {
				continue
			}
			path := fmt.Sprintf("sessions[%d].targets[%d].arp", i, j)
			use, ok, err := h.DeviceUse(t.Device, skip)
			if err != nil {
				p.add(path, "cannot tell what else %s carries: %v", t.Device, err)
				continue
			}
			if !ok || !use.Busy() {
				continue
			}
			warned[t.Device] = true
			p.add(path, "arp: off sets IFF_NOARP on %s itself, for all its traffic, not only the copies: it has %s, and that traffic can no longer resolve its neighbours (ARP, IPv6 neighbour discovery) and stops; use mac: with the gateway's MAC instead (a permanent neighbour entry for the gateway alone), or a device that carries only copies",
				t.Device, use)
		}
	}
	return p.list
}

// DeviceUse implements UseHost through rtnetlink in the current namespace.
// ok is false when the interface does not exist.
func (SystemHost) DeviceUse(name string, skipTables func(uint32) bool) (use DeviceUse, ok bool, err error) {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return use, false, err
	}
	defer c.Close()
	links, err := c.Link.List()
	if err != nil {
		return use, false, fmt.Errorf("listing links: %w", err)
	}
	var idx uint32
	for _, l := range links {
		if l.Attributes != nil && l.Attributes.Name == name {
			idx = l.Index
		}
	}
	if idx == 0 {
		return use, false, nil
	}
	addrs, err := c.Address.List()
	if err != nil {
		return use, true, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		if a.Index != idx || a.Attributes == nil {
			continue
		}
		ip := a.Attributes.Local
		if ip == nil {
			ip = a.Attributes.Address
		}
		if addr, ok := netip.AddrFromSlice(ip); ok {
			use.Addrs = append(use.Addrs, netip.PrefixFrom(addr.Unmap(), int(a.PrefixLength)))
		}
	}
	routes, err := c.Route.List()
	if err != nil {
		return use, true, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		t := r.Attributes.Table
		if t == 0 {
			t = uint32(r.Table)
		}
		if r.Attributes.OutIface == idx && !skipTables(t) && !r.Attributes.Dst.IsMulticast() {
			use.Routes++
		}
	}
	neighs, err := c.Neigh.List()
	if err != nil {
		return use, true, fmt.Errorf("listing neighbours: %w", err)
	}
	for _, nb := range neighs {
		if nb.Index == idx && nb.State&(unix.NUD_NOARP|unix.NUD_FAILED|unix.NUD_INCOMPLETE) == 0 {
			use.Neighbours++
		}
	}
	return use, true, nil
}
