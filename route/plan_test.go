package route

import (
	"encoding/json"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func mustMAC(t testing.TB, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func samplePlan(t testing.TB) Plan {
	return Plan{
		Veths:  []VethPair{{Name: "agg0", Peer: "agg0-rx", Up: true, Promisc: true}},
		VXLANs: []VXLAN{{Name: "nfc-vx0", VNI: 42, Remote: netip.MustParseAddr("10.77.3.2"), Local: netip.MustParseAddr("10.77.2.1"), Device: "e1"}},
		Flags:  []LinkFlag{{Device: "e1", NoARP: true}, {Device: "e2", NoARP: true, Promisc: true}},
		Neighbours: []Neighbour{
			{Device: "e1", Addr: netip.MustParseAddr("10.77.2.2"), MAC: mustMAC(t, "02:00:00:77:02:02")},
			{Device: "e1", Addr: netip.MustParseAddr("fd77::2"), MAC: mustMAC(t, "02:00:00:77:02:02")},
		},
		Routes: []Route{
			{Family: IPv4, Table: 20035, Gateway: netip.MustParseAddr("10.77.2.2"), Device: "e1"},
			{Family: IPv6, Table: 20035, Gateway: netip.MustParseAddr("fd77::2"), Device: "e1"},
		},
		Rules: []PolicyRule{
			{Family: IPv4, Pref: 100, Mark: 0x4e43, Table: 20035},
			{Family: IPv6, Pref: 100, Mark: 0x4e43, Table: 20035},
		},
		MoveLocal: []Family{IPv4, IPv6, IPv4},
	}
}

func TestRenderGolden(t *testing.T) {
	want := `ip link add name agg0 up promisc on type veth peer name agg0-rx promisc on
ip link set agg0 gso_max_segs 1
ethtool -K agg0 tx off
ip link set agg0-rx up
ip link add name nfc-vx0 up type vxlan id 42 remote 10.77.3.2 local 10.77.2.1 dev e1 dstport 4789
ip link set e1 arp off
ip link set e2 arp off promisc on
ip neigh replace 10.77.2.2 lladdr 02:00:00:77:02:02 dev e1 nud permanent
ip neigh replace fd77::2 lladdr 02:00:00:77:02:02 dev e1 nud permanent
ip route add default via 10.77.2.2 dev e1 table 20035
ip -6 route add default via fd77::2 dev e1 table 20035
ip rule add pref 100 fwmark 0x4e43 lookup 20035
ip -6 rule add pref 100 fwmark 0x4e43 lookup 20035
ip rule add pref 1000 lookup local
ip rule del pref 0 lookup local
ip -6 rule add pref 1000 lookup local
ip -6 rule del pref 0 lookup local
`
	p := samplePlan(t)
	if got := p.Render(); got != want {
		t.Errorf("Render() =\n%s\nwant\n%s", got, want)
	}
	if got := p.Render(); got != p.Render() {
		t.Error("Render is not deterministic")
	}
	if (Plan{}).Render() != "" || !(Plan{}).Empty() || p.Empty() {
		t.Error("empty plan handling")
	}
	if err := p.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestValidate(t *testing.T) {
	mac := mustMAC(t, "02:00:00:00:00:01")
	cases := map[string]struct {
		p    Plan
		want string
	}{
		"rule after local": {Plan{Rules: []PolicyRule{{Family: IPv4, Pref: 1000, Mark: 1, Table: 100}}, MoveLocal: []Family{IPv4}}, "pref must be below 1000"},
		"rule pref 0":      {Plan{Rules: []PolicyRule{{Family: IPv4, Pref: 0, Mark: 1, Table: 100}}}, "pref 0 is reserved"},
		"rule mark 0":      {Plan{Rules: []PolicyRule{{Family: IPv4, Pref: 10, Table: 100}}}, "no fwmark and no destination"},
		"to family":        {Plan{Rules: []PolicyRule{{Family: IPv6, Pref: 10, To: netip.MustParsePrefix("169.254.77.1/32"), Table: 100}}}, "not an inet6 prefix"},
		"to host bits":     {Plan{Rules: []PolicyRule{{Family: IPv4, Pref: 10, To: netip.MustParsePrefix("169.254.77.1/24"), Table: 100}}}, "host bits"},
		"main table":       {Plan{Rules: []PolicyRule{{Family: IPv4, Pref: 10, Mark: 1, Table: 254}}}, "table 254 is reserved"},
		"bad family":       {Plan{Rules: []PolicyRule{{Family: 7, Pref: 10, Mark: 1, Table: 100}}}, "invalid address family"},
		"gw family":        {Plan{Routes: []Route{{Family: IPv6, Table: 100, Gateway: netip.MustParseAddr("10.77.0.1"), Device: "e1"}}}, "not an inet6 address"},
		"unspecified gw":   {Plan{Routes: []Route{{Family: IPv4, Table: 100, Gateway: netip.IPv4Unspecified(), Device: "e1"}}}, "gateway missing"},
		"device route":     {Plan{Routes: []Route{{Family: IPv4, Table: 100}}}, "interface name"},
		"bad mac":          {Plan{Neighbours: []Neighbour{{Device: "e1", Addr: netip.MustParseAddr("10.77.0.1"), MAC: mac[:3]}}}, "6-byte MAC"},
		"long name":        {Plan{Veths: []VethPair{{Name: "abcdefghijklmnop", Peer: "x"}}}, "longer than 15"},
		"dup name":         {Plan{Veths: []VethPair{{Name: "a0", Peer: "a0"}}}, "created twice"},
		"vni":              {Plan{VXLANs: []VXLAN{{Name: "v", VNI: 1 << 24, Remote: netip.MustParseAddr("10.77.0.1")}}}, "VNI"},
		"vxlan families":   {Plan{VXLANs: []VXLAN{{Name: "v", VNI: 1, Remote: netip.MustParseAddr("10.77.0.1"), Local: netip.MustParseAddr("fd77::1")}}}, "different families"},
	}
	for name, c := range cases {
		err := c.p.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate() = %v, want error containing %q", name, err, c.want)
		}
	}
}

func TestJournalJSONRoundTrip(t *testing.T) {
	j := Journal{
		{Op: OpLinkCreated, Link: &CreatedLink{Name: "agg0", Index: 7, Kind: "veth", Peer: "agg0-rx", PeerIndex: 6}},
		{Op: OpLinkCreated, Link: &CreatedLink{Name: "nfc-vx0", Index: 8, Kind: "vxlan"}},
		{Op: OpLinkFlags, Flags: &FlagChange{Device: "e1", Index: 3, Mask: 0x80, Before: 0}},
		{Op: OpNeighbour, Neighbour: &NeighChange{Device: "e1", Index: 3, Addr: netip.MustParseAddr("10.77.2.2"), MAC: "02:00:00:00:00:01"}},
		{Op: OpNeighbour, Neighbour: &NeighChange{Device: "e1", Index: 3, Addr: netip.MustParseAddr("fd77::2"), MAC: "02:00:00:00:00:01", Before: &NeighState{MAC: "02:00:00:00:00:09", State: 0x2}}},
		{Op: OpRouteAdded, Route: &Route{Family: IPv4, Table: 20035, Gateway: netip.MustParseAddr("10.77.2.2"), Device: "e1"}},
		{Op: OpRuleAdded, Rule: &PolicyRule{Family: IPv6, Pref: 100, Mark: 0x4e43, Table: 20035}},
		{Op: OpRuleAdded, Rule: &PolicyRule{Family: IPv4, Pref: 101, To: netip.MustParsePrefix("169.254.77.1/32"), Table: 20039}},
		{Op: OpRouteAdded, Route: &Route{Family: IPv4, Table: 20039, Device: "e1"}},
		{Op: OpLocalMoved, Local: &LocalMove{Family: IPv4, AddedPref: true}},
	}
	b, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	var back Journal
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(j, back) {
		t.Errorf("round trip mismatch:\n%#v\n%#v", j, back)
	}
	s := string(b)
	for _, want := range []string{
		`{"op":"rule-added","rule":{"family":"inet6","pref":100,"mark":20035,"table":20035}}`,
		`{"op":"route-added","route":{"family":"inet","table":20035,"gateway":"10.77.2.2","device":"e1"}}`,
		`{"op":"local-moved","local":{"family":"inet","added_pref":true}}`,
		`"before":null`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("JSON %s\nlacks %s", s, want)
		}
	}
	for _, c := range j {
		if strings.HasPrefix(c.String(), "invalid") {
			t.Errorf("String() of %v", c.Op)
		}
	}
	var f Family
	if err := json.Unmarshal([]byte(`"bogus"`), &f); err == nil {
		t.Error("bogus family accepted")
	}
}
