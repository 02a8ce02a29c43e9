package route_test

import (
	"github.com/nfclone/nfclone/route"
	"net/netip"
	"regexp"
	"testing"
)

// A reload from plan A to plan B: keep what B still wants, apply the rest of
// B, undo what only A wanted. The result equals applying B on a fresh host,
// and undoing the combined journal restores the original state.
func TestReloadKeepsAppliesAndUndoes(t *testing.T) {
	a := route.SamplePlan(t)
	b := route.SamplePlan(t)
	b.Veths = nil         // agg0 removed
	b.Flags = b.Flags[:1] // e2's flags no longer wanted
	b.Rules = append(b.Rules, route.PolicyRule{Family: route.IPv4, Pref: 101, Mark: 0x4e44, Table: 20036})
	b.Routes = append(b.Routes, route.Route{Family: route.IPv4, Table: 20036, Gateway: netip.MustParseAddr("10.77.3.2"), Device: "e2"})

	fresh := newTestFake(t)
	if _, err := route.NewApplier(fresh, nil).Apply(b); err != nil {
		t.Fatal(err)
	}
	want := fresh.Snapshot()

	f := newTestFake(t)
	before := f.Snapshot()
	ja, err := route.NewApplier(f, nil).Apply(a)
	if err != nil {
		t.Fatal(err)
	}
	kept, unwanted := route.Split(b, ja)
	if len(kept) == 0 || len(unwanted) == 0 {
		t.Fatalf("kept %d unwanted %d", len(kept), len(unwanted))
	}
	rest := route.Subtract(b, kept)
	if len(rest.Veths)+len(rest.VXLANs)+len(rest.MoveLocal) != 0 || len(rest.Rules) != 1 || len(rest.Routes) != 1 {
		t.Fatalf("subtracted plan still holds kept items:\n%s", rest.Render())
	}
	jb, err := route.NewApplier(f, nil).Apply(rest)
	if err != nil {
		t.Fatalf("applying the rest of B: %v", err)
	}
	if err := route.Undo(f, unwanted, nil); err != nil {
		t.Fatal(err)
	}
	// Equal but for the index (and derived MAC) of the re-created vxlan device.
	norm := regexp.MustCompile(`link \d+ nfc-vx0 kind="vxlan" mac=\S+`)
	if g, w := norm.ReplaceAllString(f.Snapshot().String(), "vx"), norm.ReplaceAllString(want.String(), "vx"); g != w {
		t.Fatalf("after reload:\n%s\nwant:\n%s", g, w)
	}
	if err := route.Undo(f, append(kept, jb...), nil); err != nil {
		t.Fatal(err)
	}
	assertSame(t, "after undoing everything", f.Snapshot(), before)
}
