package rules

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/filter"
)

// Options carries what the compiler needs to know about the host.
type Options struct {
	// NativeQueue: the kernel has nft's queue expression; otherwise the xt
	// NFQUEUE target is used through nft compat (docs/architecture.md, kernel notes).
	NativeQueue bool
	// IfIndex resolves a device name for `dup to`; 0 when unknown (render on
	// another host). Nil resolves everything to 0.
	IfIndex func(name string) uint32
	// SkipMissing leaves out what needs a device that does not exist (IfIndex
	// 0): netdev chains of missing sources and dup statements to missing
	// targets. The daemon sets it so that a vanished interface does not stop
	// the other sessions; it re-applies when the interface comes back.
	SkipMissing bool
	// Queues gives the first NFQUEUE number / NFLOG group of each userspace
	// session by name (stable across reloads); nil: QueueNum.
	Queues map[string]int
	// Gateways are the policy routes of userspace gateway targets (stable
	// across reloads); nil: GatewayRoutes(c).
	Gateways []GatewayRoute
	// Devices are the routes of kernel-routed device targets; nil:
	// DeviceRoutes(c).
	Devices []DeviceRoute
	// CgroupID resolves a session's cgroup (a path below the cgroup2 root)
	// to its id; 0 when it does not exist. Nil resolves everything to 0.
	CgroupID func(path string) uint64
}

func (o *Options) queueNum(c *config.Config, i int) int {
	if n, ok := o.Queues[c.Sessions[i].Name]; ok {
		return n
	}
	return QueueNum(c, i)
}

// markRange is the range of marks nfclone's copies carry.
func (o *Options) markRange(c *config.Config) (lo, hi uint32) {
	lo, hi = c.Mark, c.Mark
	for _, g := range o.Gateways {
		if g.Mark > hi {
			hi = g.Mark
		}
	}
	return lo, hi
}

// Priority of nfclone's base chains: after the default filter chains, so a
// packet the firewall dropped is not copied ("filter + 10").
const basePriority = 10

// rawPriority is where the notrack chain for userspace copies sits (before conntrack).
const rawPriority = -300

// LogThreshold is the NFLOG queue threshold nfclone asks for: the kernel
// batches this many packets per netlink message.
const LogThreshold = 16

// QueueNum returns the first NFQUEUE number (or NFLOG group) of the session
// at index i: userspace sessions get consecutive blocks of queue.count (at
// least Groups).
func QueueNum(c *config.Config, i int) int {
	n := c.Queue.Num
	for j := 0; j < i; j++ {
		if m := c.Sessions[j].Method; m == config.MethodQueue || m == config.MethodLog {
			n += max(c.Queue.Count, Groups(c, &c.Sessions[j]))
		}
	}
	return n
}

// Groups is how many NFQUEUE numbers or NFLOG groups userspace session s
// reads from its first: a queue session queue.count; a log session one,
// and two when the kernel sends its TCP clones (config.KernelRoutedTCP):
// the first for the packets nfclone sends, the second for the clones it
// only counts.
func Groups(c *config.Config, s *config.Session) int {
	switch {
	case s.Method == config.MethodQueue:
		return c.Queue.Count
	case c.KernelRoutedTCP(s):
		return 2
	}
	return 1
}

// VXLANDevice names the kernel VXLAN device nfclone creates for a vxlan
// target of a dup session. The name is derived from what the device is
// (VNI and remote), so a reload keeps an unchanged device and two targets
// with the same tunnel share one.
func VXLANDevice(t config.Target) string {
	h := fnv.New32a()
	vni := -1
	if t.VNI != nil {
		vni = *t.VNI
	}
	fmt.Fprintf(h, "%d|%s", vni, strings.Join(t.Remote, ","))
	return fmt.Sprintf("nfcvx%08x", h.Sum32())
}

// DeviceTargetName is the device a device target's copies are written to:
// the configured device, or the near end of a pair nfclone creates.
func DeviceTargetName(t config.Target) string {
	if t.Create {
		return CreatedNearEnd(t)
	}
	return t.Device
}

