package route_test

import (
	"errors"
	"github.com/nfclone/nfclone/route"
	"github.com/nfclone/nfclone/route/routetest"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func newTestFake(t testing.TB) *routetest.Fake {
	f := routetest.NewFake()
	f.AddLink("e1", route.MustMAC(t, "02:00:00:77:02:01"), netip.MustParsePrefix("10.77.2.1/24"), netip.MustParsePrefix("fd77::1/64"))
	f.AddLink("e2", route.MustMAC(t, "02:00:00:77:03:01"), netip.MustParsePrefix("10.77.3.1/24"))
	return f
}

func assertSame(t *testing.T, what string, got, want routetest.FakeState) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: state differs\ngot:\n%s\nwant:\n%s", what, got, want)
	}
}

func TestApplyUndoRestoresFake(t *testing.T) {
	f := newTestFake(t)
	before := f.Snapshot()
	a := route.NewApplier(f, nil)
	var progress []int
	a.OnChange = func(j route.Journal) { progress = append(progress, len(j)) }

	p := route.SamplePlan(t)
	j, err := a.Apply(p)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	// 2 links + 2 flags + 2 neighbours + 2 routes + 2 rules + 2 local moves
	if len(j) != 12 {
		t.Fatalf("journal has %d entries, want 12:\n%v", len(j), j)
	}
	// Each change: its intent, then its confirmation.
	if len(progress) != 24 || progress[23] != 12 {
		t.Errorf("OnChange calls: %v", progress)
	}
	wantOps := []route.Op{route.OpLinkCreated, route.OpLinkCreated, route.OpLinkFlags, route.OpLinkFlags, route.OpNeighbour, route.OpNeighbour,
		route.OpRouteAdded, route.OpRouteAdded, route.OpRuleAdded, route.OpRuleAdded, route.OpLocalMoved, route.OpLocalMoved}
	for i, c := range j {
		if c.Op != wantOps[i] {
			t.Errorf("journal[%d].Op = %s, want %s", i, c.Op, wantOps[i])
		}
	}

	// The kernel has it all.
	for _, fam := range []route.Family{route.IPv4, route.IPv6} {
		rules, _ := f.Rules(fam)
		if route.HasRule(rules, route.LocalRule(fam, 0)) || !route.HasRule(rules, route.LocalRule(fam, route.LocalPref)) {
			t.Errorf("%s local rule not moved: %v", fam, rules)
		}
		if !route.HasRule(rules, route.PolicyRule{Family: fam, Pref: 100, Mark: 0x4e43, Table: 20035}) {
			t.Errorf("%s fwmark rule missing", fam)
		}
		if rs, _ := f.DefaultRoutes(fam, 20035); len(rs) != 1 {
			t.Errorf("%s routes in 20035: %v", fam, rs)
		}
	}
	e1, err := route.LinkByName(f, "e1")
	if err != nil || !e1.NoARP() || e1.Promisc() {
		t.Errorf("e1 = %+v, %v", e1, err)
	}
	e2, _ := route.LinkByName(f, "e2")
	if !e2.NoARP() || !e2.Promisc() {
		t.Errorf("e2 = %+v", e2)
	}
	for _, n := range []string{"agg0", "agg0-rx"} {
		l, err := route.LinkByName(f, n)
		if err != nil || l.Kind != "veth" || !l.Up() || !l.Promisc() {
			t.Errorf("%s = %+v, %v", n, l, err)
		}
	}
	if vx, err := route.LinkByName(f, "nfc-vx0"); err != nil || vx.Kind != "vxlan" || !vx.Up() {
		t.Errorf("vxlan = %+v, %v", vx, err)
	}
	ns, _ := f.Neighbours(e1.Index)
	if len(ns) != 2 || ns[0].State != unix.NUD_PERMANENT {
		t.Errorf("neighbours = %+v", ns)
	}

	// Applying the same plan again: links exist → refused, and rolled back
	// to the applied state.
	applied := f.Snapshot()
	if _, err := a.Apply(p); err == nil || !strings.Contains(err.Error(), "interface agg0 already exists and was not created by nfclone; refusing to touch it") {
		t.Errorf("second Apply = %v", err)
	}
	assertSame(t, "after refused second apply", f.Snapshot(), applied)

	if err := route.Undo(f, j, nil); err != nil {
		t.Fatalf("Undo: %v", err)
	}
	assertSame(t, "after undo", f.Snapshot(), before)
	if err := route.Undo(f, j, nil); err != nil {
		t.Fatalf("second Undo: %v", err)
	}
	assertSame(t, "after second undo", f.Snapshot(), before)
}

