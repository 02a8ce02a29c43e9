// Package engine runs nfclone: reconcile → check → plan → apply → copy →
// reload/re-bind → clean up.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/google/nftables"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/gsotrim"
	"github.com/nfclone/nfclone/nfq"
	"github.com/nfclone/nfclone/pipeline"
	"github.com/nfclone/nfclone/route"
	"github.com/nfclone/nfclone/rules"
	"github.com/nfclone/nfclone/sink"
	"github.com/nfclone/nfclone/status"
)

// HostProblems wraps problems of a valid config on this host (a missing
// interface, a gateway on no connected network, a pcap directory that does
// not exist) as a host error: exit 2, each problem still with its key path.
func HostProblems(errs config.Errors) error {
	return hostProblems{errs}
}

// hostProblems reads as its list of problems (one per line, with key
// paths) and is an ErrHost.
type hostProblems struct{ config.Errors }

func (h hostProblems) Unwrap() []error { return []error{ErrHost, h.Errors} }

// ErrHost marks failures caused by the host (privilege, kernel features,
// devices): exit code 2.
var ErrHost = errors.New("the host cannot do it")

func hostErr(format string, args ...any) error {
	e := &hostError{msg: fmt.Sprintf(format, args...)}
	for _, a := range args {
		if err, ok := a.(error); ok {
			e.causes = append(e.causes, err)
		}
	}
	return e
}

// hostError is an ErrHost whose message names the operation; the errors
// among its arguments stay its causes (errors.Is(err, unix.EPERM) works at
// any height).
type hostError struct {
	msg    string
	causes []error
}

func (e *hostError) Error() string { return ErrHost.Error() + ": " + e.msg }

func (e *hostError) Unwrap() []error { return append([]error{ErrHost}, e.causes...) }

// RoutePlan is the pure routing/link plan of a config (docs/architecture.md): links
// nfclone creates, ARP handling on the egress of gateway targets and, for
// the userspace methods, the policy routes that send marked copies to their
// gateway, with the local rule moved behind them so copies of host-bound
// traffic leave the host.
func RoutePlan(c *config.Config) route.Plan {
	return routePlan(c, rules.GatewayRoutes(c), rules.DeviceRoutes(c), systemMAC)
}

// macFunc gives an interface's link address (nil: no such interface).
type macFunc func(name string) net.HardwareAddr

// systemMAC is the link address of an interface of the current network
// namespace.
func systemMAC(name string) net.HardwareAddr {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil
	}
	return ifi.HardwareAddr
}

