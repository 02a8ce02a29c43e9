package route_test

import (
	"github.com/nfclone/nfclone/route"
	"github.com/nfclone/nfclone/route/routetest"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// backstopPlan is samplePlan with the backstop route in its copy table.
func backstopPlan(t testing.TB) route.Plan {
	p := route.SamplePlan(t)
	p.Routes = append([]route.Route{
		{Family: route.IPv4, Table: 20035, Unreachable: true},
		{Family: route.IPv6, Table: 20035, Unreachable: true},
	}, p.Routes...)
	return p
}

func flap(t *testing.T, f *routetest.Fake, dev string) {
	t.Helper()
	l, err := route.LinkByName(f, dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.SetLinkFlags(l.Index, 0, unix.IFF_UP); err != nil {
		t.Fatal(err)
	}
	if err := f.SetLinkFlags(l.Index, unix.IFF_UP, unix.IFF_UP); err != nil {
		t.Fatal(err)
	}
}

func driftStrings(ds []route.Drift) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.String())
	}
	return strings.Join(s, "\n")
}

// A link flap takes the gateway routes and the permanent neighbours of the
// device with it; the diff finds exactly those, the repair puts them back,
// the journal still undoes everything.
func TestDiffRepairAfterLinkFlap(t *testing.T) {
	f := newTestFake(t)
	before := f.Snapshot()
	p := backstopPlan(t)
	j, err := route.NewApplier(f, nil).Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	applied := f.Snapshot()
	o, err := route.Observe(f, p)
	if err != nil {
		t.Fatal(err)
	}
	if ds := route.Diff(p, o); len(ds) != 0 {
		t.Fatalf("drift right after apply:\n%s", driftStrings(ds))
	}

	flap(t, f, "e1")
	o, _ = route.Observe(f, p)
	ds := route.Diff(p, o)
	want := `neighbour 10.77.2.2 lladdr 02:00:00:77:02:02 dev e1: missing
neighbour fd77::2 lladdr 02:00:00:77:02:02 dev e1: missing
inet route default via 10.77.2.2 dev e1 table 20035: missing
inet6 route default via fd77::2 dev e1 table 20035: missing`
	if got := driftStrings(ds); got != want {
		t.Fatalf("drift after the flap:\n%s\nwant:\n%s", got, want)
	}
	if len(route.MissingRoutes(ds)) != 2 {
		t.Errorf("missing routes: %v", route.MissingRoutes(ds))
	}
	added, err := route.Repair(f, ds, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 4 {
		t.Errorf("repair journal: %v", added)
	}
	assertSame(t, "after the repair", f.Snapshot(), applied)
	j = route.Merge(j, added)
	if len(j) != 14 {
		t.Errorf("merged journal has %d entries, want the 14 of the apply: %v", len(j), j)
	}
	if err := route.Undo(f, j, nil); err != nil {
		t.Fatal(err)
	}
	assertSame(t, "after undo", f.Snapshot(), before)
}

// While the device is down (or gone), its route cannot be put back: the
// drift is blocked and Repair leaves it; the backstop stays.
func TestDiffBlockedWhileDown(t *testing.T) {
	f := newTestFake(t)
	p := backstopPlan(t)
	if _, err := route.NewApplier(f, nil).Apply(p); err != nil {
		t.Fatal(err)
	}
	e1, _ := route.LinkByName(f, "e1")
	if err := f.SetLinkFlags(e1.Index, 0, unix.IFF_UP); err != nil {
		t.Fatal(err)
	}
	o, _ := route.Observe(f, p)
	ds := route.Diff(p, o)
	if _, err := route.Repair(f, ds, nil); err != nil {
		t.Fatalf("repair of blocked drifts: %v", err)
	}
	miss := route.MissingRoutes(ds)
	r := route.Route{Family: route.IPv4, Table: 20035, Gateway: netip.MustParseAddr("10.77.2.2"), Device: "e1"}
	if miss[r] != "device e1 is down" {
		t.Fatalf("missing routes: %v", miss)
	}
	if rt, ok := f.Snapshot().Lookup(route.IPv4, 0x4e43); !ok || !rt.Unreachable {
		t.Fatalf("a copy's lookup with e1 down: %+v %v, want the unreachable backstop", rt, ok)
	}
}

// Everything the plan holds is diffed: rules deleted, the local rule put
// back at 0, flags cleared, links deleted — and repaired.
func TestDiffRepairsEverything(t *testing.T) {
	f := newTestFake(t)
	p := backstopPlan(t)
	j, err := route.NewApplier(f, nil).Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	applied := f.Snapshot()
	if err := f.DeleteRule(route.PolicyRule{Family: route.IPv4, Pref: 100, Mark: 0x4e43, Table: 20035}); err != nil {
		t.Fatal(err)
	}
	if err := f.AddRule(route.LocalRule(route.IPv6, 0)); err != nil {
		t.Fatal(err)
	}
	e2, _ := route.LinkByName(f, "e2")
	if err := f.SetLinkFlags(e2.Index, 0, unix.IFF_NOARP); err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteDefaultRoute(route.RouteInfo{Family: route.IPv6, Table: 20035, Unreachable: true, Metric: route.BackstopMetric}); err != nil {
		t.Fatal(err)
	}
	agg, _ := route.LinkByName(f, "agg0")
	vx, _ := route.LinkByName(f, "nfc-vx0")
	rx, _ := route.LinkByName(f, "agg0-rx")
	if err := f.SetLinkFlags(rx.Index, 0, unix.IFF_UP); err != nil {
		t.Fatal(err)
	}
	o, _ := route.Observe(f, p)
	if got := driftStrings(route.Diff(p, o)); !strings.HasPrefix(got, "created interface agg0-rx: down\n") {
		t.Fatalf("drift with agg0-rx down:\n%s", got)
	}
	for _, i := range []int{agg.Index, vx.Index} {
		if err := f.DeleteLink(i); err != nil {
			t.Fatal(err)
		}
	}
	o, _ = route.Observe(f, p)
	ds := route.Diff(p, o)
	want := `veth agg0 peer agg0-rx: missing
vxlan nfc-vx0: missing
flags of e2: flags 0x80 cleared
inet6 route unreachable default metric 4294967295 table 20035: missing
inet rule pref 100 fwmark 0x4e43 lookup 20035: missing
inet6 local rule at pref 1000: the local rule is back at pref 0 (host-bound copies would be delivered here)`
	if got := driftStrings(ds); got != want {
		t.Fatalf("drift:\n%s\nwant:\n%s", got, want)
	}
	added, err := route.Repair(f, ds, nil)
	if err != nil {
		t.Fatal(err)
	}
	o, _ = route.Observe(f, p)
	if ds := route.Diff(p, o); len(ds) != 0 {
		t.Fatalf("drift after repair:\n%s", driftStrings(ds))
	}
	// Equal but for the indexes (and derived MACs) of the re-created links.
	if got, w := len(f.Snapshot().Links), len(applied.Links); got != w {
		t.Fatalf("%d links after repair, want %d", got, w)
	}
	j = route.Merge(j, added)
	agg, _ = route.LinkByName(f, "agg0")
	for _, c := range j {
		if c.Op == route.OpLinkCreated && c.Link.Name == "agg0" && c.Link.Index != agg.Index {
			t.Fatalf("journal keeps the old ifindex of agg0: %+v (now %d)", c.Link, agg.Index)
		}
	}
	if err := route.Undo(f, j, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"agg0", "agg0-rx", "nfc-vx0"} {
		if _, err := route.LinkByName(f, n); err == nil {
			t.Errorf("%s left after undo", n)
		}
	}
}

// The kernel's lookup, modelled: with the backstop a copy's lookup ends in
// its own table whatever happened to the gateway route; without it, a flap
// sends copies through the main table to the destination of the traffic.
func TestFakeLookupBackstop(t *testing.T) {
	for _, backstop := range []bool{true, false} {
		f := newTestFake(t)
		e2, _ := route.LinkByName(f, "e2")
		mainRoute := route.RouteInfo{Family: route.IPv4, Table: route.TableMain, Gateway: netip.MustParseAddr("10.77.3.2"), Index: e2.Index}
		if err := f.AddDefaultRoute(mainRoute); err != nil {
			t.Fatal(err)
		}
		p := route.SamplePlan(t)
		if backstop {
			p = backstopPlan(t)
		}
		if _, err := route.NewApplier(f, nil).Apply(p); err != nil {
			t.Fatal(err)
		}
		if rt, ok := f.Snapshot().Lookup(route.IPv4, 0x4e43); !ok || rt.Gateway != netip.MustParseAddr("10.77.2.2") {
			t.Fatalf("backstop %v: lookup %+v %v, want via 10.77.2.2", backstop, rt, ok)
		}
		flap(t, f, "e1")
		rt, ok := f.Snapshot().Lookup(route.IPv4, 0x4e43)
		if backstop && (!ok || !rt.Unreachable) {
			t.Fatalf("after a flap: lookup %+v %v, want the backstop", rt, ok)
		}
		if !backstop && rt != mainRoute {
			t.Fatalf("model check: without the backstop the lookup should fall to main, got %+v", rt)
		}
	}
}

// Devices nfclone created up and someone set down are brought up again.
func TestDiffRepairsCreatedLinkDown(t *testing.T) {
	f := newTestFake(t)
	p := backstopPlan(t)
	j, err := route.NewApplier(f, nil).Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"agg0-rx", "nfc-vx0"} {
		l, _ := route.LinkByName(f, n)
		if err := f.SetLinkFlags(l.Index, 0, unix.IFF_UP); err != nil {
			t.Fatal(err)
		}
	}
	o, _ := route.Observe(f, p)
	ds := route.Diff(p, o)
	if got := driftStrings(ds); got != "created interface agg0-rx: down\ncreated interface nfc-vx0: down" {
		t.Fatalf("drift:\n%s", got)
	}
	added, err := route.Repair(f, ds, nil)
	if err != nil || len(added) != 0 {
		t.Fatalf("repair: %v, journal %v", err, added)
	}
	o, _ = route.Observe(f, p)
	if ds := route.Diff(p, o); len(ds) != 0 {
		t.Fatalf("drift after repair:\n%s", driftStrings(ds))
	}
	if err := route.Undo(f, j, nil); err != nil {
		t.Fatal(err)
	}
}

