package route

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"

	"golang.org/x/sys/unix"
)

// Applier applies plans through a Kernel. It is not safe for concurrent
// use (one Apply at a time).
type Applier struct {
	k   Kernel
	log *slog.Logger

	// OnChange, if set, is called with the journal so far before every
	// change Apply makes (the entry marked Pending: an intent) and again
	// after it (confirmed), so that the caller can persist it (state file):
	// a run killed at any point then leaves a journal that Undo can revert.
	OnChange func(Journal)

	// BeforeConfirm, if set, is called after a change was made and before
	// it is confirmed (tests: a kill -9 at exactly that point).
	BeforeConfirm func(Change)
}

// NewApplier returns an Applier using k. log may be nil (discard).
func NewApplier(k Kernel, log *slog.Logger) *Applier {
	return &Applier{k: k, log: orDiscard(log)}
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return l
}

// Apply validates p and applies it in order: links created (veths, vxlans)
// → link flags → neighbours → routes → rules → local rule move. It returns
// the journal of what it changed. Items already in the wanted state are
// not journaled (Undo will not remove what this run did not add).
//
// On error, Apply undoes what it already did and returns the error with a
// nil journal. If that rollback fails too, the error says so and the
// journal of the changes left is returned so the caller can persist it and
// retry Undo later.
func (a *Applier) Apply(p Plan) (Journal, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("invalid routing plan: %w", err)
	}
	r := &run{k: a.k, log: a.log, onChange: a.OnChange, beforeConfirm: a.BeforeConfirm}
	err := r.apply(p)
	if err == nil {
		return r.j, nil
	}
	if len(r.j) == 0 {
		return nil, err
	}
	a.log.Warn("routing plan failed, rolling back", "error", err, "changes", len(r.j))
	if uerr := Undo(a.k, r.j, a.log); uerr != nil {
		return r.j, fmt.Errorf("%w; rolling back failed too: %w", err, uerr)
	}
	return nil, err
}

type run struct {
	k             Kernel
	log           *slog.Logger
	onChange      func(Journal)
	beforeConfirm func(Change)
	j             Journal
	repair        bool // putting back what was lost: quieter logs
}

func (r *run) persist() {
	if r.onChange != nil {
		r.onChange(append(Journal(nil), r.j...))
	}
}

// intend journals c as pending before the kernel is asked to make it.
func (r *run) intend(c Change) {
	c.Pending = true
	r.j = append(r.j, c)
	r.persist()
}

// retract drops the pending entry of a change the kernel refused.
func (r *run) retract() {
	r.j = r.j[:len(r.j)-1]
	r.persist()
}

// record confirms the pending entry with what the change turned out to be.
func (r *run) record(c Change) {
	if r.beforeConfirm != nil {
		r.beforeConfirm(c)
	}
	c.Pending = false
	r.j[len(r.j)-1] = c
	r.log.Info("routing change", "change", c.String())
	r.persist()
}

func (r *run) apply(p Plan) error {
	for _, v := range p.Veths {
		if err := r.createVeth(v); err != nil {
			return err
		}
	}
	for _, v := range p.VXLANs {
		if err := r.createVXLAN(v); err != nil {
			return err
		}
	}
	for _, f := range p.Flags {
		if err := r.setFlags(f); err != nil {
			return err
		}
	}
	for _, n := range p.Neighbours {
		if err := r.setNeighbour(n); err != nil {
			return err
		}
	}
	for _, rt := range p.Routes {
		if err := r.addRoute(rt); err != nil {
			return err
		}
	}
	for _, ru := range p.Rules {
		if err := r.addRule(ru); err != nil {
			return err
		}
	}
	for _, f := range p.moveFamilies() {
		if err := r.moveLocal(f); err != nil {
			return err
		}
	}
	return nil
}

// refuseExisting fails if any of the names is already a link.
func refuseExisting(k Kernel, names ...string) error {
	links, err := k.Links()
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	for _, l := range links {
		for _, n := range names {
			if l.Name == n {
				return fmt.Errorf("interface %s already exists and was not created by nfclone; refusing to touch it", n)
			}
		}
	}
	return nil
}

