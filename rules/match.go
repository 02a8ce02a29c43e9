package rules

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"

	"github.com/nfclone/nfclone/config"
)

// builder accumulates one rule: its expressions, its anonymous sets and the
// nft text of each statement.
type builder struct {
	fam     nftables.TableFamily
	exprs   []expr.Any
	sets    []AnonSet
	text    []string
	counter *CounterRef
	held    *Hold
	next    *builder // the rule that follows this one, if the action needs two (then)
}

func newBuilder(fam nftables.TableFamily) *builder { return &builder{fam: fam} }

func (b *builder) add(text string, e ...expr.Any) *builder {
	if text != "" {
		b.text = append(b.text, text)
	}
	b.exprs = append(b.exprs, e...)
	return b
}

func (b *builder) rule() Rule {
	return Rule{Exprs: b.exprs, Sets: b.sets, Text: strings.Join(b.text, " "), Counter: b.counter, Hold: b.held}
}

// then makes n the rule that follows b (rules gives both).
func (b *builder) then(n *builder) *builder {
	b.next = n
	return b
}

// rules is b's rule and those that follow it.
func (b *builder) rules() []Rule {
	var out []Rule
	for r := b; r != nil; r = r.next {
		out = append(out, r.rule())
	}
	return out
}

// count: `counter packets 0 bytes 0`, read back for status and metrics.
func (b *builder) count(session, kind string) *builder {
	b.counter = &CounterRef{Session: session, Kind: kind}
	return b.add("counter packets 0 bytes 0", &expr.Counter{})
}

const reg = 1 // NFT_REG_1: every match loads into register 1

func cmpEq(data []byte) *expr.Cmp {
	return &expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: data}
}

// ifname pads an interface name the way the kernel compares it (IFNAMSIZ).
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// iifname / oifname: `iifname "e0"`.
func (b *builder) ifaceName(dir config.Direction, name string) *builder {
	key, kw := expr.MetaKeyIIFNAME, "iifname"
	if dir == config.Egress {
		key, kw = expr.MetaKeyOIFNAME, "oifname"
	}
	return b.add(fmt.Sprintf("%s %q", kw, name),
		&expr.Meta{Key: key, Register: reg}, cmpEq(ifname(name)))
}

// markGuard: `meta mark & 0x000000ff != 0x00000080` (or a range `!=
// 0x00000080-0x00000081` when several gateway routes each have their own
// mark) — nothing carrying one of nfclone's copy marks in its field of the
// mark is copied, whatever other bits others have set.
func (b *builder) markGuard(mask, lo, hi uint32) *builder {
	load := &expr.Meta{Key: expr.MetaKeyMARK, Register: reg}
	and := &expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4,
		Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)}
	if lo == hi {
		return b.add(fmt.Sprintf("meta mark & 0x%08x != 0x%08x", mask, lo), load, and,
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: binaryutil.NativeEndian.PutUint32(lo)})
	}
	return b.add(fmt.Sprintf("meta mark & 0x%08x != 0x%08x-0x%08x", mask, lo, hi), load, and, markHton(),
		&expr.Range{Op: expr.CmpOpNeq, Register: reg,
			FromData: binaryutil.BigEndian.PutUint32(lo), ToData: binaryutil.BigEndian.PutUint32(hi)})
}

// ipFamily adds the hidden dependency that makes L3 payload loads valid in
// netdev and inet tables (nft adds and hides the same one).
func (b *builder) ipFamily(v6 bool) *builder {
	switch b.fam {
	case nftables.TableFamilyINet:
		p := byte(unix.NFPROTO_IPV4)
		if v6 {
			p = unix.NFPROTO_IPV6
		}
		return b.add("", &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg}, cmpEq([]byte{p}))
	case nftables.TableFamilyNetdev:
		et := uint16(unix.ETH_P_IP)
		if v6 {
			et = unix.ETH_P_IPV6
		}
		return b.add("", &expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: reg}, cmpEq(binaryutil.BigEndian.PutUint16(et)))
	}
	return b
}