func routePlan(c *config.Config, gws []rules.GatewayRoute, devs []rules.DeviceRoute, mac macFunc) route.Plan {
	var p route.Plan
	for _, d := range devs {
		// The made-up next hop of a device the kernel sends copies to
		// (rules.DeviceRoute): its neighbour entry, a device route in its
		// own table (with the backstop), a rule for its lookup.
		hw := d.MAC
		if hw == nil && d.Created {
			hw = sink.DefaultTunnelDstMAC // the device is not there yet
		}
		if hw == nil && mac != nil {
			hw = mac(d.Device)
		}
		if len(hw) != 6 {
			continue // the device is missing: planned again when it comes
		}
		for _, nh := range []netip.Addr{d.NH4, d.NH6} {
			f := route.FamilyOf(nh)
			p.Neighbours = append(p.Neighbours, route.Neighbour{Device: d.Device, Addr: nh, MAC: hw})
			p.Routes = append(p.Routes,
				route.Route{Family: f, Table: d.Table, Unreachable: true},
				route.Route{Family: f, Table: d.Table, Device: d.Device})
			p.Rules = append(p.Rules, route.PolicyRule{Family: f, Pref: d.Pref, To: netip.PrefixFrom(nh, nh.BitLen()), Table: d.Table})
		}
	}
	created := map[string]bool{}
	for _, s := range c.Sessions {
		for _, t := range s.Targets {
			if t.OwnVXLAN() && !created[rules.VXLANDevice(t)] {
				// The kernel encapsulates: nfclone owns a VXLAN device, fed by
				// netdev dup, written to by a queue or log session's workers
				// or routed into (queue.vxlan_kernel_route).
				created[rules.VXLANDevice(t)] = true
				ap := t.RemoteAddrs[0]
				p.VXLANs = append(p.VXLANs, route.VXLAN{Name: rules.VXLANDevice(t), VNI: uint32(*t.VNI), Remote: ap.Addr(), Port: ap.Port(), MTU: route.VXLANMTU})
			}
			if t.Kind == config.KindDevice && t.Create && !created[t.Device] {
				created[t.Device] = true
				// Copies are written into the near end; they are read on the
				// far end, which has the configured name.
				p.Veths = append(p.Veths, route.VethPair{Name: rules.CreatedNearEnd(t), Peer: t.Device, Up: true, Promisc: t.Promisc, MTU: route.VethMTU})
			}
		}
	}
	moved := map[route.Family]bool{}
	for _, gr := range gws {
		f := route.FamilyOf(gr.Gateway)
		p.Rules = append(p.Rules, route.PolicyRule{Family: f, Pref: gr.Pref, Mark: gr.Mark, MarkMask: c.MarkMask, Table: gr.Table})
		// The backstop first: whatever happens to the gateway route (link
		// down, device deleted), a marked copy's lookup ends in its own
		// table and never falls through to the main table.
		p.Routes = append(p.Routes,
			route.Route{Family: f, Table: gr.Table, Unreachable: true},
			route.Route{Family: f, Table: gr.Table, Gateway: gr.Gateway, Device: gr.Device})
		if !moved[f] {
			moved[f] = true
			p.MoveLocal = append(p.MoveLocal, f)
		}
	}
	flags := map[string]bool{}
	for _, s := range c.Sessions {
		for _, t := range s.Targets {
			if t.Kind != config.KindGateway {
				continue
			}
			gw := t.GatewayIP
			if !gw.IsValid() {
				continue
			}
			if t.ARP == config.ARPOff && !flags[t.Device] {
				flags[t.Device] = true
				p.Flags = append(p.Flags, route.LinkFlag{Device: t.Device, NoARP: true})
			}
			if t.HWAddr != nil {
				p.Neighbours = append(p.Neighbours, route.Neighbour{Device: t.Device, Addr: gw.Unmap(), MAC: t.HWAddr})
			}
		}
	}
	return p
}

// drainTimeout bounds how long copies still queued are sent when a session stops.
const drainTimeout = 2 * time.Second

// heldDrainTimeout bounds how long replacing the rules waits for the
// readers to give their verdicts on the packets a held rule queued (a
// kernel-routed clone, a held original): the kernel drops the packets still
// queued when the tables go (rules.Applier).
const heldDrainTimeout = time.Second

// Engine runs one configuration and follows reloads and interface changes.
type Engine struct {
	Cfg *config.Config
	Log *slog.Logger
	// Limit stops the engine after this many copies (capture -c); 0: none.
	Limit uint64
	// Version and ConfigPath are reported by Status.
	Version    string
	ConfigPath string
	// Load reads the config again for a reload; nil disables Reload.
	Load func() (*config.Config, error)

	reload chan struct{}
	once   sync.Once

	mu       sync.Mutex // guards rt for Status and Copied
	rt       *runtime
	started  time.Time
	gen      uint64
	lastLoad *status.ReloadStatus
}

func (e *Engine) init() {
	e.once.Do(func() { e.reload = make(chan struct{}, 1) })
}

// Reload asks the running engine to load its config again (SIGHUP, watch).
// It never blocks; several requests before the engine gets to it are one.
func (e *Engine) Reload() {
	e.init()
	select {
	case e.reload <- struct{}{}:
	default:
	}
}