// failNth fails the nth call (1-based) of any operation for which sel is
// true; counts are shared across operations.
type failNth struct {
	mu    sync.Mutex
	n     int
	calls int
	sel   func(string) bool
	seen  []string
}

func (c *failNth) fn(op string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.sel(op) {
		return nil
	}
	c.calls++
	c.seen = append(c.seen, op)
	if c.calls == c.n {
		return errInjected
	}
	return nil
}

var errInjected = errors.New("injected failure")

func TestApplyFailureRollsBack(t *testing.T) {
	// Count the calls of a successful run, then fail each one in turn.
	count := &failNth{n: -1, sel: func(op string) bool { return true }}
	f := newTestFake(t)
	f.FailOn(count.fn)
	if _, err := route.NewApplier(f, nil).Apply(route.SamplePlan(t)); err != nil {
		t.Fatal(err)
	}
	total := count.calls
	if total < 20 {
		t.Fatalf("only %d kernel calls? %v", total, count.seen)
	}
	for n := 1; n <= total; n++ {
		f := newTestFake(t)
		before := f.Snapshot()
		inj := &failNth{n: n, sel: func(string) bool { return true }}
		f.FailOn(inj.fn)
		j, err := route.NewApplier(f, nil).Apply(route.SamplePlan(t))
		op := inj.seen[n-1]
		if !errors.Is(err, errInjected) {
			t.Fatalf("failing call %d (%s): Apply error = %v", n, op, err)
		}
		if j != nil {
			t.Errorf("failing call %d (%s): journal %v returned after a clean rollback", n, op, j)
		}
		f.FailOn(nil)
		assertSame(t, "rollback after failing "+op, f.Snapshot(), before)
	}
}

func TestApplyRollbackFailureReturnsJournal(t *testing.T) {
	f := newTestFake(t)
	before := f.Snapshot()
	// Fail the rule add, and the link deletion of the rollback.
	f.FailOn(func(op string) error {
		if op == "AddRule" || op == "DeleteLink" {
			return errInjected
		}
		return nil
	})
	j, err := route.NewApplier(f, nil).Apply(route.SamplePlan(t))
	if err == nil || !strings.Contains(err.Error(), "rolling back failed too") {
		t.Fatalf("Apply = %v", err)
	}
	if len(j) == 0 {
		t.Fatal("no journal for the leftovers")
	}
	if !strings.Contains(err.Error(), "deleting veth agg0") || !strings.Contains(err.Error(), "deleting vxlan nfc-vx0") {
		t.Errorf("Undo stopped at first error? %v", err)
	}
	f.FailOn(nil)
	if err := route.Undo(f, j, nil); err != nil {
		t.Fatal(err)
	}
	assertSame(t, "after later undo", f.Snapshot(), before)
}

