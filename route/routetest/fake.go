// Package routetest holds an in-memory route.Kernel for tests.
package routetest

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/nfclone/nfclone/route"
	"golang.org/x/sys/unix"
)

// Fake is an in-memory route.Kernel for unit tests. It
// starts like a fresh network namespace: lo, and the default rules
// (0 local, 32766 main, 32767 default for IPv4; 0 local, 32766 main for
// IPv6). It answers with the kernel's errnos (EEXIST, ENOENT, ESRCH,
// ENODEV). Safe for concurrent use.
type Fake struct {
	mu        sync.Mutex
	st        FakeState
	nextIndex int
	fail      func(op string) error
}

// FakeState is a snapshot of a Fake, comparable with reflect.DeepEqual.
type FakeState struct {
	Links  []FakeLink
	Rules  []route.RuleInfo
	Routes []route.RouteInfo
	Neighs []route.NeighInfo
}

// FakeLink is a link of a Fake.
type FakeLink struct {
	route.Link
	Peer  int // veth peer ifindex
	Addrs []netip.Prefix
	VXLAN *route.VXLAN // for vxlan links: how it was created (Device is the underlay name)
}

// NewFake returns a Fake holding lo and the default rules.
func NewFake() *Fake {
	f := &Fake{nextIndex: 1}
	f.AddLink("lo", nil, netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128"))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.Links[0].Flags = unix.IFF_UP | unix.IFF_LOOPBACK
	for _, r := range []route.PolicyRule{
		{Family: route.IPv4, Pref: 0, Table: route.TableLocal},
		{Family: route.IPv4, Pref: 32766, Table: route.TableMain},
		{Family: route.IPv4, Pref: 32767, Table: route.TableDefault},
		{Family: route.IPv6, Pref: 0, Table: route.TableLocal},
		{Family: route.IPv6, Pref: 32766, Table: route.TableMain},
	} {
		f.st.Rules = append(f.st.Rules, route.RuleInfo{PolicyRule: r, Action: unix.FR_ACT_TO_TBL})
	}
	return f
}

// AddLink adds a plain (physical-like) device, up, with addresses; returns
// its ifindex.
func (f *Fake) AddLink(name string, mac net.HardwareAddr, addrs ...netip.Prefix) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addLinkLocked(route.Link{Name: name, MAC: mac, Flags: unix.IFF_UP | unix.IFF_BROADCAST | unix.IFF_MULTICAST}, addrs...)
}

func (f *Fake) addLinkLocked(l route.Link, addrs ...netip.Prefix) int {
	l.Index = f.nextIndex
	f.nextIndex++
	if l.MAC == nil && l.Name != "lo" {
		l.MAC = net.HardwareAddr{0x02, 0x4e, 0x43, 0, byte(l.Index >> 8), byte(l.Index)}
	}
	f.st.Links = append(f.st.Links, FakeLink{Link: l, Addrs: addrs})
	return l.Index
}

// AddRawRule inserts a rule as the kernel would list it (e.g. one with
// Other selectors) — for tests.
func (f *Fake) AddRawRule(r route.RuleInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.Rules = append(f.st.Rules, r)
	f.sortRules()
}

// AddNeighbourEntry inserts a neighbour entry — for tests.
func (f *Fake) AddNeighbourEntry(n route.NeighInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setNeighLocked(n)
}