// runtime is the state of a running engine.
type runtime struct {
	h        *host
	st       *State
	cfg      *config.Config
	feats    rules.Features
	rs       *rules.Ruleset
	sessions map[string]userSession
	gateways []rules.GatewayRoute
	devices  []rules.DeviceRoute
	idx      map[string]int // interfaces the config uses → ifindex (0: missing)
	limit    *limit
	tables   copyTables      // the tables of the routing plan (event filter)
	drift    []route.Drift   // what the last reconcile could not put back (e.mu)
	created  map[string]bool // interfaces nfclone created, from the journal (e.mu)
	// cgroupRoot is the cgroup2 mount ("" when no session has a cgroup);
	// cgroups the ids the rules were compiled with (0: missing).
	cgroupRoot string
	cgroups    map[string]uint64
	// trims are the segment-size programs on nfclone's VXLAN devices.
	trims map[string]trimmed
}

// createdLinks are the interfaces a journal says nfclone created.
func createdLinks(j route.Journal) map[string]bool {
	out := map[string]bool{}
	for _, ch := range j {
		if ch.Op == route.OpLinkCreated && ch.Link != nil {
			out[ch.Link.Name] = true
			if ch.Link.Peer != "" {
				out[ch.Link.Peer] = true
			}
		}
	}
	return out
}

// Copied is the number of copies delivered so far (all userspace sessions).
func (e *Engine) Copied() uint64 {
	return e.sumSessions(func(s userSession) uint64 { return s.snapshot().Copied })
}

// Written is the number of packets the userspace sessions' targets sent
// (wire packets: super-packets count once per segment).
func (e *Engine) Written() uint64 { return e.sumSessions(userSession.written) }

// sumSessions adds f over the running userspace sessions.
func (e *Engine) sumSessions(f func(userSession) uint64) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var n uint64
	if e.rt != nil {
		for _, s := range e.rt.sessions {
			n += f(s)
		}
	}
	return n
}

// Ledger is the sum of the userspace sessions' ledgers. After Run returned
// it is the final account — the readers' counts plus what only the kernel's
// rule counters know (kernel_lost, rate_limit) — which `capture` reports;
// while running, the counts so far. LimitCut is the part of SendError that
// were copies refused because the Limit was reached (not losses).
func (e *Engine) Ledger() (total pipeline.Snapshot, limitCut uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rt == nil {
		return total, 0
	}
	for _, s := range e.rt.sessions {
		total = addSnapshots(total, s.snapshot())
	}
	if e.rt.limit != nil {
		limitCut = e.rt.limit.refused()
	}
	return total, limitCut
}

// addSnapshots sums two ledgers field by field.
func addSnapshots(a, b pipeline.Snapshot) pipeline.Snapshot {
	a.Offered += b.Offered
	a.Received += b.Received
	a.Copied += b.Copied
	a.Bytes += b.Bytes
	a.InFlight += b.InFlight
	a.KernelSent += b.KernelSent
	a.ENOBUFS += b.ENOBUFS
	a.VerdictErrors += b.VerdictErrors
	d, x := &a.Drops, b.Drops
	d.KernelQueue += x.KernelQueue
	d.User += x.User
	d.SocketOverrun += x.SocketOverrun
	d.QueueOverflow += x.QueueOverflow
	d.RateLimit += x.RateLimit
	a.Skipped = a.Skipped.Add(b.Skipped)
	d.Malformed += x.Malformed
	d.SendError += x.SendError
	d.TooBig += x.TooBig
	d.KernelLost += x.KernelLost
	d.Dedup += x.Dedup
	return a
}