func TestUndoCollectsErrors(t *testing.T) {
	f := newTestFake(t)
	before := f.Snapshot()
	j, err := route.NewApplier(f, nil).Apply(route.SamplePlan(t))
	if err != nil {
		t.Fatal(err)
	}
	f.FailOn(func(op string) error {
		if op == "DeleteDefaultRoute" {
			return errInjected
		}
		return nil
	})
	err = route.Undo(f, j, nil)
	if !errors.Is(err, errInjected) || strings.Count(err.Error(), "injected failure") != 2 {
		t.Fatalf("Undo = %v", err)
	}
	// Everything else was undone: links are gone, rules back.
	if _, err := route.LinkByName(f, "agg0"); !route.IsNotFound(err) {
		t.Errorf("agg0 still there: %v", err)
	}
	rules, _ := f.Rules(route.IPv4)
	if !route.HasRule(rules, route.LocalRule(route.IPv4, 0)) {
		t.Error("local rule not restored")
	}
	f.FailOn(nil)
	if err := route.Undo(f, j, nil); err != nil {
		t.Fatal(err)
	}
	assertSame(t, "after retry", f.Snapshot(), before)
}

func TestLocalAlreadyMoved(t *testing.T) {
	f := newTestFake(t)
	if err := f.DeleteRule(route.LocalRule(route.IPv4, 0)); err != nil {
		t.Fatal(err)
	}
	if err := f.AddRule(route.LocalRule(route.IPv4, route.LocalPref)); err != nil {
		t.Fatal(err)
	}
	moved := f.Snapshot()
	j, err := route.NewApplier(f, nil).Apply(route.Plan{MoveLocal: []route.Family{route.IPv4}})
	if err != nil || len(j) != 0 {
		t.Fatalf("Apply = %v, %v", j, err)
	}
	assertSame(t, "already moved", f.Snapshot(), moved)

	// No local rule at all: refuse.
	_ = f.DeleteRule(route.LocalRule(route.IPv6, 0))
	if _, err := route.NewApplier(f, nil).Apply(route.Plan{MoveLocal: []route.Family{route.IPv6}}); err == nil {
		t.Error("moving a missing local rule succeeded")
	}
}

func TestLocalBothPresentKeepsExisting(t *testing.T) {
	f := newTestFake(t)
	_ = f.AddRule(route.LocalRule(route.IPv4, route.LocalPref))
	before := f.Snapshot()
	j, err := route.NewApplier(f, nil).Apply(route.Plan{MoveLocal: []route.Family{route.IPv4}})
	if err != nil || len(j) != 1 || j[0].Local.AddedPref {
		t.Fatalf("Apply = %+v, %v", j, err)
	}
	if err := route.Undo(f, j, nil); err != nil {
		t.Fatal(err)
	}
	assertSame(t, "undo", f.Snapshot(), before)
}

func TestNeighbourPreviousEntryRestored(t *testing.T) {
	for _, c := range []struct {
		name      string
		state     uint16
		wantState uint16
	}{
		{"permanent", unix.NUD_PERMANENT, unix.NUD_PERMANENT},
		{"reachable", unix.NUD_REACHABLE, unix.NUD_STALE},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newTestFake(t)
			idx, _ := route.LinkIndex(f, "e1")
			old := route.NeighInfo{Index: idx, Addr: netip.MustParseAddr("10.77.2.2"), MAC: route.MustMAC(t, "02:00:00:00:00:99"), State: c.state}
			f.AddNeighbourEntry(old)
			p := route.Plan{Neighbours: []route.Neighbour{{Device: "e1", Addr: old.Addr, MAC: route.MustMAC(t, "02:00:00:00:00:01")}}}
			j, err := route.NewApplier(f, nil).Apply(p)
			if err != nil || len(j) != 1 || j[0].Neighbour.Before == nil || j[0].Neighbour.Before.MAC != "02:00:00:00:00:99" {
				t.Fatalf("Apply = %+v, %v", j, err)
			}
			for range 2 {
				if err := route.Undo(f, j, nil); err != nil {
					t.Fatal(err)
				}
				ns, _ := f.Neighbours(idx)
				want := old
				want.State = c.wantState
				if len(ns) != 1 || !reflect.DeepEqual(ns[0], want) {
					t.Fatalf("after undo: %+v, want %+v", ns, want)
				}
			}
		})
	}
	// An entry changed by someone else after Apply is left alone.
	f := newTestFake(t)
	idx, _ := route.LinkIndex(f, "e1")
	p := route.Plan{Neighbours: []route.Neighbour{{Device: "e1", Addr: netip.MustParseAddr("10.77.2.2"), MAC: route.MustMAC(t, "02:00:00:00:00:01")}}}
	j, err := route.NewApplier(f, nil).Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	other := route.NeighInfo{Index: idx, Addr: netip.MustParseAddr("10.77.2.2"), MAC: route.MustMAC(t, "02:00:00:00:00:55"), State: unix.NUD_PERMANENT}
	f.AddNeighbourEntry(other)
	if err := route.Undo(f, j, nil); err != nil {
		t.Fatal(err)
	}
	if ns, _ := f.Neighbours(idx); len(ns) != 1 || !reflect.DeepEqual(ns[0], other) {
		t.Errorf("foreign entry touched: %+v", ns)
	}
	// An identical entry is not journaled.
	if j, err := route.NewApplier(f, nil).Apply(route.Plan{Neighbours: []route.Neighbour{{Device: "e1", Addr: other.Addr, MAC: other.MAC}}}); err != nil || len(j) != 0 {
		t.Errorf("identical neighbour: %v, %v", j, err)
	}
}

