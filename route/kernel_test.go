package route

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// These tests need root. Each one works in a network namespace of its own
// (`ip netns add nfr-<random>`, removed by t.Cleanup) and opens the Kernel
// there with OpenNetNSPath: the host's own rules and links are never
// touched. `ip` is used only to set up the namespace and to check state.

func requireRoot(t *testing.T) {
	t.Helper()
	reason := ""
	if os.Geteuid() != 0 {
		reason = "needs root (network namespaces, rtnetlink writes)"
	} else if _, err := exec.LookPath("ip"); err != nil {
		reason = "needs the ip command to check kernel state"
	}
	if reason == "" {
		return
	}
	if os.Getenv("NFCLONE_E2E") == "1" {
		t.Fatalf("NFCLONE_E2E=1 but %s", reason)
	}
	t.Skip(reason)
}

type netns struct {
	t    *testing.T
	name string
	k    Kernel
}

func (n *netns) ip(args ...string) string {
	n.t.Helper()
	out, err := n.ipErr(args...)
	if err != nil {
		n.t.Fatalf("ip -n %s %s: %v\n%s", n.name, strings.Join(args, " "), err, out)
	}
	return out
}

func (n *netns) ipErr(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput()
	return string(out), err
}

// newNetNS creates a namespace with lo up and two veth pairs:
// e1 (10.77.2.1/24, fd77::1/64) ↔ e1p, and e2 (10.77.3.1/24) ↔ e2p.
func newNetNS(t *testing.T) *netns {
	t.Helper()
	requireRoot(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "nfr-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	n := &netns{t: t, name: name}
	// No IPv6 link-local addresses: they appear asynchronously (DAD) and
	// would make before/after comparisons flaky.
	if out, err := exec.Command("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.default.addr_gen_mode=1").CombinedOutput(); err != nil {
		t.Logf("sysctl addr_gen_mode: %v %s (continuing)", err, out)
	}
	n.ip("link", "set", "lo", "up")
	n.ip("link", "add", "name", "e1", "address", "02:00:00:77:02:01", "type", "veth", "peer", "name", "e1p")
	n.ip("link", "add", "name", "e2", "address", "02:00:00:77:03:01", "type", "veth", "peer", "name", "e2p")
	n.ip("addr", "add", "10.77.2.1/24", "dev", "e1")
	n.ip("-6", "addr", "add", "fd77::1/64", "dev", "e1", "nodad")
	n.ip("addr", "add", "10.77.3.1/24", "dev", "e2")
	for _, d := range []string{"e1", "e1p", "e2", "e2p"} {
		n.ip("link", "set", d, "up")
	}
	k, err := OpenNetNSPath("/run/netns/" + name)
	if err != nil {
		t.Fatalf("OpenNetNSPath: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	n.k = k
	return n
}

var localAt0 = regexp.MustCompile("(?m)^0:\tfrom all lookup local$")

var volatileLink = regexp.MustCompile(` state [A-Z]+|,?LOWER_UP|,?NO-CARRIER|,?M-DOWN`)

// snapshot is the namespace's routing-side state as `ip` shows it.
func (n *netns) snapshot() string {
	n.t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"-4", "rule"}, {"-6", "rule"},
		{"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"},
		{"neigh", "show", "nud", "all"},
		{"-d", "-o", "link"},
	} {
		fmt.Fprintf(&b, "## ip %s\n", strings.Join(args, " "))
		out := n.ip(args...)
		if args[len(args)-1] == "link" {
			out = volatileLink.ReplaceAllString(out, "")
		}
		b.WriteString(out)
	}
	return b.String()
}

func (n *netns) mustContain(what, out string, wants ...string) {
	n.t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			n.t.Errorf("%s: %q not found in:\n%s", what, w, out)
		}
	}
}

func kernelPlan(t testing.TB) Plan {
	return Plan{
		Veths:  []VethPair{{Name: "agg0", Peer: "agg0-rx", Up: true, Promisc: true}},
		VXLANs: []VXLAN{{Name: "nfc-vx0", VNI: 42, Remote: netip.MustParseAddr("10.77.3.2"), Local: netip.MustParseAddr("10.77.2.1"), Device: "e1"}},
		Flags:  []LinkFlag{{Device: "e1", NoARP: true}, {Device: "e2", Promisc: true}},
		Neighbours: []Neighbour{
			{Device: "e2", Addr: netip.MustParseAddr("10.77.3.2"), MAC: mustMAC(t, "02:00:00:77:03:02")},
			{Device: "e2", Addr: netip.MustParseAddr("10.77.3.3"), MAC: mustMAC(t, "02:00:00:77:03:03")},
		},
		Routes: []Route{
			{Family: IPv4, Table: 20035, Gateway: netip.MustParseAddr("10.77.2.2"), Device: "e1"},
			{Family: IPv6, Table: 20035, Gateway: netip.MustParseAddr("fd77::2"), Device: "e1"},
		},
		Rules: []PolicyRule{
			{Family: IPv4, Pref: 100, Mark: 0x4e43, Table: 20035},
			{Family: IPv6, Pref: 100, Mark: 0x80, MarkMask: 0xff, Table: 20035}, // nfclone's field of the mark only
		},
		MoveLocal: []Family{IPv4, IPv6},
	}
}

