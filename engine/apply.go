package engine

import (
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
// leaves the previous config running:
//
//  1. sessions whose key is unchanged keep their queues, readers, workers
//     and counters; new or changed ones bind fresh queue numbers (never one
//     in use) and open their targets;
//  2. the routing plan is applied on top of what is kept (nothing applied
//     twice, nothing undone yet);
//  3. the whole ruleset replaces nfclone's tables in one netlink batch
//     (originals never see a gap);
//  4. sessions that are gone stop (the rules no longer feed them), and the
//     routing changes no longer wanted are undone.
func (e *Engine) apply(c *config.Config, reload bool) (err error) {
	rt, log := e.rt, e.Log
	idx := interfaceIndexes(c)
	gws := rules.StableGatewayRoutes(c, rt.gateways)

	// 1. sessions
	inUse := map[int]bool{}
	for _, s := range rt.sessions {
		for k := 0; k < s.count; k++ {
			inUse[s.first+k] = true
		}
	}
	keep := map[string]*session{}
	var fresh []*session
	defer func() {
		if err != nil {
			for _, s := range fresh {
				s.close()
			}
		}
	}()
	queues := map[string]int{}
	next := c.Queue.Num
	alloc := func(n int) int {
		for {
			free := true
			for k := 0; k < n; k++ {
				if inUse[next+k] {
					free = false
					next += k + 1
					break
				}
			}
			if free {
				first := next
				for k := 0; k < n; k++ {
					inUse[first+k] = true
				}
				next += n
				return first
			}
		}
	}
	for i, sc := range c.Sessions {
		if sc.Method != config.MethodQueue && sc.Method != config.MethodLog {
			continue
		}
		key := sessionKey(c, sc, gws, idx)
		if old, ok := rt.sessions[sc.Name]; ok && old.key == key {
			keep[sc.Name] = old
			queues[sc.Name] = old.first
			continue
		}
		n := 1
		if sc.Method == config.MethodQueue {
			n = c.Queue.Count
		}
		first := alloc(n)
		if first+n-1 > 65535 {
			return hostErr("sessions[%d]: no free queue numbers", i)
		}
		s, err := openSession(c, i, first, key, gws, idx, log)
		if err != nil {
			return err
		}
		fresh = append(fresh, s)
		queues[sc.Name] = first
	}

	// 2. routing: keep what is still wanted, apply the rest.
	plan := routePlan(c, gws)
	kept, unwanted := route.Split(plan, rt.st.Journal)
	// The state file follows every single change, so a run killed halfway
	// through (after the local rule moved, say) is still undone by flush.
	before := rt.st.Journal
	ra := route.NewApplier(rt.rk, log)
	ra.OnChange = func(j route.Journal) {
		rt.st.Journal = append(append(route.Journal(nil), before...), j...)
		if err := WriteState(c.StateDir, rt.st); err != nil {
			log.Error("writing state file", "err", err)
		}
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
	added, err := ra.Apply(route.Subtract(plan, kept))
	rt.st.Journal = before
	if err != nil {
		// Rolled back (added is nil), or what the failed rollback left.
		rt.st.Journal = append(rt.st.Journal, added...)
		_ = WriteState(c.StateDir, rt.st)
		return hostErr("applying routing plan: %v", err)
	}
	// The state file holds everything in place now (old and new) until the
	// unwanted part is undone.
	rt.st.Journal = append(rt.st.Journal, added...)
	if err := WriteState(c.StateDir, rt.st); err != nil {
		log.Error("writing state file", "err", err)
	}
	undoAdded := func() {
		if uerr := route.Undo(rt.rk, added, log); uerr != nil {
			log.Error("undoing routing changes of a failed apply", "err", uerr)
			return
		}
		rt.st.Journal = rt.st.Journal[:len(rt.st.Journal)-len(added)]
		_ = WriteState(c.StateDir, rt.st)
	}

	// 3. rules, in one batch. Indexes are read again: the plan may have
	// created interfaces.
	idx = interfaceIndexes(c)
	cgroups := cgroupIDs(c, rt.cgroupRoot)
	rs, err := rules.Compile(c, rules.Options{
		NativeQueue: rt.feats.Has(rules.FeatNativeQueue),
		IfIndex:     func(n string) uint32 { return uint32(idx[n]) },
		SkipMissing: true, Queues: queues, Gateways: gws,
		CgroupID: func(p string) uint64 { return cgroups[p] },
	})
	if err != nil {
		undoAdded()
		return err
	}
	for _, s := range fresh {
		s.start(rt.wrapLimit())
	}
	if err := rt.ap.Apply(rs); err != nil {
		for _, s := range fresh {
			s.stop(0, nil)
		}
		fresh = nil
		undoAdded()
		return hostErr("%v", err)
	}

	// 4. retire what the new config does not have.
	e.mu.Lock()
	old := rt.sessions
	rt.sessions = map[string]*session{}
	for name, s := range keep {
		rt.sessions[name] = s
	}
	for _, s := range fresh {
		rt.sessions[s.name] = s
	}
	rt.cfg, rt.rs, rt.gateways, rt.idx, rt.cgroups = c, rs, gws, idx, cgroups
	rt.created = createdLinks(append(append(route.Journal(nil), kept...), added...))
	e.gen++
	e.mu.Unlock()
	rt.tables.set(plan)
	fresh = nil
	retired := map[string]*session{}
	for name, s := range old {
		if keep[name] != s {
			retired[name] = s
		}
	}
	stopSessions(retired, drainTimeout, nil)
	if len(unwanted) > 0 {
		if err := route.Undo(rt.rk, unwanted, log); err != nil {
			log.Error("undoing routing changes the new config no longer wants", "err", err)
		}
	}
	rt.st.Journal = append(append(route.Journal(nil), kept...), added...)
	if err := WriteState(c.StateDir, rt.st); err != nil {
		log.Error("writing state file", "err", err)
	}
	if reload {
		log.Info("applied", "generation", e.generation(), "kept_sessions", len(keep), "new_sessions", len(rt.sessions)-len(keep),
			"routing_added", len(added), "routing_undone", len(unwanted))
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
