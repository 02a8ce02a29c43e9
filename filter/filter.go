// Package filter parses the common grammar of tcpdump's filter expressions
// (pcap-filter(7)) and lowers it to a disjunction of conjunctions of tests
// nftables can make: the address family, the IP protocol, an address
// against a prefix, a port against a range — each one equal or not equal.
// The rules compiler turns each conjunction into one rule. Pure: no host,
// no kernel.
//
// Supported: host, net (CIDR), port, portrange, with src or dst and with
// the qualifiers ip, ip6 (host, net) and tcp, udp, sctp (port, portrange);
// the protocols ip, ip6, tcp, udp, sctp, icmp, icmp6 and `[ip|ip6] proto N`;
// and, or, not (&&, ||, !) and parentheses; a bare value after and/or keeps
// the qualifiers before it (`port 80 or 443`). As in tcpdump, `and` and
// `or` have the same precedence and group from the left, and a port
// without a protocol is TCP, UDP or SCTP. Anything else — names to look
// up, arp, ether, vlan, byte offsets — is refused naming the token.
package filter

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Kind is what a literal tests.
type Kind uint8

// Literal kinds. Family and Proto can be tested on any packet; Addr needs
// the packet to be of the prefix's family, Port needs its protocol (their
// guard: see Guard).
const (
	Family Kind = iota + 1 // IP version: Fam
	Proto                  // IP protocol (meta l4proto): Num
	Addr                   // Field address in Prefix (Fam from Prefix)
	Port                   // Field port in Lo-Hi of protocol Num
)

// Field is the source or destination.
type Field uint8

// Fields.
const (
	Src Field = iota + 1
	Dst
)

func (f Field) String() string {
	if f == Src {
		return "src"
	}
	return "dst"
}

// Lit is one test, or its negation.
type Lit struct {
	Kind   Kind
	Neg    bool
	Fam    uint8 // Family: 4 or 6
	Num    uint8 // Proto, Port: the IP protocol
	Field  Field // Addr, Port
	Prefix netip.Prefix
	Lo, Hi uint16 // Port
}

// Guard is the test a literal needs to be true before it can be evaluated
// (an address needs its family, a port its protocol); ok is false for
// literals that need none.
func (l Lit) Guard() (Lit, bool) {
	switch l.Kind {
	case Addr:
		f := uint8(4)
		if l.Prefix.Addr().Is6() {
			f = 6
		}
		return Lit{Kind: Family, Fam: f}, true
	case Port:
		return Lit{Kind: Proto, Num: l.Num}, true
	}
	return Lit{}, false
}

func (l Lit) String() string {
	op := "=="
	if l.Neg {
		op = "!="
	}
	switch l.Kind {
	case Family:
		return fmt.Sprintf("ipv%d %s", l.Fam, map[bool]string{false: "yes", true: "no"}[l.Neg])
	case Proto:
		return fmt.Sprintf("proto %s %d", op, l.Num)
	case Addr:
		return fmt.Sprintf("%s %s %s", l.Field, op, l.Prefix)
	case Port:
		return fmt.Sprintf("%s %s %s %d-%d", ProtoName(l.Num), l.Field.String()+"port", op, l.Lo, l.Hi)
	}
	return "?"
}

// ProtoName names the IP protocols of the grammar.
func ProtoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 58:
		return "icmp6"
	case 132:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// Expr is a parsed filter expression.
type Expr struct {
	src  string
	root *node
}

// String is the expression as given.
func (e *Expr) String() string { return e.src }

// node of the boolean formula.
type node struct {
	op   byte // 'l' literal, '&', '|', '!'
	lit  Lit
	l, r *node
}

func lit(l Lit) *node         { return &node{op: 'l', lit: l} }
func and(a, b *node) *node    { return &node{op: '&', l: a, r: b} }
func or(a, b *node) *node     { return &node{op: '|', l: a, r: b} }
func not(a *node) *node       { return &node{op: '!', l: a} }
func orAll(ns ...*node) *node { return fold(or, ns) }

func fold(f func(a, b *node) *node, ns []*node) *node {
	out := ns[0]
	for _, n := range ns[1:] {
		out = f(out, n)
	}
	return out
}

// Error is a parse error: the token that is wrong and why.
type Error struct {
	Token string // "" at the end of the expression
	Msg   string
}

