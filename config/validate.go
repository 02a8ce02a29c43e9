package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/nfclone/nfclone/internal/strftime"
)

var (
	reName   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,31}$`)
	reIfname = regexp.MustCompile(`^[A-Za-z0-9_.@:-]{1,15}$`)
)

// MaxVNI is the largest VXLAN/GENEVE network identifier (24 bits).
const MaxVNI = 1<<24 - 1

type problems struct{ list Errors }

// size parses the size v of key and checks that it lies in lo..hi (rng
// says so in words); otherwise it adds the problem and ok is false.
func (p *problems) size(key, v string, lo, hi int64, rng string) (n int64, ok bool) {
	n, err := ParseSize(v)
	switch {
	case err != nil:
		p.add(key, "%v", err)
	case n < lo || n > hi:
		p.add(key, "%q is out of range %s", v, rng)
	default:
		return n, true
	}
	return 0, false
}

func (p *problems) add(path, format string, args ...any) {
	p.list = append(p.list, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Validate checks a decoded config without looking at the host (but for a
// session's user given by name, resolved to its uid through os/user), fills
// in per-session defaults and the typed selectors, and returns every
// problem found.
func Validate(c *Config) Errors {
	var p problems
	if !reName.MatchString(c.Table) {
		p.add("table", "%q must start with a letter and hold at most 32 letters, digits or _", c.Table)
	}
	if !filepath.IsAbs(c.StateDir) {
		p.add("state_dir", "%q must be an absolute path", c.StateDir)
	}
	ml := c.Marks()
	switch {
	case c.MarkMask == 0:
		p.add("mark_mask", "must not be 0 (nfclone needs bits of the packet mark of its own)")
	case !ml.Contiguous():
		p.add("mark_mask", "%#x must be one run of bits (0x000000ff, 0x00f00000, ...)", c.MarkMask)
	}
	switch {
	case c.Mark == 0:
		p.add("mark", "must not be 0 (copies are recognised by their mark)")
	case c.MarkMask == 0:
	case c.Mark&^c.MarkMask != 0:
		p.add("mark", "%#x has bits outside mark_mask %#x (nfclone sets and reads only the bits of mark_mask)", c.Mark, c.MarkMask)
	case ml.Contiguous() && c.Mark&ml.CopyBit() == 0:
		p.add("mark", "%#x must have the top bit of mark_mask (%#x) set: the lower half of mark_mask holds the clone markers of queue sessions", c.Mark, ml.CopyBit())
	}
	nq := 0
	gws := map[string]bool{}
	for _, s := range c.Sessions {
		if s.Method == MethodQueue {
			nq++
		}
		if s.Method != MethodQueue && s.Method != MethodLog {
			continue
		}
		for _, t := range s.Targets {
			if t.Kind != KindGateway {
				continue
			}
			if gw, err := netip.ParseAddr(t.Gateway); err == nil {
				gws[gw.Unmap().String()+"%"+t.Device] = true
			}
		}
	}
	if c.MarkMask != 0 && ml.Contiguous() {
		if max := ml.QueueSlots(); nq > max {
			p.add("sessions", "%d queue sessions, at most %d with mark_mask %#x (their copies are told apart by the lower half of mark_mask, less two flag bits)", nq, max, c.MarkMask)
		}
		if room := ml.GatewayRoom(c.Mark); c.Mark&^c.MarkMask == 0 && len(gws) > room {
			p.add("mark", "%#x leaves room in mark_mask %#x for %d gateway marks, the userspace sessions have %d distinct gateways", c.Mark, c.MarkMask, room, len(gws))
		}
	}
	if c.RouteTable == 0 || c.RouteTable == 253 || c.RouteTable == 254 || c.RouteTable == 255 {
		p.add("route_table", "%d is reserved (0, default, main, local)", c.RouteTable)
	}
	if c.RulePref == 0 || c.RulePref >= 32766 {
		p.add("rule_pref", "%d must be between 1 and 32765 (before the main table's rule)", c.RulePref)
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			p.add("metrics.listen", "%q is not host:port (\"\" disables metrics)", c.Metrics.Listen)
		}
	}
	validateQueue(&p, &c.Queue, len(c.Sessions))
	validateLoops(&p, c)
	validateListens(&p, c)
	names := map[string]int{}
	for i := range c.Sessions {
		s := &c.Sessions[i]
		path := fmt.Sprintf("sessions[%d]", i)
		if j, dup := names[s.Name]; dup && s.Name != "" {
			p.add(path+".name", "%q is already the name of sessions[%d]", s.Name, j)
		}
		names[s.Name] = i
		validateSession(&p, path, s)
	}
	validatePriorities(&p, c)
	return p.list
}

// validateLoops refuses a kernel-dup device target that another dup
// session copies on egress: the kernel's copies carry no mark, so that
// session would copy the copies (and with a way back, forever).
func validateLoops(p *problems, c *Config) {
	for i, s := range c.Sessions {
		if s.Method != MethodDup && s.Method != "" {
			continue
		}
		for j, t := range s.Targets {
			if t.Kind != KindDevice || t.Create {
				continue // a created pair is written at its near end, read at the far one
			}
			for k, o := range c.Sessions {
				if k == i || o.Method != MethodDup && o.Method != "" {
					continue
				}
				for _, src := range o.Sources {
					if src.Interface == t.Device && src.Direction != Ingress {
						p.add(fmt.Sprintf("sessions[%d].targets[%d].device", i, j),
							"%q is an egress source of sessions[%d] (%s): its copies would be copied again (a loop); copy only ingress there", t.Device, k, o.Name)
					}
				}
			}
		}
	}
}

func validateQueue(p *problems, q *Queue, sessions int) {
	if q.Num < 0 || q.Num > 65535 {
		p.add("queue.num", "%d is out of range 0-65535", q.Num)
	}
	if q.Count < 1 || q.Count > 64 {
		p.add("queue.count", "%d is out of range 1-64", q.Count)
	} else if q.Num >= 0 && q.Num+q.Count*max(sessions, 1) > 65536 {
		p.add("queue.num", "%d leaves no room for %d queues per session", q.Num, q.Count)
	}
	if q.MaxLen < 1 || q.MaxLen > 1<<20 {
		p.add("queue.max_len", "%d is out of range 1-1048576", q.MaxLen)
	}
	if q.Cap < 1 || q.Cap > 1<<22 {
		p.add("queue.cap", "%d is out of range 1-4194304", q.Cap)
	}
	if n, ok := p.size("queue.cap_bytes", q.CapBytes, 1<<20, 1<<32, "1MiB-4GiB"); ok {
		q.CapByteCount = n
	}
	if n, ok := p.size("queue.socket_buffer", q.SocketBuffer, 1<<20, 512<<20, "1MiB-512MiB"); ok {
		q.SocketBufferBytes = n
	}
	if q.Workers < 1 || q.Workers > 256 {
		p.add("queue.workers", "%d is out of range 1-256", q.Workers)
	}
	if q.Nice < -20 || q.Nice > 19 {
		p.add("queue.nice", "%d is out of range -20-19", q.Nice)
	}
	if q.Realtime < 0 || q.Realtime > 99 {
		p.add("queue.realtime", "%d is out of range 0-99 (0: off)", q.Realtime)
	}
	if q.CPUs < 0 || q.CPUs > 1024 {
		p.add("queue.cpus", "%d is out of range 0-1024 (0: all)", q.CPUs)
	}
	onOffChoice(p, "queue.log_kernel_route", &q.LogKernelRoute, LogRouteTCP)
	onOffChoice(p, "queue.vxlan_kernel_route", &q.VXLANKernelRoute, VXLANRouteAuto)
}

// onOffChoice types a key that is on, off or a third value, def (also
// when empty): YAML's true and false are on and off.
func onOffChoice[T ~string](p *problems, path string, v *T, def T) {
	switch x := T(strings.ToLower(string(*v))); x {
	case "", def:
		*v = def
	case "on", "true":
		*v = "on"
	case "off", "false":
		*v = "off"
	default:
		p.add(path, "%q is not one of %s, on, off", *v, def)
	}
}

func validateSession(p *problems, path string, s *Session) {
	if !reName.MatchString(s.Name) {
		p.add(path+".name", "%q must start with a letter and hold at most 32 letters, digits or _", s.Name)
	}
	if s.Method == "" {
		s.Method = MethodDup
	}
	switch s.Method {
	case MethodDup, MethodQueue, MethodLog:
	default:
		p.add(path+".method", "%q is not one of queue, log, dup", s.Method)
	}
	if len(s.Sources) == 0 {
		p.add(path+".sources", "at least one source is required")
	}
	dirs := map[Direction]bool{}
	seen := map[string]int{}
	for i := range s.Sources {
		src := &s.Sources[i]
		sp := fmt.Sprintf("%s.sources[%d]", path, i)
		if !reIfname.MatchString(src.Interface) {
			p.add(sp+".interface", "%q is not an interface name", src.Interface)
		}
		if j, dup := seen[src.Interface]; dup {
			p.add(sp+".interface", "%q is already sources[%d]; use direction: both", src.Interface, j)
		}
		seen[src.Interface] = i
		if src.Direction == "" {
			src.Direction = Both
		}
		switch src.Direction {
		case Ingress, Egress, Both:
			for _, d := range SourceDirections(src.Direction) {
				dirs[d] = true
			}
		default:
			p.add(sp+".direction", "%q is not one of ingress, egress, both", src.Direction)
		}
	}
	l2 := s.Method == MethodDup
	for _, t := range s.Targets {
		if t.Kind != KindDevice && t.Kind != KindVXLAN {
			l2 = false
		}
	}
	validateRules(p, path, s, dirs, l2)
	validateFamilies(p, path, s)
	validateFilter(p, path, s)
	if s.Sample == 0 {
		s.Sample = DefaultSample
	}
	if s.Sample < 0 || s.Sample > 1<<20 {
		p.add(path+".sample", "%d is out of range 1-1048576 (copy 1 packet in N)", s.Sample)
	}
	if s.Rate != "" {
		if r, err := ParseRate(s.Rate); err != nil {
			p.add(path+".rate", "%v", err)
		} else {
			s.RateLimit = &r
		}
	}
	switch {
	case s.Snaplen < 0 || s.Snaplen > 65535:
		p.add(path+".snaplen", "%d is out of range 0-65535 (0: whole packet)", s.Snaplen)
	case s.Snaplen > 0 && s.Snaplen < 60:
		p.add(path+".snaplen", "%d is too small to hold the headers (at least 60)", s.Snaplen)
	case s.Snaplen > 0 && s.Method == MethodDup:
		p.add(path+".snaplen", "kernel dup copies whole packets; truncation needs method queue or log")
	}
	validateDedup(p, path, s)
	if s.Hold && s.Method != MethodQueue {
		p.add(path+".hold", "holds the originals in an NFQUEUE: needs method queue")
	}
	if len(s.Targets) == 0 {
		p.add(path+".targets", "at least one target is required")
	}
	for i := range s.Targets {
		validateTarget(p, fmt.Sprintf("%s.targets[%d]", path, i), s, &s.Targets[i])
	}
	validateSelectors(p, path, s, SystemUser)
}

func validateRules(p *problems, path string, s *Session, dirs map[Direction]bool, l2 bool) {
	numbers := map[int]int{}
	for i := range s.Rules {
		r := &s.Rules[i]
		rp := fmt.Sprintf("%s.rules[%d]", path, i)
		if r.Number < 1 || r.Number > 32766 {
			p.add(rp+".number", "%d is out of range 1-32766", r.Number)
		} else if j, dup := numbers[r.Number]; dup {
			p.add(rp+".number", "%d is already the number of rules[%d]", r.Number, j)
		}
		numbers[r.Number] = i
		switch r.Action {
		case ActionAccept, ActionReject:
		case "":
			p.add(rp+".action", "is required (accept or reject)")
		default:
			p.add(rp+".action", "%q is not accept or reject", r.Action)
		}
		before := len(p.list)
		var m RuleMatch
		proto, hasProto, err := ParseProtocol(r.Protocol)
		if err != nil {
			p.add(rp+".protocol", "%v", err)
		}
		m.Proto, m.HasProto = proto, hasProto
		fam := 0
		for _, f := range []struct {
			key, val string
			dst      *netip.Prefix
		}{{"source", r.Source, &m.Src}, {"destination", r.Destination, &m.Dst}} {
			if f.val == "" {
				continue
			}
			pfx, err := ParsePrefix(f.val)
			if err != nil {
				p.add(rp+"."+f.key, "%v", err)
				continue
			}
			*f.dst = pfx
			pf := 4
			if pfx.Addr().Is6() {
				pf = 6
			}
			if fam != 0 && fam != pf {
				p.add(rp+"."+f.key, "%q is IPv%d but the rule's source is IPv%d", f.val, pf, fam)
			}
			fam = pf
		}
		if hasProto && proto == 1 && fam == 6 {
			p.add(rp+".protocol", "icmp does not exist in IPv6 (use icmpv6)")
		}
		if hasProto && proto == 58 && fam == 4 {
			p.add(rp+".protocol", "icmpv6 does not exist in IPv4 (use icmp)")
		}
		for _, f := range []struct {
			key, val string
			dst      *[]PortRange
		}{{"source_ports", r.SourcePorts, &m.SrcPorts}, {"destination_ports", r.DestinationPorts, &m.DstPorts}} {
			if f.val == "" {
				continue
			}
			if prs, err := ParsePorts(f.val); err != nil {
				p.add(rp+"."+f.key, "%v", err)
			} else if !hasProto || (proto != 6 && proto != 17 && proto != 132) {
				p.add(rp+"."+f.key, "ports need protocol tcp, udp or sctp")
			} else {
				*f.dst = prs
			}
		}
		switch r.Direction {
		case "":
		case Ingress, Egress:
			if len(dirs) > 0 && !dirs[r.Direction] {
				p.add(rp+".direction", "%q never matches: the session's sources copy no %s traffic", r.Direction, r.Direction)
			}
		default:
			p.add(rp+".direction", "%q is not ingress or egress", r.Direction)
		}
		if r.VLAN != nil {
			if *r.VLAN < 0 || *r.VLAN > 4094 {
				p.add(rp+".vlan", "%d is out of range 0-4094", *r.VLAN)
			} else if !l2 {
				p.add(rp+".vlan", "VLAN ids are only seen in L2 frames: needs method dup with device or vxlan targets only")
			}
		}
		if len(p.list) == before {
			r.Match = &m
		}
	}
}

// validateEncap resolves a tunnel target's encap: a kernel VXLAN device
// for vxlan with one remote (method dup has nothing else), nfclone's own
// headers for geneve and for several remotes.
func validateEncap(p *problems, tp string, s *Session, t *Target) {
	switch t.Encap {
	case "":
		t.Encap = EncapUserspace
		if t.Kind == KindVXLAN && (len(t.Remote) == 1 || s.Method == MethodDup) {
			t.Encap = EncapKernel
		}
	case EncapKernel:
		switch {
		case t.Kind != KindVXLAN:
			p.add(tp+".encap", "kernel is for vxlan targets (nfclone creates no %s device); use userspace", t.Kind)
		case len(t.Remote) > 1 && s.Method != MethodDup:
			p.add(tp+".encap", "a kernel VXLAN device sends to one remote; use userspace for several")
		}
	case EncapUserspace:
		if s.Method == MethodDup {
			p.add(tp+".encap", "method dup copies in the kernel: its vxlan targets are encapsulated by a kernel VXLAN device (kernel)")
		}
	default:
		p.add(tp+".encap", "%q is not kernel or userspace", t.Encap)
	}
}

func validateTarget(p *problems, tp string, s *Session, t *Target) {
	switch t.Kind {
	case KindDevice, KindGateway, KindVXLAN, KindGENEVE, KindPcap, KindERSPAN, KindPcapOverIP:
	case "":
		p.add(tp+".kind", "is required (device, gateway, vxlan, geneve, erspan, pcap, pcap-over-ip)")
		return
	default:
		p.add(tp+".kind", "%q is not one of device, gateway, vxlan, geneve, erspan, pcap, pcap-over-ip", t.Kind)
		return
	}
	if s.Method == MethodDup && (t.Kind == KindGENEVE || t.Kind == KindPcap) {
		p.add(tp+".kind", "%s is not available with method dup (the kernel cannot write it); use method queue or log", t.Kind)
	}
	only := func(key string, set bool, kinds ...Kind) {
		if !set {
			return
		}
		names := make([]string, len(kinds))
		for i, k := range kinds {
			if k == t.Kind {
				return
			}
			names[i] = string(k)
		}
		p.add(tp+"."+key, "is not a field of %s targets (only %s)", t.Kind, strings.Join(names, ", "))
	}
	only("device", t.Device != "", KindDevice, KindGateway, KindVXLAN, KindGENEVE)
	only("gateway", t.Gateway != "", KindGateway)
	only("mac", t.MAC != "", KindDevice, KindGateway)
	only("arp", t.ARP != "", KindGateway)
	only("create", t.Create, KindDevice)
	only("peer", t.Peer != "", KindDevice)
	only("promisc", t.Promisc, KindDevice)
	only("remote", len(t.Remote) > 0, KindVXLAN, KindGENEVE, KindERSPAN)
	only("vni", t.VNI != nil, KindVXLAN, KindGENEVE)
	only("encap", t.Encap != "", KindVXLAN, KindGENEVE)
	only("path", t.Path != "", KindPcap)
	only("format", t.Format != "", KindPcap, KindPcapOverIP)
	only("rotate_size", t.RotateSize != "", KindPcap)
	only("rotate_keep", t.RotateKeep != 0, KindPcap)
	only("rotate_every", t.RotateEvery != "", KindPcap)

	validateOutputTarget(p, tp, s, t, only)
	if t.Device != "" && !reIfname.MatchString(t.Device) {
		p.add(tp+".device", "%q is not an interface name", t.Device)
	}
	if t.MAC != "" {
		if hw, err := net.ParseMAC(t.MAC); err != nil || len(hw) != 6 {
			p.add(tp+".mac", "%q is not an Ethernet address like 02:00:00:00:00:01", t.MAC)
		} else {
			t.HWAddr = hw
		}
	}
	switch t.Kind {
	case KindDevice:
		if t.Device == "" {
			p.add(tp+".device", "is required")
		}
		for _, src := range s.Sources {
			if src.Interface == t.Device && t.Device != "" {
				p.add(tp+".device", "%q is also a source of this session: its copies would be copied again", t.Device)
			}
		}
		if t.Peer != "" && !reIfname.MatchString(t.Peer) {
			p.add(tp+".peer", "%q is not an interface name", t.Peer)
		}
		if t.Peer != "" && !t.Create {
			p.add(tp+".peer", "only with create: true")
		}
	case KindGateway:
		if t.Device == "" {
			p.add(tp+".device", "is required (the interface the gateway is reached through)")
		}
		if t.Gateway == "" {
			p.add(tp+".gateway", "is required")
		} else if a, err := netip.ParseAddr(t.Gateway); err != nil || a.Zone() != "" {
			p.add(tp+".gateway", "%q is not an IP address", t.Gateway)
		} else {
			t.GatewayIP = a
		}
		switch t.ARP {
		case "", ARPOn, ARPOff:
		default:
			p.add(tp+".arp", "%q is not on or off", t.ARP)
		}
		if t.ARP == ARPOff && t.MAC != "" {
			p.add(tp+".mac", "mac and arp: off exclude each other (mac installs a neighbour entry)")
		}
	case KindVXLAN, KindGENEVE:
		if len(t.Remote) == 0 {
			p.add(tp+".remote", "is required (address:port, or a list)")
		}
		for i, r := range t.Remote {
			key := tp + ".remote"
			if len(t.Remote) > 1 {
				key = fmt.Sprintf("%s[%d]", key, i)
			}
			if ap, err := ParseRemote(r); err != nil {
				p.add(key, "%v", err)
			} else {
				t.RemoteAddrs = append(t.RemoteAddrs, ap)
			}
		}
		if s.Method == MethodDup && len(t.Remote) > 1 {
			p.add(tp+".remote", "method dup feeds one kernel VXLAN device: one remote only")
		}
		validateEncap(p, tp, s, t)
		if t.VNI == nil {
			p.add(tp+".vni", "is required (0-%d)", MaxVNI)
		} else if *t.VNI < 0 || *t.VNI > MaxVNI {
			p.add(tp+".vni", "%d is out of range 0-%d", *t.VNI, MaxVNI)
		}
	case KindPcap:
		if t.Path == "" {
			p.add(tp+".path", "is required (a file, or - for standard output)")
		} else if t.Path != "-" && !filepath.IsAbs(t.Path) {
			p.add(tp+".path", "%q must be an absolute path or -", t.Path)
		}
		switch t.Format {
		case "", FormatPcap, FormatPcapng:
		default:
			p.add(tp+".format", "%q is not pcap or pcapng", t.Format)
		}
		if t.RotateSize != "" {
			if n, err := ParseSize(t.RotateSize); err != nil {
				p.add(tp+".rotate_size", "%v", err)
			} else {
				t.RotateBytes = n
			}
			if t.Path == "-" {
				p.add(tp+".rotate_size", "standard output cannot be rotated")
			}
		}
		if t.RotateKeep < 0 {
			p.add(tp+".rotate_keep", "%d must not be negative", t.RotateKeep)
		}
		if t.RotateEvery != "" {
			if d, err := time.ParseDuration(t.RotateEvery); err != nil || d < time.Second {
				p.add(tp+".rotate_every", "%q is not a duration of at least 1s (like 10s, 15m, 1h)", t.RotateEvery)
			} else {
				t.RotateInterval = d
			}
			if t.Path == "-" {
				p.add(tp+".rotate_every", "standard output cannot be rotated")
			}
		}
		if t.Path != "-" {
			if err := strftime.Validate(t.Path); err != nil {
				p.add(tp+".path", "%v", err)
			}
		}
	}
}

// SortedRules returns a session's rules in number order.
func SortedRules(rules []Rule) []Rule {
	out := append([]Rule(nil), rules...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out
}
