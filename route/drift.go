package route

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// Observed is what the kernel holds of the objects a plan names: read by
// Observe, compared with the plan by Diff (a pure function).
type Observed struct {
	Links  []Link
	Rules  []RuleInfo  // both families
	Routes []RouteInfo // default routes of the plan's tables
	Neighs []NeighInfo // entries of the links the plan's neighbours use
	// Addrs are the prefixes of the links the plan's gateway routes use,
	// by ifindex: a gateway must be on one of them for its route to exist.
	Addrs map[int][]netip.Prefix
}

// Observe reads the kernel's state of everything plan p names.
func Observe(k Kernel, p Plan) (Observed, error) {
	var o Observed
	var err error
	if o.Links, err = k.Links(); err != nil {
		return o, fmt.Errorf("listing links: %w", err)
	}
	fams := map[Family]bool{}
	for _, r := range p.Rules {
		fams[r.Family] = true
	}
	for _, f := range p.MoveLocal {
		fams[f] = true
	}
	for _, f := range []Family{IPv4, IPv6} {
		if !fams[f] {
			continue
		}
		rs, err := k.Rules(f)
		if err != nil {
			return o, fmt.Errorf("listing %s rules: %w", f, err)
		}
		o.Rules = append(o.Rules, rs...)
	}
	type ft struct {
		f Family
		t uint32
	}
	seen := map[ft]bool{}
	for _, r := range p.Routes {
		if seen[ft{r.Family, r.Table}] {
			continue
		}
		seen[ft{r.Family, r.Table}] = true
		rs, err := k.DefaultRoutes(r.Family, r.Table)
		if err != nil {
			return o, fmt.Errorf("listing table %d: %w", r.Table, err)
		}
		o.Routes = append(o.Routes, rs...)
	}
	o.Addrs = map[int][]netip.Prefix{}
	for _, r := range p.Routes {
		l, ok := findLink(o.Links, r.Device)
		if r.Unreachable || !ok {
			continue
		}
		if _, done := o.Addrs[l.Index]; done {
			continue
		}
		ps, err := k.Addrs(l.Index)
		if err != nil {
			return o, fmt.Errorf("listing addresses of %s: %w", r.Device, err)
		}
		o.Addrs[l.Index] = append(ps, netip.Prefix{}) // never nil: read
	}
	read := map[int]bool{}
	for _, n := range p.Neighbours {
		l, ok := findLink(o.Links, n.Device)
		if !ok || read[l.Index] {
			continue
		}
		read[l.Index] = true
		ns, err := k.Neighbours(l.Index)
		if err != nil {
			return o, fmt.Errorf("listing neighbours of %s: %w", n.Device, err)
		}
		o.Neighs = append(o.Neighs, ns...)
	}
	return o, nil
}

func findLink(links []Link, name string) (Link, bool) {
	for _, l := range links {
		if l.Name == name {
			return l, true
		}
	}
	return Link{}, false
}

// Drift is one item of a plan the kernel does not hold as planned. Exactly
// one of the item fields is set.
type Drift struct {
	Veth      *VethPair
	VXLAN     *VXLAN
	Flag      *LinkFlag
	Neighbour *Neighbour
	Route     *Route
	Rule      *PolicyRule
	Local     Family // the family whose local rule is not moved (0: none)
	// Down names a link nfclone created up that someone set down.
	Down string
	// Problem says what is wrong ("missing", "device e1 is missing", ...).
	Problem string
	// Blocked is true when nfclone cannot put it back now (the device it
	// needs is missing, or a name is taken by an interface not nfclone's);
	// it is retried on the next event.
	Blocked bool
}

func (d Drift) String() string {
	var what string
	switch {
	case d.Veth != nil:
		what = fmt.Sprintf("veth %s peer %s", d.Veth.Name, d.Veth.Peer)
	case d.VXLAN != nil:
		what = "vxlan " + d.VXLAN.Name
	case d.Flag != nil:
		what = "flags of " + d.Flag.Device
	case d.Neighbour != nil:
		what = fmt.Sprintf("neighbour %s lladdr %s dev %s", d.Neighbour.Addr, d.Neighbour.MAC, d.Neighbour.Device)
	case d.Route != nil:
		what = fmt.Sprintf("%s route %s", d.Route.Family, d.Route)
	case d.Rule != nil:
		what = fmt.Sprintf("%s rule %s", d.Rule.Family, d.Rule)
	case d.Local != 0:
		what = fmt.Sprintf("%s local rule at pref %d", d.Local, LocalPref)
	case d.Down != "":
		what = "created interface " + d.Down
	}
	return what + ": " + d.Problem
}