func (e *Error) Error() string {
	if e.Token == "" {
		return "filter expression: " + e.Msg
	}
	return fmt.Sprintf("filter expression: %q: %s", e.Token, e.Msg)
}

// Parse parses a tcpdump filter expression; "" (or blanks) gives nil: no
// filter.
func Parse(s string) (*Expr, error) {
	toks, err := tokenize(s)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, nil
	}
	p := &parser{toks: toks}
	n, err := p.expr()
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.toks) {
		return nil, &Error{p.toks[p.pos], "unexpected here (missing and/or?)"}
	}
	return &Expr{src: strings.Join(toks, " "), root: n}, nil
}

func tokenize(s string) ([]string, error) {
	var out []string
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')':
			out = append(out, string(c))
			i++
		case c == '!' && (i+1 >= len(s) || s[i+1] != '='):
			out = append(out, "!")
			i++
		case strings.HasPrefix(s[i:], "&&"), strings.HasPrefix(s[i:], "||"):
			out = append(out, s[i:i+2])
			i += 2
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\n\r()", rune(s[j])) && !strings.HasPrefix(s[j:], "&&") && !strings.HasPrefix(s[j:], "||") {
				j++
			}
			if j == i { // a lone '&' or '|' or "!="
				j = i + 1
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	if len(out) > 4096 {
		return nil, &Error{"", fmt.Sprintf("%d tokens: too long", len(out))}
	}
	return out, nil
}

// qual are the qualifiers of a primitive, kept for bare values after
// and/or (`port 80 or 443`).
type qual struct {
	proto string // ip, ip6, tcp, udp, sctp or ""
	dir   string // src, dst or ""
	typ   string // host, net, port, portrange
}

type parser struct {
	toks  []string
	pos   int
	last  *qual
	depth int
}

func (p *parser) peek() string {
	if p.pos < len(p.toks) {
		return strings.ToLower(p.toks[p.pos])
	}
	return ""
}

func (p *parser) next() string {
	t := p.peek()
	p.pos++
	return t
}

// expr: unary { (and|or) unary }, left to right, and and or alike.
func (p *parser) expr() (*node, error) {
	n, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		switch p.peek() {
		case "and", "&&":
			p.next()
			m, err := p.unary()
			if err != nil {
				return nil, err
			}
			n = and(n, m)
		case "or", "||":
			p.next()
			m, err := p.unary()
			if err != nil {
				return nil, err
			}
			n = or(n, m)
		default:
			return n, nil
		}
	}
}

func (p *parser) unary() (*node, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > 200 {
		return nil, &Error{p.peek(), "nested too deep"}
	}
	switch t := p.peek(); t {
	case "":
		return nil, &Error{"", "ends where a test is expected"}
	case "not", "!":
		p.next()
		n, err := p.unary()
		if err != nil {
			return nil, err
		}
		return not(n), nil
	case "(":
		p.next()
		n, err := p.expr()
		if err != nil {
			return nil, err
		}
		if p.next() != ")" {
			return nil, &Error{"(", "has no matching )"}
		}
		return n, nil
	case ")", "and", "or", "&&", "||":
		return nil, &Error{p.toks[p.pos], "unexpected here (a test is expected)"}
	}
	return p.primitive()
}

var (
	protoQuals = map[string]bool{"ip": true, "ip6": true, "tcp": true, "udp": true, "sctp": true}
	types      = map[string]bool{"host": true, "net": true, "port": true, "portrange": true}
	protoNums  = map[string]uint8{"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmp6": 58}
	// tcpdump keywords nfclone does not translate: named so the error says
	// what is not supported rather than "not an address".
	unsupported = map[string]string{
		"arp": "nfclone captures IP packets only", "rarp": "nfclone captures IP packets only",
		"ether": "link-layer matches are not supported", "vlan": "not supported in an expression (a session's rules have vlan)",
		"mpls": "not supported", "pppoed": "not supported", "pppoes": "not supported", "geneve": "not supported",
		"gateway": "not supported", "broadcast": "not supported", "multicast": "not supported",
		"less": "length tests are not supported", "greater": "length tests are not supported", "len": "length tests are not supported",
		"inbound": "use --direction ingress", "outbound": "use --direction egress",
		"mask": "write the network as a CIDR: net 10.0.0.0/8", "protochain": "not supported",
		"igmp": "use proto 2", "igrp": "not supported", "pim": "use proto 103", "vrrp": "use proto 112", "ah": "use proto 51", "esp": "use proto 50",
		"decnet": "not supported", "atalk": "not supported", "iso": "not supported", "stp": "not supported", "ipx": "not supported", "netbeui": "not supported",
		"wlan": "not supported", "type": "not supported", "subtype": "not supported", "dir": "not supported",
		"ra": "not supported", "ta": "not supported", "addr1": "not supported",
	}
)

