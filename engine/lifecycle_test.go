package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/gsotrim"
	"github.com/nfclone/nfclone/pipeline"
	"github.com/nfclone/nfclone/route"
	"github.com/nfclone/nfclone/route/routetest"
	"github.com/nfclone/nfclone/rules"
	"github.com/nfclone/nfclone/sink"
	"github.com/nfclone/nfclone/status"
)

// The engine's lifecycle — start, reload, relink, a failed apply and its
// rollback, shutdown — run on fake host parts (no root): a recording rule
// applier, route.Fake as the routing kernel, a table of interface indexes,
// sessions that record what is done to them and a state store in memory.
// Every fake writes into one event log, so the tests assert the order.

type events struct {
	mu  sync.Mutex
	log []string
}

func (ev *events) add(format string, args ...any) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	ev.log = append(ev.log, fmt.Sprintf(format, args...))
}

func (ev *events) list() []string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return slices.Clone(ev.log)
}

// index is the position of the first event matching re (-1: none).
func (ev *events) index(re string) int {
	rx := regexp.MustCompile(re)
	for i, e := range ev.list() {
		if rx.MatchString(e) {
			return i
		}
	}
	return -1
}

func (ev *events) count(re string) int {
	rx := regexp.MustCompile(re)
	n := 0
	for _, e := range ev.list() {
		if rx.MatchString(e) {
			n++
		}
	}
	return n
}

type fakeRules struct {
	ev      *events
	mu      sync.Mutex
	applied []*rules.Ruleset
	carried [][]string // per apply, the sessions whose counters go on
	fail    error      // the next Apply fails with it
}

func (f *fakeRules) Apply(rs *rules.Ruleset, carry func(string) bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail; err != nil {
		f.fail = nil
		f.ev.add("rules apply failed")
		return err
	}
	f.applied = append(f.applied, rs)
	// The sessions of rs whose counters go on.
	var carried []string
	for _, t := range rs.Tables {
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				if r.Counter != nil && carry(r.Counter.Session) && !slices.Contains(carried, r.Counter.Session) {
					carried = append(carried, r.Counter.Session)
				}
			}
		}
	}
	slices.Sort(carried)
	f.carried = append(f.carried, carried)
	f.ev.add("rules applied #%d", len(f.applied))
	return nil
}

func (f *fakeRules) Counters(*rules.Ruleset) (map[string]map[string]rules.CounterValue, error) {
	return nil, nil
}

func (f *fakeRules) Close() error {
	f.ev.add("rules removed")
	return nil
}

// last is the ruleset in place, rendered as nft prints it.
func (f *fakeRules) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.applied) == 0 {
		return ""
	}
	return f.applied[len(f.applied)-1].Render()
}

func (f *fakeRules) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.applied)
}

// fakeLinks are the interfaces by name: idx, then the links the fake
// routing kernel holds (those nfclone's plan created).
type fakeLinks struct {
	mu     sync.Mutex
	idx    map[string]int
	kernel *routetest.Fake
}

func (l *fakeLinks) Index(name string) int {
	l.mu.Lock()
	i, ok := l.idx[name]
	l.mu.Unlock()
	if ok || l.kernel == nil {
		return i
	}
	if k, err := route.LinkByName(l.kernel, name); err == nil {
		return k.Index
	}
	return 0
}

func (l *fakeLinks) set(name string, i int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.idx[name] = i
}

type fakeSessions struct {
	ev   *events
	mu   sync.Mutex
	open []*fakeSession
	fail string // opening this session fails
}

func (f *fakeSessions) Open(s sessionSpec) (userSession, error) {
	name := s.Cfg.Sessions[s.Index].Name
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if name == fail {
		return nil, errors.New("binding: operation not permitted")
	}
	n := rules.Groups(s.Cfg, &s.Cfg.Sessions[s.Index])
	fs := &fakeSession{ev: f.ev, id: sessionIdent{Name: name, Key: s.Key, First: s.First, Count: n}, idx: s.Idx, targets: len(s.Cfg.Sessions[s.Index].Targets)}
	f.mu.Lock()
	f.open = append(f.open, fs)
	f.mu.Unlock()
	f.ev.add("open %s %d+%d", name, s.First, n)
	return fs, nil
}

