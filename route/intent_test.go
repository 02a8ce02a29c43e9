package route_test

import (
	"fmt"
	"github.com/nfclone/nfclone/route"
	"github.com/nfclone/nfclone/route/routetest"
	"testing"
)

type crash struct{}

// applyUntilCrash applies samplePlan to a fresh fake and "kills" the run
// (a panic, as kill -9 stops everything) at the n-th point that hook
// selects; it returns the fake, its state before, the journal last
// persisted and whether the crash happened.
func applyUntilCrash(t *testing.T, n int, atKernelOp bool) (*routetest.Fake, routetest.FakeState, route.Journal, bool) {
	f := newTestFake(t)
	before := f.Snapshot()
	a := route.NewApplier(f, nil)
	var persisted route.Journal
	a.OnChange = func(j route.Journal) { persisted = j }
	seen := 0
	if atKernelOp {
		f.FailOn(func(op string) error {
			switch op {
			case "CreateVeth", "CreateVXLAN", "SetLinkFlags", "SetNeighbour", "AddDefaultRoute", "AddRule", "DeleteRule":
				if seen == n {
					panic(crash{})
				}
				seen++
			}
			return nil
		})
	} else {
		a.BeforeConfirm = func(route.Change) {
			if seen == n {
				panic(crash{})
			}
			seen++
		}
	}
	crashed := func() (crashed bool) {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(crash); !ok {
					panic(r)
				}
				crashed = true
			}
		}()
		if _, err := a.Apply(route.SamplePlan(t)); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		return false
	}()
	f.FailOn(nil)
	return f, before, persisted, crashed
}

// A run killed at any point — after a change was made but before it was
// confirmed in the journal, or after the intent was written but before the
// kernel made the change — leaves a journal whose Undo restores the state
// from before, exactly (the journal written after each change left a
// created veth or an added rule nobody would undo).
func TestKilledBetweenJournalSteps(t *testing.T) {
	for _, atKernelOp := range []bool{false, true} {
		for n := 0; ; n++ {
			f, before, persisted, crashed := applyUntilCrash(t, n, atKernelOp)
			if !crashed {
				if n < 12 {
					t.Fatalf("only %d crash points (atKernelOp %v)", n, atKernelOp)
				}
				break
			}
			name := fmt.Sprintf("crash %d atKernelOp %v", n, atKernelOp)
			if len(persisted) == 0 || !persisted[len(persisted)-1].Pending {
				t.Fatalf("%s: the last persisted journal has no intent: %v", name, persisted)
			}
			if err := route.Undo(f, persisted, nil); err != nil {
				t.Fatalf("%s: Undo: %v", name, err)
			}
			assertSame(t, name+": after Undo of the persisted journal", f.Snapshot(), before)
			if err := route.Undo(f, persisted, nil); err != nil {
				t.Fatalf("%s: second Undo: %v", name, err)
			}
			assertSame(t, name+": after a second Undo", f.Snapshot(), before)
		}
	}
}

// A pending link is deleted only if a link of that name and kind exists
// (with its peer, for a veth): never a device someone else made.
func TestUndoIntendedLinkOnlyIfItMatches(t *testing.T) {
	f := newTestFake(t)
	before := f.Snapshot()
	j := route.Journal{
		{Op: route.OpLinkCreated, Pending: true, Link: &route.CreatedLink{Name: "e1", Kind: "veth", Peer: "e1-rx"}},
		{Op: route.OpLinkCreated, Pending: true, Link: &route.CreatedLink{Name: "e2", Kind: "vxlan"}},
		{Op: route.OpLinkCreated, Pending: true, Link: &route.CreatedLink{Name: "absent", Kind: "vxlan"}},
	}
	if err := route.Undo(f, j, nil); err != nil {
		t.Fatal(err)
	}
	assertSame(t, "pending entries naming existing plain devices", f.Snapshot(), before)
}