// FailOn makes every operation for which fn returns an error fail with it
// (nil fn: no failures). Operation names are the Kernel method names
// ("AddRule", "CreateVeth", ...).
func (f *Fake) FailOn(fn func(op string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

func (f *Fake) check(op string) error {
	if f.fail != nil {
		if err := f.fail(op); err != nil {
			return fmt.Errorf("fake %s: %w", op, err)
		}
	}
	return nil
}

// Snapshot returns a deep copy of the state.
func (f *Fake) Snapshot() FakeState {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s FakeState
	for _, l := range f.st.Links {
		c := l
		c.MAC = slices.Clone(l.MAC)
		c.Addrs = append([]netip.Prefix(nil), l.Addrs...)
		if l.VXLAN != nil {
			v := *l.VXLAN
			c.VXLAN = &v
		}
		s.Links = append(s.Links, c)
	}
	s.Rules = append(s.Rules, f.st.Rules...)
	s.Routes = append(s.Routes, f.st.Routes...)
	for _, n := range f.st.Neighs {
		n.MAC = slices.Clone(n.MAC)
		s.Neighs = append(s.Neighs, n)
	}
	return s // empty parts are nil, so DeepEqual does not depend on history
}

// String renders the state, one object per line, for test diffs.
func (s FakeState) String() string {
	var b strings.Builder
	for _, l := range s.Links {
		fmt.Fprintf(&b, "link %d %s kind=%q mac=%s flags=%#x peer=%d addrs=%v", l.Index, l.Name, l.Kind, l.MAC, l.Flags, l.Peer, l.Addrs)
		if l.VXLAN != nil {
			fmt.Fprintf(&b, " vxlan=%+v", *l.VXLAN)
		}
		b.WriteByte('\n')
	}
	for _, r := range s.Rules {
		fmt.Fprintf(&b, "rule %s %s mask=%#x action=%d other=%v\n", r.Family, r.PolicyRule, r.Mask, r.Action, r.Other)
	}
	for _, r := range s.Routes {
		if r.Unreachable {
			fmt.Fprintf(&b, "route %s table %d unreachable default metric %d\n", r.Family, r.Table, r.Metric)
			continue
		}
		fmt.Fprintf(&b, "route %s table %d default via %s ifindex %d\n", r.Family, r.Table, r.Gateway, r.Index)
	}
	for _, n := range s.Neighs {
		fmt.Fprintf(&b, "neigh %s ifindex %d lladdr %s state %#x\n", n.Addr, n.Index, n.MAC, n.State)
	}
	return b.String()
}

func (f *Fake) link(index int) (*FakeLink, error) {
	for i := range f.st.Links {
		if f.st.Links[i].Index == index {
			return &f.st.Links[i], nil
		}
	}
	return nil, fmt.Errorf("ifindex %d: %w", index, unix.ENODEV)
}

func (f *Fake) nameTaken(names ...string) error {
	for _, l := range f.st.Links {
		if slices.Contains(names, l.Name) {
			return fmt.Errorf("link %s: %w", l.Name, unix.EEXIST)
		}
	}
	return nil
}

// Links implements Kernel.
func (f *Fake) Links() ([]route.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("Links"); err != nil {
		return nil, err
	}
	out := make([]route.Link, 0, len(f.st.Links))
	for _, l := range f.st.Links {
		c := l.Link
		c.MAC = slices.Clone(c.MAC)
		out = append(out, c)
	}
	return out, nil
}

// Addrs implements Kernel.
func (f *Fake) Addrs(index int) ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("Addrs"); err != nil {
		return nil, err
	}
	l, err := f.link(index)
	if err != nil {
		return nil, err
	}
	return slices.Clone(l.Addrs), nil
}

// SetLinkFlags implements Kernel.
func (f *Fake) SetLinkFlags(index int, flags, mask uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("SetLinkFlags"); err != nil {
		return err
	}
	l, err := f.link(index)
	if err != nil {
		return err
	}
	wasUp := l.Up()
	l.Flags = l.Flags&^mask | flags&mask
	if wasUp && !l.Up() {
		// Like the kernel: a link going down takes its routes and its
		// neighbour entries (permanent ones too) with it.
		f.st.Routes = slices.DeleteFunc(f.st.Routes, func(r route.RouteInfo) bool { return !r.Unreachable && r.Index == index })
		f.st.Neighs = slices.DeleteFunc(f.st.Neighs, func(n route.NeighInfo) bool { return n.Index == index })
	}
	return nil
}

// CreateVeth implements Kernel.
func (f *Fake) CreateVeth(v route.VethPair) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("CreateVeth"); err != nil {
		return err
	}
	if err := f.nameTaken(v.Name, v.Peer); err != nil {
		return err
	}
	flags := uint32(unix.IFF_BROADCAST | unix.IFF_MULTICAST)
	if v.Up {
		flags |= unix.IFF_UP
	}
	if v.Promisc {
		flags |= unix.IFF_PROMISC
	}
	a := f.addLinkLocked(route.Link{Name: v.Name, Kind: "veth", Flags: flags})
	b := f.addLinkLocked(route.Link{Name: v.Peer, Kind: "veth", Flags: flags})
	la, _ := f.link(a)
	la.Peer = b
	lb, _ := f.link(b)
	lb.Peer = a
	return nil
}