func TestFlagsOnlyChangedBits(t *testing.T) {
	f := newTestFake(t)
	e2, _ := route.LinkByName(f, "e2")
	_ = f.SetLinkFlags(e2.Index, unix.IFF_PROMISC, unix.IFF_PROMISC)
	before := f.Snapshot()
	j, err := route.NewApplier(f, nil).Apply(route.Plan{Flags: []route.LinkFlag{{Device: "e2", NoARP: true, Promisc: true}}})
	if err != nil || len(j) != 1 || j[0].Flags.Mask != unix.IFF_NOARP {
		t.Fatalf("Apply = %+v, %v", j, err)
	}
	if err := route.Undo(f, j, nil); err != nil {
		t.Fatal(err)
	}
	assertSame(t, "undo keeps promisc", f.Snapshot(), before)
	// Nothing to change: nothing journaled.
	if j, err := route.NewApplier(f, nil).Apply(route.Plan{Flags: []route.LinkFlag{{Device: "e2", Promisc: true}}}); err != nil || len(j) != 0 {
		t.Errorf("Apply = %v, %v", j, err)
	}
	// Missing device.
	if _, err := route.NewApplier(f, nil).Apply(route.Plan{Flags: []route.LinkFlag{{Device: "nope", NoARP: true}}}); err == nil || !strings.Contains(err.Error(), "setting flags 0x80 on nope") {
		t.Errorf("missing device: %v", err)
	}
}

func TestUndoLinkOnlyIfOurs(t *testing.T) {
	f := newTestFake(t)
	f.AddLink("agg0", nil) // not a veth, not ours
	before := f.Snapshot()
	idx, _ := route.LinkIndex(f, "agg0")
	j := route.Journal{
		{Op: route.OpLinkCreated, Link: &route.CreatedLink{Name: "agg0", Index: idx + 100, Kind: "veth"}},
		{Op: route.OpLinkCreated, Link: &route.CreatedLink{Name: "agg0", Index: idx, Kind: "veth"}},
		{Op: route.OpLinkCreated, Link: &route.CreatedLink{Name: "gone0", Index: 42, Kind: "vxlan"}},
	}
	if err := route.Undo(f, j, nil); err != nil {
		t.Fatal(err)
	}
	assertSame(t, "foreign link kept", f.Snapshot(), before)
}

