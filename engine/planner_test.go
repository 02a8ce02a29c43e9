package engine

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/route"
	"github.com/nfclone/nfclone/route/routetest"
	"github.com/nfclone/nfclone/rules"
)

// A log session whose TCP clones the kernel sends (log_kernel_route: tcp,
// the default) takes two groups: nfclone's copies' and the kernel's clones'.
func TestPlanApplyLogTCPGroups(t *testing.T) {
	c := mustParse(t, `
queue: {num: 10}
sessions:
  - {name: b, method: log, sources: [{interface: e0}], targets: [{kind: device, device: e1}]}
  - {name: p, method: log, sources: [{interface: e0}], targets: [{kind: pcap, path: /tmp/p.pcap}]}
  - {name: q, method: queue, sources: [{interface: e0}], targets: [{kind: device, device: e1}]}
`)
	p, err := planApply(c, nil, nil, nil, map[string]int{"e0": 2, "e1": 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range p.Open {
		got = append(got, fmt.Sprintf("%s %d+%d", o.Name, o.First, o.Count))
	}
	if want := []string{"b 10+2", "p 12+1", "q 13+1"}; !slices.Equal(got, want) {
		t.Fatalf("opened %q, want %q", got, want)
	}
	for _, n := range []string{"b", "p", "q"} {
		if p.Queues[n] != rules.QueueNum(c, slices.IndexFunc(c.Sessions, func(s config.Session) bool { return s.Name == n })) {
			t.Errorf("session %s: the planner's first number %d differs from the compiler's own (QueueNum)", n, p.Queues[n])
		}
	}
}

// planApply is pure: the same inputs give the same plan, and it decides
// which sessions stay, which open on which queues and what routing
// changes, without touching anything.
func TestPlanApplyQueues(t *testing.T) {
	c := mustParse(t, `
queue: {num: 10, count: 2, log_kernel_route: off}
sessions:
  - {name: a, method: queue, sources: [{interface: e0}], targets: [{kind: device, device: e1}]}
  - {name: b, method: log, sources: [{interface: e0}], targets: [{kind: device, device: e1}]}
  - {name: d, sources: [{interface: e0}], targets: [{kind: device, device: e1}]}
`)
	idx := map[string]int{"e0": 2, "e1": 3}
	p, err := planApply(c, nil, nil, nil, idx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Keep) != 0 || len(p.Retire) != 0 || len(p.Open) != 2 ||
		p.Open[0].Name != "a" || p.Open[0].First != 10 || p.Open[0].Count != 2 ||
		p.Open[1].Name != "b" || p.Open[1].First != 12 || p.Open[1].Count != 1 {
		t.Fatalf("first plan: %+v", p)
	}
	if p.Queues["a"] != 10 || p.Queues["b"] != 12 || len(p.Queues) != 2 {
		t.Fatalf("queues %v: the dup session has none", p.Queues)
	}
	again, _ := planApply(c, nil, nil, nil, idx, nil)
	if !slices.EqualFunc(p.Open, again.Open, func(x, y sessionStep) bool { return x == y }) {
		t.Fatal("the same inputs gave another plan")
	}

	// Running: a as planned, b on 12 under an older key. a stays, b
	// reopens on numbers nobody holds (13: b's old 12 is held until it
	// stops), the old b retires.
	running := []sessionIdent{p.Open[0].sessionIdent, {Name: "b", Key: "older", First: 12, Count: 1}, {Name: "x", Key: "k", First: 14, Count: 1}}
	q, err := planApply(c, running, nil, nil, idx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(q.Keep, []string{"a"}) || len(q.Open) != 1 || q.Open[0].Name != "b" || q.Open[0].First != 13 {
		t.Fatalf("reload plan: keep %v open %+v", q.Keep, q.Open)
	}
	if slices.Sort(q.Retire); !slices.Equal(q.Retire, []string{"b", "x"}) {
		t.Fatalf("retire %v, want the old b and x", q.Retire)
	}
	// A device target's interface re-created: a's key changes, it reopens.
	r, _ := planApply(c, running, nil, nil, map[string]int{"e0": 2, "e1": 9}, nil)
	if len(r.Keep) != 0 {
		t.Fatalf("keep %v after e1 changed index", r.Keep)
	}

	// No free numbers: an error naming the session, nothing planned.
	full := mustParse(t, `
queue: {num: 65532, count: 2}
sessions:
  - {name: a, method: queue, sources: [{interface: e0}], targets: [{kind: device, device: e1}]}
`)
	held := []sessionIdent{{Name: "old", Key: "k", First: 65532, Count: 2}, {Name: "older", Key: "k", First: 65534, Count: 1}}
	if _, err := planApply(full, held, nil, nil, idx, nil); err == nil || !strings.Contains(err.Error(), "sessions[0]: no free queue numbers") {
		t.Fatalf("err %v", err)
	}
}

// The routing part: what the journal already holds is kept, the rest is
// added, and what the journal holds that the config no longer wants is to
// be undone.
func TestPlanApplyRouting(t *testing.T) {
	c := mustParse(t, `
sessions:
  - {name: a, method: queue, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
`)
	p, err := planApply(c, nil, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Add.Render() != p.Routes.Render() || len(p.Kept) != 0 || len(p.Unwanted) != 0 {
		t.Fatalf("first plan must add everything:\n%s", p.Add.Render())
	}
	// Apply it to a fake kernel and plan again with its journal: nothing
	// to add. Then a config without the gateway: all of it is unwanted.
	k := routetest.NewFake()
	k.AddLink("e1", nil)
	j, err := route.NewApplier(k, discard()).Apply(p.Add)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := planApply(c, nil, p.Gateways, j, nil, nil)
	if !q.Add.Empty() || len(q.Kept) != len(j) {
		t.Fatalf("second plan adds:\n%s\nkeeps %d of %d", q.Add.Render(), len(q.Kept), len(j))
	}
	// The gateway moves (a collector's new address): the new route takes a
	// table of its own, since the old one stays until the new rules are in;
	// applied on top of what is there, it conflicts with nothing.
	moved := mustParse(t, `
sessions:
  - {name: a, method: queue, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.4.2, device: e3}]}
`)
	k.AddLink("e3", nil)
	m, _ := planApply(moved, nil, p.Gateways, j, nil, nil)
	if len(m.Gateways) != 1 || m.Gateways[0].Table == p.Gateways[0].Table || m.Gateways[0].Mark == p.Gateways[0].Mark {
		t.Fatalf("moved gateway %+v, the old one %+v: the new route must not share the old one's table or mark", m.Gateways, p.Gateways)
	}
	if _, err := route.NewApplier(k, discard()).Apply(m.Add); err != nil {
		t.Fatalf("applying the moved gateway's routes beside the old ones: %v", err)
	}
	none := mustParse(t, "sessions: [{name: d, sources: [{interface: e0}], targets: [{kind: device, device: e1}]}]")
	r, _ := planApply(none, nil, p.Gateways, j, nil, nil)
	if len(r.Unwanted) != len(j) || !r.Add.Empty() {
		t.Fatalf("plan without the gateway: %d unwanted of %d, adds:\n%s", len(r.Unwanted), len(j), r.Add.Render())
	}
}

// Counters go on for the kept userspace sessions and the dup sessions of
// both configs; a session opened again, a new one, or a dup session that
// became a queue one starts again.
func TestCarriedCounters(t *testing.T) {
	cfg := func(methods ...string) *config.Config {
		c := &config.Config{}
		for i := 0; i < len(methods); i += 2 {
			c.Sessions = append(c.Sessions, config.Session{Name: methods[i], Method: config.Method(methods[i+1])})
		}
		return c
	}
	old := cfg("a", "dup", "b", "queue", "c", "queue", "d", "dup")
	c := cfg("a", "dup", "b", "queue", "c", "queue", "d", "queue", "e", "dup")
	got := carriedCounters(old, c, []string{"b"})
	want := map[string]bool{"a": true, "b": true}
	if !maps.Equal(got, want) {
		t.Errorf("carried %v, want %v (c opened again, d now queue, e new)", got, want)
	}
	if got := carriedCounters(nil, c, nil); len(got) != 0 {
		t.Errorf("at start: %v, want none", got)
	}
}