// addr: `ip saddr 10.0.0.0/8`, `ip6 daddr fd00::/8`.
func (b *builder) addr(field string, p netip.Prefix) *builder {
	v6 := p.Addr().Is6()
	off, size, kw := uint32(12), uint32(4), "ip"
	if v6 {
		off, size, kw = 8, 16, "ip6"
	}
	if field == "daddr" {
		off += size
	}
	text := fmt.Sprintf("%s %s %s", kw, field, p)
	if p.IsSingleIP() {
		text = fmt.Sprintf("%s %s %s", kw, field, p.Addr())
	}
	es := []expr.Any{&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size}}
	if !p.IsSingleIP() {
		mask := make([]byte, size)
		for i := 0; i < p.Bits(); i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		es = append(es, &expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: size, Mask: mask, Xor: make([]byte, size)})
	}
	es = append(es, cmpEq(p.Addr().AsSlice()))
	return b.add(text, es...)
}

var protoNames = map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}

// l4proto: `meta l4proto tcp` (hidden when a port match follows: `tcp dport 80`).
func (b *builder) l4proto(p uint8, visible bool) *builder {
	text := ""
	if visible {
		name, ok := protoNames[p]
		if !ok {
			name = fmt.Sprint(p)
		}
		text = "meta l4proto " + name
	}
	return b.add(text, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg}, cmpEq([]byte{p}))
}

// notL4proto: `meta l4proto != tcp`.
func (b *builder) notL4proto(p uint8) *builder {
	name, ok := protoNames[p]
	if !ok {
		name = fmt.Sprint(p)
	}
	return b.add("meta l4proto != "+name, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: []byte{p}})
}

// ports: `tcp dport 80`, `tcp dport 1024-65535`, `udp sport { 53, 5353 }`.
func (b *builder) ports(proto uint8, field string, rs []config.PortRange) *builder {
	off := uint32(0)
	if field == "dport" {
		off = 2
	}
	load := &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2}
	kw := fmt.Sprintf("%s %s ", protoNames[proto], field)
	rs = normalizePorts(rs)
	be := binaryutil.BigEndian.PutUint16
	switch {
	case len(rs) == 1 && rs[0].Lo == rs[0].Hi:
		return b.add(kw+rs[0].String(), load, cmpEq(be(rs[0].Lo)))
	case len(rs) == 1:
		return b.add(kw+rs[0].String(), load,
			&expr.Range{Op: expr.CmpOpEq, Register: reg, FromData: be(rs[0].Lo), ToData: be(rs[0].Hi)})
	}
	set := AnonSet{KeyType: nftables.TypeInetService}
	var parts []string
	for _, r := range rs {
		parts = append(parts, r.String())
		if r.Lo != r.Hi {
			set.Interval = true
		}
	}
	if set.Interval {
		set.Elements = intervalElements(rs)
	} else {
		for _, r := range rs {
			set.Elements = append(set.Elements, nftables.SetElement{Key: be(r.Lo)})
		}
	}
	b.add(kw+"{ "+strings.Join(parts, ", ")+" }", load)
	set.Lookup = len(b.exprs)
	b.sets = append(b.sets, set)
	return b.add("", &expr.Lookup{SourceRegister: reg, SetName: "__set%d"})
}

// normalizePorts sorts ranges and merges the ones that overlap or touch, as
// nft does when it builds an interval set.
func normalizePorts(in []config.PortRange) []config.PortRange {
	rs := append([]config.PortRange(nil), in...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].Lo < rs[j].Lo })
	var out []config.PortRange
	for _, r := range rs {
		if n := len(out); n > 0 && uint32(r.Lo) <= uint32(out[n-1].Hi)+1 {
			if r.Hi > out[n-1].Hi {
				out[n-1].Hi = r.Hi
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// intervalElements encodes ranges the way nft does for an interval set: a
// start element per range and an interval-end element one past its end, with
// a leading end element at 0 when the first range does not start at 0.
func intervalElements(rs []config.PortRange) []nftables.SetElement {
	be := binaryutil.BigEndian.PutUint16
	var out []nftables.SetElement
	if rs[0].Lo > 0 {
		out = append(out, nftables.SetElement{Key: be(0), IntervalEnd: true})
	}
	for _, r := range rs {
		out = append(out, nftables.SetElement{Key: be(r.Lo)})
		if r.Hi < 65535 {
			out = append(out, nftables.SetElement{Key: be(r.Hi + 1), IntervalEnd: true})
		}
	}
	return out
}

// vlanID: `vlan id 100` (netdev only). nft puts a link-type check on the
// input device first; the egress hook has no input device (the check would
// never match there), so egress rules go without it.
func (b *builder) vlanID(id int, dir config.Direction) *builder {
	var es []expr.Any
	if dir != config.Egress {
		es = append(es, &expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: reg}, cmpEq(binaryutil.NativeEndian.PutUint16(unix.ARPHRD_ETHER)))
	}
	es = append(es,
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		cmpEq(binaryutil.BigEndian.PutUint16(unix.ETH_P_8021Q)),
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseLLHeader, Offset: 14, Len: 2},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 2, Mask: binaryutil.BigEndian.PutUint16(0x0fff), Xor: []byte{0, 0}},
		cmpEq(binaryutil.BigEndian.PutUint16(uint16(id))))
	text := fmt.Sprintf("vlan id %d", id)
	if dir == config.Egress {
		// Without the link-type check nft cannot name the header: it
		// prints (and accepts) the raw payload match.
		text = fmt.Sprintf("@ll,96,16 0x8100 @ll,112,16 & 0xfff == 0x%x", id)
	}
	return b.add(text, es...)
}