// CreatedNearEnd names the end of a created veth pair that nfclone mirrors
// into; the configured name is the far end, where copies are read.
func CreatedNearEnd(t config.Target) string {
	if t.Peer != "" {
		return t.Peer
	}
	n := t.Device
	if len(n) > 12 {
		n = n[:12]
	}
	return n + "-tx"
}

// Compile builds the desired ruleset. The config must have passed Validate.
func Compile(c *config.Config, opt Options) (*Ruleset, error) {
	if opt.IfIndex == nil {
		opt.IfIndex = func(string) uint32 { return 0 }
	}
	if opt.Gateways == nil {
		opt.Gateways = GatewayRoutes(c)
	}
	if opt.Devices == nil {
		opt.Devices = DeviceRoutes(c)
	}
	rs := &Ruleset{Name: c.Table}
	tables := map[nftables.TableFamily]*Table{}
	tbl := func(f nftables.TableFamily) *Table {
		if tables[f] == nil {
			tables[f] = &Table{Family: f}
		}
		return tables[f]
	}
	userspace := false
	clones := map[nftables.TableFamily][]Rule{} // queue sessions' catch rules, per family
	slots := 0                                  // queue sessions so far
	scs := make([]*sessionCompiler, len(c.Sessions))
	for i := range c.Sessions {
		sc, err := newSessionCompiler(c, i, opt)
		if err != nil {
			return nil, err
		}
		scs[i] = sc
	}
	for i := range c.Sessions {
		s := &c.Sessions[i]
		sc := scs[i]
		sc.all = scs
		switch s.Method {
		case config.MethodDup:
			var devs []config.Target
			gws := map[nftables.TableFamily][]config.Target{}
			for _, t := range s.Targets {
				switch t.Kind {
				case config.KindDevice:
					devs = append(devs, t)
				case config.KindVXLAN:
					devs = append(devs, config.Target{Kind: config.KindDevice, Device: VXLANDevice(t)})
				case config.KindGateway:
					f := nftables.TableFamilyIPv4
					if t.GatewayIs6() {
						f = nftables.TableFamilyIPv6
					}
					gws[f] = append(gws[f], t)
				}
			}
			if len(devs) > 0 {
				sc.netdev(tbl(nftables.TableFamilyNetdev), devs)
			}
			for _, f := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
				if len(gws[f]) > 0 {
					sc.l3(tbl(f), false, func(b *builder, _ bool) {
						for _, t := range gws[f] {
							if idx := opt.IfIndex(t.Device); idx != 0 || !opt.SkipMissing {
								b.dupGateway(t.GatewayIP.Unmap(), t.Device, idx)
							}
						}
					})
				}
			}
		case config.MethodQueue, config.MethodLog:
			// ip and ip6 tables rather than inet: nft (1.0.6) cannot list an
			// xt NFQUEUE target in an inet table.
			userspace = true
			num := opt.queueNum(c, i)
			routed := c.RoutesClones(s)
			if s.Method == config.MethodLog && !routed {
				for _, f := range userspaceFamilies(s) {
					sc.l3(tbl(f), false, func(b *builder, _ bool) { b.log(num, s.Snaplen, LogThreshold) })
				}
				break
			}
			if s.Hold {
				// The original itself is queued (bypass: it goes on
				// uncopied while no reader is bound) and carries no marker:
				// the reader accepts it unchanged.
				for _, f := range userspaceFamilies(s) {
					sc.l3(tbl(f), true, func(b *builder, _ bool) {
						// The counter stays out of the held rule (hold).
						b.then(newBuilder(f).hold(num, c.Queue.Count, opt.NativeQueue, queueBypass))
					})
				}
				break
			}
			// A queue session's clones, or a kernel-routed log session's.
			// A log session whose TCP clones alone the kernel sends logs
			// the rest itself, to its first group, before the copy rule
			// (copyChain); its clones go to the second.
			cloneGroup := num
			if c.KernelRoutedTCP(s) {
				sc.logOthers = &num
				cloneGroup = num + 1
			}
			slot := slots // this session's marker: one per clone session, whatever its families
			slots++
			ml := c.Marks()
			if slot >= ml.QueueSlots() {
				return nil, fmt.Errorf("sessions[%d]: more than %d queue sessions (and log sessions the kernel sends for) with mark_mask %#x", i, ml.QueueSlots(), c.MarkMask)
			}
			var gwMark uint32
			switch t := s.Targets[0]; {
			case routed && t.Kind != config.KindGateway:
				// A device's copies (and a VXLAN device's) carry the plain
				// copy mark, as nfclone's own device copies do.
				if _, ok := DeviceNextHop(opt.Devices, RoutedDevice(t), false); !ok {
					return nil, fmt.Errorf("sessions[%d].targets[0]: no next hop for device %s", i, RoutedDevice(t))
				}
				gwMark = c.Mark
			case routed:
				m, ok := GatewayMark(opt.Gateways, t.GatewayIP, t.Device)
				if !ok {
					return nil, fmt.Errorf("sessions[%d].targets[0]: no policy route for gateway %s on %s", i, t.GatewayIP, t.Device)
				}
				gwMark = m
			}
			for _, f := range userspaceFamilies(s) {
				// dup routes the clone to lo; a kernel-routed session's to
				// its gateway, so that one its fail-open queue lets through
				// goes nowhere else (no device, no route: nothing to clone).
				gw, dev, idx := loopback(f), "lo", uint32(loopbackIndex)
				if t := s.Targets[0]; routed && t.Kind != config.KindGateway {
					dev = RoutedDevice(t)
					gw, _ = DeviceNextHop(opt.Devices, dev, f == nftables.TableFamilyIPv6)
					idx = opt.IfIndex(dev)
				} else if routed {
					gw, dev, idx = t.GatewayIP.Unmap(), t.Device, opt.IfIndex(t.Device)
				}
				if idx != 0 || !opt.SkipMissing {
					sc.l3(tbl(f), true, func(b *builder, ttlDec bool) { b.cloneTo(ml, ml.CloneMarker(slot, ttlDec), gw, dev, idx) })
				}
				// Undo what dup changed before the clone is queued: the
				// kernel may send it on itself (the engine's kernel route).
				marker := ml.CloneMarker(slot, false)
				if f == nftables.TableFamilyIPv4 {
					clones[f] = append(clones[f], newBuilder(f).restoreDF(ml, marker).rule())
				}
				clones[f] = append(clones[f], newBuilder(f).restoreTTL(ml, marker).rule())
				switch {
				case !routed:
					clones[f] = append(clones[f], newBuilder(f).catchClones(ml, marker, num, c.Queue.Count, opt.NativeQueue).rule())
				case s.Method == config.MethodLog:
					// the reader's bind asks for 128 bytes
					clones[f] = append(clones[f], newBuilder(f).countRouted(ml, marker, s.Name).routeMark(ml, gwMark).log(cloneGroup, 0, LogThreshold).rule())
				default:
					clones[f] = append(clones[f], newBuilder(f).countRouted(ml, marker, s.Name).rule(),
						newBuilder(f).markBits(ml.SlotMask(), marker&ml.SlotMask()).routeMark(ml, gwMark).hold(num, c.Queue.Count, opt.NativeQueue, 0).rule())
				}
			}
		}
	}
	if userspace {
		lo, hi := opt.markRange(c)
		for _, f := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
			t := tbl(f)
			if len(clones[f]) > 0 {
				t.Chains = append(t.Chains, Chain{
					Name:  "clones",
					Hook:  &Hook{Num: *nftables.ChainHookOutput, Priority: clonesPriority},
					Rules: clones[f],
				}, Chain{Name: cloneTTLChain, Rules: ttlPlusOne(f)})
			}
			t.Chains = append(t.Chains, Chain{
				Name:  "copies_notrack",
				Hook:  &Hook{Num: *nftables.ChainHookOutput, Priority: rawPriority},
				Rules: []Rule{newBuilder(t.Family).notrackMarks(c.MarkMask, lo, hi).rule()},
			})
		}
	}
	for _, f := range Families {
		if t := tables[f]; t != nil {
			rs.Tables = append(rs.Tables, *t)
		}
	}
	return rs, nil
}

