// Package engine runs nfclone: probe → plan → apply → copy → clean up.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/google/nftables"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/route"
	"github.com/nfclone/nfclone/rules"
)

// ErrHost marks failures caused by the host (privilege, kernel features,
// devices): exit code 2.
var ErrHost = errors.New("the host cannot do it")

func hostErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrHost, fmt.Sprintf(format, args...))
}

// RoutePlan is the pure routing/link plan of a config (DESIGN §3): ARP
// handling on the egress of gateway targets and, for the userspace methods,
// the policy routes that send marked copies to their gateway, with the local
// rule moved behind them so copies of host-bound traffic leave the host.
func RoutePlan(c *config.Config) route.Plan {
	var p route.Plan
	created := map[string]bool{}
	for _, s := range c.Sessions {
		for _, t := range s.Targets {
			if t.Kind == config.KindVXLAN && s.Method == config.MethodDup && len(t.Remote) == 1 && t.VNI != nil && !created[rules.VXLANDevice(t)] {
				created[rules.VXLANDevice(t)] = true
				// The kernel encapsulates: nfclone owns a VXLAN device fed by netdev dup.
				if ap, err := config.ParseRemote(t.Remote[0]); err == nil {
					p.VXLANs = append(p.VXLANs, route.VXLAN{Name: rules.VXLANDevice(t), VNI: uint32(*t.VNI), Remote: ap.Addr(), Port: ap.Port()})
				}
			}
			if t.Kind == config.KindDevice && t.Create && !created[t.Device] {
				created[t.Device] = true
				// Copies are written into the near end; they are read on the
				// far end, which has the configured name.
				p.Veths = append(p.Veths, route.VethPair{Name: rules.CreatedNearEnd(t), Peer: t.Device, Up: true, Promisc: t.Promisc})
			}
		}
	}
	moved := map[route.Family]bool{}
	for _, gr := range rules.GatewayRoutes(c) {
		f := route.FamilyOf(gr.Gateway)
		p.Rules = append(p.Rules, route.PolicyRule{Family: f, Pref: gr.Pref, Mark: gr.Mark, Table: gr.Table})
		p.Routes = append(p.Routes, route.Route{Family: f, Table: gr.Table, Gateway: gr.Gateway, Device: gr.Device})
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
			gw, err := netip.ParseAddr(t.Gateway)
			if err != nil {
				continue
			}
			if t.ARP == "off" && !flags[t.Device] {
				flags[t.Device] = true
				p.Flags = append(p.Flags, route.LinkFlag{Device: t.Device, NoARP: true})
			}
			if t.MAC != "" {
				mac, _ := net.ParseMAC(t.MAC)
				p.Neighbours = append(p.Neighbours, route.Neighbour{Device: t.Device, Addr: gw.Unmap(), MAC: mac})
			}
		}
	}
	return p
}

// Engine runs one configuration.
type Engine struct {
	Cfg *config.Config
	Log *slog.Logger
	// Limit stops the engine after this many copies (capture -c); 0: none.
	Limit uint64

	mu       sync.Mutex
	sessions []*session
}

// Copied is the number of copies delivered so far (all userspace sessions).
func (e *Engine) Copied() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var n uint64
	for _, s := range e.sessions {
		n += s.ledger.Snapshot().Copied
	}
	return n
}