// CreateVXLAN implements Kernel.
func (f *Fake) CreateVXLAN(v route.VXLAN, underlay int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("CreateVXLAN"); err != nil {
		return err
	}
	if err := f.nameTaken(v.Name); err != nil {
		return err
	}
	if underlay != 0 {
		if _, err := f.link(underlay); err != nil {
			return err
		}
	}
	if v.Port == 0 {
		v.Port = route.DefaultVXLANPort
	}
	idx := f.addLinkLocked(route.Link{Name: v.Name, Kind: "vxlan", Flags: unix.IFF_UP | unix.IFF_BROADCAST | unix.IFF_MULTICAST})
	l, _ := f.link(idx)
	l.VXLAN = &v
	return nil
}

// DeleteLink implements Kernel. Deleting a veth end deletes its peer; the
// routes and neighbour entries of deleted links go with them.
func (f *Fake) DeleteLink(index int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("DeleteLink"); err != nil {
		return err
	}
	l, err := f.link(index)
	if err != nil {
		return err
	}
	gone := []int{index}
	if l.Peer != 0 {
		gone = append(gone, l.Peer)
	}
	f.st.Links = slices.DeleteFunc(f.st.Links, func(l FakeLink) bool { return slices.Contains(gone, l.Index) })
	f.st.Routes = slices.DeleteFunc(f.st.Routes, func(r route.RouteInfo) bool { return !r.Unreachable && slices.Contains(gone, r.Index) })
	f.st.Neighs = slices.DeleteFunc(f.st.Neighs, func(n route.NeighInfo) bool { return slices.Contains(gone, n.Index) })
	return nil
}

func (f *Fake) sortRules() {
	sort.SliceStable(f.st.Rules, func(i, j int) bool {
		a, b := f.st.Rules[i], f.st.Rules[j]
		if a.Family != b.Family {
			return a.Family < b.Family
		}
		return a.Pref < b.Pref
	})
}

// Rules implements Kernel.
func (f *Fake) Rules(fam route.Family) ([]route.RuleInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("Rules"); err != nil {
		return nil, err
	}
	var out []route.RuleInfo
	for _, r := range f.st.Rules {
		if r.Family == fam {
			out = append(out, r)
		}
	}
	return out, nil
}

func ruleInfoOf(r route.PolicyRule) route.RuleInfo {
	ri := route.RuleInfo{PolicyRule: r, Action: unix.FR_ACT_TO_TBL}
	ri.Mask = r.FwMask()
	return ri
}

// AddRule implements Kernel.
func (f *Fake) AddRule(r route.PolicyRule) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("AddRule"); err != nil {
		return err
	}
	if !r.Family.Valid() {
		return unix.EAFNOSUPPORT
	}
	ri := ruleInfoOf(r)
	if slices.Contains(f.st.Rules, ri) {
		return fmt.Errorf("rule %s: %w", r, unix.EEXIST)
	}
	f.st.Rules = append(f.st.Rules, ri)
	f.sortRules()
	return nil
}

// DeleteRule implements Kernel.
func (f *Fake) DeleteRule(r route.PolicyRule) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("DeleteRule"); err != nil {
		return err
	}
	i := slices.Index(f.st.Rules, ruleInfoOf(r))
	if i < 0 {
		return fmt.Errorf("rule %s: %w", r, unix.ENOENT)
	}
	f.st.Rules = slices.Delete(f.st.Rules, i, i+1)
	return nil
}

// DefaultRoutes implements Kernel.
func (f *Fake) DefaultRoutes(fam route.Family, table uint32) ([]route.RouteInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("DefaultRoutes"); err != nil {
		return nil, err
	}
	var out []route.RouteInfo
	for _, r := range f.st.Routes {
		if r.Family == fam && r.Table == table {
			out = append(out, r)
		}
	}
	return out, nil
}