// fibLocal: `fib daddr type local` (ingress) or `fib saddr type local` (egress).
func (b *builder) fibLocal(dir config.Direction) *builder {
	f := &expr.Fib{Register: reg, ResultADDRTYPE: true, FlagDADDR: true}
	text := "fib daddr type local"
	if dir == config.Egress {
		f = &expr.Fib{Register: reg, ResultADDRTYPE: true, FlagSADDR: true}
		text = "fib saddr type local"
	}
	return b.add(text, f, cmpEq(binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)))
}

func (b *builder) verdict(kind expr.VerdictKind, chain string) *builder {
	var text string
	switch kind {
	case expr.VerdictJump:
		text = "jump " + chain
	case expr.VerdictGoto:
		text = "goto " + chain
	case expr.VerdictReturn:
		text = "return"
	case expr.VerdictAccept:
		text = "accept"
	}
	return b.add(text, &expr.Verdict{Kind: kind, Chain: chain})
}

// sample: `numgen inc mod 4 != 0 return` — copy 1 packet in N.
func (b *builder) sample(n int) *builder {
	return b.add(fmt.Sprintf("numgen inc mod %d != 0", n),
		&expr.Numgen{Register: reg, Modulus: uint32(n), Type: unix.NFT_NG_INCREMENTAL},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: binaryutil.NativeEndian.PutUint32(0)})
}

var limitUnits = map[string]expr.LimitTime{
	"second": expr.LimitTimeSecond, "minute": expr.LimitTimeMinute, "hour": expr.LimitTimeHour, "day": expr.LimitTimeDay,
}

// rateOver: `limit rate over 20000/second` (burst 5 packets), or `limit
// rate over 10 mbytes/second` (burst 0 bytes: nft's default for bytes).
func (b *builder) rateOver(r config.Rate) *builder {
	if r.Bytes {
		return b.add("limit rate over "+r.String(),
			&expr.Limit{Type: expr.LimitTypePktBytes, Rate: r.Count, Unit: limitUnits[r.Unit], Over: true})
	}
	const burst = 5 // nft's default, which nft list does not print
	return b.add(fmt.Sprintf("limit rate over %d/%s", r.Count, r.Unit),
		&expr.Limit{Type: expr.LimitTypePkts, Rate: r.Count, Unit: limitUnits[r.Unit], Over: true, Burst: burst})
}

// dupDevice: `dup to "e3"` (netdev).
func (b *builder) dupDevice(dev string, ifindex uint32) *builder {
	return b.add(fmt.Sprintf("dup to %q", dev),
		&expr.Immediate{Register: reg, Data: binaryutil.NativeEndian.PutUint32(ifindex)},
		&expr.Dup{RegDev: reg, IsRegDevSet: true})
}

// dupGateway: `dup to 10.77.2.2 device "e1"` (ip, ip6).
func (b *builder) dupGateway(gw netip.Addr, dev string, ifindex uint32) *builder {
	return b.add(fmt.Sprintf("dup to %s device %q", gw, dev),
		&expr.Immediate{Register: 1, Data: gw.AsSlice()},
		&expr.Immediate{Register: 2, Data: binaryutil.NativeEndian.PutUint32(ifindex)},
		&expr.Dup{RegAddr: 1, RegDev: 2, IsRegDevSet: true})
}

// NFQUEUE flags (xt_NFQ_info_v3 and nft_queue share the values); CPU
// fanout (0x2) is not used, see queue.
const queueBypass = 0x1

