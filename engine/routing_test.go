package engine

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nfclone/nfclone/route"
	"github.com/nfclone/nfclone/route/routetest"
)

// A link flap on a gateway target's device (issue 11): while the link is
// down a marked copy's lookup ends in its own table (never the main table,
// which would deliver it to the destination of the traffic it copies), and
// once the link is up the reconcile puts the route back.
func TestLinkFlapCopiesNeverLeaveTheirTable(t *testing.T) {
	c := mustParse(t, `
sessions:
  - name: q
    method: queue
    sources: [{interface: e0}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1, mac: "02:00:00:00:77:22"}]
`)
	k := routetest.NewFake()
	k.AddLink("e0", nil, netip.MustParsePrefix("10.77.1.1/24"))
	e1 := k.AddLink("e1", nil, netip.MustParsePrefix("10.77.2.1/24"))
	e3 := k.AddLink("e3", nil, netip.MustParsePrefix("10.77.4.1/24"))
	mainRoute := route.RouteInfo{Family: route.IPv4, Table: route.TableMain, Gateway: netip.MustParseAddr("10.77.4.2"), Index: e3}
	if err := k.AddDefaultRoute(mainRoute); err != nil {
		t.Fatal(err)
	}
	p := RoutePlan(c)
	j, err := route.NewApplier(k, nil).Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	mark := p.Rules[0].Mark
	gw := route.RouteInfo{Family: route.IPv4, Table: p.Rules[0].Table, Gateway: netip.MustParseAddr("10.77.2.2"), Index: e1}
	if r, _ := k.Snapshot().Lookup(route.IPv4, mark); !r.Is(gw) {
		t.Fatalf("copies take %+v, want %+v", r, gw)
	}

	if err := k.SetLinkFlags(e1, 0, unix.IFF_UP); err != nil {
		t.Fatal(err)
	}
	if r, ok := k.Snapshot().Lookup(route.IPv4, mark); !ok || !r.Unreachable {
		t.Fatalf("e1 down: copies take %+v (found %v), want the unreachable route of their own table", r, ok)
	}
	j2, left, _, err := repairRouting(k, p, j, discard())
	if err != nil || len(route.MissingRoutes(left)) != 1 {
		t.Fatalf("e1 down: repair left %v, err %v; want the gateway route reported missing", left, err)
	}

	if err := k.SetLinkFlags(e1, unix.IFF_UP, unix.IFF_UP); err != nil {
		t.Fatal(err)
	}
	if r, _ := k.Snapshot().Lookup(route.IPv4, mark); !r.Unreachable {
		t.Fatalf("e1 up, before the reconcile: copies take %+v, want still the unreachable route", r)
	}
	j2, left, changed, err := repairRouting(k, p, j2, discard())
	if err != nil || !changed || len(left) != 0 {
		t.Fatalf("e1 up: repair changed %v, left %v, err %v", changed, left, err)
	}
	if r, _ := k.Snapshot().Lookup(route.IPv4, mark); !r.Is(gw) {
		t.Fatalf("after the reconcile copies take %+v, want %+v", r, gw)
	}
	if n, _ := k.Neighbours(e1); len(n) != 1 || n[0].State != unix.NUD_PERMANENT {
		t.Fatalf("neighbour entry of mac: not put back: %+v", n)
	}
	if len(j2) != len(j) {
		t.Fatalf("journal grew from %d to %d entries: repairs of nfclone's own changes are not new changes", len(j), len(j2))
	}
}