// AddDefaultRoute implements Kernel. Like the kernel, it refuses a unicast
// route through a link that is down (ENETDOWN) and a second route of the
// same type and metric in one table (EEXIST).
func (f *Fake) AddDefaultRoute(r route.RouteInfo) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("AddDefaultRoute"); err != nil {
		return err
	}
	if !r.Unreachable {
		l, err := f.link(r.Index)
		if err != nil {
			return err
		}
		if !l.Up() {
			return fmt.Errorf("route via %s: %w", l.Name, unix.ENETDOWN)
		}
	}
	for _, e := range f.st.Routes {
		if e.Family == r.Family && e.Table == r.Table && e.Unreachable == r.Unreachable && e.Metric == r.Metric {
			return fmt.Errorf("default route in table %d: %w", r.Table, unix.EEXIST)
		}
	}
	f.st.Routes = append(f.st.Routes, r)
	return nil
}

// DeleteDefaultRoute implements Kernel.
func (f *Fake) DeleteDefaultRoute(r route.RouteInfo) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("DeleteDefaultRoute"); err != nil {
		return err
	}
	i := slices.IndexFunc(f.st.Routes, r.Is)
	if i < 0 {
		return fmt.Errorf("default route in table %d: %w", r.Table, unix.ESRCH)
	}
	f.st.Routes = slices.Delete(f.st.Routes, i, i+1)
	return nil
}

// Neighbours implements Kernel.
func (f *Fake) Neighbours(index int) ([]route.NeighInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("Neighbours"); err != nil {
		return nil, err
	}
	var out []route.NeighInfo
	for _, n := range f.st.Neighs {
		if n.Index == index {
			n.MAC = slices.Clone(n.MAC)
			out = append(out, n)
		}
	}
	return out, nil
}

func (f *Fake) setNeighLocked(n route.NeighInfo) {
	n.MAC = slices.Clone(n.MAC)
	n.Addr = n.Addr.Unmap()
	for i, e := range f.st.Neighs {
		if e.Index == n.Index && e.Addr == n.Addr {
			f.st.Neighs[i] = n
			return
		}
	}
	f.st.Neighs = append(f.st.Neighs, n)
}

// SetNeighbour implements Kernel.
func (f *Fake) SetNeighbour(n route.NeighInfo) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("SetNeighbour"); err != nil {
		return err
	}
	if _, err := f.link(n.Index); err != nil {
		return err
	}
	f.setNeighLocked(n)
	return nil
}

// DeleteNeighbour implements Kernel.
func (f *Fake) DeleteNeighbour(index int, addr netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("DeleteNeighbour"); err != nil {
		return err
	}
	i := slices.IndexFunc(f.st.Neighs, func(n route.NeighInfo) bool { return n.Index == index && n.Addr == addr.Unmap() })
	if i < 0 {
		return fmt.Errorf("neighbour %s: %w", addr, unix.ENOENT)
	}
	f.st.Neighs = slices.Delete(f.st.Neighs, i, i+1)
	return nil
}

// Close implements Kernel.
func (f *Fake) Close() error { return nil }

var _ route.Kernel = (*Fake)(nil)

// Lookup walks the state's policy rules the way the kernel does for a
// packet of family f carrying mark, and returns the default route the
// lookup ends with: the first table (in rule order) holding a default route
// whose link is up (lowest metric first) decides; an unreachable route ends
// the lookup too, as in the kernel. ok is false when no table has a route
// (the kernel answers ENETUNREACH). The local table is taken as empty (only
// default routes are modelled), and the lookup is for no destination in
// particular: rules with a destination selector are passed over.
func (s FakeState) Lookup(f route.Family, mark uint32) (found route.RouteInfo, ok bool) {
	up := map[int]bool{}
	for _, l := range s.Links {
		up[l.Index] = l.Up()
	}
	for _, r := range s.Rules {
		if r.Family != f || r.Other || r.Action != unix.FR_ACT_TO_TBL || r.To.IsValid() {
			continue // (a rule for one destination: not this lookup's)
		}
		if r.Mark != 0 && mark&r.Mask != r.Mark {
			continue
		}
		var best *route.RouteInfo
		for i, rt := range s.Routes {
			if rt.Family != f || rt.Table != r.Table || (!rt.Unreachable && !up[rt.Index]) {
				continue
			}
			if best == nil || rt.Metric < best.Metric {
				best = &s.Routes[i]
			}
		}
		if best != nil {
			return *best, true
		}
	}
	return route.RouteInfo{}, false
}