// tunnelRemotes are the collectors of every vxlan and geneve target.
func tunnelRemotes(c *config.Config) []netip.AddrPort {
	var out []netip.AddrPort
	seen := map[netip.AddrPort]bool{}
	for _, s := range c.Sessions {
		for _, t := range s.Targets {
			if t.Kind != config.KindVXLAN && t.Kind != config.KindGENEVE {
				continue
			}
			for _, ap := range t.RemoteAddrs {
				if !seen[ap] {
					seen[ap] = true
					out = append(out, ap)
				}
			}
		}
	}
	return out
}

// clonesSession: session s copies the kernel's clone of a packet, marked
// with its slot's marker and caught in the clones chain — a queue session
// that does not hold its originals, or a kernel-routed log session.
func clonesSession(c *config.Config, s *config.Session) bool {
	return s.Method == config.MethodQueue && !s.Hold || c.RoutesClones(s)
}

// userspaceFamilies are the families a userspace session copies: a gateway
// target takes copies of its own family only, other targets take both.
func userspaceFamilies(s *config.Session) []nftables.TableFamily {
	v4, v6 := false, false
	for _, t := range s.Targets {
		if t.Kind != config.KindGateway {
			v4, v6 = true, true
			continue
		}
		if t.GatewayIs6() {
			v6 = true
		} else {
			v4 = true
		}
	}
	var out []nftables.TableFamily
	if v4 {
		out = append(out, nftables.TableFamilyIPv4)
	}
	if v6 {
		out = append(out, nftables.TableFamilyIPv6)
	}
	return out
}