// byName are the sessions opened under name, in order.
func (f *fakeSessions) byName(name string) []*fakeSession {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*fakeSession
	for _, s := range f.open {
		if s.id.Name == name {
			out = append(out, s)
		}
	}
	return out
}

type fakeSession struct {
	ev      *events
	id      sessionIdent
	idx     map[string]int // the interfaces it was opened with
	targets int            // its config's targets (status has one each)
	mu      sync.Mutex
	started bool
	stopped bool
	closed  bool
}

func (s *fakeSession) ident() sessionIdent { return s.id }
func (s *fakeSession) start(func(sink.Sink) sink.Sink) {
	s.mu.Lock()
	s.started = true
	s.mu.Unlock()
	s.ev.add("start %s", s.id.Name)
}
func (s *fakeSession) stop(time.Duration, map[string]rules.CounterValue) {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.ev.add("stop %s", s.id.Name)
}
func (s *fakeSession) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.ev.add("close %s", s.id.Name)
}
func (s *fakeSession) status(map[string]rules.CounterValue) status.SessionStatus {
	return status.SessionStatus{Name: s.id.Name, State: "running", Targets: make([]status.TargetStatus, s.targets)}
}
func (s *fakeSession) snapshot() pipeline.Snapshot { return pipeline.Snapshot{} }
func (s *fakeSession) written() uint64             { return 0 }

func (s *fakeSession) state() (started, stopped, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started, s.stopped, s.closed
}

type fakeState struct {
	ev      *events
	mu      sync.Mutex
	journal route.Journal
	present bool
}

func (f *fakeState) Write(s *State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.journal, f.present = slices.Clone(s.Journal), true
	return nil
}

func (f *fakeState) Remove() error {
	f.mu.Lock()
	f.present = false
	f.mu.Unlock()
	f.ev.add("state removed")
	return nil
}

func (f *fakeState) get() (route.Journal, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.journal), f.present
}

// lifecycle is an engine on fake host parts.
type lifecycle struct {
	t        *testing.T
	ev       *events
	rules    *fakeRules
	kernel   *routetest.Fake
	links    *fakeLinks
	sessions *fakeSessions
	state    *fakeState
	trims    *fakeTrims
	kick     chan struct{} // a link event
	eng      *Engine
	next     *config.Config // what Load returns
	cancel   context.CancelFunc
	done     chan error
	// initial is the routing kernel before the engine started.
	initial string
}

func newLifecycle(t *testing.T) *lifecycle {
	ev := &events{}
	k := routetest.NewFake()
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	i0 := k.AddLink("e0", mac("02:00:00:00:00:10"), netip.MustParsePrefix("10.77.1.1/24"))
	i1 := k.AddLink("e1", mac("02:00:00:00:00:11"), netip.MustParsePrefix("10.77.2.1/24"), netip.MustParsePrefix("fd77:2::1/64"))
	i3 := k.AddLink("e3", mac("02:00:00:00:00:13"), netip.MustParsePrefix("10.77.4.1/24"))
	return &lifecycle{
		t: t, ev: ev, rules: &fakeRules{ev: ev}, kernel: k,
		links:    &fakeLinks{idx: map[string]int{"lo": 1, "e0": i0, "e1": i1, "e3": i3}, kernel: k},
		sessions: &fakeSessions{ev: ev}, state: &fakeState{ev: ev},
		trims:   &fakeTrims{ev: ev, path: map[netip.Addr]int{}},
		kick:    make(chan struct{}, 1),
		initial: k.Snapshot().String(),
	}
}

func (l *lifecycle) host() *host {
	return &host{
		rules: l.rules, routes: l.kernel, links: l.links, sessions: l.sessions, state: l.state,
		check:   func(*config.Config, map[string]bool) config.Errors { return nil },
		cgroups: func(*config.Config, string) map[string]uint64 { return nil },
		watch: func(ctx context.Context, _ *slog.Logger, _ *copyTables, out chan<- struct{}) {
			for {
				select {
				case <-ctx.Done():
					return
				case <-l.kick:
					out <- struct{}{}
				}
			}
		},
		now:     time.Now,
		trims:   l.trims,
		pathMTU: l.trims.pathMTU,
	}
}

