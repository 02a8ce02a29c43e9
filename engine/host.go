package engine

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/pipeline"
	"github.com/nfclone/nfclone/route"
	"github.com/nfclone/nfclone/rules"
	"github.com/nfclone/nfclone/sink"
	"github.com/nfclone/nfclone/status"
)

// host is everything the running engine does to or asks of the machine,
// each part a small interface (docs/architecture.md, "The engine"). Run
// wires the real parts (systemHost); the unit tests wire fakes, so start,
// reload, relink, rollback and shutdown run without root.
type host struct {
	rules    ruleApplier
	routes   route.Kernel
	links    links
	sessions sessionOpener
	state    stateStore
	// check reports what of a valid config this host cannot do (missing
	// interfaces, directories); owned are the links nfclone created.
	check func(c *config.Config, owned map[string]bool) config.Errors
	// cgroups reads the ids of the cgroups c selects below root.
	cgroups func(c *config.Config, root string) map[string]uint64
	// watch sends on out when an interface, or a route in one of tables,
	// changes, until ctx ends.
	watch func(ctx context.Context, log *slog.Logger, tables *copyTables, out chan<- struct{})
	now   func() time.Time
	// trims puts the segment-size program on nfclone's VXLAN devices (nil:
	// this host cannot load it); pathMTU gives the MTU of the route to a
	// remote (0 when unknown).
	trims   trimmer
	pathMTU func(netip.AddrPort) int
}

// ruleApplier owns nfclone's nftables tables (rules.Applier).
type ruleApplier interface {
	// Apply replaces the tables with rs in one transaction: all or nothing.
	// The counters of the sessions carry names go on from the tables'
	// in place.
	Apply(rs *rules.Ruleset, carry func(session string) bool) error
	// Counters reads the counters of rs's rules per session and kind.
	Counters(rs *rules.Ruleset) (map[string]map[string]rules.CounterValue, error)
	// Close removes the tables.
	Close() error
}

// links answers the interface index of a name (0: no such interface).
type links interface {
	Index(name string) int
}

// sessionOpener binds a userspace session's queues or log group and opens
// its targets, before the rules feed it.
type sessionOpener interface {
	Open(spec sessionSpec) (userSession, error)
}

// sessionSpec is one session step of an apply plan with what opening it
// needs from the running config.
type sessionSpec struct {
	Cfg      *config.Config
	Index    int // in Cfg.Sessions
	First    int // first queue number or the log group
	Key      string
	Gateways []rules.GatewayRoute
	Idx      map[string]int
	Log      *slog.Logger
}

// userSession is a running queue or log session (session; a fake in the
// tests).
type userSession interface {
	ident() sessionIdent
	// start runs the readers and workers; wrap, if set, wraps the targets.
	start(wrap func(sink.Sink) sink.Sink)
	// stop ends it within drain (plus a grace), whatever its sinks do;
	// kernel holds its rule counters for the final ledger.
	stop(drain time.Duration, kernel map[string]rules.CounterValue)
	// close releases what open took, for a session never started.
	close()
	// status reports it; kernel holds its rule counters (nil: unknown).
	status(kernel map[string]rules.CounterValue) status.SessionStatus
	snapshot() pipeline.Snapshot
	written() uint64
}

// sessionIdent is what the planner knows of a running session.
type sessionIdent struct {
	Name  string
	Key   string
	First int
	Count int
}

// stateStore keeps the state file (the journal of routing changes) of the
// running engine in its state_dir.
type stateStore interface {
	Write(s *State) error
	Remove() error
}

// systemHost is the real machine: st is the state_dir, rk and ap the
// engine's rtnetlink and nftables connections.
func systemHost(stateDir string, rk route.Kernel, ap ruleApplier) *host {
	return &host{
		rules: ap, routes: rk, links: netLinks{}, sessions: kernelSessions{}, state: stateDirStore(stateDir),
		check: func(c *config.Config, owned map[string]bool) config.Errors {
			return append(config.CheckHost(c, config.SystemHost{}, owned), config.CheckFiles(c)...)
		},
		cgroups: cgroupIDs,
		watch:   watchLinks,
		now:     time.Now,
		pathMTU: config.SystemTunnelPathMTU,
	}
}

// netLinks looks interfaces up in the current network namespace.
type netLinks struct{}

func (netLinks) Index(name string) int { return int(ifIndex(name)) }

func ifIndex(name string) uint32 {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0
	}
	return uint32(ifi.Index)
}

// kernelSessions opens sessions on NFQUEUE/NFLOG sockets (openSession).
type kernelSessions struct{}

func (kernelSessions) Open(s sessionSpec) (userSession, error) {
	us, err := openSession(s.Cfg, s.Index, s.First, s.Key, s.Gateways, s.Idx, s.Log)
	if err != nil {
		return nil, err // not a nil *session in an interface
	}
	return us, nil
}

// stateDirStore is the state file in a state_dir.
type stateDirStore string

func (d stateDirStore) Write(s *State) error { return WriteState(string(d), s) }
func (d stateDirStore) Remove() error        { return RemoveState(string(d)) }