func (r *run) createVeth(v VethPair) error {
	if err := refuseExisting(r.k, v.Name, v.Peer); err != nil {
		return fmt.Errorf("creating veth %s peer %s: %w", v.Name, v.Peer, err)
	}
	r.intend(Change{Op: OpLinkCreated, Link: &CreatedLink{Name: v.Name, Kind: "veth", Peer: v.Peer}})
	if err := r.k.CreateVeth(v); err != nil {
		r.retract()
		return fmt.Errorf("creating veth %s peer %s: %w", v.Name, v.Peer, err)
	}
	l, err := LinkByName(r.k, v.Name)
	if err != nil {
		return r.forgetCreated(v.Name, "veth", fmt.Errorf("looking up created veth %s: %w", v.Name, err))
	}
	peer, err := LinkByName(r.k, v.Peer)
	if err != nil {
		return r.forgetCreated(v.Name, "veth", fmt.Errorf("looking up created veth peer %s: %w", v.Peer, err))
	}
	r.record(Change{Op: OpLinkCreated, Link: &CreatedLink{
		Name: v.Name, Index: l.Index, Kind: "veth", Peer: v.Peer, PeerIndex: peer.Index,
	}})
	return nil
}

// forgetCreated deletes a link this run has just created but could not
// journal (its lookup failed): the exclusive create succeeded a moment
// ago, so a link with that name and kind is ours. Its intent is dropped
// once it is gone; otherwise it stays in the journal for Undo.
func (r *run) forgetCreated(name, kind string, cause error) error {
	links, err := r.k.Links()
	if err != nil {
		return errors.Join(cause, fmt.Errorf("%s %s may be left behind: listing links: %w", kind, name, err))
	}
	for _, l := range links {
		if l.Name == name && l.Kind == kind {
			if err := r.k.DeleteLink(l.Index); err != nil && !IsNotFound(err) {
				return errors.Join(cause, fmt.Errorf("%s %s is left behind: deleting it: %w", kind, name, err))
			}
		}
	}
	r.retract()
	return cause
}

// ErrVXLANInUse: the kernel refused a VXLAN device because another one on
// the host already has its VNI and UDP port.
var ErrVXLANInUse = errors.New("another VXLAN device on this host has this VNI and port")

func (r *run) createVXLAN(v VXLAN) error {
	if err := refuseExisting(r.k, v.Name); err != nil {
		return fmt.Errorf("creating vxlan %s: %w", v.Name, err)
	}
	underlay := 0
	if v.Device != "" {
		idx, err := LinkIndex(r.k, v.Device)
		if err != nil {
			return fmt.Errorf("creating vxlan %s: underlay device: %w", v.Name, err)
		}
		underlay = idx
	}
	r.intend(Change{Op: OpLinkCreated, Link: &CreatedLink{Name: v.Name, Kind: "vxlan"}})
	if err := r.k.CreateVXLAN(v, underlay); err != nil {
		r.retract()
		if errors.Is(err, unix.EEXIST) {
			// The name is free (refuseExisting): the kernel refuses a
			// second device with the same VNI and port.
			err = fmt.Errorf("%w: %w", ErrVXLANInUse, err)
		}
		return fmt.Errorf("creating vxlan %s id %d remote %s dstport %d: %w", v.Name, v.VNI, v.Remote, v.port(), err)
	}
	l, err := LinkByName(r.k, v.Name)
	if err != nil {
		return r.forgetCreated(v.Name, "vxlan", fmt.Errorf("looking up created vxlan %s: %w", v.Name, err))
	}
	r.record(Change{Op: OpLinkCreated, Link: &CreatedLink{Name: v.Name, Index: l.Index, Kind: "vxlan"}})
	return nil
}