// fakeTrims records the segment-size programs attached and removed; path
// is the MTU of the route to each remote.
type fakeTrims struct {
	ev   *events
	mu   sync.Mutex
	path map[netip.Addr]int
}

func (f *fakeTrims) pathMTU(ap netip.AddrPort) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.path[ap.Addr()]
}

func (f *fakeTrims) setPath(a netip.Addr, mtu int) {
	f.mu.Lock()
	f.path[a] = mtu
	f.mu.Unlock()
}

func (f *fakeTrims) Attach(index, limit int) (trimAttachment, error) {
	f.ev.add("trim %d limit %d", index, limit)
	return fakeTrim(func() error { f.ev.add("untrim %d limit %d", index, limit); return nil }), nil
}

// fakeTrim is an attached program: Close calls it; it counted 3 super-packets
// cut and 1 fragmented.
type fakeTrim func() error

func (c fakeTrim) Close() error { return c() }

func (fakeTrim) Counts() (gsotrim.Counts, error) { return gsotrim.Counts{Cut: 3, Fragmented: 1}, nil }

// start runs the engine with config y until ready (or fails the test).
func (l *lifecycle) start(y string) {
	l.t.Helper()
	c := mustParse(l.t, y)
	l.eng = &Engine{Cfg: c, Log: discard(), Load: func() (*config.Config, error) { return l.next, nil }}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan error, 1)
	ready := make(chan struct{})
	go func() { l.done <- l.eng.run(ctx, l.host(), rules.Features{}, "", func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-l.done:
		l.t.Fatalf("engine did not start: %v", err)
	case <-time.After(10 * time.Second):
		l.t.Fatal("engine not ready after 10 s")
	}
	l.t.Cleanup(func() {
		if l.cancel != nil {
			l.stop()
		}
	})
}

// stop ends the engine and returns Run's error.
func (l *lifecycle) stop() error {
	l.t.Helper()
	l.cancel()
	l.cancel = nil
	select {
	case err := <-l.done:
		return err
	case <-time.After(10 * time.Second):
		l.t.Fatal("engine did not stop within 10 s")
		return nil
	}
}

// reload loads config y and waits until the engine answered.
func (l *lifecycle) reload(y string) *status.ReloadStatus {
	l.t.Helper()
	l.next = mustParse(l.t, y)
	l.eng.mu.Lock()
	prev := l.eng.lastLoad
	l.eng.mu.Unlock()
	l.eng.Reload()
	return l.await("the reload", func() *status.ReloadStatus {
		l.eng.mu.Lock()
		defer l.eng.mu.Unlock()
		if l.eng.lastLoad != prev {
			return l.eng.lastLoad
		}
		return nil
	})
}

// await polls f until it returns non-nil.
func await[T any](l *lifecycle, what string, f func() *T) *T {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if v := f(); v != nil {
			return v
		}
		time.Sleep(time.Millisecond)
	}
	l.t.Fatalf("%s: nothing after 10 s; events: %q", what, l.ev.list())
	return nil
}

// linkEvent tells the engine an interface changed (it checks the MTUs too).
func (l *lifecycle) linkEvent() { l.kick <- struct{}{} }

// waitEvent waits for event e.
func (l *lifecycle) waitEvent(e string) {
	l.t.Helper()
	await(l, e, func() *bool {
		if l.ev.index("^"+regexp.QuoteMeta(e)+"$") >= 0 {
			ok := true
			return &ok
		}
		return nil
	})
}

// matching are the events that start with prefix.
func (ev *events) matching(prefix string) []string {
	var out []string
	for _, e := range ev.list() {
		if strings.HasPrefix(e, prefix) {
			out = append(out, e)
		}
	}
	return out
}

func (l *lifecycle) await(what string, f func() *status.ReloadStatus) *status.ReloadStatus {
	l.t.Helper()
	return await(l, what, f)
}