// Run installs everything, then copies until ctx ends, reloading on Reload
// and re-binding when an interface it uses comes or goes; then it removes
// everything. ready, if set, is called once the rules are in place.
func (e *Engine) Run(ctx context.Context, ready func()) (err error) {
	e.init()
	c, log := e.Cfg, e.Log
	// One nfclone per state_dir, for the life of the process.
	sd, err := OpenStateDir(c.StateDir, true)
	if err != nil {
		return err
	}
	defer sd.Done()
	rk, err := route.Open()
	if err != nil {
		return hostErr("opening rtnetlink: %v", err)
	}
	defer rk.Close()
	if err := reconcile(c, rk, log); err != nil {
		return err
	}
	h := systemHost(c.StateDir, rk, nil)
	if err := gsotrim.Supported(); err != nil {
		log.Info("the kernel fragments the outer datagrams of super-packets routed into a VXLAN device over a smaller path; nfclone sends such sessions' copies", "err", err)
	} else {
		h.trims = kernelTrims{}
	}
	// Which sessions the kernel may send for depends on the host's MTUs.
	mtuNotes := config.KernelRouteMTU(c, config.SystemMTU, config.SystemTunnelPathMTU, h.trims != nil)
	if errs := h.check(c, nil); len(errs) > 0 {
		return HostProblems(errs)
	}
	for _, w := range append(append(config.Warnings(c), config.ARPWarnings(c, config.SystemHost{})...), mtuNotes...) {
		log.Warn(w.Msg, "key", w.Path)
	}
	feats, err := e.probe(c)
	if err != nil {
		return err
	}
	cgRoot, err := cgroupRoot(c)
	if err != nil {
		return err
	}
	ap, err := rules.NewApplier(c.Table)
	if err != nil {
		return hostErr("%v", err)
	}
	ap.Drain = func(queues []uint16) {
		if err := nfq.WaitQueuesEmpty(nfq.StatsPath, queues, heldDrainTimeout); err != nil {
			log.Warn("packets still queued while the rules are replaced: the kernel drops them", "err", err)
		}
	}
	h.rules = ap
	return e.run(ctx, h, feats, cgRoot, ready)
}

// run is Run on host parts h, past the checks: the kernel has feats, the
// config's cgroups are below cgRoot. It owns h.rules (closed at the end).
func (e *Engine) run(ctx context.Context, h *host, feats rules.Features, cgRoot string, ready func()) error {
	e.init()
	c, log := e.Cfg, e.Log
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rt := &runtime{h: h, feats: feats, sessions: map[string]userSession{}, trims: map[string]trimmed{}, cgroupRoot: cgRoot,
		st: &State{PID: os.Getpid(), Started: h.now().UTC(), Table: c.Table, NetNS: config.NetNS()}}
	if e.Limit > 0 {
		rt.limit = newLimit(e.Limit, cancel)
	}
	if err := h.state.Write(rt.st); err != nil {
		_ = h.rules.Close()
		return hostErr("%v", err)
	}
	e.mu.Lock()
	e.rt, e.started = rt, h.now()
	e.mu.Unlock()
	if err := e.apply(c, false); err != nil {
		_ = e.shutdown(false)
		return err
	}
	log.Info("rules installed", "table", c.Table, "tables", len(rt.rs.Tables), "sessions", len(c.Sessions))

	var wg sync.WaitGroup
	watchCtx, watchCancel := context.WithCancel(ctx)
	links := make(chan struct{}, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.watch(watchCtx, log, &rt.tables, links)
	}()
	if ready != nil {
		ready()
	}
	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	cgTick := time.NewTicker(cgroupPoll)
	defer cgTick.Stop()
	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case <-e.reload:
			e.doReload()
			e.reconcileRouting()
		case <-links:
			// Routing first: it may re-create a device nfclone owns,
			// which the re-bind then uses.
			e.reconcileRouting()
			e.relink()
		case <-tick.C:
			e.reconcileRouting()
			e.relink()
		case <-cgTick.C:
			e.recgroup()
		}
	}
	watchCancel()
	wg.Wait()
	return e.shutdown(true)
}

