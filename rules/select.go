package rules

import (
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/nfclone/nfclone/config"
)

// Selectors: which flows, and how much of each, a session copies
// (docs/configuration.md, "Selecting flows"). They sit at the head of the copy chain, after the
// session's filter rules accepted the packet, each with a counter of what it
// kept from being copied:
//
//	scope (cgroup, user)  socket cgroupv2 level 2 "a/b" meta skuid 1000 goto <copy>_sel; counter return
//	first_packets         ct direction original ct original packets != 1-10 counter return (and reply)
//	first_bytes           ct direction original ct original bytes != 1-1500 counter return (and reply)
//	sample_flows          symhash mod 4 != 0 counter return
//	flow_rate             update @<s>_flows4 { ip saddr . ip daddr . meta l4proto . th sport . th dport limit rate over R } counter return
//
// then the session's sample and rate, then the copy. priority is compiled
// into the filter chain (claims, below).

// flowRateSize is the number of flows a flow_rate set holds; a new flow
// finds no room when it is full, and is then copied without a per-flow
// limit (the session's rate still applies).
const flowRateSize = 65535

// portProtocols are the protocols whose flows flow_rate tells apart by
// ports; the others by addresses and protocol.
var portProtocols = []uint8{6, 17, 132}

// reg32 returns the register nft names for 32-bit register n (8..23): the
// 128-bit register it starts, when it starts one.
func reg32(n uint32) uint32 {
	if (n-8)%4 == 0 {
		return (n-8)/4 + 1
	}
	return n
}

// ctDirCount: `ct direction original ct original packets != 1-10` — the
// packet's own direction has counted more than n packets (bytes), or none:
// a connection conntrack began counting only after it started (accounting
// was off) reads 0 and is never copied.
func (b *builder) ctDirCount(dir uint8, key expr.CtKey, n uint64) *builder {
	dname := "original"
	if dir == 1 {
		dname = "reply"
	}
	kw := "packets"
	if key == expr.CtKeyBYTES {
		kw = "bytes"
	}
	return b.add(fmt.Sprintf("ct direction %s ct %s %s != 1-%d", dname, dname, kw, n),
		&expr.Ct{Key: expr.CtKeyDIRECTION, Register: reg},
		cmpEq([]byte{dir}),
		&expr.Ct{Key: key, Register: reg, Direction: uint32(dir), OptDirection: true},
		&expr.Byteorder{SourceRegister: reg, DestRegister: reg, Op: expr.ByteorderHton, Len: 8, Size: 8},
		&expr.Range{Op: expr.CmpOpNeq, Register: reg,
			FromData: binaryutil.BigEndian.PutUint64(1), ToData: binaryutil.BigEndian.PutUint64(n)})
}

// sampleFlows: `symhash mod 4 != 0` — the kernel's symmetric flow hash
// (addresses, protocol, ports; the same both ways): a flow is chosen, or
// not, for all of its packets.
func (b *builder) sampleFlows(n uint32) *builder {
	return b.add(fmt.Sprintf("symhash mod %d != 0", n),
		&expr.Hash{DestRegister: reg, Modulus: n, Type: expr.HashTypeSym},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: binaryutil.NativeEndian.PutUint32(0)})
}

// flowSetName names a flow_rate set: <session>_flows4 (by ports) or
// <session>_hosts4 (other protocols), 6 for IPv6.
func flowSetName(session string, v6, ports bool) string {
	kind, f := "hosts", 4
	if ports {
		kind = "flows"
	}
	if v6 {
		f = 6
	}
	return fmt.Sprintf("%s_%s%d", session, kind, f)
}

// flowSet is the dynamic set of a flow_rate rule.
func flowSet(session string, v6, ports bool, r config.Rate) Set {
	addr := nftables.TypeIPAddr
	if v6 {
		addr = nftables.TypeIP6Addr
	}
	types := []nftables.SetDatatype{addr, addr, nftables.TypeInetProto}
	if ports {
		types = append(types, nftables.TypeInetService, nftables.TypeInetService)
	}
	timeout := time.Minute // an idle flow is forgotten; a rate per hour or day needs that long
	switch r.Unit {
	case "hour":
		timeout = time.Hour
	case "day":
		timeout = 24 * time.Hour
	}
	return Set{Name: flowSetName(session, v6, ports), KeyType: nftables.MustConcatSetType(types...), Size: flowRateSize, Timeout: timeout}
}