func TestExistingRuleAndRouteNotJournaled(t *testing.T) {
	f := newTestFake(t)
	idx, _ := route.LinkIndex(f, "e1")
	rule := route.PolicyRule{Family: route.IPv4, Pref: 100, Mark: 0x4e43, Table: 20035}
	_ = f.AddRule(rule)
	_ = f.AddDefaultRoute(route.RouteInfo{Family: route.IPv4, Table: 20035, Gateway: netip.MustParseAddr("10.77.2.2"), Index: idx})
	j, err := route.NewApplier(f, nil).Apply(route.Plan{
		Rules:  []route.PolicyRule{rule},
		Routes: []route.Route{{Family: route.IPv4, Table: 20035, Gateway: netip.MustParseAddr("10.77.2.2"), Device: "e1"}},
	})
	if err != nil || len(j) != 0 {
		t.Fatalf("Apply = %v, %v", j, err)
	}
	// A different default route in the table is a conflict.
	_, err = route.NewApplier(f, nil).Apply(route.Plan{Routes: []route.Route{{Family: route.IPv4, Table: 20035, Gateway: netip.MustParseAddr("10.77.3.2"), Device: "e2"}}})
	if err == nil || !strings.Contains(err.Error(), "already has a default route") {
		t.Errorf("conflicting route: %v", err)
	}
	// A rule with extra selectors does not count as ours.
	f2 := newTestFake(t)
	f2.AddRawRule(route.RuleInfo{PolicyRule: rule, Mask: 0xffffffff, Action: unix.FR_ACT_TO_TBL, Other: true})
	j, err = route.NewApplier(f2, nil).Apply(route.Plan{Rules: []route.PolicyRule{rule}})
	if err != nil || len(j) != 1 {
		t.Errorf("Apply beside a foreign rule = %v, %v", j, err)
	}
}

func TestHelpers(t *testing.T) {
	f := newTestFake(t)
	if l, err := route.LinkByName(f, "e1"); err != nil || l.MAC.String() != "02:00:00:77:02:01" || l.Index == 0 {
		t.Errorf("LinkByName = %+v %v", l, err)
	}
	ps, err := route.Addrs(f, "e1")
	if err != nil || len(ps) != 2 {
		t.Errorf("Addrs = %v %v", ps, err)
	}
	if _, err := route.LinkIndex(f, "nope"); !route.IsNotFound(err) {
		t.Errorf("LinkIndex(nope) = %v", err)
	}
}

func TestApplyInvalidPlanTouchesNothing(t *testing.T) {
	f := newTestFake(t)
	before := f.Snapshot()
	_, err := route.NewApplier(f, nil).Apply(route.Plan{
		Veths: []route.VethPair{{Name: "agg0", Peer: "agg0-rx"}},
		Rules: []route.PolicyRule{{Family: route.IPv4, Pref: 2000, Mark: 1, Table: 100}}, MoveLocal: []route.Family{route.IPv4},
	})
	if err == nil || !strings.Contains(err.Error(), "invalid routing plan") {
		t.Fatalf("Apply = %v", err)
	}
	assertSame(t, "invalid plan", f.Snapshot(), before)
}

// A VXLAN device the kernel refuses because its VNI and port are taken
// (EEXIST with a free name) says so, and nothing is left behind.
func TestApplyVXLANInUse(t *testing.T) {
	f := newTestFake(t)
	before := f.Snapshot()
	f.FailOn(func(op string) error {
		if strings.HasPrefix(op, "CreateVXLAN") {
			return unix.EEXIST
		}
		return nil
	})
	p := route.Plan{VXLANs: []route.VXLAN{{Name: "nfcvx1", VNI: 7, Remote: netip.MustParseAddr("10.77.2.2")}}}
	_, err := route.NewApplier(f, nil).Apply(p)
	if !errors.Is(err, route.ErrVXLANInUse) || !errors.Is(err, unix.EEXIST) {
		t.Fatalf("Apply error = %v, want ErrVXLANInUse wrapping EEXIST", err)
	}
	if !strings.Contains(err.Error(), "id 7") || !strings.Contains(err.Error(), "dstport 4789") {
		t.Fatalf("the error does not name the VNI and port: %v", err)
	}
	f.FailOn(nil)
	assertSame(t, "after the refused VXLAN device", f.Snapshot(), before)
}