// doReload validates the new config first; an invalid one is refused with
// its errors logged and the old one keeps running.
func (e *Engine) doReload() {
	log := e.Log
	st := &status.ReloadStatus{Time: time.Now().UTC()}
	defer func() {
		e.mu.Lock()
		e.lastLoad = st
		e.mu.Unlock()
	}()
	if e.Load == nil {
		st.Error = "reload is not available (no config file)"
		log.Warn(st.Error)
		return
	}
	c, err := e.Load()
	if err == nil {
		for _, w := range config.KernelRouteMTU(c, config.SystemMTU, config.SystemTunnelPathMTU, e.rt.h.trims != nil) {
			log.Warn(w.Msg, "key", w.Path)
		}
		err = e.validateReload(c)
	}
	if err == nil {
		err = e.apply(c, true)
	}
	if err != nil {
		st.Error = err.Error()
		var cerr config.Errors
		if errors.As(err, &cerr) { // status names the lines of the file
			if data, rerr := os.ReadFile(e.ConfigPath); rerr == nil {
				config.SetLines(cerr, data)
			}
			st.Error = cerr.Text()
		}
		log.Error("reload refused; the running config stays", "err", err)
		return
	}
	st.OK = true
	log.Info("reloaded", "generation", e.generation(), "sessions", len(c.Sessions))
}

func (e *Engine) validateReload(c *config.Config) error {
	old := e.rt.cfg
	var errs config.Errors
	if c.Table != old.Table {
		errs = append(errs, config.Problem{Path: "table", Msg: "cannot change while running (restart nfclone)"})
	}
	if c.StateDir != old.StateDir {
		errs = append(errs, config.Problem{Path: "state_dir", Msg: "cannot change while running (restart nfclone)"})
	}
	if c.Queue.Realtime != old.Queue.Realtime {
		errs = append(errs, config.Problem{Path: "queue.realtime", Msg: "cannot change while running (restart nfclone)"})
	}
	if len(errs) > 0 {
		return errs
	}
	if errs := e.rt.h.check(c, e.ownedLinks()); len(errs) > 0 {
		return HostProblems(errs)
	}
	if missing := Missing(c, e.rt.feats); len(missing) > 0 {
		return hostErr("the kernel lacks: %v", missing)
	}
	if e.rt.cgroupRoot == "" {
		root, err := cgroupRoot(c)
		if err != nil {
			return err
		}
		e.rt.cgroupRoot = root
	}
	return nil
}

// ownedLinks are the interfaces nfclone created (they may exist on reload).
func (e *Engine) ownedLinks() map[string]bool {
	out := map[string]bool{}
	for _, ch := range e.rt.st.Journal {
		if ch.Op == route.OpLinkCreated && ch.Link != nil {
			out[ch.Link.Name], out[ch.Link.Peer] = true, true
		}
	}
	return out
}

// relink re-applies the running config after an interface change: netdev
// chains bind interface indexes, so a re-created interface needs the rules
// loaded again; a missing one is left out until it comes back.
func (e *Engine) relink() {
	c := e.rt.cfg
	idx := interfaceIndexes(c, e.rt.h.links)
	// Who sends a session's copies depends on the MTUs (config.KernelRouteMTU):
	// decided again on a copy of the running config, which is never changed
	// under its readers; a change re-applies (the session reopens).
	again := *c
	again.Sessions = slices.Clone(c.Sessions)
	notes := config.KernelRouteMTU(&again, config.SystemMTU, config.SystemTunnelPathMTU, e.rt.h.trims != nil)
	routedChanged := false
	for i := range c.Sessions {
		if was, now := c.RoutesClones(&c.Sessions[i]), again.RoutesClones(&again.Sessions[i]); was != now {
			routedChanged = true
			e.Log.Warn("an MTU changed who sends a session's copies", "session", c.Sessions[i].Name, "kernel_sends", now)
		}
	}
	if equalIdx(idx, e.rt.idx) && !routedChanged {
		e.syncTrims() // a path MTU may have changed
		return
	}
	if routedChanged {
		for _, w := range notes {
			e.Log.Warn(w.Msg, "key", w.Path)
		}
	}
	for name, i := range idx {
		if old := e.rt.idx[name]; old != i {
			e.Log.Info("interface changed", "interface", name, "ifindex", i, "was", old)
		}
	}
	if err := e.apply(&again, true); err != nil {
		e.Log.Error("re-binding after an interface change", "err", err)
	}
}