func (p *parser) primitive() (*node, error) {
	start := p.pos
	var q qual
	t := p.peek()
	if msg, bad := unsupported[t]; bad {
		return nil, &Error{p.toks[p.pos], "is not supported: " + msg}
	}
	if strings.ContainsAny(t, "[]") {
		return nil, &Error{p.toks[p.pos], "byte-offset tests are not supported"}
	}
	if protoQuals[t] {
		q.proto = p.next()
	}
	if t := p.peek(); t == "src" || t == "dst" {
		q.dir = p.next()
	}
	switch t := p.peek(); {
	case types[t]:
		q.typ = p.next()
	case t == "proto":
		p.next()
		return p.protoNum(q)
	}
	if q.typ == "" {
		switch {
		case q.proto == "" && q.dir == "" && (t == "icmp" || t == "icmp6"):
			p.next()
			if t == "icmp" {
				return and(lit(Lit{Kind: Family, Fam: 4}), lit(Lit{Kind: Proto, Num: 1})), nil
			}
			return and(lit(Lit{Kind: Family, Fam: 6}), lit(Lit{Kind: Proto, Num: 58})), nil
		case q.proto != "" && q.dir == "":
			// A protocol alone: ip, ip6, tcp, udp, sctp.
			switch q.proto {
			case "ip":
				return lit(Lit{Kind: Family, Fam: 4}), nil
			case "ip6":
				return lit(Lit{Kind: Family, Fam: 6}), nil
			}
			return lit(Lit{Kind: Proto, Num: protoNums[q.proto]}), nil
		case q.dir != "":
			q.typ = "host" // src 10.0.0.1
		case p.last != nil && q.proto == "" && isValue(t):
			q = *p.last // port 80 or 443
		case isAddr(t):
			q.typ = "host"
		default:
			p.pos = start
			tok := p.toks[p.pos]
			if _, err := strconv.Atoi(tok); err == nil {
				return nil, &Error{tok, "a bare number: say port " + tok + " or proto " + tok}
			}
			return nil, &Error{tok, "is not a test nfclone knows (host, net, port, portrange, src, dst, ip, ip6, tcp, udp, sctp, icmp, icmp6, proto, and, or, not)"}
		}
	}
	p.last = &q
	return p.value(q)
}

func isValue(t string) bool {
	if isAddr(t) {
		return true
	}
	if _, err := strconv.Atoi(t); err == nil {
		return true
	}
	lo, hi, ok := strings.Cut(t, "-")
	if ok {
		_, e1 := strconv.Atoi(lo)
		_, e2 := strconv.Atoi(hi)
		return e1 == nil && e2 == nil
	}
	return false
}

func isAddr(t string) bool {
	if _, err := netip.ParseAddr(t); err == nil {
		return true
	}
	_, err := netip.ParsePrefix(t)
	return err == nil
}

// protoNum: `[ip|ip6] proto N` (a number, or \tcp, \udp, ... as tcpdump).
func (p *parser) protoNum(q qual) (*node, error) {
	if q.dir != "" || q.proto == "tcp" || q.proto == "udp" || q.proto == "sctp" {
		return nil, &Error{"proto", "only after ip or ip6"}
	}
	t := p.next()
	if t == "" {
		return nil, &Error{"proto", "needs a number"}
	}
	var num uint8
	if n, ok := protoNums[strings.TrimPrefix(t, "\\")]; ok {
		num = n
	} else if n, err := strconv.Atoi(t); err == nil && n >= 0 && n <= 255 {
		num = uint8(n)
	} else {
		return nil, &Error{p.toks[p.pos-1], "is not a protocol number 0-255 (or \\tcp, \\udp, \\icmp, \\icmp6, \\sctp)"}
	}
	n := lit(Lit{Kind: Proto, Num: num})
	switch q.proto {
	case "ip":
		n = and(lit(Lit{Kind: Family, Fam: 4}), n)
	case "ip6":
		n = and(lit(Lit{Kind: Family, Fam: 6}), n)
	}
	return n, nil
}