// Clones of `queue` sessions. The kernel's `dup` makes the copy and only the
// copy goes through NFQUEUE, so an original is never held for userspace:
// the session's copy rule sets a marker in nfclone's field of the mark
// (mark_mask, config.MarkLayout), dups the packet to the loopback device and
// clears the field again (the original leaves the rule with the mark it came
// with: the hook chain let in only packets whose field was clear); the clone
// enters the output hook carrying the marker, where the clones chain queues
// it.
const (
	// loopbackIndex is the ifindex of lo in every network namespace.
	loopbackIndex = 1
	// clonesPriority puts the clones chain before everything in the output
	// hook (raw is -300, defragmentation -400): a clone meets no other rule.
	clonesPriority = -450
)

// markBits: `meta mark & 0x000000ff == 0x00000000` (the mark under mask
// equals v).
func (b *builder) markBits(mask, v uint32) *builder {
	return b.add(fmt.Sprintf("meta mark & 0x%08x == 0x%08x", mask, v),
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)},
		cmpEq(binaryutil.NativeEndian.PutUint32(v)))
}

// setMark: `meta mark set meta mark | 0x04000000` (or) or
// `meta mark set meta mark & 0x00ffffff` (and): reg = (mark & mask) ^ xor.
func (b *builder) setMark(text string, mask, xor uint32) *builder {
	return b.add(text,
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(xor)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg})
}

// dfClearMark: `ip frag-off & 16384 == 0 meta mark set meta mark |
// 0x00000002` — tells the reader that the original had DF clear (the
// kernel's dup sets it on the clone). The copy rule right after it clears
// nfclone's field again.
func (b *builder) dfClearMark(ml config.MarkLayout) *builder {
	b.add("ip frag-off & 16384 == 0",
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 6, Len: 2},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 2,
			Mask: binaryutil.BigEndian.PutUint16(0x4000), Xor: make([]byte, 2)},
		cmpEq(make([]byte, 2)))
	df := ml.DFClear()
	return b.setMark(fmt.Sprintf("meta mark set meta mark | 0x%08x", df), ^df, df)
}

// cloneTo: `meta mark set meta mark | M dup to 127.0.0.1 device "lo" meta
// mark set meta mark & 0xffffff00` (or `dup to 10.77.2.2 device "e1"`, a
// kernel-routed session's). The session's hook chain has let in only packets
// whose field (mark_mask) is clear, so the last statement restores the
// original's mark exactly, every bit others set included.
func (b *builder) cloneTo(ml config.MarkLayout, marker uint32, gw netip.Addr, dev string, idx uint32) *builder {
	b.setMark(fmt.Sprintf("meta mark set meta mark | 0x%08x", marker), ^marker, marker)
	b.dupGateway(gw, dev, idx)
	return b.setMark(fmt.Sprintf("meta mark set meta mark & 0x%08x", ^ml.Mask), ^ml.Mask, 0)
}

// loopback is where dup routes a queue session's clones: 127.0.0.1 or ::1.
func loopback(fam nftables.TableFamily) netip.Addr {
	if fam == nftables.TableFamilyIPv6 {
		return netip.IPv6Loopback()
	}
	return netip.MustParseAddr("127.0.0.1")
}

// restoreDF: `meta mark & 0x000000fe == 0x00000006 ip frag-off set ip
// frag-off & 49151` — in the clones chain, before the clone is queued:
// clears DF again on the IPv4 clones of originals that had it clear (the
// kernel's dup sets it on every clone), with the header checksum updated.
func (b *builder) restoreDF(ml config.MarkLayout, marker uint32) *builder {
	b.markBits(ml.SlotMask()|ml.DFClear(), marker|ml.DFClear())
	return b.add("ip frag-off set ip frag-off & 49151",
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 6, Len: 2},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 2,
			Mask: binaryutil.BigEndian.PutUint16(0xbfff), Xor: make([]byte, 2)},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg, Base: expr.PayloadBaseNetworkHeader,
			Offset: 6, Len: 2, CsumType: expr.CsumTypeInet, CsumOffset: 10})
}