// sessionCompiler compiles one session into chains of one table at a time.
type sessionCompiler struct {
	cfg   *config.Config
	s     *config.Session
	opt   Options
	rules []config.Rule // in number order, each with its Match
	rate  *config.Rate
	all   []*sessionCompiler // every session's, for priority claims
	// ruleMarks: accepting rules put their ordinal in this part of the
	// mark (RuleMarks; 0: they do not)
	ruleMarks uint32
	expr      *filter.Expr // the session's filter expression (instead of rules)
	// logOthers: the NFLOG group a log session whose TCP clones the kernel
	// sends logs its other packets to (nil: none)
	logOthers *int
}

func newSessionCompiler(c *config.Config, i int, opt Options) (*sessionCompiler, error) {
	s := &c.Sessions[i]
	sc := &sessionCompiler{cfg: c, s: s, opt: opt, ruleMarks: RuleMarks(c, i)}
	// Validate fills the typed forms the compiler reads; a config that did
	// not pass it is refused rather than compiled as if its keys were empty.
	for _, r := range config.SortedRules(s.Rules) {
		if r.Match == nil {
			return nil, fmt.Errorf("sessions[%d] rule %d: not validated (config.Validate types its match)", i, r.Number)
		}
		sc.rules = append(sc.rules, r)
	}
	if strings.TrimSpace(s.Filter) != "" && s.FilterExpr == nil {
		return nil, fmt.Errorf("sessions[%d].filter: not validated (config.Validate parses it)", i)
	}
	sc.expr = s.FilterExpr
	if s.Rate != "" && s.RateLimit == nil {
		return nil, fmt.Errorf("sessions[%d].rate: not validated (config.Validate parses it)", i)
	}
	sc.rate = s.RateLimit
	return sc, nil
}

func dirShort(d config.Direction) string {
	if d == config.Egress {
		return "out"
	}
	return "in"
}

// directions returns the session's source interfaces per direction, in
// config order.
func (sc *sessionCompiler) directions() (dirs []config.Direction, ifaces map[config.Direction][]string) {
	ifaces = map[config.Direction][]string{}
	for _, src := range sc.s.Sources {
		for _, d := range config.SourceDirections(src.Direction) {
			ifaces[d] = append(ifaces[d], src.Interface)
		}
	}
	for _, d := range []config.Direction{config.Ingress, config.Egress} {
		if len(ifaces[d]) > 0 {
			dirs = append(dirs, d)
		}
	}
	return dirs, ifaces
}

