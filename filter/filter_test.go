package filter

import (
	"math/rand"
	"net/netip"
	"strings"
	"testing"
)

func terms(t *testing.T, expr string, fam uint8) []string {
	t.Helper()
	e, err := Parse(expr)
	if err != nil {
		t.Fatalf("%q: %v", expr, err)
	}
	ts, err := e.Terms(fam)
	if err != nil {
		t.Fatalf("%q: %v", expr, err)
	}
	out := make([]string, len(ts))
	for i, x := range ts {
		out[i] = x.String()
	}
	return out
}

func TestLowering(t *testing.T) {
	for _, tc := range []struct {
		expr string
		fam  uint8
		want string
	}{
		{"tcp port 7777 and host 10.77.5.2", 4, "proto == 6 && src == 10.77.5.2/32 && tcp srcport == 7777-7777 | " +
			"proto == 6 && dst == 10.77.5.2/32 && tcp srcport == 7777-7777 | " +
			"proto == 6 && src == 10.77.5.2/32 && tcp dstport == 7777-7777 | " +
			"proto == 6 && dst == 10.77.5.2/32 && tcp dstport == 7777-7777"},
		{"tcp port 7777 and host 10.77.5.2", 6, ""},
		{"port 53", 0, "proto == 6 && tcp srcport == 53-53 | proto == 6 && tcp dstport == 53-53 | proto == 17 && udp srcport == 53-53 | " +
			"proto == 17 && udp dstport == 53-53 | proto == 132 && sctp srcport == 53-53 | proto == 132 && sctp dstport == 53-53"},
		{"not host 10.0.0.1", 4, "src != 10.0.0.1/32 && dst != 10.0.0.1/32"},
		{"not host 10.0.0.1", 0, "ipv4 no | ipv4 yes && src != 10.0.0.1/32 && dst != 10.0.0.1/32"},
		{"icmp or icmp6", 6, "proto == 58"},
		{"ip", 6, ""},
		{"ip", 4, ""}, // an empty term: everything
		{"udp and not dst portrange 1-1023", 4, "proto == 17 && udp dstport != 1-1023"},
		{"src net 10.0.0.0/8 and dst 10.1.2.3", 4, "src == 10.0.0.0/8 && dst == 10.1.2.3/32"},
		{"tcp dst port 21 or 22", 4, "proto == 6 && tcp dstport == 21-21 | proto == 6 && tcp dstport == 22-22"},
		{"host 10.0.0.1 and (port 80 or 443) and not udp", 4,
			"proto == 6 && src == 10.0.0.1/32 && tcp srcport == 80-80 | proto == 6 && src == 10.0.0.1/32 && tcp dstport == 80-80 | " +
				"proto == 132 && src == 10.0.0.1/32 && sctp srcport == 80-80 | proto == 132 && src == 10.0.0.1/32 && sctp dstport == 80-80 | " +
				"proto == 6 && src == 10.0.0.1/32 && tcp srcport == 443-443 | proto == 6 && src == 10.0.0.1/32 && tcp dstport == 443-443 | " +
				"proto == 132 && src == 10.0.0.1/32 && sctp srcport == 443-443 | proto == 132 && src == 10.0.0.1/32 && sctp dstport == 443-443 | " +
				"proto == 6 && dst == 10.0.0.1/32 && tcp srcport == 80-80 | proto == 6 && dst == 10.0.0.1/32 && tcp dstport == 80-80 | " +
				"proto == 132 && dst == 10.0.0.1/32 && sctp srcport == 80-80 | proto == 132 && dst == 10.0.0.1/32 && sctp dstport == 80-80 | " +
				"proto == 6 && dst == 10.0.0.1/32 && tcp srcport == 443-443 | proto == 6 && dst == 10.0.0.1/32 && tcp dstport == 443-443 | " +
				"proto == 132 && dst == 10.0.0.1/32 && sctp srcport == 443-443 | proto == 132 && dst == 10.0.0.1/32 && sctp dstport == 443-443"},
		{"ip6 proto 58 && ! src fd00::1", 6, "proto == 58 && src != fd00::1/128"},
	} {
		got := strings.Join(terms(t, tc.expr, tc.fam), " | ")
		if got != tc.want {
			t.Errorf("%q (ipv%d):\n got %s\nwant %s", tc.expr, tc.fam, got, tc.want)
		}
	}
}