// flowRate: `meta l4proto { tcp, udp, sctp } update @web_flows4 { ip saddr .
// ip daddr . meta l4proto . th sport . th dport limit rate over 200/second }`
// (ports false: `meta l4proto != { ... }` and the key without ports). The
// key is loaded into consecutive 32-bit registers from NFT_REG32_00, named
// as nft names them.
func (b *builder) flowRate(session string, v6, ports bool, r config.Rate) *builder {
	b.ipFamily(v6)
	set := AnonSet{KeyType: nftables.TypeInetProto}
	for _, p := range portProtocols {
		set.Elements = append(set.Elements, nftables.SetElement{Key: []byte{p}})
	}
	op := ""
	if !ports {
		op = "!= "
	}
	b.add(fmt.Sprintf("meta l4proto %s{ tcp, udp, sctp }", op), &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg})
	set.Lookup = len(b.exprs)
	b.sets = append(b.sets, set)
	b.add("", &expr.Lookup{SourceRegister: reg, SetName: "__set%d", Invert: !ports})

	kw, off, size := "ip", uint32(12), uint32(4)
	if v6 {
		kw, off, size = "ip6", 8, 16
	}
	r32 := uint32(8) // NFT_REG32_00
	load := func(e func(r uint32) expr.Any, bytes uint32) expr.Any {
		x := e(reg32(r32))
		r32 += (bytes + 3) / 4
		return x
	}
	payload := func(base expr.PayloadBase, off, n uint32) func(uint32) expr.Any {
		return func(r uint32) expr.Any {
			return &expr.Payload{DestRegister: r, Base: base, Offset: off, Len: n}
		}
	}
	es := []expr.Any{
		load(payload(expr.PayloadBaseNetworkHeader, off, size), size),
		load(payload(expr.PayloadBaseNetworkHeader, off+size, size), size),
		load(func(r uint32) expr.Any { return &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r} }, 1),
	}
	key := fmt.Sprintf("%s saddr . %s daddr . meta l4proto", kw, kw)
	if ports {
		es = append(es,
			load(payload(expr.PayloadBaseTransportHeader, 0, 2), 2),
			load(payload(expr.PayloadBaseTransportHeader, 2, 2), 2))
		key += " . th sport . th dport"
	}
	const burst = 5 // nft's default, which nft list does not print
	name := flowSetName(session, v6, ports)
	es = append(es, &expr.Dynset{SrcRegKey: reg, SetName: name, Operation: unix.NFT_DYNSET_OP_UPDATE,
		Exprs: []expr.Any{&expr.Limit{Type: expr.LimitTypePkts, Rate: r.Count, Unit: limitUnits[r.Unit], Over: true, Burst: burst}}})
	return b.add(fmt.Sprintf("update @%s { %s limit rate over %d/%s }", name, key, r.Count, r.Unit), es...)
}

// scope: `socket cgroupv2 level 2 "system.slice/nginx.service"` and/or
// `meta skuid 1000`. The cgroup is given to the kernel as its id (the
// inode of its directory in the cgroup2 file system), 0 when it does not
// exist: then nothing matches until it does (the daemon re-applies when
// the id changes). nft lists the id as a number when it cannot find the
// path under /sys/fs/cgroup.
func (b *builder) scope(sel config.Selectors, cgroupID uint64) *builder {
	if sel.Cgroup != "" {
		b.add(fmt.Sprintf("socket cgroupv2 level %d %q", sel.CgroupLevel(), sel.Cgroup),
			&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: uint32(sel.CgroupLevel()), Register: reg},
			cmpEq(binaryutil.NativeEndian.PutUint64(cgroupID)))
	}
	if sel.UID != nil {
		b.add(fmt.Sprintf("meta skuid %d", *sel.UID),
			&expr.Meta{Key: expr.MetaKeySKUID, Register: reg},
			cmpEq(binaryutil.NativeEndian.PutUint32(*sel.UID)))
	}
	return b
}

// metaProtocol: `meta protocol ip` / `meta protocol ip6` (netdev), visible.
func (b *builder) metaProtocol(v6 bool) *builder {
	et, kw := uint16(unix.ETH_P_IP), "ip"
	if v6 {
		et, kw = unix.ETH_P_IPV6, "ip6"
	}
	return b.add("meta protocol "+kw, &expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: reg}, cmpEq(binaryutil.BigEndian.PutUint16(et)))
}

// selectorRules are the selector rules of a copy chain, after the scope.
func (sc *sessionCompiler) selectorRules(fam nftables.TableFamily) []Rule {
	sel := sc.s.Select
	var out []Rule
	for _, c := range []struct {
		n    uint64
		key  expr.CtKey
		kind string
	}{{sel.FirstPackets, expr.CtKeyPKTS, CounterFirstPackets}, {sel.FirstBytes, expr.CtKeyBYTES, CounterFirstBytes}} {
		if c.n == 0 {
			continue
		}
		for dir := uint8(0); dir < 2; dir++ {
			out = append(out, newBuilder(fam).ctDirCount(dir, c.key, c.n).count(sc.s.Name, c.kind).verdict(expr.VerdictReturn, "").rule())
		}
	}
	if sel.SampleFlows > 1 {
		out = append(out, newBuilder(fam).sampleFlows(sel.SampleFlows).count(sc.s.Name, CounterSampleFlows).verdict(expr.VerdictReturn, "").rule())
	}
	if sel.FlowRate != nil {
		for _, v6 := range tableIPVersions(fam) {
			for _, ports := range []bool{true, false} {
				out = append(out, newBuilder(fam).flowRate(sc.s.Name, v6, ports, *sel.FlowRate).count(sc.s.Name, CounterFlowRate).verdict(expr.VerdictReturn, "").rule())
			}
		}
	}
	return out
}