func (r *run) setFlags(f LinkFlag) error {
	var want uint32
	if f.NoARP {
		want |= unix.IFF_NOARP
	}
	if f.Promisc {
		want |= unix.IFF_PROMISC
	}
	if want == 0 {
		return nil
	}
	l, err := LinkByName(r.k, f.Device)
	if err != nil {
		return fmt.Errorf("setting flags %#x on %s: %w", want, f.Device, err)
	}
	mask := want &^ l.Flags // only bits not already set
	if mask == 0 {
		r.log.Debug("link flags already set", "device", f.Device, "flags", fmt.Sprintf("%#x", want))
		return nil
	}
	c := Change{Op: OpLinkFlags, Flags: &FlagChange{
		Device: f.Device, Index: l.Index, Mask: mask, Before: l.Flags & mask,
	}}
	r.intend(c)
	if err := r.k.SetLinkFlags(l.Index, mask, mask); err != nil {
		r.retract()
		return fmt.Errorf("setting flags %#x on %s: %w", mask, f.Device, err)
	}
	r.record(c)
	return nil
}

func findNeigh(ns []NeighInfo, index int, n NeighInfo) (NeighInfo, bool) {
	for _, e := range ns {
		if e.Index == index && e.Addr.Unmap() == n.Addr.Unmap() {
			return e, true
		}
	}
	return NeighInfo{}, false
}

func (r *run) setNeighbour(n Neighbour) error {
	what := fmt.Sprintf("replacing neighbour %s lladdr %s dev %s", n.Addr, n.MAC, n.Device)
	idx, err := LinkIndex(r.k, n.Device)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	want := NeighInfo{Index: idx, Addr: n.Addr.Unmap(), MAC: n.MAC, State: unix.NUD_PERMANENT}
	ns, err := r.k.Neighbours(idx)
	if err != nil {
		return fmt.Errorf("%s: listing neighbours: %w", what, err)
	}
	var before *NeighState
	if cur, ok := findNeigh(ns, idx, want); ok {
		if cur.State == unix.NUD_PERMANENT && bytes.Equal(cur.MAC, n.MAC) {
			r.log.Debug("neighbour entry already present", "addr", n.Addr, "device", n.Device)
			return nil
		}
		before = &NeighState{State: cur.State}
		if cur.MAC != nil {
			before.MAC = cur.MAC.String()
		}
	}
	c := Change{Op: OpNeighbour, Neighbour: &NeighChange{
		Device: n.Device, Index: idx, Addr: want.Addr, MAC: n.MAC.String(), Before: before,
	}}
	r.intend(c)
	if err := r.k.SetNeighbour(want); err != nil {
		r.retract()
		return fmt.Errorf("%s: %w", what, err)
	}
	r.record(c)
	return nil
}

// routeInfo is the kernel's form of a planned route (the device looked up).
func routeInfo(k Kernel, rt Route) (RouteInfo, error) {
	if rt.Unreachable {
		return RouteInfo{Family: rt.Family, Table: rt.Table, Unreachable: true, Metric: BackstopMetric}, nil
	}
	idx, err := LinkIndex(k, rt.Device)
	if err != nil {
		return RouteInfo{}, err
	}
	return RouteInfo{Family: rt.Family, Table: rt.Table, Gateway: rt.Gateway.Unmap(), Index: idx}, nil
}

func (r *run) addRoute(rt Route) error {
	what := fmt.Sprintf("adding %s route %s", rt.Family, rt)
	want, err := routeInfo(r.k, rt)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	existing, err := r.k.DefaultRoutes(rt.Family, rt.Table)
	if err != nil {
		return fmt.Errorf("%s: listing table %d: %w", what, rt.Table, err)
	}
	for _, e := range existing {
		if e.Is(want) {
			if !r.repair {
				r.log.Warn("route already present; not added by this run, so it will not be removed on exit", "route", rt.String())
			}
			return nil
		}
	}
	for _, e := range existing {
		if !e.Unreachable && !rt.Unreachable {
			return fmt.Errorf("%s: table %d already has a default route (via %s, ifindex %d) that nfclone did not create", what, rt.Table, e.Gateway, e.Index)
		}
	}
	c := rt
	c.Gateway = want.Gateway
	r.intend(Change{Op: OpRouteAdded, Route: &c})
	if err := r.k.AddDefaultRoute(want); err != nil {
		r.retract()
		return fmt.Errorf("%s: %w", what, err)
	}
	r.record(Change{Op: OpRouteAdded, Route: &c})
	return nil
}

