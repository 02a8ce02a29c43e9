package route

import (
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Wants reports whether a recorded change is still what plan p asks for:
// on a reload such a change is kept (neither undone nor applied again).
func Wants(p Plan, c Change) bool {
	switch {
	case c.Op == OpLinkCreated && c.Link != nil:
		for _, v := range p.Veths {
			if v.Name == c.Link.Name && v.Peer == c.Link.Peer && c.Link.Kind == "veth" {
				return true
			}
		}
		for _, v := range p.VXLANs {
			if v.Name == c.Link.Name && c.Link.Kind == "vxlan" {
				return true
			}
		}
	case c.Op == OpLinkFlags && c.Flags != nil:
		for _, f := range p.Flags {
			if f.Device == c.Flags.Device && flagBits(f)&c.Flags.Mask == c.Flags.Mask {
				return true
			}
		}
	case c.Op == OpNeighbour && c.Neighbour != nil:
		for _, n := range p.Neighbours {
			if n.Device == c.Neighbour.Device && n.Addr == c.Neighbour.Addr && strings.EqualFold(n.MAC.String(), c.Neighbour.MAC) {
				return true
			}
		}
	case c.Op == OpRouteAdded && c.Route != nil:
		return slices.Contains(p.Routes, *c.Route)
	case c.Op == OpRuleAdded && c.Rule != nil:
		return slices.Contains(p.Rules, *c.Rule)
	case c.Op == OpLocalMoved && c.Local != nil:
		return slices.Contains(p.MoveLocal, c.Local.Family)
	}
	return false
}

func flagBits(f LinkFlag) uint32 {
	var b uint32
	if f.NoARP {
		b |= unix.IFF_NOARP
	}
	if f.Promisc {
		b |= unix.IFF_PROMISC
	}
	return b
}

// Split divides a journal into the changes plan p still wants (kept) and
// the ones it does not (to undo), each in journal order.
func Split(p Plan, j Journal) (kept, unwanted Journal) {
	for _, c := range j {
		if Wants(p, c) {
			kept = append(kept, c)
		} else {
			unwanted = append(unwanted, c)
		}
	}
	return kept, unwanted
}

// Subtract returns plan p without the items that kept changes already
// provide, so applying it does not trip over nfclone's own earlier work
// (a veth pair it created is not "an existing interface").
func Subtract(p Plan, kept Journal) Plan {
	has := func(c Change) bool {
		return slices.ContainsFunc(kept, func(k Change) bool { return k.Op == c.Op && sameChange(k, c) })
	}
	var out Plan
	for _, r := range p.Rules {
		if !has(Change{Op: OpRuleAdded, Rule: &r}) {
			out.Rules = append(out.Rules, r)
		}
	}
	for _, r := range p.Routes {
		if !has(Change{Op: OpRouteAdded, Route: &r}) {
			out.Routes = append(out.Routes, r)
		}
	}
	for _, f := range p.MoveLocal {
		if !has(Change{Op: OpLocalMoved, Local: &LocalMove{Family: f}}) {
			out.MoveLocal = append(out.MoveLocal, f)
		}
	}
	for _, n := range p.Neighbours {
		if !has(Change{Op: OpNeighbour, Neighbour: &NeighChange{Device: n.Device, Addr: n.Addr, MAC: n.MAC.String()}}) {
			out.Neighbours = append(out.Neighbours, n)
		}
	}
	for _, f := range p.Flags {
		if !has(Change{Op: OpLinkFlags, Flags: &FlagChange{Device: f.Device, Mask: flagBits(f)}}) {
			out.Flags = append(out.Flags, f)
		}
	}
	for _, v := range p.Veths {
		if !has(Change{Op: OpLinkCreated, Link: &CreatedLink{Name: v.Name, Peer: v.Peer, Kind: "veth"}}) {
			out.Veths = append(out.Veths, v)
		}
	}
	for _, v := range p.VXLANs {
		if !has(Change{Op: OpLinkCreated, Link: &CreatedLink{Name: v.Name, Kind: "vxlan"}}) {
			out.VXLANs = append(out.VXLANs, v)
		}
	}
	return out
}

// sameChange compares the identifying part of two changes of one kind.
func sameChange(a, b Change) bool {
	switch a.Op {
	case OpRuleAdded:
		return *a.Rule == *b.Rule
	case OpRouteAdded:
		return *a.Route == *b.Route
	case OpLocalMoved:
		return a.Local.Family == b.Local.Family
	case OpNeighbour:
		return a.Neighbour.Device == b.Neighbour.Device && a.Neighbour.Addr == b.Neighbour.Addr &&
			strings.EqualFold(a.Neighbour.MAC, b.Neighbour.MAC)
	case OpLinkFlags:
		// A flag change covers the bits it set.
		return a.Flags.Device == b.Flags.Device && a.Flags.Mask&b.Flags.Mask == b.Flags.Mask
	case OpLinkCreated:
		return a.Link.Name == b.Link.Name && a.Link.Kind == b.Link.Kind && a.Link.Peer == b.Link.Peer
	}
	return false
}