// Diff compares plan p with the kernel's state o and returns every item o
// does not hold as planned, in apply order. It reads nothing: tests drive
// it with any state.
func Diff(p Plan, o Observed) []Drift {
	var out []Drift
	link := func(name string) (Link, bool) { return findLink(o.Links, name) }
	for _, v := range p.Veths {
		v := v
		a, okA := link(v.Name)
		b, okB := link(v.Peer)
		switch {
		case okA && okB && a.Kind == "veth" && b.Kind == "veth":
			for _, l := range []Link{a, b} {
				if v.Up && !l.Up() {
					out = append(out, Drift{Down: l.Name, Problem: "down"})
				}
			}
		case !okA && !okB:
			out = append(out, Drift{Veth: &v, Problem: "missing"})
		default:
			out = append(out, Drift{Veth: &v, Problem: "an interface of that name is not nfclone's veth", Blocked: true})
		}
	}
	for _, v := range p.VXLANs {
		v := v
		l, ok := link(v.Name)
		switch {
		case ok && l.Kind == "vxlan":
			if !l.Up() {
				out = append(out, Drift{Down: l.Name, Problem: "down"})
			}
		case !ok:
			blocked := false
			if v.Device != "" {
				_, has := link(v.Device)
				blocked = !has
			}
			d := Drift{VXLAN: &v, Problem: "missing", Blocked: blocked}
			if blocked {
				d.Problem = "missing (its underlay device " + v.Device + " is missing)"
			}
			out = append(out, d)
		default:
			out = append(out, Drift{VXLAN: &v, Problem: "an interface of that name is not nfclone's vxlan", Blocked: true})
		}
	}
	for _, f := range p.Flags {
		f := f
		l, ok := link(f.Device)
		if !ok {
			out = append(out, Drift{Flag: &f, Problem: "device " + f.Device + " is missing", Blocked: true})
		} else if want := flagBits(f); l.Flags&want != want {
			out = append(out, Drift{Flag: &f, Problem: fmt.Sprintf("flags %#x cleared", want&^l.Flags)})
		}
	}
	for _, n := range p.Neighbours {
		n := n
		l, ok := link(n.Device)
		if !ok {
			out = append(out, Drift{Neighbour: &n, Problem: "device " + n.Device + " is missing", Blocked: true})
			continue
		}
		i := slices.IndexFunc(o.Neighs, func(e NeighInfo) bool { return e.Index == l.Index && e.Addr.Unmap() == n.Addr.Unmap() })
		switch {
		case i < 0:
			out = append(out, Drift{Neighbour: &n, Problem: "missing"})
		case o.Neighs[i].State != unix.NUD_PERMANENT || !bytes.Equal(o.Neighs[i].MAC, n.MAC):
			out = append(out, Drift{Neighbour: &n, Problem: fmt.Sprintf("changed (lladdr %s state %#x)", o.Neighs[i].MAC, o.Neighs[i].State)})
		}
	}
	for _, r := range p.Routes {
		r := r
		var want RouteInfo
		if r.Unreachable {
			want = RouteInfo{Family: r.Family, Table: r.Table, Unreachable: true, Metric: BackstopMetric}
		} else {
			l, ok := link(r.Device)
			if !ok {
				out = append(out, Drift{Route: &r, Problem: "device " + r.Device + " is missing", Blocked: true})
				continue
			}
			if !l.Up() {
				out = append(out, Drift{Route: &r, Problem: "device " + r.Device + " is down", Blocked: true})
				continue
			}
			if r.Gateway.IsValid() && !onLink(r.Gateway, o.Addrs[l.Index]) {
				// IPv6 addresses go with the link when it goes down (unless
				// keep_addr_on_down): the route waits for them.
				out = append(out, Drift{Route: &r, Problem: fmt.Sprintf("gateway %s is on no network of %s (its address is gone)", r.Gateway, r.Device), Blocked: true})
				continue
			}
			want = RouteInfo{Family: r.Family, Table: r.Table, Gateway: r.Gateway.Unmap(), Index: l.Index}
		}
		if !slices.ContainsFunc(o.Routes, want.Is) {
			out = append(out, Drift{Route: &r, Problem: "missing"})
		}
	}
	for _, r := range p.Rules {
		r := r
		if !hasRule(o.Rules, r) {
			out = append(out, Drift{Rule: &r, Problem: "missing"})
		}
	}
	for _, f := range p.moveFamilies() {
		rules := slices.DeleteFunc(slices.Clone(o.Rules), func(ri RuleInfo) bool { return ri.Family != f })
		switch has0, hasPref := hasRule(rules, localRule(f, 0)), hasRule(rules, localRule(f, LocalPref)); {
		case has0:
			out = append(out, Drift{Local: f, Problem: "the local rule is back at pref 0 (host-bound copies would be delivered here)"})
		case !hasPref:
			out = append(out, Drift{Local: f, Problem: "no local rule at all", Blocked: true})
		}
	}
	return out
}