// netdev compiles the session for device targets: whole L2 frames copied by
// `dup to <dev>` in ingress/egress chains bound to each source device.
func (sc *sessionCompiler) netdev(t *Table, devs []config.Target) {
	name := sc.s.Name
	dirs, ifaces := sc.directions()
	for _, d := range dirs {
		filter := fmt.Sprintf("%s_%s", name, dirShort(d))
		for _, ifc := range ifaces[d] {
			hook := nftables.ChainHookIngress
			if d == config.Egress {
				hook = nftables.ChainHookEgress
			}
			if sc.opt.SkipMissing && sc.opt.IfIndex(ifc) == 0 {
				continue // the device is gone: no chain can be bound to it
			}
			b := newBuilder(t.Family).markGuard(sc.markGuardArgs())
			if sc.s.HostOnly {
				b.fibLocal(d)
			}
			b.count(sc.s.Name, CounterSeen).verdict(expr.VerdictJump, filter)
			t.Chains = append(t.Chains, Chain{
				Name:  fmt.Sprintf("%s_%s_%s", name, dirShort(d), ifc),
				Hook:  &Hook{Num: *hook, Priority: basePriority, Device: ifc},
				Rules: []Rule{b.rule()},
			})
		}
		t.Chains = append(t.Chains, sc.filterChain(t.Family, filter, d, name+"_copy")...)
	}
	sc.addFlowSets(t)
	t.Chains = append(t.Chains, sc.copyChain(t.Family, name+"_copy", func(b *builder) {
		for _, dv := range devs {
			dev := DeviceTargetName(dv)
			if idx := sc.opt.IfIndex(dev); idx != 0 || !sc.opt.SkipMissing {
				b.dupDevice(dev, idx)
			}
		}
	})...)
}

// l3 compiles the session into an ip or ip6 table; rules of the other family
// are left out. With perDirection each direction gets its own copy chain,
// and action learns whether its hook is prerouting or input (where the
// kernel's dup decrements the TTL of the clone).
func (sc *sessionCompiler) l3(t *Table, perDirection bool, action func(b *builder, ttlDecremented bool)) {
	name := sc.s.Name
	dirs, ifaces := sc.directions()
	for _, d := range dirs {
		filter := fmt.Sprintf("%s_%s", name, dirShort(d))
		var bases []Chain
		for _, h := range sc.hooks(d) {
			base := Chain{Name: filter + h.suffix, Hook: &Hook{Num: *h.hook, Priority: basePriority}}
			for _, ifc := range ifaces[d] {
				b := newBuilder(t.Family).ifaceName(d, ifc)
				if perDirection {
					// nfclone's field must be clear: the clone marker goes
					// there and the copy rule clears it again (cloneTo).
					// This also skips every copy (their marks are in the field).
					b.markBits(sc.cfg.MarkMask, 0)
				} else {
					b.markGuard(sc.markGuardArgs())
				}
				b.count(sc.s.Name, CounterSeen).verdict(expr.VerdictJump, filter)
				base.Rules = append(base.Rules, b.rule())
			}
			if sc.ruleMarks != 0 {
				base.Rules = append(base.Rules, newBuilder(t.Family).clearRuleMarks(sc.ruleMarks, len(sc.rules)).rule())
			}
			bases = append(bases, base)
		}
		if !perDirection {
			t.Chains = append(t.Chains, bases...)
			t.Chains = append(t.Chains, sc.filterChain(t.Family, filter, d, name+"_copy")...)
			continue
		}
		copyName := filter + "_copy"
		dec := d == config.Ingress
		t.Chains = append(t.Chains, bases...)
		t.Chains = append(t.Chains, sc.filterChain(t.Family, filter, d, copyName)...)
		t.Chains = append(t.Chains, sc.copyChain(t.Family, copyName, func(b *builder) { action(b, dec) })...)
	}
	sc.addFlowSets(t)
	if !perDirection {
		t.Chains = append(t.Chains, sc.copyChain(t.Family, name+"_copy", func(b *builder) { action(b, false) })...)
	}
}

