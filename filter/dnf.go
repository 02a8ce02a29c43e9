package filter

import (
	"fmt"
	"sort"
	"strings"
)

// MaxTerms bounds the rules one expression may become.
const MaxTerms = 256

// Term is a conjunction of literals: one rule. An empty Term matches every
// packet.
type Term []Lit

func (t Term) String() string {
	parts := make([]string, len(t))
	for i, l := range t {
		parts[i] = l.String()
	}
	return strings.Join(parts, " && ")
}

// Terms lowers the expression to a disjunction of Terms for a table of
// family fam (4: only IPv4 packets reach it, 6: only IPv6, 0: both and
// others): the packet matches the expression iff it matches one Term. Every
// Addr literal in a Term comes with its Family, every Port literal with its
// Proto (their guards), so each can be loaded; a negated Addr or Port
// literal means "the guard holds and the value differs" — a packet without
// the guard matches the negation through another Term. Terms that cannot
// match are left out; none left: nothing matches.
func (e *Expr) Terms(fam uint8) ([]Term, error) {
	ts, err := dnf(e.root, false)
	if err != nil {
		return nil, err
	}
	var out []Term
	seen := map[string]bool{}
	for _, t := range ts {
		t, ok := t.specialize(fam)
		if !ok {
			continue
		}
		if k := t.String(); !seen[k] {
			seen[k] = true
			out = append(out, t)
		}
	}
	return out, nil
}

func tooMany(n int) error {
	return &Error{"", fmt.Sprintf("expands to more than %d rules (%d): write it with fewer alternatives", MaxTerms, n)}
}

// dnf returns the terms of n (negated if neg).
func dnf(n *node, neg bool) ([]Term, error) {
	switch n.op {
	case 'l':
		return litTerms(n.lit, neg), nil
	case '!':
		return dnf(n.l, !neg)
	}
	a, err := dnf(n.l, neg)
	if err != nil {
		return nil, err
	}
	b, err := dnf(n.r, neg)
	if err != nil {
		return nil, err
	}
	if (n.op == '|') != neg { // a or b; not (a and b)
		if len(a)+len(b) > MaxTerms {
			return nil, tooMany(len(a) + len(b))
		}
		return append(a, b...), nil
	}
	// a and b; not (a or b): every pair
	var out []Term
	for _, x := range a {
		for _, y := range b {
			if t, ok := conj(x, y); ok {
				out = append(out, t)
				if len(out) > MaxTerms {
					return nil, tooMany(len(out))
				}
			}
		}
	}
	return out, nil
}

// litTerms: a literal with its guard, or its negation: the guard fails, or
// it holds and the test fails.
func litTerms(l Lit, neg bool) []Term {
	g, guarded := l.Guard()
	switch {
	case !guarded:
		l.Neg = neg
		return []Term{{l}}
	case !neg:
		return []Term{{g, l}}
	}
	ng := g
	ng.Neg = true
	l.Neg = true
	return []Term{{ng}, {g, l}}
}

// conj joins two terms; ok is false when they contradict each other.
func conj(a, b Term) (Term, bool) {
	t := append(append(Term{}, a...), b...)
	return t.normalize()
}

// normalize sorts and de-duplicates the literals, drops what another
// implies, and reports false for a contradiction.
func (t Term) normalize() (Term, bool) {
	famPos, protoPos := uint8(0), -1
	famNeg := map[uint8]bool{}
	protoNeg := map[uint8]bool{}
	seen := map[Lit]bool{}
	var out Term
	for _, l := range t {
		if seen[l] {
			continue
		}
		seen[l] = true
		if seen[opposite(l)] {
			return nil, false
		}
		switch {
		case l.Kind == Family && !l.Neg:
			if famPos != 0 && famPos != l.Fam {
				return nil, false
			}
			famPos = l.Fam
		case l.Kind == Family:
			famNeg[l.Fam] = true
		case l.Kind == Proto && !l.Neg:
			if protoPos >= 0 && protoPos != int(l.Num) {
				return nil, false
			}
			protoPos = int(l.Num)
		case l.Kind == Proto:
			protoNeg[l.Num] = true
		}
		out = append(out, l)
	}
	if famPos != 0 && famNeg[famPos] || protoPos >= 0 && protoNeg[uint8(protoPos)] {
		return nil, false
	}
	// No pruning by family and protocol number: "ip proto 58" is an IPv4
	// packet carrying protocol 58, which tcpdump and nft's meta l4proto
	// both match (icmp and icmp6 bring their family literal with them).
	// Implied: "not ipv6" when ipv4 is required, "proto != udp" when tcp is.
	kept := out[:0]
	for _, l := range out {
		if l.Kind == Family && l.Neg && famPos != 0 || l.Kind == Proto && l.Neg && protoPos >= 0 {
			continue
		}
		kept = append(kept, l)
	}
	sort.SliceStable(kept, func(i, j int) bool { return litLess(kept[i], kept[j]) })
	return kept, true
}

func opposite(l Lit) Lit {
	l.Neg = !l.Neg
	return l
}

// litLess orders literals as a rule needs them: family, protocol, then
// addresses and ports (each after its guard).
func litLess(a, b Lit) bool {
	if a.Kind != b.Kind {
		return a.Kind < b.Kind
	}
	if a.Field != b.Field {
		return a.Field < b.Field
	}
	return a.String() < b.String()
}

// specialize drops what the table's family decides (fam 4: ipv4 is true,
// ipv6 false) and checks the term again.
func (t Term) specialize(fam uint8) (Term, bool) {
	if fam == 0 {
		return t, true
	}
	var out Term
	for _, l := range t {
		if l.Kind != Family {
			out = append(out, l)
			continue
		}
		if (l.Fam == fam) == l.Neg {
			return nil, false // "ipv4 no" in an ip table, "ipv6 yes" in it
		}
	}
	return out.normalize()
}