// onLink reports whether gw is on one of the prefixes (IPv6 link-local
// gateways always are).
func onLink(gw netip.Addr, ps []netip.Prefix) bool {
	gw = gw.Unmap()
	if gw.Is6() && gw.IsLinkLocalUnicast() {
		return true
	}
	for _, p := range ps {
		if p.IsValid() && p.Addr().Unmap().Is4() == gw.Is4() && p.Masked().Contains(gw) {
			return true
		}
	}
	return false
}

// Repair puts back what the drifts say is missing, item by item (an item
// that fails does not stop the others, and nothing is rolled back), and
// returns the journal of what it changed; merge it into the running
// journal with Merge. Blocked drifts are left for a later event.
func Repair(k Kernel, drifts []Drift, log *slog.Logger) (Journal, error) {
	r := &run{k: k, log: orDiscard(log), repair: true}
	var errs []error
	for _, d := range drifts {
		var err error
		switch {
		case d.Blocked:
		case d.Veth != nil:
			err = r.createVeth(*d.Veth)
		case d.VXLAN != nil:
			err = r.createVXLAN(*d.VXLAN)
		case d.Flag != nil:
			err = r.setFlags(*d.Flag)
		case d.Neighbour != nil:
			err = r.setNeighbour(*d.Neighbour)
		case d.Route != nil:
			err = r.addRoute(*d.Route)
		case d.Rule != nil:
			err = r.addRule(*d.Rule)
		case d.Local != 0:
			err = r.moveLocal(d.Local)
		case d.Down != "":
			// Ours (created, deleted at exit): no journal entry needed.
			var l Link
			if l, err = LinkByName(k, d.Down); err == nil {
				err = k.SetLinkFlags(l.Index, unix.IFF_UP, unix.IFF_UP)
			}
			if err != nil {
				err = fmt.Errorf("bringing %s up again: %w", d.Down, err)
			}
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return r.j, errors.Join(errs...)
}

// Merge adds the changes of a repair to journal j: a re-created link
// replaces the entry of the link it stands for (Undo must find its new
// ifindex); any other change already in j keeps its first entry, which
// knows what was there before nfclone.
func Merge(j, added Journal) Journal {
	out := slices.Clone(j)
	for _, c := range added {
		i := slices.IndexFunc(out, func(e Change) bool { return e.Op == c.Op && sameChange(e, c) })
		switch {
		case i < 0:
			out = append(out, c)
		case c.Op == OpLinkCreated:
			out[i] = c
		}
	}
	return out
}

// MissingRoutes returns, by route, the problem of each unicast gateway
// route among the drifts: copies to those gateways cannot leave.
func MissingRoutes(drifts []Drift) map[Route]string {
	out := map[Route]string{}
	for _, d := range drifts {
		if d.Route != nil && !d.Route.Unreachable {
			out[*d.Route] = d.Problem
		}
	}
	return out
}