func (r *run) addRule(ru PolicyRule) error {
	what := fmt.Sprintf("adding %s rule %s", ru.Family, ru)
	rules, err := r.k.Rules(ru.Family)
	if err != nil {
		return fmt.Errorf("%s: listing rules: %w", what, err)
	}
	for _, e := range rules {
		if e.Is(ru) {
			r.log.Warn("rule already present; not added by this run, so it will not be removed on exit", "family", ru.Family.String(), "rule", ru.String())
			return nil
		}
	}
	c := ru
	r.intend(Change{Op: OpRuleAdded, Rule: &c})
	if err := r.k.AddRule(ru); err != nil {
		r.retract()
		if IsExist(err) {
			return fmt.Errorf("%s: the kernel has a rule it considers equal (same pref, mark and table, maybe with more selectors): %w", what, err)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	r.record(Change{Op: OpRuleAdded, Rule: &c})
	return nil
}

func hasRule(rules []RuleInfo, r PolicyRule) bool {
	for _, e := range rules {
		if e.Is(r) {
			return true
		}
	}
	return false
}

// moveLocal adds `pref LocalPref lookup local` first, then deletes the pref
// 0 local rule: there is never a moment without a local rule.
func (r *run) moveLocal(f Family) error {
	at0, atPref := localRule(f, 0), localRule(f, LocalPref)
	rules, err := r.k.Rules(f)
	if err != nil {
		return fmt.Errorf("moving %s local rule: listing rules: %w", f, err)
	}
	has0, hasPref := hasRule(rules, at0), hasRule(rules, atPref)
	switch {
	case !has0 && hasPref:
		r.log.Info("local rule already at its moved preference (left by an earlier run?); nothing recorded", "family", f.String(), "pref", LocalPref)
		return nil
	case !has0:
		return fmt.Errorf("moving %s local rule: no `lookup local` rule at pref 0 or %d; refusing to guess", f, LocalPref)
	}
	c := Change{Op: OpLocalMoved, Local: &LocalMove{Family: f, AddedPref: !hasPref}}
	r.intend(c)
	if !hasPref {
		if err := r.k.AddRule(atPref); err != nil {
			r.retract()
			return fmt.Errorf("moving %s local rule: adding rule %s: %w", f, atPref, err)
		}
	}
	if err := r.k.DeleteRule(at0); err != nil {
		err = fmt.Errorf("moving %s local rule: deleting rule %s: %w", f, at0, err)
		if !hasPref {
			if derr := r.k.DeleteRule(atPref); derr != nil && !IsNotFound(derr) {
				err = errors.Join(err, fmt.Errorf("deleting rule %s again: %w", atPref, derr))
				return err // the intent stays: Undo deletes it
			}
		}
		r.retract()
		return err
	}
	r.record(c)
	return nil
}

// Undo reverts a journal in reverse order. It is tolerant and idempotent:
// an item already gone is not an error, and running Undo twice changes
// nothing the second time. It does not stop at the first error: all errors
// are returned joined. log may be nil.
func Undo(k Kernel, j Journal, log *slog.Logger) error {
	log = orDiscard(log)
	var errs []error
	for i := len(j) - 1; i >= 0; i-- {
		c := j[i]
		if err := undoOne(k, c, log); err != nil {
			errs = append(errs, fmt.Errorf("undoing %q: %w", c.String(), err))
		} else {
			log.Debug("routing change undone", "change", c.String())
		}
	}
	return errors.Join(errs...)
}

func undoOne(k Kernel, c Change, log *slog.Logger) error {
	switch {
	case c.Op == OpLinkCreated && c.Link != nil:
		return undoLink(k, *c.Link, log)
	case c.Op == OpLinkFlags && c.Flags != nil:
		return undoFlags(k, *c.Flags, log)
	case c.Op == OpNeighbour && c.Neighbour != nil:
		return undoNeighbour(k, *c.Neighbour, log)
	case c.Op == OpRouteAdded && c.Route != nil:
		return undoRoute(k, *c.Route)
	case c.Op == OpRuleAdded && c.Rule != nil:
		if err := k.DeleteRule(*c.Rule); err != nil && !IsNotFound(err) {
			return fmt.Errorf("deleting %s rule %s: %w", c.Rule.Family, c.Rule, err)
		}
		return nil
	case c.Op == OpLocalMoved && c.Local != nil:
		return undoLocal(k, *c.Local)
	}
	return fmt.Errorf("unknown journal entry %q", c.Op)
}

// undoLink deletes a link nfclone created. Safety: it deletes only a link
// that still has the recorded name AND the recorded ifindex AND the recorded
// kind. The name alone is not enough (after our link vanished, someone
// may have created another link with that name); the ifindex alone is not
// either (indexes can be reused). A link matching all three is the one we
// created: ifindexes are not reused while the link exists, and a same-index
// same-name same-kind replacement would need a deliberate recreation.
// Deleting one end of a veth pair deletes the peer too.
func undoLink(k Kernel, cl CreatedLink, log *slog.Logger) error {
	links, err := k.Links()
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	if cl.Index == 0 {
		return undoIntendedLink(k, links, cl, log)
	}
	for _, l := range links {
		if l.Name != cl.Name {
			continue
		}
		if l.Index != cl.Index || l.Kind != cl.Kind {
			log.Warn("not deleting interface: it is not the one nfclone created", "name", cl.Name,
				"ifindex", l.Index, "kind", l.Kind, "recorded_ifindex", cl.Index, "recorded_kind", cl.Kind)
			return nil
		}
		if err := k.DeleteLink(l.Index); err != nil && !IsNotFound(err) {
			return fmt.Errorf("deleting %s %s (ifindex %d): %w", cl.Kind, cl.Name, cl.Index, err)
		}
		return nil
	}
	return nil // already gone
}

// undoIntendedLink deletes the link of a pending link-created entry (a run
// killed between creating it and journaling its ifindex): the name had
// been checked free just before, so a link of that name and kind — for a
// veth, with its peer of that name beside it — is the one nfclone created.
func undoIntendedLink(k Kernel, links []Link, cl CreatedLink, log *slog.Logger) error {
	var found *Link
	peer := cl.Peer == ""
	for i, l := range links {
		switch {
		case l.Name == cl.Name:
			found = &links[i]
		case l.Name == cl.Peer && l.Kind == cl.Kind:
			peer = true
		}
	}
	if found == nil {
		return nil // never created, or gone
	}
	if found.Kind != cl.Kind || !peer {
		log.Warn("not deleting interface: it does not match what nfclone was about to create", "name", cl.Name,
			"kind", found.Kind, "intended_kind", cl.Kind, "intended_peer", cl.Peer)
		return nil
	}
	if err := k.DeleteLink(found.Index); err != nil && !IsNotFound(err) {
		return fmt.Errorf("deleting %s %s (ifindex %d): %w", cl.Kind, cl.Name, found.Index, err)
	}
	return nil
}

// undoFlags restores the changed bits, on the same link only (same name and
// ifindex): a recreated device has fresh flags that are not ours to change.
func undoFlags(k Kernel, fc FlagChange, log *slog.Logger) error {
	l, err := LinkByName(k, fc.Device)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if l.Index != fc.Index {
		log.Warn("not restoring flags: interface was recreated", "device", fc.Device, "ifindex", l.Index, "recorded_ifindex", fc.Index)
		return nil
	}
	if l.Flags&fc.Mask == fc.Before&fc.Mask {
		return nil
	}
	if err := k.SetLinkFlags(l.Index, fc.Before&fc.Mask, fc.Mask); err != nil {
		return fmt.Errorf("restoring flags %#x to %#x on %s: %w", fc.Mask, fc.Before&fc.Mask, fc.Device, err)
	}
	return nil
}

// undoNeighbour restores the entry that was there before, or deletes ours.
// It only touches the entry while it is still ours (permanent, our MAC) or
// absent: an entry someone changed since is left alone.
func undoNeighbour(k Kernel, nc NeighChange, log *slog.Logger) error {
	l, err := LinkByName(k, nc.Device)
	if IsNotFound(err) {
		return nil // device gone: its neighbour entries went with it
	}
	if err != nil {
		return err
	}
	if l.Index != nc.Index {
		return nil // recreated device: our entry died with the old one
	}
	mac, err := net.ParseMAC(nc.MAC)
	if err != nil {
		return fmt.Errorf("journal entry for neighbour %s: %w", nc.Addr, err)
	}
	ns, err := k.Neighbours(l.Index)
	if err != nil {
		return fmt.Errorf("listing neighbours of %s: %w", nc.Device, err)
	}
	cur, present := findNeigh(ns, l.Index, NeighInfo{Addr: nc.Addr})
	ours := present && cur.State == unix.NUD_PERMANENT && bytes.Equal(cur.MAC, mac)
	if present && !ours {
		log.Debug("neighbour entry changed since; leaving it", "addr", nc.Addr, "device", nc.Device)
		return nil
	}
	if prev, ok := restorable(nc.Before); ok {
		prev.Index, prev.Addr = l.Index, nc.Addr
		if err := k.SetNeighbour(prev); err != nil {
			return fmt.Errorf("restoring neighbour %s lladdr %s dev %s: %w", nc.Addr, prev.MAC, nc.Device, err)
		}
		return nil
	}
	if !present {
		return nil
	}
	if err := k.DeleteNeighbour(l.Index, nc.Addr); err != nil && !IsNotFound(err) {
		return fmt.Errorf("deleting neighbour %s dev %s: %w", nc.Addr, nc.Device, err)
	}
	return nil
}

// restorable returns the entry to put back: static entries (permanent,
// noarp) as they were; dynamic ones as STALE with their old address (the
// kernel re-validates them on use); entries without an address are not put
// back (the kernel re-resolves).
func restorable(b *NeighState) (NeighInfo, bool) {
	if b == nil || b.MAC == "" {
		return NeighInfo{}, false
	}
	mac, err := net.ParseMAC(b.MAC)
	if err != nil {
		return NeighInfo{}, false
	}
	switch {
	case b.State&(unix.NUD_PERMANENT|unix.NUD_NOARP) != 0:
		return NeighInfo{MAC: mac, State: b.State}, true
	case b.State&(unix.NUD_REACHABLE|unix.NUD_STALE|unix.NUD_DELAY|unix.NUD_PROBE) != 0:
		return NeighInfo{MAC: mac, State: unix.NUD_STALE}, true
	}
	return NeighInfo{}, false
}

func undoRoute(k Kernel, rt Route) error {
	ri, err := routeInfo(k, rt)
	if IsNotFound(err) {
		return nil // device gone: its routes went with it
	}
	if err != nil {
		return err
	}
	if err := k.DeleteDefaultRoute(ri); err != nil && !IsNotFound(err) {
		return fmt.Errorf("deleting %s route %s: %w", rt.Family, rt, err)
	}
	return nil
}

// undoLocal re-adds the pref 0 local rule first, then deletes the moved one
// (if this run added it).
func undoLocal(k Kernel, lm LocalMove) error {
	at0, atPref := localRule(lm.Family, 0), localRule(lm.Family, LocalPref)
	rules, err := k.Rules(lm.Family)
	if err != nil {
		return fmt.Errorf("listing %s rules: %w", lm.Family, err)
	}
	if !hasRule(rules, at0) {
		if err := k.AddRule(at0); err != nil && !IsExist(err) {
			return fmt.Errorf("re-adding %s rule %s: %w", lm.Family, at0, err)
		}
	}
	if lm.AddedPref && hasRule(rules, atPref) {
		if err := k.DeleteRule(atPref); err != nil && !IsNotFound(err) {
			return fmt.Errorf("deleting %s rule %s: %w", lm.Family, atPref, err)
		}
	}
	return nil
}