// restoreTTL: `meta mark & 0x000000fd == 0x00000005 jump clone_ttl` — the
// clones of prerouting and input copy chains get back the TTL (hop limit)
// the kernel's dup took off.
func (b *builder) restoreTTL(ml config.MarkLayout, marker uint32) *builder {
	b.markBits(ml.SlotMask()|ml.TTLDecremented(), marker|ml.TTLDecremented())
	return b.verdict(expr.VerdictJump, cloneTTLChain)
}

// cloneTTLChain adds one to the TTL (hop limit) of a packet.
const cloneTTLChain = "clone_ttl"

// ttlPlusOne is the rules of cloneTTLChain. nft has no addition, so rule k
// adds one to a TTL whose low bits are a 0 and k ones below it, by
// flipping those k+1 bits: `ip ttl & 3 == 1 @nh,64,16 set @nh,64,16 ^ 0x300 return`. The
// rules exclude each other and return, so exactly one applies (255, which
// a decremented TTL never is, none). The write is 16 bits wide because nft
// (1.0.6) cannot parse an 8-bit one with an expression; in IPv4 it updates
// the header checksum (nft's text does not show that: `nft -f` of it would
// leave the checksum stale).
func ttlPlusOne(fam nftables.TableFamily) []Rule {
	field, off, name := uint32(8), uint32(64), "ip ttl"
	csum := expr.CsumTypeInet
	if fam == nftables.TableFamilyIPv6 {
		field, off, name, csum = 7, 48, "ip6 hoplimit", expr.CsumTypeNone
	}
	var out []Rule
	for k := 0; k < 8; k++ {
		flip := byte(1)<<(k+1) - 1
		want := flip >> 1
		// The 16-bit word starts at the TTL in IPv4 (TTL, protocol) and
		// ends at it in IPv6 (next header, hop limit).
		word := uint16(flip) << 8
		if fam == nftables.TableFamilyIPv6 {
			word = uint16(flip)
		}
		write := &expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg, Base: expr.PayloadBaseNetworkHeader,
			Offset: off / 8, Len: 2}
		if csum != expr.CsumTypeNone {
			write.CsumType, write.CsumOffset = csum, 10
		}
		load := &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: field, Len: 1}
		b := newBuilder(fam)
		if flip == 0xff {
			b.add(fmt.Sprintf("%s %d", name, want), load, cmpEq([]byte{want}))
		} else {
			b.add(fmt.Sprintf("%s & %d == %d", name, flip, want), load,
				&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 1, Mask: []byte{flip}, Xor: []byte{0}},
				cmpEq([]byte{want}))
		}
		b.add(fmt.Sprintf("@nh,%d,16 set @nh,%d,16 ^ %#x", off, off, word),
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off / 8, Len: 2},
			&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 2,
				Mask: []byte{0xff, 0xff}, Xor: binaryutil.BigEndian.PutUint16(word)},
			write)
		out = append(out, b.verdict(expr.VerdictReturn, "").rule())
	}
	return out
}

// catchClones: `meta mark & 0x000000fc == 0x00000004 queue num 5` — no
// bypass, and the queue is not fail-open: a clone nobody reads is dropped,
// never delivered. The mask takes the copy bit too: copies never match.
func (b *builder) catchClones(ml config.MarkLayout, marker uint32, num, total int, native bool) *builder {
	b.markBits(ml.SlotMask(), marker&ml.SlotMask())
	return b.queueFlags(num, total, native, 0)
}

// countRouted: `meta mark & 0x000000fc == 0x00000004 counter packets 0
// bytes 0` — the clones of a kernel-routed session reaching the clones
// chain (CounterQueued), in a rule of its own when the rule that queues
// them is held (hold): replacing that rule would restart its counter.
func (b *builder) countRouted(ml config.MarkLayout, marker uint32, session string) *builder {
	b.markBits(ml.SlotMask(), marker&ml.SlotMask())
	return b.count(session, CounterQueued)
}

// routeMark: `meta mark set meta mark & 0xffffff81 | 0x00000081` — a
// kernel-routed clone gets the gateway's copy mark in place of the marker
// (others' bits kept). Then it is queued to a reader that accepts it (a
// fail-open queue: a clone the full queue or socket cannot take goes on at
// once, on the route dup gave it), or logged (NFLOG holds nothing: the clone
// goes on as it is logged).
func (b *builder) routeMark(ml config.MarkLayout, gwMark uint32) *builder {
	// nft prints the mask with the set bits in it.
	return b.setMark(fmt.Sprintf("meta mark set meta mark & 0x%08x | 0x%08x", ^ml.Mask|gwMark, gwMark), ^ml.Mask, gwMark)
}