// sessionHook is a base chain's hook and the suffix of its name.
type sessionHook struct {
	hook   *nftables.ChainHook
	suffix string
}

// hooks returns where a direction of the session is hooked: ingress at
// prerouting (input with host_only), egress at postrouting (output with
// host_only). A log session's egress is hooked at forward and output
// instead, which see the same packets leaving the interface — forwarded
// ones and this host's own — before postrouting: NFLOG passes the
// packet's kernel timestamp (its time of receipt) only up to the forward
// hook (the forwarding path clears it after), so the copies of forwarded
// packets carry the kernel's time in both directions.
func (sc *sessionCompiler) hooks(d config.Direction) []sessionHook {
	switch {
	case d == config.Ingress && sc.s.HostOnly:
		return []sessionHook{{nftables.ChainHookInput, "_hook"}}
	case d == config.Ingress:
		return []sessionHook{{nftables.ChainHookPrerouting, "_hook"}}
	case sc.s.HostOnly:
		return []sessionHook{{nftables.ChainHookOutput, "_hook"}}
	case sc.s.Method == config.MethodLog:
		return []sessionHook{{nftables.ChainHookForward, "_hook"}, {nftables.ChainHookOutput, "_local"}}
	default:
		return []sessionHook{{nftables.ChainHookPostrouting, "_hook"}}
	}
}

// filterChain holds the session's numbered rules for one direction: the
// first match decides (accept: goto the copy chain; reject: return). With no
// rules, everything is copied; with rules, what no rule accepts is not.
func (sc *sessionCompiler) filterChain(fam nftables.TableFamily, name string, dir config.Direction, copyChain string) []Chain {
	ch := Chain{Name: name}
	// Tunnel traffic to nfclone's own collectors is never copied: the kernel
	// VXLAN device's packets carry no mark, and a session on their egress
	// interface would copy them into the tunnel again (a loop).
	for _, r := range tunnelRemotes(sc.cfg) {
		if fam == nftables.TableFamilyIPv4 && r.Addr().Is6() || fam == nftables.TableFamilyIPv6 && r.Addr().Is4() {
			continue
		}
		b := newBuilder(fam).ipFamily(r.Addr().Is6()).addr("daddr", netip.PrefixFrom(r.Addr(), r.Addr().BitLen()))
		b.l4proto(17, false).ports(17, "dport", []config.PortRange{{Lo: r.Port(), Hi: r.Port()}})
		ch.Rules = append(ch.Rules, b.verdict(expr.VerdictReturn, "").rule())
	}
	claims, claimChains := sc.claims(fam, dir)
	ch.Rules = append(ch.Rules, claims...)
	if sc.expr != nil {
		// One rule per conjunction of the expression (none may match this
		// table's family: the chain then copies nothing).
		terms, _ := sc.expr.Terms(filterFamily(fam)) // Validate refused an expression too big
		for _, t := range terms {
			ch.Rules = append(ch.Rules, newBuilder(fam).filterTerm(t).verdict(expr.VerdictGoto, copyChain).rule())
		}
		return append([]Chain{ch}, claimChains...)
	}
	if len(sc.rules) == 0 {
		ch.Rules = append(ch.Rules, newBuilder(fam).verdict(expr.VerdictGoto, copyChain).rule())
		return append([]Chain{ch}, claimChains...)
	}
	for k, r := range sc.rules {
		if r.Direction != "" && r.Direction != dir {
			continue
		}
		b, ok := sc.match(fam, r, dir)
		if !ok {
			continue
		}
		if r.Action == config.ActionAccept {
			if sc.ruleMarks != 0 {
				b.markRule(sc.ruleMarks, k+1)
			}
			b.verdict(expr.VerdictGoto, copyChain)
		} else {
			b.verdict(expr.VerdictReturn, "")
		}
		ch.Rules = append(ch.Rules, b.rule())
	}
	return append([]Chain{ch}, claimChains...)
}