func (e *Engine) generation() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.gen
}

// shutdown: no new packets (rules removed), readers release what they
// hold, queued copies drained (bounded), routes undone, state removed.
// started is false when the start failed half-way: nothing is said to
// have exited cleanly then.
func (e *Engine) shutdown(started bool) error {
	rt, log := e.rt, e.Log
	log.Info("stopping: removing rules")
	var counters map[string]map[string]rules.CounterValue
	if rt.rs != nil {
		counters, _ = rt.h.rules.Counters(rt.rs) // for the ledgers' kernel_lost count
	}
	var errs []error
	if err := rt.h.rules.Close(); err != nil {
		errs = append(errs, err)
	}
	stopSessions(rt.sessions, drainTimeout, counters)
	e.closeTrims()
	log.Info("undoing routing changes", "changes", len(rt.st.Journal))
	if err := route.Undo(rt.h.routes, rt.st.Journal, log); err != nil {
		errs = append(errs, fmt.Errorf("undoing routing changes: %w", err))
	}
	if len(errs) == 0 {
		if err := rt.h.state.Remove(); err != nil {
			errs = append(errs, err)
		}
	} else if err := rt.h.state.Write(rt.st); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if !started {
		log.Info("start failed: what was installed is removed")
		return nil
	}
	log.Info("clean exit")
	return nil
}

// interfaceIndexes looks up every interface the config's rules and targets
// bind (0: missing).
func interfaceIndexes(c *config.Config, l links) map[string]int {
	out := map[string]int{}
	look := func(n string) {
		if _, ok := out[n]; ok {
			return
		}
		out[n] = l.Index(n)
	}
	for _, s := range c.Sessions {
		if s.Method == config.MethodDup || annotates(s) {
			for _, src := range s.Sources {
				look(src.Interface)
			}
		}
		for _, t := range s.Targets {
			switch t.Kind {
			case config.KindDevice:
				look(rules.DeviceTargetName(t))
			case config.KindGateway:
				look(t.Device)
			case config.KindVXLAN:
				if t.KernelVXLAN() {
					look(rules.VXLANDevice(t))
				}
			}
		}
	}
	return out
}

