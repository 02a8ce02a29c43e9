package filter

import "net/netip"

// Packet is what the tests of an expression look at; Eval uses it to check
// the lowering (tests, fuzzing) and to describe semantics, never on a
// data path.
type Packet struct {
	Fam      uint8 // 4, 6 or 0 (not IP)
	Proto    uint8
	Src, Dst netip.Addr
	SPort    uint16 // for protocols with ports (a first fragment or whole packet)
	DPort    uint16
}

// test evaluates a literal's test without its negation, guard included.
func (l Lit) test(p Packet) bool {
	switch l.Kind {
	case Family:
		return p.Fam == l.Fam
	case Proto:
		return p.Fam != 0 && p.Proto == l.Num
	case Addr:
		if g, _ := l.Guard(); !g.test(p) {
			return false
		}
		a := p.Src
		if l.Field == Dst {
			a = p.Dst
		}
		return l.Prefix.Contains(a)
	case Port:
		if p.Fam == 0 || p.Proto != l.Num {
			return false
		}
		v := p.SPort
		if l.Field == Dst {
			v = p.DPort
		}
		return v >= l.Lo && v <= l.Hi
	}
	return false
}

// Eval is the expression's meaning, straight from the parsed formula.
func (e *Expr) Eval(p Packet) bool { return eval(e.root, p) }

func eval(n *node, p Packet) bool {
	switch n.op {
	case 'l':
		return n.lit.test(p) != n.lit.Neg
	case '!':
		return !eval(n.l, p)
	case '&':
		return eval(n.l, p) && eval(n.r, p)
	}
	return eval(n.l, p) || eval(n.r, p)
}

// Match evaluates a Term as the kernel does: every literal holds (a negated
// Addr or Port literal: its guard holds and the value differs — the term
// carries the guard).
func (t Term) Match(p Packet) bool {
	for _, l := range t {
		ok := l.test(p)
		if l.Neg {
			if g, guarded := l.Guard(); guarded {
				ok = g.test(p) && !ok
			} else {
				ok = !ok
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
