package rules

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/filter"
)

// filterFamily is the family of packets a table sees (0: both and others).
func filterFamily(fam nftables.TableFamily) uint8 {
	switch fam {
	case nftables.TableFamilyIPv4:
		return 4
	case nftables.TableFamilyIPv6:
		return 6
	}
	return 0
}

// filterTerm compiles one conjunction of a session's filter expression:
// each literal one comparison, equal or not equal. The Term carries the
// guard of each address and port test before it (filter.Term), so every
// load is valid; the guard is hidden in the text where nft hides it
// (`tcp dport != 80` is `meta l4proto tcp` and the port).
func (b *builder) filterTerm(t filter.Term) *builder {
	for i, l := range t {
		hidden := false
		for _, m := range t[i+1:] {
			if g, ok := m.Guard(); ok && g == l {
				hidden = true
			}
			// nft lists `meta l4proto ipv6-icmp` (icmp) without the
			// family it implies.
			if l.Kind == filter.Family && !l.Neg && m.Kind == filter.Proto && !m.Neg &&
				(l.Fam == 6 && m.Num == 58 || l.Fam == 4 && m.Num == 1) {
				hidden = true
			}
		}
		switch l.Kind {
		case filter.Family:
			b.filterFamily(l, hidden)
		case filter.Proto:
			b.filterProto(l, hidden)
		case filter.Addr:
			b.filterAddr(l)
		case filter.Port:
			b.filterPort(l)
		}
	}
	return b
}

func cmpOp(neg bool) (expr.CmpOp, string) {
	if neg {
		return expr.CmpOpNeq, "!= "
	}
	return expr.CmpOpEq, ""
}

// filterFamily: `meta protocol ip` (netdev) or `meta nfproto ipv4` (inet).
func (b *builder) filterFamily(l filter.Lit, hidden bool) {
	op, ops := cmpOp(l.Neg)
	if b.fam == nftables.TableFamilyNetdev {
		et, name := uint16(unix.ETH_P_IP), "ip"
		if l.Fam == 6 {
			et, name = unix.ETH_P_IPV6, "ip6"
		}
		text := "meta protocol " + ops + name
		if hidden {
			text = ""
		}
		b.add(text, &expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: reg},
			&expr.Cmp{Op: op, Register: reg, Data: binaryutil.BigEndian.PutUint16(et)})
		return
	}
	p, name := byte(unix.NFPROTO_IPV4), "ipv4"
	if l.Fam == 6 {
		p, name = unix.NFPROTO_IPV6, "ipv6"
	}
	text := "meta nfproto " + ops + name
	if hidden {
		text = ""
	}
	b.add(text, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg}, &expr.Cmp{Op: op, Register: reg, Data: []byte{p}})
}

// filterProto: `meta l4proto tcp`, `meta l4proto != udp`.
func (b *builder) filterProto(l filter.Lit, hidden bool) {
	op, ops := cmpOp(l.Neg)
	name, ok := protoNames[l.Num]
	if !ok {
		name = fmt.Sprint(l.Num)
	}
	text := "meta l4proto " + ops + name
	if hidden {
		text = ""
	}
	b.add(text, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg}, &expr.Cmp{Op: op, Register: reg, Data: []byte{l.Num}})
}

// filterAddr: `ip saddr 10.0.0.0/8`, `ip6 daddr != fd00::1`.
func (b *builder) filterAddr(l filter.Lit) {
	p := l.Prefix
	v6 := p.Addr().Is6()
	off, size, kw := uint32(12), uint32(4), "ip"
	if v6 {
		off, size, kw = 8, 16, "ip6"
	}
	field := "saddr"
	if l.Field == filter.Dst {
		off += size
		field = "daddr"
	}
	op, ops := cmpOp(l.Neg)
	val := p.String()
	if p.IsSingleIP() {
		val = p.Addr().String()
	}
	es := []expr.Any{&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size}}
	if !p.IsSingleIP() {
		mask := make([]byte, size)
		for i := 0; i < p.Bits(); i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		es = append(es, &expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: size, Mask: mask, Xor: make([]byte, size)})
	}
	es = append(es, &expr.Cmp{Op: op, Register: reg, Data: p.Masked().Addr().AsSlice()})
	b.add(fmt.Sprintf("%s %s %s%s", kw, field, ops, val), es...)
}

// filterPort: `tcp dport 80`, `udp sport != 1-1023`.
func (b *builder) filterPort(l filter.Lit) {
	off, field := uint32(0), "sport"
	if l.Field == filter.Dst {
		off, field = 2, "dport"
	}
	op, ops := cmpOp(l.Neg)
	be := binaryutil.BigEndian.PutUint16
	load := &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2}
	kw := fmt.Sprintf("%s %s %s", protoNames[l.Num], field, ops)
	r := config.PortRange{Lo: l.Lo, Hi: l.Hi}
	if l.Lo == l.Hi {
		b.add(kw+r.String(), load, &expr.Cmp{Op: op, Register: reg, Data: be(l.Lo)})
		return
	}
	b.add(kw+r.String(), load, &expr.Range{Op: op, Register: reg, FromData: be(l.Lo), ToData: be(l.Hi)})
}