// queueNumbers are the queue numbers or log group the ruleset in place sends
// session name's packets to ("queue num N" or "log group N" in the rule
// after its counter).
func queueNumbers(rs string) []string {
	rx := regexp.MustCompile(`(queue num \d+(-\d+)?|log group \d+)`)
	out := rx.FindAllString(rs, -1)
	sort.Strings(out)
	return slices.Compact(out)
}

const lifecycleConfig = `
queue: {count: 2}
sessions:
  - name: keep
    method: queue
    sources: [{interface: e0}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
  - name: gone
    method: log
    sources: [{interface: e0}]
    targets: [{kind: gateway, gateway: 10.77.4.2, device: e3}]
  - name: tap
    sources: [{interface: e0}]
    targets: [{kind: device, device: e3}]
`

// Start: sessions open on fresh queue numbers before the rules feed them,
// the routing plan is in the kernel and in the state file, the ruleset
// sends each session to its queues; shutdown removes the rules first,
// then stops the sessions, undoes the routing and removes the state file.
func TestEngineStartAndShutdown(t *testing.T) {
	l := newLifecycle(t)
	l.start(lifecycleConfig)

	// gone's TCP clones are the kernel's to send (log_kernel_route: tcp):
	// it reads them from a second group.
	if got := l.ev.list(); len(got) < 5 || got[0] != "open keep 0+2" || got[1] != "open gone 2+2" {
		t.Fatalf("sessions not opened first, on queues 0-1 and groups 2-3: %q", got)
	}
	if a, s := l.ev.index(`^rules applied #1$`), l.ev.index(`^start keep$`); a < 0 || s < 0 || s > a {
		t.Fatalf("readers must run before the rules feed them: %q", l.ev.list())
	}
	if got, want := queueNumbers(l.rules.last()), []string{"log group 2", "log group 3", "queue num 0-1"}; !slices.Equal(got, want) {
		t.Fatalf("ruleset sends to %q, want %q:\n%s", got, want, l.rules.last())
	}
	// The kernel routes each gateway's marked copies to it.
	st := l.kernel.Snapshot()
	for _, gr := range l.eng.rt.gateways {
		r, ok := st.Lookup(route.IPv4, gr.Mark)
		if !ok || r.Gateway != gr.Gateway {
			t.Fatalf("mark %#x: lookup gives %+v (ok %v), want via %v\n%s", gr.Mark, r, ok, gr.Gateway, st)
		}
	}
	j, present := l.state.get()
	if !present || len(j) == 0 {
		t.Fatalf("state file: present %v, %d changes; want the routing journal", present, len(j))
	}
	if err := l.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	rm, stop := l.ev.index(`^rules removed$`), l.ev.index(`^stop keep$`)
	if rm < 0 || stop < 0 || rm > stop || l.ev.index(`^stop gone$`) < rm {
		t.Fatalf("shutdown must remove the rules before stopping sessions: %q", l.ev.list())
	}
	if got := l.kernel.Snapshot().String(); got != l.initial {
		t.Fatalf("routing not undone:\n%s\nwant:\n%s", got, l.initial)
	}
	if _, present := l.state.get(); present || l.ev.index(`^state removed$`) < stop {
		t.Fatalf("state file must be removed last: %q", l.ev.list())
	}
}

// reloadedConfig is lifecycleConfig with "gone" replaced by "new".
const reloadedConfig = `
queue: {count: 2}
sessions:
  - name: keep
    method: queue
    sources: [{interface: e0}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
  - name: new
    method: queue
    sources: [{interface: e0}]
    targets: [{kind: gateway, gateway: "fd77:2::2", device: e1}]
  - name: tap
    sources: [{interface: e0}]
    targets: [{kind: device, device: e3}]
`

