package engine

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/route"
	"github.com/nfclone/nfclone/rules"
)

// killHook names an environment variable read only by the end-to-end
// tests: set to a journal op (e.g. "link-created"), the process kills
// itself with SIGKILL after making such a change and before confirming it
// in the state file.
const killHook = "NFCLONE_TEST_KILL_BEFORE_CONFIRM"

// apply makes config c the running one, as one step that either happens or
// leaves the previous config running: planApply decides (pure), execute
// does.
func (e *Engine) apply(c *config.Config, reload bool) error {
	rt := e.rt
	idx := interfaceIndexes(c, rt.h.links)
	p, err := planApply(c, rt.running(), rt.gateways, rt.st.Journal, idx, systemMAC)
	if err != nil {
		return err
	}
	if err := e.execute(c, p, reload); err != nil {
		return err
	}
	e.syncTrims()
	return nil
}

// running is what the planner knows of the running sessions.
func (rt *runtime) running() []sessionIdent {
	out := make([]sessionIdent, 0, len(rt.sessions))
	for _, s := range rt.sessions {
		out = append(out, s.ident())
	}
	return out
}

// writeState keeps the state file in step with the journal; a failure is
// logged (the journal in memory is still right, and the next change
// writes it again).
func (e *Engine) writeState() {
	if err := e.rt.h.state.Write(e.rt.st); err != nil {
		e.Log.Error("writing state file", "err", err)
	}
}

// execute carries out plan p of config c:
//
//  1. the routing plan is applied on top of what is kept (nothing applied
//     twice, nothing undone yet): links nfclone creates exist from here on;
//  2. the new sessions open, on queue numbers no running session holds
//     (kept sessions keep their queues, readers, workers and counters),
//     with the interfaces as they are now: a device or VXLAN device the
//     plan created is a target from the start;
//  3. the whole ruleset replaces nfclone's tables in one netlink batch
//     (originals never see a gap);
//  4. the retired sessions stop (the rules no longer feed them), and the
//     routing changes no longer wanted are undone.
//
// A failure in 1–3 undoes what this apply did (sessions closed, routing
// changes undone) and leaves the previous config running.
func (e *Engine) execute(c *config.Config, p applyPlan, reload bool) (err error) {
	rt, log := e.rt, e.Log

	// 1. routing. The state file follows every single change, so a run
	// killed halfway through (after the local rule moved, say) is still
	// undone by flush.
	before := rt.st.Journal
	ra := route.NewApplier(rt.h.routes, log)
	ra.OnChange = func(j route.Journal) {
		rt.st.Journal = append(append(route.Journal(nil), before...), j...)
		e.writeState()
	}
	if op := os.Getenv(killHook); op != "" {
		ra.BeforeConfirm = func(ch route.Change) {
			if string(ch.Op) == op {
				log.Warn(killHook+": killing this process before confirming a change", "change", ch.String())
				_ = unix.Kill(os.Getpid(), unix.SIGKILL)
				select {}
			}
		}
	}
	added, err := ra.Apply(p.Add)
	rt.st.Journal = before
	if err != nil {
		// Rolled back (added is nil), or what the failed rollback left.
		rt.st.Journal = append(rt.st.Journal, added...)
		_ = rt.h.state.Write(rt.st)
		if errors.Is(err, route.ErrVXLANInUse) {
			return hostErr("applying routing plan: %v (a queue or log session's vxlan target can take encap: userspace, which needs no device)", err)
		}
		return hostErr("applying routing plan: %v", err)
	}
	// The state file holds everything in place now (old and new) until the
	// unwanted part is undone.
	rt.st.Journal = append(rt.st.Journal, added...)
	e.writeState()
	undoAdded := func() {
		if uerr := route.Undo(rt.h.routes, added, log); uerr != nil {
			log.Error("undoing routing changes of a failed apply", "err", uerr)
			return
		}
		rt.st.Journal = rt.st.Journal[:len(rt.st.Journal)-len(added)]
		_ = rt.h.state.Write(rt.st)
	}

	// 2. sessions. Indexes are read again: the plan may have created
	// interfaces, and a session's key holds those of its targets.
	idx := interfaceIndexes(c, rt.h.links)
	var fresh []userSession
	defer func() {
		if err != nil {
			for _, s := range fresh {
				s.close()
			}
			undoAdded()
		}
	}()
	for _, o := range p.Open {
		key := sessionKey(c, c.Sessions[o.Index], p.Gateways, idx)
		s, err := rt.h.sessions.Open(sessionSpec{Cfg: c, Index: o.Index, First: o.First, Key: key, Gateways: p.Gateways, Idx: idx, Log: log})
		if err != nil {
			return err
		}
		fresh = append(fresh, s)
	}

	// 3. rules, in one batch.
	cgroups := rt.h.cgroups(c, rt.cgroupRoot)
	rs, err := rules.Compile(c, rules.Options{
		NativeQueue: rt.feats.Has(rules.FeatNativeQueue),
		IfIndex:     func(n string) uint32 { return uint32(idx[n]) },
		SkipMissing: true, Queues: p.Queues, Gateways: p.Gateways, Devices: p.Devices,
		CgroupID: func(p string) uint64 { return cgroups[p] },
	})
	if err != nil {
		return err
	}
	for _, s := range fresh {
		s.start(rt.wrapLimit())
	}
	carry := carriedCounters(rt.cfg, c, p.Keep)
	if err := rt.h.rules.Apply(rs, func(s string) bool { return carry[s] }); err != nil {
		for _, s := range fresh {
			s.stop(0, nil)
		}
		fresh = nil // stopped, which closed them; the deferred undo still runs
		return hostErr("%v", err)
	}

	// 4. retire what the new config does not have.
	e.mu.Lock()
	retired := map[string]userSession{}
	for _, name := range p.Retire {
		retired[name] = rt.sessions[name]
		delete(rt.sessions, name)
	}
	for _, s := range fresh {
		rt.sessions[s.ident().Name] = s
	}
	rt.cfg, rt.rs, rt.gateways, rt.devices, rt.idx, rt.cgroups = c, rs, p.Gateways, p.Devices, idx, cgroups
	rt.created = createdLinks(append(append(route.Journal(nil), p.Kept...), added...))
	e.gen++
	e.mu.Unlock()
	rt.tables.set(p.Routes)
	fresh = nil
	stopSessions(retired, drainTimeout, nil)
	if len(p.Unwanted) > 0 {
		if err := route.Undo(rt.h.routes, p.Unwanted, log); err != nil {
			log.Error("undoing routing changes the new config no longer wants", "err", err)
		}
	}
	rt.st.Journal = append(append(route.Journal(nil), p.Kept...), added...)
	e.writeState()
	if reload {
		log.Info("applied", "generation", e.generation(), "kept_sessions", len(p.Keep), "new_sessions", len(p.Open),
			"routing_added", len(added), "routing_undone", len(p.Unwanted))
	}
	for name, i := range idx {
		if i == 0 {
			log.Warn("interface missing: its part of the rules is left out until it comes back", "interface", name)
		}
	}
	for p, id := range cgroups {
		if id == 0 {
			log.Warn("cgroup missing: its sessions copy nothing until it exists", "cgroup", p, "cgroup2", rt.cgroupRoot)
		}
	}
	return nil
}
