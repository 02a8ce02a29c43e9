package engine

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nfclone/nfclone/route"
)

// linkDebounce collects a burst of events (a veth pair is two links, each
// with several messages; a link going down takes routes and neighbours
// with it) into one re-bind and one routing reconcile.
const linkDebounce = 100 * time.Millisecond

// reconcileEvery is how often the routing side is compared with the kernel
// when no event says so (someone's `ip rule del`, a flushed neighbour).
const reconcileEvery = 5 * time.Second

// rtnlGroups are the rtnetlink multicast groups the engine follows: links,
// IPv4 and IPv6 addresses, routes and rules (IPv6 rules have no legacy
// group bit and are joined separately).
const rtnlGroups = unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR |
	unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE | unix.RTMGRP_IPV4_RULE

// copyTables holds the routing tables of nfclone's gateway routes: route
// events of other tables (a router's churn) do not wake the engine.
type copyTables struct {
	p atomic.Pointer[map[uint32]bool]
}

func (c *copyTables) set(p route.Plan) {
	m := map[uint32]bool{}
	for _, r := range p.Routes {
		m[r.Table] = true
	}
	c.p.Store(&m)
}

func (c *copyTables) has(t uint32) bool {
	m := c.p.Load()
	return m != nil && (*m)[t]
}

// interesting reports whether an rtnetlink message may change what the
// engine binds or routes: every link, address and rule event, and route
// events of nfclone's own tables.
func interesting(m netlink.Message, tables *copyTables) bool {
	switch m.Header.Type {
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		return tables.has(routeTable(m.Data))
	}
	return true
}

// routeTable is the table of an rtmsg (RTA_TABLE when present).
func routeTable(b []byte) uint32 {
	const rtmsgLen = 12
	if len(b) < rtmsgLen {
		return 0
	}
	t := uint32(b[4])
	ad, err := netlink.NewAttributeDecoder(b[rtmsgLen:])
	if err != nil {
		return t
	}
	for ad.Next() {
		if ad.Type() == unix.RTA_TABLE {
			t = ad.Uint32()
		}
	}
	return t
}

// watchLinks signals out (without blocking) when links, addresses, rules or
// nfclone's routes were added, removed or changed, until ctx ends. The
// engine then compares interface indexes (re-applying the rules only when
// one it uses changed) and reconciles its routing against the kernel.
func watchLinks(ctx context.Context, log *slog.Logger, tables *copyTables, out chan<- struct{}) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Groups: rtnlGroups})
	if err != nil {
		log.Error("watching interfaces: interfaces that come and go will not be followed", "err", err)
		return
	}
	if err := c.JoinGroup(unix.RTNLGRP_IPV6_RULE); err != nil {
		log.Warn("watching IPv6 rules: changes are found by the periodic check only", "err", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		c.Close() // unblocks Receive
	}()
	defer func() { <-done }()
	events := make(chan struct{}, 1)
	go func() {
		for {
			msgs, err := c.Receive()
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("reading link events", "err", err)
				}
				close(events)
				return
			}
			wake := false
			for _, m := range msgs {
				wake = wake || interesting(m, tables)
			}
			if wake {
				select {
				case events <- struct{}{}:
				default:
				}
			}
		}
	}()
	for {
		if _, ok := <-events; !ok {
			return
		}
		t := time.NewTimer(linkDebounce)
	collect:
		for {
			select {
			case _, ok := <-events:
				if !ok {
					t.Stop()
					return
				}
			case <-t.C:
				break collect
			}
		}
		select {
		case out <- struct{}{}:
		default:
		}
	}
}

// repairRouting compares plan p with the kernel, puts back what is missing
// (a link flap deletes the gateway routes and permanent neighbours of the
// device; someone may delete a rule, a route or a device nfclone created),
// and returns journal j with the repairs merged in and what is still not
// as planned (blocked: a device missing or down). The diff itself is pure
// (route.Diff); this reads and writes through rk.
// changed is true when the journal changed (the state file must follow).
func repairRouting(rk route.Kernel, p route.Plan, j route.Journal, log *slog.Logger) (_ route.Journal, left []route.Drift, changed bool, _ error) {
	o, err := route.Observe(rk, p)
	if err != nil {
		return j, nil, false, err
	}
	drifts := route.Diff(p, o)
	fixable := 0
	for _, d := range drifts {
		if !d.Blocked {
			fixable++
			log.Warn("routing differs from the plan; putting it back", "drift", d.String())
		}
	}
	if fixable == 0 {
		return j, drifts, false, nil
	}
	added, rerr := route.Repair(rk, drifts, log)
	j = route.Merge(j, added)
	if o, err = route.Observe(rk, p); err != nil {
		return j, drifts, len(added) > 0, err
	}
	return j, route.Diff(p, o), len(added) > 0, rerr
}

// reconcileRouting runs repairRouting for the running config, keeps the
// state file in step and records what is still missing for Status.
func (e *Engine) reconcileRouting() {
	rt, log := e.rt, e.Log
	if rt.cfg == nil {
		return
	}
	j, left, changed, err := repairRouting(rt.h.routes, routePlan(rt.cfg, rt.gateways, rt.devices, systemMAC), rt.st.Journal, log)
	if changed {
		rt.st.Journal = j
		e.writeState()
	}
	if err != nil {
		log.Error("reconciling routing with the kernel", "err", err)
	}
	e.mu.Lock()
	prev := rt.drift
	rt.drift = left
	if changed {
		rt.created = createdLinks(j)
	}
	e.mu.Unlock()
	was := map[string]bool{}
	for _, d := range prev {
		was[d.String()] = true
	}
	now := map[string]bool{}
	for _, d := range left {
		now[d.String()] = true
		if d.Blocked && !was[d.String()] {
			log.Warn("routing cannot be as planned until this changes (copies that need it are not sent)", "drift", d.String())
		}
	}
	for _, d := range prev {
		if !now[d.String()] {
			log.Info("routing back as planned", "was", d.String())
		}
	}
}