// tableIPVersions: the IP versions a table of the family sees (false: v4).
func tableIPVersions(fam nftables.TableFamily) []bool {
	switch fam {
	case nftables.TableFamilyIPv4:
		return []bool{false}
	case nftables.TableFamilyIPv6:
		return []bool{true}
	}
	return []bool{false, true}
}

// addFlowSets adds the dynamic sets of the session's flow_rate to t (once).
func (sc *sessionCompiler) addFlowSets(t *Table) {
	r := sc.s.Select.FlowRate
	if r == nil {
		return
	}
	for _, v6 := range tableIPVersions(t.Family) {
		for _, ports := range []bool{true, false} {
			s := flowSet(sc.s.Name, v6, ports, *r)
			found := false
			for _, x := range t.Sets {
				found = found || x.Name == s.Name
			}
			if !found {
				t.Sets = append(t.Sets, s)
			}
		}
	}
}

// sessionFamilies is what a session copies: every frame (L2: device and
// vxlan targets of dup), or IPv4 and/or IPv6.
type sessionFamilies struct{ l2, v4, v6 bool }

func familiesOf(s *config.Session) sessionFamilies {
	var f sessionFamilies
	if s.Method != config.MethodDup {
		for _, fam := range userspaceFamilies(s) {
			f.v4 = f.v4 || fam == nftables.TableFamilyIPv4
			f.v6 = f.v6 || fam == nftables.TableFamilyIPv6
		}
		return f
	}
	for _, t := range s.Targets {
		switch t.Kind {
		case config.KindDevice, config.KindVXLAN:
			f.l2 = true
		case config.KindGateway:
			if t.GatewayIs6() {
				f.v6 = true
			} else {
				f.v4 = true
			}
		}
	}
	return f
}

// claims are the rules at the head of a prioritised session's filter chain
// (direction dir, an interface it copies) that give a packet up to every
// session with a lower priority number whose rules accept it: such a
// session's scope (interface and direction, host_only, families, cgroup,
// user) is tested on the jump, its numbered rules in a chain of their own
// (`accept` there ends this session's part of the hook: the packet goes on,
// uncopied by it). Its selectors (first_packets, sample, rate, ...) are not
// consulted: a packet the earlier session's rules accept is that session's.
func (sc *sessionCompiler) claims(fam nftables.TableFamily, dir config.Direction) (rules []Rule, chains []Chain) {
	p := sc.s.Select.Priority
	if p == 0 {
		return nil, nil
	}
	_, mine := sc.directions()
	for _, q := range sc.all {
		qp := q.s.Select.Priority
		if q == sc || qp == 0 || qp >= p {
			continue
		}
		_, theirs := q.directions()
		qf := familiesOf(q.s)
		var versions []*bool // nil: every packet of the table
		switch {
		case qf.l2:
			versions = []*bool{nil}
		default:
			for _, v := range tableIPVersions(fam) {
				if v && qf.v6 || !v && qf.v4 {
					versions = append(versions, &v)
				}
			}
		}
		if len(versions) == 0 {
			continue
		}
		chain := ""
		var qchain *Chain
		if len(q.rules) > 0 {
			chain = fmt.Sprintf("%s_%s_after_%s", sc.s.Name, dirShort(dir), q.s.Name)
			ch := Chain{Name: chain}
			for _, r := range q.rules {
				if r.Direction != "" && r.Direction != dir || r.VLAN != nil && fam != nftables.TableFamilyNetdev {
					continue
				}
				b, ok := q.match(fam, r, dir)
				if !ok {
					continue
				}
				if r.Action == config.ActionAccept {
					b.count(sc.s.Name, CounterPriority).verdict(expr.VerdictAccept, "")
				} else {
					b.verdict(expr.VerdictReturn, "")
				}
				ch.Rules = append(ch.Rules, b.rule())
			}
			qchain = &ch
		}
		jumps := 0
		for _, ifc := range mine[dir] {
			covered := false
			for _, x := range theirs[dir] {
				covered = covered || x == ifc
			}
			if !covered {
				continue
			}
			for _, v := range versions {
				b := newBuilder(fam).ifaceName(dir, ifc)
				if v != nil && fam == nftables.TableFamilyNetdev {
					b.metaProtocol(*v)
				}
				if q.s.HostOnly && !sc.s.HostOnly {
					b.fibLocal(dir)
				}
				if q.s.Select.Scoped() {
					b.scope(q.s.Select, q.cgroupID())
				}
				if chain != "" {
					b.verdict(expr.VerdictJump, chain)
				} else {
					b.count(sc.s.Name, CounterPriority).verdict(expr.VerdictAccept, "")
				}
				rules = append(rules, b.rule())
				jumps++
			}
		}
		if qchain != nil && jumps > 0 {
			chains = append(chains, *qchain)
		}
	}
	return rules, chains
}

// cgroupID is the id of the session's cgroup now (0: none or unknown).
func (sc *sessionCompiler) cgroupID() uint64 {
	if sc.s.Select.Cgroup == "" || sc.opt.CgroupID == nil {
		return 0
	}
	return sc.opt.CgroupID(sc.s.Select.Cgroup)
}