func equalIdx(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// probe checks that the kernel has what the config needs.
func (e *Engine) probe(c *config.Config) (rules.Features, error) {
	f, err := ProbeKernel(c.Table)
	if err != nil {
		return f, hostErr("%v", err)
	}
	if missing := Missing(c, f); len(missing) > 0 {
		return f, hostErr("the kernel lacks: %v", missing)
	}
	return f, nil
}

// ProbeKernel runs the nftables feature probe in the current namespace.
func ProbeKernel(table string) (rules.Features, error) {
	lo := ifIndex("lo")
	return rules.Probe(func() (rules.Batch, error) { return nftables.New() }, table, lo)
}

// Missing lists the features the config needs that the kernel lacks.
func Missing(c *config.Config, f rules.Features) []string {
	need := map[string]bool{rules.FeatOwner: true}
	for _, s := range c.Sessions {
		if s.HostOnly {
			need[rules.FeatFib] = true
		}
		if s.Sample > 1 {
			need[rules.FeatNumgen] = true
		}
		if s.Rate != "" {
			need[rules.FeatLimit] = true
		}
		selectorNeeds(s.Select, need)
		switch s.Method {
		case config.MethodQueue:
			if !f.Has(rules.FeatNativeQueue) {
				need[rules.FeatCompatQueue] = true
			}
			need[rules.FeatNotrack] = true
		case config.MethodLog:
			need[rules.FeatLog] = true
			need[rules.FeatNotrack] = true
		case config.MethodDup:
			for _, t := range s.Targets {
				switch t.Kind {
				case config.KindDevice, config.KindVXLAN:
					need[rules.FeatDupNetdev] = true
				case config.KindGateway:
					if t.GatewayIs6() {
						need[rules.FeatDupIP6] = true
					} else {
						need[rules.FeatDupIP] = true
					}
				}
			}
		}
	}
	var out []string
	for _, x := range f.List {
		if need[x.Name] && !x.OK {
			out = append(out, fmt.Sprintf("%s (%s)", x.Name, x.Err))
		}
	}
	return out
}

// Reconcile removes the leftovers of a run that was killed: its state file's
// journal is undone and nfclone's tables (if any survived) are removed. A
// running nfclone (it holds the state_dir's lock) is left alone and
// reported. A state file or state_dir that someone else could have written,
// or that names what nfclone never makes, is refused and nothing is
// touched. Running it twice changes nothing the second time.
func Reconcile(c *config.Config, rk route.Kernel, log *slog.Logger) error {
	sd, err := OpenStateDir(c.StateDir, false)
	if err != nil {
		return err
	}
	defer sd.Done()
	return reconcile(c, rk, log)
}

// reconcile is Reconcile with the state_dir already locked.
func reconcile(c *config.Config, rk route.Kernel, log *slog.Logger) error {
	st, err := ReadState(c.StateDir)
	if err != nil {
		return hostErr("%v; nothing was touched", err)
	}
	table := c.Table
	if st != nil {
		if here := config.NetNS(); st.NetNS != "" && st.NetNS != here {
			return hostErr("the state file %s belongs to network namespace %s (pid %d), this is %s: run nfclone flush in that namespace (ip netns exec NAME nfclone flush), or remove the file if that namespace is gone; nothing was touched",
				filepath.Join(c.StateDir, StateFile), st.NetNS, st.PID, here)
		}
		if err := st.Check(c.Table); err != nil {
			return hostErr("refusing state file %s: %v; nothing was touched", filepath.Join(c.StateDir, StateFile), err)
		}
		if st.Table != "" {
			table = st.Table
		}
		log.Info("removing leftovers of an earlier run", "pid", st.PID, "changes", len(st.Journal))
		if err := route.Undo(rk, st.Journal, log); err != nil {
			return hostErr("undoing the routing changes of pid %d: %v", st.PID, err)
		}
	}
	conn, err := nftables.New()
	if err != nil {
		return hostErr("opening nftables: %v", err)
	}
	if err := rules.RemoveTables(conn, table); err != nil {
		return hostErr("%v", err)
	}
	return RemoveState(c.StateDir)
}

// Status is a snapshot for metrics and `nfclone status`.
func (e *Engine) Status() status.Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := status.Status{PID: os.Getpid(), Version: e.Version, Started: e.started, Config: e.ConfigPath,
		Generation: e.gen, LastReload: e.lastLoad}
	rt := e.rt
	if rt == nil || rt.cfg == nil {
		return st
	}
	st.Table = rt.cfg.Table
	counters, err := rt.h.rules.Counters(rt.rs)
	if err != nil {
		e.Log.Debug("reading rule counters", "err", err)
	}
	used := map[string][]string{}
	missing := route.MissingRoutes(rt.drift)
	for _, d := range rt.drift {
		st.Drift = append(st.Drift, d.String())
	}
	for _, s := range rt.cfg.Sessions {
		var ss status.SessionStatus
		if run, ok := rt.sessions[s.Name]; ok {
			ss = run.status(counters[s.Name])
		} else {
			ss = status.SessionStatus{Name: s.Name, Method: string(s.Method), Hold: s.Hold, State: "running"}
			for i, t := range s.Targets {
				ss.Targets = append(ss.Targets, status.TargetStatus{Name: fmt.Sprintf("%s/%d:%s", s.Name, i, t.Kind), Kind: string(t.Kind)})
			}
		}
		if len(ss.Targets) == len(s.Targets) {
			for i, t := range s.Targets {
				ss.Targets[i].Tunnel = rt.tunnelCut(t)
			}
		}
		if m, ok := counters[s.Name]; ok {
			if s.Method == config.MethodDup {
				ss.Seen = status.Counter{Packets: m[rules.CounterSeen].Packets, Bytes: m[rules.CounterSeen].Bytes}
				ss.Copied = status.Counter{Packets: m[rules.CounterCopied].Packets, Bytes: m[rules.CounterCopied].Bytes}
				if sk := skippedCounts(m); sk.Total() > 0 {
					ss.Skipped = &sk
				}
			}
		}
		for name := range sessionInterfaces(s) {
			used[name] = append(used[name], s.Name)
			// Only interfaces the rules bind make a dup session wait.
			if i, bound := rt.idx[name]; bound && i == 0 && s.Method == config.MethodDup {
				ss.State = "waiting"
				ss.Missing = append(ss.Missing, name)
			}
		}
		if p := s.Select.Cgroup; p != "" && rt.cgroups[p] == 0 {
			ss.State = "waiting"
			ss.Missing = append(ss.Missing, "cgroup "+p)
		}
		sort.Strings(ss.Missing)
		if s.Method != config.MethodDup {
			for _, t := range s.Targets {
				if t.Kind != config.KindGateway {
					continue
				}
				gw := t.GatewayIP
				for _, gr := range rt.gateways {
					r := route.Route{Family: route.FamilyOf(gr.Gateway), Table: gr.Table, Gateway: gr.Gateway.Unmap(), Device: gr.Device}
					if gr.Gateway == gw.Unmap() && gr.Device == t.Device && missing[r] != "" {
						ss.State = "waiting"
						ss.MissingRoutes = append(ss.MissingRoutes, r.String()+" ("+missing[r]+")")
					}
				}
			}
		}
		st.Sessions = append(st.Sessions, ss)
	}
	created := rt.created
	for name, users := range used {
		i, ok := rt.idx[name]
		if !ok {
			i = rt.h.links.Index(name)
		}
		sort.Strings(users)
		st.Interfaces = append(st.Interfaces, status.InterfaceStatus{Name: name, Present: i != 0, Index: i, UsedBy: users, Created: created[name]})
	}
	sort.Slice(st.Interfaces, func(i, j int) bool { return st.Interfaces[i].Name < st.Interfaces[j].Name })
	return st
}

// sessionInterfaces are the interfaces a session depends on: its sources,
// lo for a queue session (the kernel's clones are routed there), the
// devices of its targets, both ends of a veth pair nfclone creates for it
// and the VXLAN devices that encapsulate its copies.
func sessionInterfaces(s config.Session) map[string]bool {
	out := map[string]bool{}
	for _, src := range s.Sources {
		out[src.Interface] = true
	}
	if s.Method == config.MethodQueue {
		out["lo"] = true
	}
	for _, t := range s.Targets {
		switch t.Kind {
		case config.KindDevice:
			out[rules.DeviceTargetName(t)] = true
			out[t.Device] = true
		case config.KindGateway:
			out[t.Device] = true
		case config.KindVXLAN:
			if t.KernelVXLAN() {
				out[rules.VXLANDevice(t)] = true
			}
		}
	}
	return out
}

// wrapLimit returns the limit wrapper for new sessions (capture -c).
func (rt *runtime) wrapLimit() func(sink.Sink) sink.Sink {
	if rt.limit == nil {
		return nil
	}
	return rt.limit.wrap
}