func TestKernelApplyUndo(t *testing.T) {
	n := newNetNS(t)
	// Foreign state that must survive: a permanent entry nfclone replaces,
	// and a rule at the same pref with more selectors. (One differing from
	// ours only by extra selectors would make the kernel refuse ours with
	// EEXIST: it compares unset selectors as wildcards.)
	n.ip("neigh", "add", "10.77.3.3", "lladdr", "02:00:00:77:03:99", "dev", "e2", "nud", "permanent")
	n.ip("rule", "add", "pref", "100", "from", "10.77.9.0/24", "fwmark", "0x4e44", "lookup", "20035")
	before := n.snapshot()

	j, err := NewApplier(n.k, nil).Apply(kernelPlan(t))
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(j) != 12 {
		t.Errorf("journal: %d entries, want 12: %v", len(j), j)
	}

	n.mustContain("ip rule", n.ip("-4", "rule"),
		"100:\tfrom all fwmark 0x4e43 lookup 20035", "100:\tfrom 10.77.9.0/24 fwmark 0x4e44 lookup 20035", "1000:\tfrom all lookup local")
	n.mustContain("ip -6 rule", n.ip("-6", "rule"), "100:\tfrom all fwmark 0x80/0xff lookup 20035", "1000:\tfrom all lookup local")
	for _, fam := range []string{"-4", "-6"} {
		if out := n.ip(fam, "rule"); localAt0.MatchString(out) {
			t.Errorf("ip %s rule: local rule still at pref 0:\n%s", fam, out)
		}
	}
	n.mustContain("ip route table 20035", n.ip("-4", "route", "show", "table", "20035"), "default via 10.77.2.2 dev e1")
	n.mustContain("ip -6 route table 20035", n.ip("-6", "route", "show", "table", "20035"), "default via fd77::2 dev e1")
	n.mustContain("ip neigh", n.ip("neigh", "show", "dev", "e2"),
		"10.77.3.2 lladdr 02:00:00:77:03:02 PERMANENT", "10.77.3.3 lladdr 02:00:00:77:03:03 PERMANENT")
	n.mustContain("vxlan", n.ip("-d", "link", "show", "nfc-vx0"), ",UP", "vxlan id 42 remote 10.77.3.2 local 10.77.2.1 dev e1", "dstport 4789")
	for _, d := range []string{"agg0", "agg0-rx"} {
		n.mustContain(d, n.ip("-d", "link", "show", d), "PROMISC", ",UP", "veth")
	}
	n.mustContain("e1", n.ip("link", "show", "e1"), "NOARP")
	n.mustContain("e2", n.ip("link", "show", "e2"), "PROMISC")

	// The journal goes through the state file as JSON.
	b, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	var back Journal
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if err := Undo(n.k, back, nil); err != nil {
		t.Fatalf("Undo: %v", err)
	}
	if after := n.snapshot(); after != before {
		t.Fatalf("state after Undo differs.\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if err := Undo(n.k, back, nil); err != nil {
		t.Fatalf("second Undo: %v", err)
	}
	if after := n.snapshot(); after != before {
		t.Fatalf("state after second Undo differs.\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestKernelRollbackOnFailure(t *testing.T) {
	n := newNetNS(t)
	before := n.snapshot()
	p := kernelPlan(t)
	// The second route's device does not exist: links, flags, neighbours
	// and the first route are applied, then everything is rolled back.
	p.Routes[1].Device = "nope0"
	j, err := NewApplier(n.k, nil).Apply(p)
	if err == nil || !strings.Contains(err.Error(), "adding inet6 route default via fd77::2 dev nope0 table 20035") {
		t.Fatalf("Apply = %v", err)
	}
	if j != nil {
		t.Errorf("journal after clean rollback: %v", j)
	}
	if after := n.snapshot(); after != before {
		t.Fatalf("state after rollback differs.\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestKernelRefusesForeignLink(t *testing.T) {
	n := newNetNS(t)
	n.ip("link", "add", "name", "agg0", "type", "veth", "peer", "name", "other0")
	before := n.snapshot()
	_, err := NewApplier(n.k, nil).Apply(Plan{Veths: []VethPair{{Name: "agg0", Peer: "agg0-rx"}}})
	if err == nil || !strings.Contains(err.Error(), "interface agg0 already exists and was not created by nfclone; refusing to touch it") {
		t.Fatalf("Apply = %v", err)
	}
	// A stale journal naming agg0 with another ifindex does not delete it.
	idx, err := LinkIndex(n.k, "agg0")
	if err != nil {
		t.Fatal(err)
	}
	if err := Undo(n.k, Journal{{Op: OpLinkCreated, Link: &CreatedLink{Name: "agg0", Index: idx + 1000, Kind: "veth"}}}, nil); err != nil {
		t.Fatal(err)
	}
	if after := n.snapshot(); after != before {
		t.Fatalf("foreign link touched.\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestKernelLocalAlreadyMoved(t *testing.T) {
	n := newNetNS(t)
	before := n.snapshot()
	// A killed run left the local rule moved.
	for _, fam := range []string{"-4", "-6"} {
		n.ip(fam, "rule", "add", "pref", "1000", "lookup", "local")
		n.ip(fam, "rule", "del", "pref", "0", "lookup", "local")
	}
	j, err := NewApplier(n.k, nil).Apply(Plan{MoveLocal: []Family{IPv4, IPv6}})
	if err != nil || len(j) != 0 {
		t.Fatalf("Apply on an already moved local rule = %v, %v", j, err)
	}
	// Undo of a journal that moved it (what a killed run's state file holds)
	// restores it, twice without harm.
	j = Journal{{Op: OpLocalMoved, Local: &LocalMove{Family: IPv4, AddedPref: true}}, {Op: OpLocalMoved, Local: &LocalMove{Family: IPv6, AddedPref: true}}}
	for i := 0; i < 2; i++ {
		if err := Undo(n.k, j, nil); err != nil {
			t.Fatal(err)
		}
	}
	if after := n.snapshot(); after != before {
		t.Fatalf("state after Undo differs.\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestKernelHelpers(t *testing.T) {
	n := newNetNS(t)
	if l, err := LinkByName(n.k, "e1"); err != nil || l.MAC.String() != "02:00:00:77:02:01" || l.Index == 0 {
		t.Errorf("LinkByName = %+v %v", l, err)
	}
	ps, err := Addrs(n.k, "e1")
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(ps)
	if !strings.Contains(got, "10.77.2.1/24") || !strings.Contains(got, "fd77::1/64") {
		t.Errorf("Addrs(e1) = %v", got)
	}
	if _, err := LinkIndex(n.k, "nope0"); !IsNotFound(err) {
		t.Errorf("LinkIndex(nope0) = %v", err)
	}
	// The rendered commands are accepted by ip and produce what Apply does.
	p := kernelPlan(t)
	p.Neighbours = p.Neighbours[:1]
	for _, line := range strings.Split(strings.TrimSpace(p.Render()), "\n") {
		f := strings.Fields(line)
		if f[0] == "ethtool" {
			n.ip(append([]string{"netns", "exec", n.name}, f...)...) // ip -n X netns exec X ethtool …
			continue
		}
		n.ip(f[1:]...)
	}
	n.mustContain("rendered vxlan", n.ip("-d", "link", "show", "nfc-vx0"), "vxlan id 42 remote 10.77.3.2 local 10.77.2.1 dev e1", "dstport 4789", ",UP")
	n.mustContain("rendered veth", n.ip("-d", "link", "show", "agg0-rx"), "PROMISC", ",UP")
}

// Created links are silent (issue 11): no IPv6 address generation and IPv6
// off (a VXLAN device, a pair's near end: IPv6 on, not forwarding, MLDv1), set in the Kernel's
// namespace (not the test process's).
func TestKernelCreatedLinksSilent(t *testing.T) {
	n := newNetNS(t)
	p := Plan{
		Veths:  []VethPair{{Name: "agg0", Peer: "agg0-rx", Up: true, MTU: VethMTU}},
		VXLANs: []VXLAN{{Name: "nfc-vx0", VNI: 42, Remote: netip.MustParseAddr("10.77.3.2"), MTU: VXLANMTU}},
	}
	j, err := NewApplier(n.k, nil).Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	conf := func(dev, key, want string) {
		out, err := exec.Command("ip", "netns", "exec", n.name, "cat", "/proc/sys/net/ipv6/conf/"+dev+"/"+key).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("%s: %s = %q (%v), want %s", dev, key, out, err, want)
		}
	}
	for _, dev := range []string{"agg0", "agg0-rx", "nfc-vx0"} {
		n.mustContain(dev, n.ip("-d", "link", "show", "dev", dev), "addrgenmode none", ",UP")
	}
	// Any clone fits nfclone's own devices whole (VethMTU, VXLANMTU).
	for dev, mtu := range map[string]int{"agg0": VethMTU, "agg0-rx": VethMTU, "nfc-vx0": VXLANMTU} {
		n.mustContain(dev, n.ip("link", "show", "dev", dev), fmt.Sprintf(" mtu %d ", mtu))
	}
	// The VXLAN device and the pair's near end carry kernel-routed IPv6
	// clones; the far end, read by others, has IPv6 off.
	for _, dev := range []string{"agg0", "nfc-vx0"} {
		conf(dev, "disable_ipv6", "0")
		conf(dev, "forwarding", "0")
		conf(dev, "force_mld_version", "1")
	}
	conf("agg0-rx", "disable_ipv6", "1")
	// The near end hands its peer wire packets: no segmentation or
	// checksum offload (wireNearEnd), the far end as the kernel made it.
	feat := func(dev string) string {
		out, err := exec.Command("ip", "netns", "exec", n.name, "ethtool", "-k", dev).CombinedOutput()
		if err != nil {
			t.Fatalf("ethtool -k %s: %v\n%s", dev, err, out)
		}
		return string(out)
	}
	n.mustContain("agg0 offloads", feat("agg0"), "tx-checksumming: off")
	n.mustContain("agg0", n.ip("-d", "link", "show", "dev", "agg0"), "gso_max_segs 1 ")
	n.mustContain("agg0-rx offloads", feat("agg0-rx"), "tx-checksumming: on")
	if err := Undo(n.k, j, nil); err != nil {
		t.Fatal(err)
	}
}

// The real kernel, both families: the backstop routes are listed back as
// planned (no drift after apply), a flap of e1 deletes the gateway routes
// (drift), and the repair puts them back; the lookup of a copy's mark
// while e1 is down ends in the backstop, never the main table.
func TestKernelFlapDiffRepair(t *testing.T) {
	n := newNetNS(t)
	n.ip("route", "add", "default", "via", "10.77.3.2", "dev", "e2")
	p := kernelPlan(t)
	p.Veths, p.VXLANs, p.Flags, p.Neighbours = nil, nil, nil, nil
	p.Routes = append([]Route{{Family: IPv4, Table: 20035, Unreachable: true}, {Family: IPv6, Table: 20035, Unreachable: true}}, p.Routes...)
	before := n.snapshot()
	j, err := NewApplier(n.k, nil).Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	n.mustContain("ip route table 20035", n.ip("-4", "route", "show", "table", "20035"), "unreachable default metric 4294967295")
	n.mustContain("ip -6 route table 20035", n.ip("-6", "route", "show", "table", "20035"), "unreachable default dev lo metric 4294967295")
	diff := func() []Drift {
		t.Helper()
		o, err := Observe(n.k, p)
		if err != nil {
			t.Fatal(err)
		}
		return Diff(p, o)
	}
	if ds := diff(); len(ds) != 0 {
		t.Fatalf("drift right after apply:\n%s", driftStrings(ds))
	}
	n.ip("link", "set", "e1", "down")
	// Without the backstop this would be "via 10.77.3.2 dev e2" (main).
	if out, err := n.ipErr("route", "get", "10.77.3.9", "mark", "0x4e43"); err == nil || !strings.Contains(out, "No route to host") {
		t.Errorf("a copy's lookup with e1 down: %v %s", err, out)
	}
	if out, err := n.ipErr("-6", "route", "get", "fd77:3::9", "mark", "0x4e43"); err == nil || !strings.Contains(out, "unreachable") && !strings.Contains(out, "No route") {
		t.Errorf("a copy's IPv6 lookup with e1 down: %v %s", err, out)
	}
	n.ip("link", "set", "e1", "up")
	ds := diff()
	miss := MissingRoutes(ds)
	if len(miss) != 2 {
		t.Fatalf("drift after the flap:\n%s", driftStrings(ds))
	}
	// IPv6 addresses went with the link: that route waits for its address.
	if _, err := Repair(n.k, ds, nil); err != nil {
		t.Fatalf("repair: %v", err)
	}
	ds = diff()
	if len(ds) != 1 || !ds[0].Blocked || !strings.Contains(ds[0].Problem, "gateway fd77::2 is on no network of e1") {
		t.Fatalf("drift with e1's IPv6 address gone:\n%s", driftStrings(ds))
	}
	n.ip("-6", "addr", "add", "fd77::1/64", "dev", "e1", "nodad")
	ds = diff()
	added, err := Repair(n.k, ds, nil)
	if err != nil {
		t.Fatalf("repair: %v\n%s", err, n.ip("-6", "addr"))
	}
	if ds := diff(); len(ds) != 0 {
		t.Fatalf("drift after repair:\n%s", driftStrings(ds))
	}
	if err := Undo(n.k, Merge(j, added), nil); err != nil {
		t.Fatal(err)
	}
	// The flap itself reorders the kernel's own routes: compare nfclone's.
	for _, fam := range []string{"-4", "-6"} {
		if out := n.ip(fam, "route", "show", "table", "20035"); out != "" {
			t.Errorf("table 20035 after Undo:\n%s", out)
		}
		if got, want := n.ip(fam, "rule"), rulesOf(before, fam); got != want {
			t.Errorf("ip %s rule after Undo:\n%s\nwant:\n%s", fam, got, want)
		}
	}
}

// rulesOf cuts the `ip <fam> rule` section out of a snapshot.
func rulesOf(snap, fam string) string {
	head := "## ip " + fam + " rule\n"
	i := strings.Index(snap, head)
	if i < 0 {
		return ""
	}
	rest := snap[i+len(head):]
	if j := strings.Index(rest, "## "); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

func driftStrings(ds []Drift) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.String())
	}
	return strings.Join(s, "\n")
}

// A device the kernel sends copies to, through a made-up next hop: a rule
// `to NH lookup T`, a device route in T and a permanent neighbour, in both
// families. The kernel lists them as planned (no drift), a lookup of NH out
// of the device takes table T, and Undo leaves the namespace as it was.
func TestKernelDeviceNextHop(t *testing.T) {
	n := newNetNS(t)
	// A default route out of the other device, as real hosts have: the
	// lookup of NH must not take it.
	n.ip("route", "add", "default", "via", "10.77.2.2", "dev", "e1")
	mac := MustMAC(t, "02:4e:43:00:00:02")
	nh4, nh6 := netip.MustParseAddr("169.254.77.1"), netip.MustParseAddr("fe80::4e43:1")
	p := Plan{
		Neighbours: []Neighbour{{Device: "e2", Addr: nh4, MAC: mac}, {Device: "e2", Addr: nh6, MAC: mac}},
		Routes: []Route{
			{Family: IPv4, Table: 20040, Unreachable: true}, {Family: IPv4, Table: 20040, Device: "e2"},
			{Family: IPv6, Table: 20040, Unreachable: true}, {Family: IPv6, Table: 20040, Device: "e2"},
		},
		Rules: []PolicyRule{
			{Family: IPv4, Pref: 101, To: netip.PrefixFrom(nh4, 32), Table: 20040},
			{Family: IPv6, Pref: 101, To: netip.PrefixFrom(nh6, 128), Table: 20040},
		},
	}
	before := n.snapshot()
	j, err := NewApplier(n.k, nil).Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	n.mustContain("ip rule", n.ip("-4", "rule"), "101:\tfrom all to 169.254.77.1 lookup 20040")
	n.mustContain("ip -6 rule", n.ip("-6", "rule"), "101:\tfrom all to fe80::4e43:1 lookup 20040")
	n.mustContain("ip route get", n.ip("route", "get", "169.254.77.1", "oif", "e2"), "169.254.77.1 dev e2 table 20040")
	n.mustContain("ip -6 route get", n.ip("-6", "route", "get", "fe80::4e43:1", "oif", "e2"), "dev e2 table 20040")
	n.mustContain("ip neigh", n.ip("neigh", "show", "dev", "e2"), "169.254.77.1 lladdr 02:4e:43:00:00:02 PERMANENT", "fe80::4e43:1 lladdr 02:4e:43:00:00:02 PERMANENT")
	o, err := Observe(n.k, p)
	if err != nil {
		t.Fatal(err)
	}
	if ds := Diff(p, o); len(ds) != 0 {
		t.Fatalf("drift right after apply:\n%s", driftStrings(ds))
	}
	if err := Undo(n.k, j, nil); err != nil {
		t.Fatal(err)
	}
	if got := n.snapshot(); got != before {
		t.Errorf("after Undo:\n%s\nwant:\n%s", got, before)
	}
}