// Reload: an unchanged session keeps its queues, readers and counters (it
// is not opened again), a new one gets queue numbers no running session
// holds, a removed one stops only after the new rules are in, and the
// routing changes only it needed are undone.
func TestEngineReload(t *testing.T) {
	l := newLifecycle(t)
	l.start(lifecycleConfig)
	gone := l.eng.rt.gateways
	st := l.reload(reloadedConfig)
	if !st.OK {
		t.Fatalf("reload refused: %s", st.Error)
	}
	if n := len(l.sessions.byName("keep")); n != 1 {
		t.Fatalf("the unchanged session was opened %d times", n)
	}
	if s := l.sessions.byName("keep")[0]; func() bool { _, stopped, _ := s.state(); return stopped }() {
		t.Fatal("the unchanged session was stopped")
	}
	// keep holds 0-1, gone's groups 2-3 are still held until it stops:
	// new gets 4-5.
	if i := l.ev.index(`^open new 4\+2$`); i < 0 {
		t.Fatalf("new session not on queues 4-5: %q", l.ev.list())
	}
	if got, want := queueNumbers(l.rules.last()), []string{"queue num 0-1", "queue num 4-5"}; !slices.Equal(got, want) {
		t.Fatalf("ruleset sends to %q, want %q", got, want)
	}
	if a, s := l.ev.index(`^rules applied #2$`), l.ev.index(`^stop gone$`); a < 0 || s < a {
		t.Fatalf("the removed session must stop after the new rules are in: %q", l.ev.list())
	}
	// The kept session's and the dup session's counters go on; the new
	// session's start.
	if got := l.rules.carried; len(got) != 2 || len(got[0]) != 0 || !slices.Equal(got[1], []string{"keep", "tap"}) {
		t.Fatalf("counters carried per apply: %q, want none at start, [keep tap] at the reload", got)
	}
	// gone's gateway route is undone, keep's stays, new's is there.
	k := l.kernel.Snapshot()
	var goneMark uint32
	for _, gr := range gone {
		if gr.Gateway == netip.MustParseAddr("10.77.4.2") {
			goneMark = gr.Mark
		}
	}
	if r, ok := k.Lookup(route.IPv4, goneMark); ok && !r.Unreachable {
		t.Fatalf("removed session's gateway route still in place: %+v\n%s", r, k)
	}
	for _, gr := range l.eng.rt.gateways {
		r, ok := k.Lookup(route.FamilyOf(gr.Gateway), gr.Mark)
		if !ok || r.Gateway != gr.Gateway {
			t.Fatalf("gateway %v: lookup gives %+v\n%s", gr.Gateway, r, k)
		}
	}
	if j, _ := l.state.get(); !strings.Contains(fmt.Sprint(j), "fd77:2::2") || strings.Contains(fmt.Sprint(j), "10.77.4.2") {
		t.Fatalf("state journal does not follow the reload: %v", j)
	}
	if g := l.eng.generation(); g != 2 {
		t.Fatalf("generation %d, want 2", g)
	}
	// A reload of the same config changes nothing.
	before := l.rules.count()
	l.reload(reloadedConfig)
	if len(l.sessions.byName("new")) != 1 || len(l.sessions.byName("keep")) != 1 || l.rules.count() != before+1 {
		t.Fatalf("an identical reload reopened sessions: %q", l.ev.list())
	}
}

// Relink: an interface that is re-created (new index) makes the engine
// compile and apply again, and a session whose device target it is
// restarts on it; an event that changes no index applies nothing.
func TestEngineRelink(t *testing.T) {
	l := newLifecycle(t)
	l.start(relinkConfig)
	if !strings.Contains(l.rules.last(), `dup to "e1"`) {
		t.Fatalf("ruleset without the dup to e1:\n%s", l.rules.last())
	}
	applied := l.rules.count()
	l.kick <- struct{}{}
	// Nothing changed: wait for the event to be handled by a reload that
	// is handled after it (the loop takes one at a time).
	l.reload(relinkConfig)
	if n := l.rules.count(); n != applied+1 {
		t.Fatalf("a link event without a change applied %d times", n-applied-1)
	}
	applied = l.rules.count()
	l.links.set("e3", 40)
	l.kick <- struct{}{}
	await(l, "the re-bind", func() *bool {
		ds := l.sessions.byName("dev")
		if l.rules.count() > applied && len(ds) == 2 {
			if _, stopped, _ := ds[0].state(); stopped {
				ok := true
				return &ok
			}
		}
		return nil
	})
	if a, o, s := l.ev.index(`^rules applied #3$`), l.ev.count(`^open dev`), l.ev.index(`^stop dev$`); a < 0 || o != 2 || s < a {
		t.Fatalf("re-bind: the new session must open and the rules apply before the old one stops: %q", l.ev.list())
	}
	// The device went away: its rules are left out, the engine keeps running.
	applied = l.rules.count()
	l.links.set("e1", 0)
	l.kick <- struct{}{}
	await(l, "the re-bind without e1", func() *bool {
		if l.rules.count() > applied {
			ok := true
			return &ok
		}
		return nil
	})
	if strings.Contains(l.rules.last(), `dup to "e1"`) {
		t.Fatalf("rules still dup to the missing e1:\n%s", l.rules.last())
	}
	if err := l.stop(); err != nil {
		t.Fatal(err)
	}
}