// As tcpdump: and and or alike, from the left.
func TestPrecedenceAsTcpdump(t *testing.T) {
	e, _ := Parse("icmp or udp and port 53")
	icmp := Packet{Fam: 4, Proto: 1, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2")}
	if e.Eval(icmp) {
		t.Fatal("icmp or udp and port 53 matched ICMP: it is (icmp or udp) and port 53")
	}
}

func TestErrors(t *testing.T) {
	for expr, want := range map[string]string{
		"arp":                     `filter expression: "arp": is not supported: nfclone captures IP packets only`,
		"host example.com":        `filter expression: "example.com": is not an IP address (names are not looked up)`,
		"port http":               `filter expression: "http": is not a port number (names are not looked up)`,
		"tcp port 80 and":         `filter expression: ends where a test is expected`,
		"(tcp":                    `filter expression: "(": has no matching )`,
		"tcp port 80 udp":         `filter expression: "udp": unexpected here (missing and/or?)`,
		"net 10.99.1.5/24":        `filter expression: "10.99.1.5/24": has host bits set (the network is 10.99.1.0/24)`,
		"80":                      `filter expression: "80": a bare number: say port 80 or proto 80`,
		"ether host 1:2:3:4:5:6":  `filter expression: "ether": is not supported: link-layer matches are not supported`,
		"tcp host 10.0.0.1":       `filter expression: "tcp": does not go with host (only ip or ip6 do)`,
		"ip6 host 10.0.0.1":       `filter expression: "10.0.0.1": is IPv4, not ip6`,
		"port 70000":              `filter expression: "70000": is out of range 0-65535`,
		"tcp[13] & 2 != 0":        `filter expression: "tcp[13]": byte-offset tests are not supported`,
		"frobnicate":              `filter expression: "frobnicate": is not a test nfclone knows (host, net, port, portrange, src, dst, ip, ip6, tcp, udp, sctp, icmp, icmp6, proto, and, or, not)`,
		"host 10.0.0.0/8":         `filter expression: "10.0.0.0/8": is a network: say net 10.0.0.0/8`,
		"portrange 80":            `filter expression: "80": is not a range like 1024-65535`,
		"greater 100":             `filter expression: "greater": is not supported: length tests are not supported`,
		"tcp port 80 or (udp))))": `filter expression: ")": unexpected here (missing and/or?)`,
	} {
		_, err := Parse(expr)
		if err == nil || err.Error() != want {
			t.Errorf("%q: got %v\nwant %s", expr, err, want)
		}
	}
	if e, err := Parse("  "); e != nil || err != nil {
		t.Errorf("blank: %v %v", e, err)
	}
}

var (
	addrs4 = []string{"10.77.5.2", "10.77.5.3", "10.0.0.1", "192.0.2.1"}
	addrs6 = []string{"fd77:5::2", "fd00::1", "2001:db8::1"}
	protos = []uint8{1, 6, 17, 58, 132, 47}
	portsL = []uint16{22, 53, 80, 443, 1023, 1024, 7777}
)

func randPacket(r *rand.Rand) Packet {
	p := Packet{Fam: []uint8{0, 4, 4, 6, 6}[r.Intn(5)]}
	if p.Fam == 0 {
		return p
	}
	pool := addrs4
	if p.Fam == 6 {
		pool = addrs6
	}
	p.Src, p.Dst = netip.MustParseAddr(pool[r.Intn(len(pool))]), netip.MustParseAddr(pool[r.Intn(len(pool))])
	p.Proto = protos[r.Intn(len(protos))]
	p.SPort, p.DPort = portsL[r.Intn(len(portsL))], portsL[r.Intn(len(portsL))]
	return p
}

// checkEquivalent: for every packet, the expression matches iff one of the
// terms of the packet's table matches (for netdev: fam 0, all packets).
func checkEquivalent(t *testing.T, e *Expr, r *rand.Rand, n int) {
	t.Helper()
	byFam := map[uint8][]Term{}
	for _, fam := range []uint8{0, 4, 6} {
		ts, err := e.Terms(fam)
		if err != nil {
			return // too many terms: refused, fine
		}
		byFam[fam] = ts
	}
	for i := 0; i < n; i++ {
		p := randPacket(r)
		want := e.Eval(p)
		for _, fam := range []uint8{0, p.Fam} {
			if fam == 0 && p.Fam != 0 && i%2 == 1 {
				continue
			}
			got := false
			for _, tm := range byFam[fam] {
				if tm.Match(p) {
					got = true
					break
				}
			}
			if got != want {
				t.Fatalf("%q on %+v (table ipv%d): terms say %v, the expression %v\nterms: %v", e, p, fam, got, want, byFam[fam])
			}
		}
	}
}

func randExpr(r *rand.Rand, depth int) string {
	atoms := []string{"tcp", "udp", "icmp", "icmp6", "ip", "ip6", "sctp", "host 10.77.5.2", "src host 10.0.0.1",
		"dst net 10.0.0.0/8", "net fd00::/8", "port 80", "tcp dst port 443", "udp src port 53", "portrange 1000-8000",
		"src port 7777", "ip proto 47", "host fd77:5::2", "dst 192.0.2.1", "sctp port 22"}
	if depth == 0 || r.Intn(3) == 0 {
		return atoms[r.Intn(len(atoms))]
	}
	switch r.Intn(4) {
	case 0:
		return "not " + randExpr(r, depth-1)
	case 1:
		return "(" + randExpr(r, depth-1) + ")"
	case 2:
		return randExpr(r, depth-1) + " and " + randExpr(r, depth-1)
	}
	return randExpr(r, depth-1) + " or " + randExpr(r, depth-1)
}

// The lowering is the expression: random expressions on random packets.
func TestLoweringEquivalent(t *testing.T) {
	r := rand.New(rand.NewSource(17))
	for i := 0; i < 2000; i++ {
		s := randExpr(r, 4)
		e, err := Parse(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		checkEquivalent(t, e, r, 200)
	}
}

func FuzzFilter(f *testing.F) {
	for _, s := range []string{"tcp port 7777 and host 10.77.5.2", "not (udp or icmp) and net 10.0.0.0/8",
		"port 80 or 443", "ip6 proto 58", "src 10.0.0.1 && ! dst portrange 1-1023", "((((tcp))))", "tcp[13]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := Parse(s)
		if err != nil || e == nil {
			return
		}
		checkEquivalent(t, e, rand.New(rand.NewSource(int64(len(s)))), 50)
	})
}

// A protocol number the other family usually carries is still matched:
// "ip proto 58" is an IPv4 packet with protocol 58 (ICMPv6's number), as
// tcpdump and nft's meta l4proto see it; the lowering once dropped such a
// term (found by FuzzFilter).
func TestProtoNumberOfTheOtherFamily(t *testing.T) {
	for _, tc := range []struct {
		expr string
		p    Packet
	}{
		{"ip proto 58", Packet{Fam: 4, Proto: 58, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.77.5.2")}},
		{"ip6 proto 1", Packet{Fam: 6, Proto: 1, Src: netip.MustParseAddr("fd77::1"), Dst: netip.MustParseAddr("fd77::2")}},
	} {
		e, err := Parse(tc.expr)
		if err != nil {
			t.Fatal(err)
		}
		if !e.Eval(tc.p) {
			t.Fatalf("%q does not match %+v", tc.expr, tc.p)
		}
		ts, err := e.Terms(tc.p.Fam)
		if err != nil {
			t.Fatal(err)
		}
		matched := false
		for _, tm := range ts {
			matched = matched || tm.Match(tc.p)
		}
		if !matched {
			t.Fatalf("%q: the terms %v do not match %+v", tc.expr, ts, tc.p)
		}
	}
}