// The routing of a device the kernel sends copies to: a made-up next hop
// with a permanent neighbour, a device route in its own table and a rule
// that sends the lookups of that next hop there. Applied, it shows no
// drift; a link flap takes the neighbour and the route, the diff finds
// exactly those (the rule stays), the repair puts them back, and the
// journal undoes everything.
func TestDeviceNextHopRouting(t *testing.T) {
	f := newTestFake(t)
	before := f.Snapshot()
	nh := netip.MustParseAddr("169.254.77.1")
	p := route.Plan{
		Neighbours: []route.Neighbour{{Device: "e2", Addr: nh, MAC: route.MustMAC(t, "02:4e:43:00:00:02")}},
		Routes: []route.Route{
			{Family: route.IPv4, Table: 20040, Unreachable: true},
			{Family: route.IPv4, Table: 20040, Device: "e2"},
		},
		Rules: []route.PolicyRule{{Family: route.IPv4, Pref: 101, To: netip.PrefixFrom(nh, 32), Table: 20040}},
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	wantRender := `ip neigh replace 169.254.77.1 lladdr 02:4e:43:00:00:02 dev e2 nud permanent
ip route add unreachable default metric 4294967295 table 20040
ip route add default dev e2 table 20040
ip rule add pref 101 to 169.254.77.1 lookup 20040
`
	if got := p.Render(); got != wantRender {
		t.Fatalf("render:\n%s\nwant:\n%s", got, wantRender)
	}
	j, err := route.NewApplier(f, nil).Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	o, err := route.Observe(f, p)
	if err != nil {
		t.Fatal(err)
	}
	if ds := route.Diff(p, o); len(ds) != 0 {
		t.Fatalf("drift right after apply:\n%s", driftStrings(ds))
	}
	flap(t, f, "e2")
	o, _ = route.Observe(f, p)
	ds := route.Diff(p, o)
	want := `neighbour 169.254.77.1 lladdr 02:4e:43:00:00:02 dev e2: missing
inet route default dev e2 table 20040: missing`
	if got := driftStrings(ds); got != want {
		t.Fatalf("drift after the flap:\n%s\nwant:\n%s", got, want)
	}
	added, err := route.Repair(f, ds, nil)
	if err != nil {
		t.Fatal(err)
	}
	o, _ = route.Observe(f, p)
	if ds := route.Diff(p, o); len(ds) != 0 {
		t.Fatalf("drift after the repair:\n%s", driftStrings(ds))
	}
	if err := route.Undo(f, append(j, added...), nil); err != nil {
		t.Fatal(err)
	}
	assertSame(t, "after undo", f.Snapshot(), before)
}