// A queue session's vxlan target (one remote) is a VXLAN device the
// routing plan creates: the session opens once it exists, with it as a
// target from the start, and a reload of the same config keeps it.
func TestEngineKernelVXLANTarget(t *testing.T) {
	l := newLifecycle(t)
	const y = `
sessions:
  - name: vx
    method: queue
    sources: [{interface: e0}]
    targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 7}]
`
	l.start(y)
	dev := rules.VXLANDevice(l.eng.Cfg.Sessions[0].Targets[0])
	vx := l.sessions.byName("vx")
	if len(vx) != 1 {
		t.Fatalf("vx opened %d times: %q", len(vx), l.ev.list())
	}
	k, err := route.LinkByName(l.kernel, dev)
	if err != nil {
		t.Fatalf("the plan did not create %s: %v", dev, err)
	}
	if got := vx[0].idx[dev]; got != k.Index {
		t.Fatalf("the session opened with %s at index %d, want %d (created before the session opens)", dev, got, k.Index)
	}
	// The path to 10.77.4.2 is unknown: no program.
	if got := l.ev.matching("trim "); len(got) != 0 {
		t.Errorf("a program on a device whose path is unknown: %q", got)
	}
	// A 1500-byte path: the program for inner packets of 1450 bytes, on
	// the next check; a smaller path then replaces it.
	l.trims.setPath(netip.MustParseAddr("10.77.4.2"), 1500)
	l.linkEvent()
	want := fmt.Sprintf("trim %d limit 1450", k.Index)
	l.waitEvent(want)
	l.trims.setPath(netip.MustParseAddr("10.77.4.2"), 1400)
	l.linkEvent()
	l.waitEvent(fmt.Sprintf("trim %d limit 1350", k.Index))
	// status shows what the program counted, on the target.
	if got := l.eng.Status().Sessions[0].Targets[0].Tunnel; got == nil || *got != (status.TunnelCut{InnerMTU: 1350, Cut: 3, Fragmented: 1}) {
		t.Errorf("status: the target's tunnel_cut %+v, want inner MTU 1350, 3 cut, 1 fragmented", got)
	}
	if got := l.ev.matching("untrim "); !slices.Equal(got, []string{"un" + want}) {
		t.Errorf("removed %q, want the 1450 one", got)
	}
	// The device re-created (a new index): the program goes onto it.
	l.links.set(dev, 77)
	l.linkEvent()
	l.waitEvent("trim 77 limit 1350")
	if got := l.ev.matching("untrim "); len(got) != 2 || got[1] != fmt.Sprintf("untrim %d limit 1350", k.Index) {
		t.Errorf("removed %q, want the old device's program second", got)
	}
	opens := len(l.sessions.byName("vx")) // 2: opened again on the new device
	if st := l.reload(y); !st.OK {
		t.Fatalf("reload: %s", st.Error)
	}
	if n := len(l.sessions.byName("vx")); n != opens {
		t.Fatalf("a reload of the same config opened the session again (%d opens, %d before): %q", n, opens, l.ev.list())
	}
	if err := l.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := route.LinkByName(l.kernel, dev); err == nil {
		t.Fatalf("%s is still there after the engine stopped", dev)
	}
	if got := l.ev.matching("trim "); len(got) != 3 || len(l.ev.matching("untrim ")) != 3 {
		t.Errorf("attached %q, removed %q: want three of each (a reload of the same path keeps the program)", got, l.ev.matching("untrim "))
	}
}

