package route

import (
	"fmt"
	"net/netip"
)

// Op names the kind of a journal entry.
type Op string

// Journal operations.
const (
	OpLinkCreated Op = "link-created" // nfclone created a link (veth pair or vxlan)
	OpLinkFlags   Op = "link-flags"   // nfclone set flag bits on an existing link
	OpNeighbour   Op = "neighbour"    // nfclone installed a permanent neighbour entry
	OpRouteAdded  Op = "route-added"  // nfclone added a default route
	OpRuleAdded   Op = "rule-added"   // nfclone added a policy rule
	OpLocalMoved  Op = "local-moved"  // nfclone moved the local rule from pref 0 to LocalPref
)

// Change is one journal entry: something Apply changed, with what is needed
// to undo it. Exactly one of the pointer fields is set, matching Op.
//
// JSON examples:
//
//	{"op":"link-created","link":{"name":"agg0","ifindex":7,"kind":"veth","peer":"agg0-rx","peer_ifindex":6}}
//	{"op":"link-flags","flags":{"device":"e1","ifindex":3,"mask":128,"before":0}}
//	{"op":"neighbour","neighbour":{"device":"e1","ifindex":3,"addr":"10.77.2.2","mac":"02:00:00:00:00:01","before":null}}
//	{"op":"route-added","route":{"family":"inet","table":20035,"gateway":"10.77.2.2","device":"e1"}}
//	{"op":"rule-added","rule":{"family":"inet","pref":100,"mark":20035,"table":20035}}
//	{"op":"local-moved","local":{"family":"inet6","added_pref":true}}
type Change struct {
	Op        Op           `json:"op"`
	Link      *CreatedLink `json:"link,omitempty"`
	Flags     *FlagChange  `json:"flags,omitempty"`
	Neighbour *NeighChange `json:"neighbour,omitempty"`
	Route     *Route       `json:"route,omitempty"`
	Rule      *PolicyRule  `json:"rule,omitempty"`
	Local     *LocalMove   `json:"local,omitempty"`
	// Pending marks an intent: the change was about to be made when the
	// journal was written and may or may not have happened. Undo treats it
	// as made (every undo is a no-op for a change that did not happen);
	// a pending link-created entry has no ifindex yet, and its link is
	// deleted only if one of that name and kind (and, for a veth, with
	// its peer) exists.
	Pending bool `json:"pending,omitempty"`
}

// CreatedLink records a link nfclone created.
type CreatedLink struct {
	Name      string `json:"name"`
	Index     int    `json:"ifindex"`
	Kind      string `json:"kind"` // "veth" or "vxlan"
	Peer      string `json:"peer,omitempty"`
	PeerIndex int    `json:"peer_ifindex,omitempty"`
}

// FlagChange records flag bits nfclone changed on an existing link.
type FlagChange struct {
	Device string `json:"device"`
	Index  int    `json:"ifindex"`
	Mask   uint32 `json:"mask"`   // the IFF_* bits nfclone changed
	Before uint32 `json:"before"` // their values before (only bits in Mask)
}

// NeighChange records a neighbour entry nfclone installed and the entry it
// replaced, if any.
type NeighChange struct {
	Device string      `json:"device"`
	Index  int         `json:"ifindex"`
	Addr   netip.Addr  `json:"addr"`
	MAC    string      `json:"mac"`
	Before *NeighState `json:"before"` // nil: there was no entry
}

// NeighState is a neighbour entry's link-layer address and NUD state.
type NeighState struct {
	MAC   string `json:"mac,omitempty"`
	State uint16 `json:"state"` // NUD_* bits
}

// LocalMove records the move of a family's local rule to LocalPref.
type LocalMove struct {
	Family Family `json:"family"`
	// AddedPref is true when nfclone added the pref LocalPref local rule
	// (false: it was already there and Undo keeps it).
	AddedPref bool `json:"added_pref"`
}

// Journal is the ordered list of changes Apply made. It is JSON-serialisable.
type Journal []Change

// String describes the change for logs.
func (c Change) String() string {
	if c.Pending {
		d := c
		d.Pending = false
		return "intent: " + d.String()
	}
	switch {
	case c.Op == OpLinkCreated && c.Link != nil:
		if c.Link.Peer != "" {
			return fmt.Sprintf("created %s %s (ifindex %d) peer %s (ifindex %d)", c.Link.Kind, c.Link.Name, c.Link.Index, c.Link.Peer, c.Link.PeerIndex)
		}
		return fmt.Sprintf("created %s %s (ifindex %d)", c.Link.Kind, c.Link.Name, c.Link.Index)
	case c.Op == OpLinkFlags && c.Flags != nil:
		return fmt.Sprintf("set flags %#x on %s (were %#x)", c.Flags.Mask, c.Flags.Device, c.Flags.Before)
	case c.Op == OpNeighbour && c.Neighbour != nil:
		n := c.Neighbour
		if n.Before == nil {
			return fmt.Sprintf("added neighbour %s lladdr %s dev %s", n.Addr, n.MAC, n.Device)
		}
		return fmt.Sprintf("replaced neighbour %s dev %s (was lladdr %q state %#x) with lladdr %s", n.Addr, n.Device, n.Before.MAC, n.Before.State, n.MAC)
	case c.Op == OpRouteAdded && c.Route != nil:
		return fmt.Sprintf("added %s route %s", c.Route.Family, c.Route)
	case c.Op == OpRuleAdded && c.Rule != nil:
		return fmt.Sprintf("added %s rule %s", c.Rule.Family, c.Rule)
	case c.Op == OpLocalMoved && c.Local != nil:
		return fmt.Sprintf("moved %s local rule to pref %d", c.Local.Family, LocalPref)
	}
	return fmt.Sprintf("invalid change %q", c.Op)
}