// checkImplemented refuses what this version cannot run yet, as config
// problems with their key paths (render still shows their rules).
func checkImplemented(c *config.Config) error {
	var errs config.Errors
	for i, s := range c.Sessions {
		for j, t := range s.Targets {
			switch {
			case t.Kind == config.KindVXLAN && s.Method == config.MethodDup:
			case t.Kind == config.KindVXLAN, t.Kind == config.KindGENEVE, t.Kind == config.KindPcap:
				errs = append(errs, config.Problem{Path: fmt.Sprintf("sessions[%d].targets[%d].kind", i, j),
					Msg: fmt.Sprintf("%s targets are not implemented yet in `run`", t.Kind)})
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// drainTimeout bounds how long copies still queued are sent at shutdown.
const drainTimeout = 2 * time.Second

// Run installs everything, then waits for ctx to end and removes it all.
// ready, if set, is called once the rules are in place.
func (e *Engine) Run(ctx context.Context, ready func()) (err error) {
	c, log := e.Cfg, e.Log
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := checkImplemented(c); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		// Capabilities may still be enough; the first netlink call tells.
		log.Debug("not running as root; relying on CAP_NET_ADMIN and CAP_NET_RAW")
	}
	rk, err := route.Open()
	if err != nil {
		return hostErr("opening rtnetlink: %v", err)
	}
	defer rk.Close()

	if err := Reconcile(c, rk, log); err != nil {
		return err
	}
	if errs := config.CheckHost(c, config.SystemHost{}, nil); len(errs) > 0 {
		return errs
	}
	feats, err := e.probe()
	if err != nil {
		return err
	}

	st := &State{PID: os.Getpid(), Started: time.Now().UTC(), Table: c.Table}
	if err := WriteState(c.StateDir, st); err != nil {
		return hostErr("%v", err)
	}
	defer func() {
		if err == nil {
			return
		}
		// Failure before the loop: undo what was done.
		if uerr := route.Undo(rk, st.Journal, log); uerr != nil {
			log.Error("undoing routing changes", "err", uerr)
		} else {
			_ = RemoveState(c.StateDir)
		}
	}()

	plan := RoutePlan(c)
	j, err := route.NewApplier(rk, log).Apply(plan)
	st.Journal = j
	if werr := WriteState(c.StateDir, st); werr != nil && err == nil {
		err = hostErr("%v", werr)
	}
	if err != nil {
		return hostErr("applying routing plan: %v", err)
	}

	rs, err := rules.Compile(c, rules.Options{IfIndex: ifIndex, NativeQueue: feats.Has(rules.FeatNativeQueue)})
	if err != nil {
		return err
	}
	// Readers bind their queues before the rules exist: no copy is lost at start.
	sessions, err := openSessions(c, log)
	if err != nil {
		return err
	}
	if e.Limit > 0 {
		lim := newLimit(e.Limit, cancel)
		for _, s := range sessions {
			s.fanout = lim.wrap(s.fanout)
		}
	}
	e.mu.Lock()
	e.sessions = sessions
	e.mu.Unlock()
	ap, err := rules.NewApplier(c.Table)
	if err != nil {
		closeSessions(sessions, log)
		return hostErr("%v", err)
	}
	if err := ap.Apply(rs); err != nil {
		ap.Close()
		closeSessions(sessions, log)
		return hostErr("%v", err)
	}
	dp := startDataPath(sessions, log)
	log.Info("rules installed", "table", c.Table, "tables", len(rs.Tables), "sessions", len(c.Sessions))
	if ready != nil {
		ready()
	}

	<-ctx.Done()
	// Shutdown order: no new packets (rules removed), readers release what
	// they hold, queued copies drained (bounded), routes undone, state removed.
	log.Info("stopping: removing rules")
	var errs []error
	if err := ap.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := dp.stop(drainTimeout); err != nil {
		errs = append(errs, err)
	}
	log.Info("undoing routing changes", "changes", len(st.Journal))
	if err := route.Undo(rk, st.Journal, log); err != nil {
		errs = append(errs, fmt.Errorf("undoing routing changes: %w", err))
	}
	if len(errs) == 0 {
		if err := RemoveState(c.StateDir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("clean exit")
	return nil
}

func ifIndex(name string) uint32 {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0
	}
	return uint32(ifi.Index)
}

// probe checks that the kernel has what the config needs.
func (e *Engine) probe() (rules.Features, error) {
	f, err := ProbeKernel(e.Cfg.Table)
	if err != nil {
		return f, hostErr("%v", err)
	}
	if missing := Missing(e.Cfg, f); len(missing) > 0 {
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
					if a, err := netip.ParseAddr(t.Gateway); err == nil && a.Unmap().Is6() {
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
// running nfclone is left alone and reported.
func Reconcile(c *config.Config, rk route.Kernel, log *slog.Logger) error {
	st, err := ReadState(c.StateDir)
	if err != nil {
		return hostErr("%v", err)
	}
	if st.Alive() {
		return hostErr("nfclone is already running (pid %d, state in %s); stop it first", st.PID, c.StateDir)
	}
	table := c.Table
	if st != nil {
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