// match compiles one rule's matches for a family; ok=false when the rule can
// never match in that family (a v6 CIDR in an ip table).
func (sc *sessionCompiler) match(fam nftables.TableFamily, r config.Rule, dir config.Direction) (*builder, bool) {
	b := newBuilder(fam)
	m := r.Match
	v4, v6 := m.Src.IsValid() && m.Src.Addr().Is4() || m.Dst.IsValid() && m.Dst.Addr().Is4(),
		m.Src.IsValid() && m.Src.Addr().Is6() || m.Dst.IsValid() && m.Dst.Addr().Is6()
	if m.HasProto && m.Proto == 1 {
		v4 = true
	}
	if m.HasProto && m.Proto == 58 {
		v6 = true
	}
	switch {
	case fam == nftables.TableFamilyIPv4 && v6, fam == nftables.TableFamilyIPv6 && v4:
		return nil, false
	}
	if r.VLAN != nil {
		b.vlanID(*r.VLAN, dir)
	}
	if v4 || v6 {
		b.ipFamily(v6)
	}
	if m.Src.IsValid() {
		b.addr("saddr", m.Src)
	}
	if m.Dst.IsValid() {
		b.addr("daddr", m.Dst)
	}
	if m.HasProto {
		b.l4proto(m.Proto, len(m.SrcPorts) == 0 && len(m.DstPorts) == 0)
		if len(m.SrcPorts) > 0 {
			b.ports(m.Proto, "sport", m.SrcPorts)
		}
		if len(m.DstPorts) > 0 {
			b.ports(m.Proto, "dport", m.DstPorts)
		}
	}
	return b, true
}

// markGuardArgs: nfclone's field of the mark and the range of copy marks.
func (sc *sessionCompiler) markGuardArgs() (mask, lo, hi uint32) {
	lo, hi = sc.opt.markRange(sc.cfg)
	return sc.cfg.MarkMask, lo, hi
}

// copyChain selects (select.go), samples, rate-limits and copies. A
// session with a cgroup or user has two chains: the scope test, and the
// rest in <name>_sel.
func (sc *sessionCompiler) copyChain(fam nftables.TableFamily, name string, action func(*builder)) []Chain {
	var out []Chain
	if sc.s.Select.Scoped() {
		sel := name + "_sel"
		out = append(out, Chain{Name: name, Rules: []Rule{
			newBuilder(fam).scope(sc.s.Select, sc.cgroupID()).verdict(expr.VerdictGoto, sel).rule(),
			newBuilder(fam).count(sc.s.Name, CounterScope).verdict(expr.VerdictReturn, "").rule(),
		}})
		name = sel
	}
	ch := Chain{Name: name}
	ch.Rules = append(ch.Rules, sc.selectorRules(fam)...)
	if sc.s.Sample > 1 {
		ch.Rules = append(ch.Rules, newBuilder(fam).sample(sc.s.Sample).verdict(expr.VerdictReturn, "").rule())
	}
	if sc.rate != nil {
		ch.Rules = append(ch.Rules, newBuilder(fam).rateOver(*sc.rate).count(sc.s.Name, CounterRateLimited).verdict(expr.VerdictReturn, "").rule())
	}
	if g := sc.logOthers; g != nil {
		// Not TCP: logged whole and sent by nfclone; the original leaves
		// the chain unmarked (before the DF mark below).
		ch.Rules = append(ch.Rules, newBuilder(fam).notL4proto(6).count(sc.s.Name, CounterCopied).log(*g, sc.s.Snaplen, LogThreshold).verdict(expr.VerdictReturn, "").rule())
	}
	if clonesSession(sc.cfg, sc.s) && fam == nftables.TableFamilyIPv4 {
		// The copy rule makes a clone of it: say whether DF was clear.
		ch.Rules = append(ch.Rules, newBuilder(fam).dfClearMark(sc.cfg.Marks()).rule())
	}
	b := newBuilder(fam).count(sc.s.Name, CounterCopied)
	action(b)
	ch.Rules = append(ch.Rules, b.rules()...)
	return append(out, ch)
}