// hold: `queue num 5` (flags as queueFlags) for packets that wait for the
// reader's verdict to go on — a kernel-routed clone, a held original. The
// rule carries its Hold: the same rule with accept in place of the queue,
// which the applier puts in while it replaces the tables (the kernel drops
// every queued packet when a hook goes away).
func (b *builder) hold(num, total int, native bool, flags uint16) *builder {
	released := append(append([]expr.Any(nil), b.exprs...), &expr.Verdict{Kind: expr.VerdictAccept})
	h := &Hold{Released: released}
	for q := num; q < num+max(total, 1); q++ {
		h.Queues = append(h.Queues, uint16(q))
	}
	b.held = h
	return b.queueFlags(num, total, native, flags)
}

// queue: `queue num 0 bypass` / `queue num 0-3 bypass`, native or through
// the xt NFQUEUE target (docs/architecture.md, kernel notes). Several queues are chosen by a hash of
// the flow, not by CPU: on a veth or a single-queue NIC the hook always runs
// on the same CPU, and CPU fanout then spreads nothing (measured: the second
// queue got no packet); the flow hash spreads flows and keeps each in order.
func (b *builder) queue(num, total int, native bool) *builder {
	return b.queueFlags(num, total, native, queueBypass)
}

func (b *builder) queueFlags(num, total int, native bool, flags uint16) *builder {
	text := fmt.Sprintf("queue num %d", num)
	if total > 1 {
		text = fmt.Sprintf("queue num %d-%d", num, num+total-1)
	}
	if flags&queueBypass != 0 {
		text += " bypass"
	}
	if native {
		return b.add(text, &expr.Queue{Num: uint16(num), Total: uint16(total), Flag: expr.QueueFlag(flags)})
	}
	return b.add(text, &expr.Target{Name: "NFQUEUE", Rev: 3, Info: nfqInfoV3(uint16(num), uint16(total), flags)})
}

// nfqInfoV3 is struct xt_NFQ_info_v3 {u16 queuenum; u16 queues_total; u16
// flags;} in host byte order, padded to 8 bytes.
func nfqInfoV3(num, total, flags uint16) *xt.Unknown {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint16(b[0:], num)
	binary.NativeEndian.PutUint16(b[2:], total)
	binary.NativeEndian.PutUint16(b[4:], flags)
	x := xt.Unknown(b)
	return &x
}

// log: `log group 0 snaplen 128 queue-threshold 8`.
func (b *builder) log(group, snaplen, threshold int) *builder {
	key := uint32(1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_QTHRESHOLD)
	text := fmt.Sprintf("log group %d", group)
	if snaplen > 0 {
		key |= 1 << unix.NFTA_LOG_SNAPLEN
		text += fmt.Sprintf(" snaplen %d", snaplen)
	}
	text += fmt.Sprintf(" queue-threshold %d", threshold)
	return b.add(text, &expr.Log{Key: key, Group: uint16(group), Snaplen: uint32(snaplen), QThreshold: uint16(threshold)})
}

// markHton converts the host-order mark to network order so that a range
// (compared bytewise by the kernel) orders it numerically, as nft does.
func markHton() *expr.Byteorder {
	return &expr.Byteorder{SourceRegister: reg, DestRegister: reg, Op: expr.ByteorderHton, Len: 4, Size: 4}
}

// notrackMarks: `meta mark & 0x000000ff == 0x00000080 notrack` — copies stay
// out of conntrack.
func (b *builder) notrackMarks(mask, lo, hi uint32) *builder {
	load := &expr.Meta{Key: expr.MetaKeyMARK, Register: reg}
	and := &expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4,
		Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)}
	if lo == hi {
		return b.add(fmt.Sprintf("meta mark & 0x%08x == 0x%08x notrack", mask, lo), load, and,
			cmpEq(binaryutil.NativeEndian.PutUint32(lo)), &expr.Notrack{})
	}
	return b.add(fmt.Sprintf("meta mark & 0x%08x 0x%08x-0x%08x notrack", mask, lo, hi), load, and, markHton(),
		&expr.Range{Op: expr.CmpOpEq, Register: reg,
			FromData: binaryutil.BigEndian.PutUint32(lo), ToData: binaryutil.BigEndian.PutUint32(hi)},
		&expr.Notrack{})
}
