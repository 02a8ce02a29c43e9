package engine

import (
	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/route"
	"github.com/nfclone/nfclone/rules"
)

// applyPlan is what making a config the running one takes, decided before
// anything is touched (planApply, pure). The executor (Engine.execute)
// carries it out in this order: apply Add, open the new sessions, compile
// and apply the ruleset in one batch, then stop Retire and undo Unwanted.
type applyPlan struct {
	Gateways []rules.GatewayRoute
	// Devices are the routes of the kernel-routed device targets.
	Devices []rules.DeviceRoute
	// Keep are the running sessions that go on as they are (same key:
	// same queues, readers, workers and counters).
	Keep []string
	// Open are the sessions to open, in config order, each on queue
	// numbers (or a log group) no running session holds.
	Open []sessionStep
	// Retire are the running sessions the config no longer has (or has
	// changed): they stop once the new rules no longer feed them.
	Retire []string
	// Queues is the first queue number or log group of every userspace
	// session of the config, kept or opened (the compiler's Queues).
	Queues map[string]int
	// Routes is the config's whole routing plan; Kept the journal's
	// changes it still wants, Add what is still to be made, Unwanted the
	// changes in place it no longer wants.
	Routes   route.Plan
	Kept     route.Journal
	Add      route.Plan
	Unwanted route.Journal
}

// sessionStep is one session to open. Its Key is the one planned with the
// interfaces before Add; execute keys the session it opens with the
// interfaces after Add (a device the plan creates is part of the key).
type sessionStep struct {
	Index int // in the config's Sessions
	sessionIdent
}

// planApply plans config c against what runs: the running sessions, the
// gateway routes in use (their marks and tables stay stable), the journal
// of routing changes in place and the interface indexes now (idx, which
// key device targets: a re-created interface restarts its sessions).
func planApply(c *config.Config, running []sessionIdent, prevGateways []rules.GatewayRoute, journal route.Journal, idx map[string]int, mac macFunc) (applyPlan, error) {
	p := applyPlan{Gateways: rules.StableGatewayRoutes(c, prevGateways), Devices: rules.DeviceRoutes(c), Queues: map[string]int{}}
	byName := map[string]sessionIdent{}
	inUse := map[int]bool{}
	for _, s := range running {
		byName[s.Name] = s
		for k := 0; k < s.Count; k++ {
			inUse[s.First+k] = true
		}
	}
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
	kept := map[string]bool{}
	for i, sc := range c.Sessions {
		if sc.Method != config.MethodQueue && sc.Method != config.MethodLog {
			continue
		}
		key := sessionKey(c, sc, p.Gateways, idx)
		if old, ok := byName[sc.Name]; ok && old.Key == key {
			kept[sc.Name] = true
			p.Keep = append(p.Keep, sc.Name)
			p.Queues[sc.Name] = old.First
			continue
		}
		n := rules.Groups(c, &c.Sessions[i])
		first := alloc(n)
		if first+n-1 > 65535 {
			return applyPlan{}, hostErr("sessions[%d]: no free queue numbers", i)
		}
		p.Open = append(p.Open, sessionStep{Index: i, sessionIdent: sessionIdent{Name: sc.Name, Key: key, First: first, Count: n}})
		p.Queues[sc.Name] = first
	}
	for _, s := range running {
		if !kept[s.Name] {
			p.Retire = append(p.Retire, s.Name)
		}
	}
	p.Routes = routePlan(c, p.Gateways, p.Devices, mac)
	p.Kept, p.Unwanted = route.Split(p.Routes, journal)
	p.Add = route.Subtract(p.Routes, p.Kept)
	return p, nil
}

// carriedCounters names the sessions whose rule counters go on across an
// apply (rules.Applier.Apply) from config old to c: the userspace sessions
// kept as they are (their ledgers go on with them) and the dup sessions of
// both configs (a dup session's counters are its only figures: a reload or
// a re-created interface does not start them again). A session opened
// again starts with a new ledger, and so its counters start again too.
func carriedCounters(old, c *config.Config, keep []string) map[string]bool {
	out := map[string]bool{}
	for _, n := range keep {
		out[n] = true
	}
	if old == nil {
		return out
	}
	dup := map[string]bool{}
	for _, s := range old.Sessions {
		if s.Method == config.MethodDup {
			dup[s.Name] = true
		}
	}
	for _, s := range c.Sessions {
		if s.Method == config.MethodDup && dup[s.Name] {
			out[s.Name] = true
		}
	}
	return out
}