// relinkConfig is TestEngineRelink's config.
const relinkConfig = `
sessions:
  - name: dev
    method: queue
    sources: [{interface: e0}]
    targets: [{kind: device, device: e3}]
  - name: tap
    sources: [{interface: e0}]
    targets: [{kind: device, device: e1}]
`

// A reload whose ruleset the kernel refuses is rolled back: the sessions
// it opened are stopped and closed, the routing it added is undone, and
// the running config, its sessions and its generation stay. The same when
// the routing fails, or a session cannot open.
func TestEngineRollback(t *testing.T) {
	l := newLifecycle(t)
	l.start(lifecycleConfig)
	routing := l.kernel.Snapshot().String()
	journal, _ := l.state.get()
	next := `
queue: {count: 2}
sessions:
  - name: keep
    method: queue
    sources: [{interface: e0}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
  - name: added
    method: log
    sources: [{interface: e0}]
    targets: [{kind: gateway, gateway: "fd77:2::2", device: e1}]
`
	unchanged := func(what string) {
		t.Helper()
		if got := l.kernel.Snapshot().String(); got != routing {
			t.Fatalf("%s: routing not rolled back:\n%s\nwant:\n%s", what, got, routing)
		}
		if j, _ := l.state.get(); fmt.Sprint(j) != fmt.Sprint(journal) {
			t.Fatalf("%s: state journal %v, want %v", what, j, journal)
		}
		if g := l.eng.generation(); g != 1 {
			t.Fatalf("%s: generation %d, want 1", what, g)
		}
		for _, name := range []string{"keep", "gone"} {
			if _, stopped, _ := l.sessions.byName(name)[0].state(); stopped {
				t.Fatalf("%s: running session %s was stopped", what, name)
			}
		}
		if st := l.eng.Status(); len(st.Sessions) != 3 {
			t.Fatalf("%s: status shows %d sessions, want the 3 running", what, len(st.Sessions))
		}
	}

	l.rules.mu.Lock()
	l.rules.fail = errors.New("netlink: operation not supported")
	l.rules.mu.Unlock()
	if st := l.reload(next); st.OK || !strings.Contains(st.Error, "operation not supported") {
		t.Fatalf("reload with a refused ruleset: %+v", st)
	}
	added := l.sessions.byName("added")
	if len(added) != 1 {
		t.Fatalf("added opened %d times", len(added))
	}
	if started, stopped, _ := added[0].state(); !started || !stopped {
		t.Fatalf("the fresh session after a refused ruleset: started %v stopped %v, want both", started, stopped)
	}
	unchanged("refused ruleset")

	l.kernel.FailOn(func(op string) error {
		if strings.HasPrefix(op, "AddDefaultRoute") {
			return errors.New("file exists")
		}
		return nil
	})
	if st := l.reload(next); st.OK || !strings.Contains(st.Error, "routing") {
		t.Fatalf("reload with failing routing: %+v", st)
	}
	if a := l.sessions.byName("added"); len(a) != 1 {
		t.Fatalf("a session opened although routing failed before it: %q", l.ev.list())
	}
	l.kernel.FailOn(nil)
	unchanged("failing routing")

	l.sessions.mu.Lock()
	l.sessions.fail = "added"
	l.sessions.mu.Unlock()
	if st := l.reload(next); st.OK || !strings.Contains(st.Error, "not permitted") {
		t.Fatalf("reload with a session that cannot open: %+v", st)
	}
	unchanged("session cannot open") // routing was applied before it, and undone

	// And the next good reload works.
	l.sessions.mu.Lock()
	l.sessions.fail = ""
	l.sessions.mu.Unlock()
	if st := l.reload(next); !st.OK {
		t.Fatalf("reload after the failures: %s", st.Error)
	}
}