func (p *parser) value(q qual) (*node, error) {
	tok := ""
	if p.pos < len(p.toks) {
		tok = p.toks[p.pos]
	}
	p.pos++
	if tok == "" || tok == "(" || tok == ")" {
		return nil, &Error{tok, fmt.Sprintf("%s needs a value", q.typ)}
	}
	fields := []Field{Src, Dst}
	switch q.dir {
	case "src":
		fields = []Field{Src}
	case "dst":
		fields = []Field{Dst}
	}
	switch q.typ {
	case "host", "net":
		if q.proto != "" && q.proto != "ip" && q.proto != "ip6" {
			return nil, &Error{q.proto, fmt.Sprintf("does not go with %s (only ip or ip6 do)", q.typ)}
		}
		var pfx netip.Prefix
		if q.typ == "host" {
			a, err := netip.ParseAddr(tok)
			if err != nil || a.Zone() != "" {
				if _, perr := netip.ParsePrefix(tok); perr == nil {
					return nil, &Error{tok, "is a network: say net " + tok}
				}
				return nil, &Error{tok, "is not an IP address (names are not looked up)"}
			}
			a = a.Unmap()
			pfx = netip.PrefixFrom(a, a.BitLen())
		} else {
			var err error
			if pfx, err = netip.ParsePrefix(tok); err != nil {
				if a, aerr := netip.ParseAddr(tok); aerr == nil {
					pfx = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
				} else {
					return nil, &Error{tok, "is not a network like 10.0.0.0/8 or fd00::/8"}
				}
			}
			if pfx.Masked() != pfx {
				// As tcpdump: "non-network bits set".
				return nil, &Error{tok, fmt.Sprintf("has host bits set (the network is %s)", pfx.Masked())}
			}
		}
		fam := uint8(4)
		if pfx.Addr().Is6() {
			fam = 6
		}
		if q.proto == "ip" && fam == 6 || q.proto == "ip6" && fam == 4 {
			return nil, &Error{tok, fmt.Sprintf("is IPv%d, not %s", fam, q.proto)}
		}
		var ns []*node
		for _, f := range fields {
			ns = append(ns, lit(Lit{Kind: Addr, Field: f, Prefix: pfx}))
		}
		return orAll(ns...), nil
	}
	// port, portrange
	if q.proto == "ip" || q.proto == "ip6" {
		return nil, &Error{q.proto, fmt.Sprintf("does not go with %s (tcp, udp or sctp do)", q.typ)}
	}
	lo, hi, err := ports(tok, q.typ == "portrange")
	if err != nil {
		return nil, err
	}
	protos := []uint8{6, 17, 132}
	if q.proto != "" {
		protos = []uint8{protoNums[q.proto]}
	}
	var ns []*node
	for _, pr := range protos {
		for _, f := range fields {
			ns = append(ns, lit(Lit{Kind: Port, Num: pr, Field: f, Lo: lo, Hi: hi}))
		}
	}
	return orAll(ns...), nil
}

func ports(tok string, isRange bool) (lo, hi uint16, err error) {
	one := func(s string) (uint16, error) {
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, &Error{tok, "is not a port number (names are not looked up)"}
		}
		if n < 0 || n > 65535 {
			return 0, &Error{tok, "is out of range 0-65535"}
		}
		return uint16(n), nil
	}
	a, b, dash := strings.Cut(tok, "-")
	if !isRange {
		if dash {
			return 0, 0, &Error{tok, "is a range: say portrange " + tok}
		}
		lo, err = one(tok)
		return lo, lo, err
	}
	if !dash {
		return 0, 0, &Error{tok, "is not a range like 1024-65535"}
	}
	if lo, err = one(a); err != nil {
		return 0, 0, err
	}
	if hi, err = one(b); err != nil {
		return 0, 0, err
	}
	if hi < lo {
		lo, hi = hi, lo // as tcpdump
	}
	return lo, hi, nil
}
