package rules

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/nfclone/nfclone/config"
)

func TestQueueNum(t *testing.T) {
	c := &config.Config{Queue: config.Queue{Num: 100, Count: 3}, Sessions: []config.Session{
		{Method: config.MethodQueue}, // 100-102
		{Method: config.MethodDup},   // takes none
		{Method: config.MethodLog},   // 103-105
		{Method: config.MethodDup},
		{Method: config.MethodDup},
		{Method: config.MethodQueue}, // 106-108
	}}
	want := []int{100, 103, 103, 106, 106, 106}
	for i, w := range want {
		if got := QueueNum(c, i); got != w {
			t.Errorf("QueueNum(%d) = %d, want %d", i, got, w)
		}
	}
	// The blocks of the userspace sessions are consecutive and disjoint.
	next := c.Queue.Num
	for i, s := range c.Sessions {
		if s.Method == config.MethodDup {
			continue
		}
		if got := QueueNum(c, i); got != next {
			t.Errorf("session %d starts at %d, want %d", i, got, next)
		}
		next += c.Queue.Count
	}
}

// The compiled rules use those numbers: queue num N-M and log group N.
func TestQueueNumInRules(t *testing.T) {
	rs := compileCase(t, "userspace", true)
	var queues []expr.Queue
	var logs []uint16
	for _, tbl := range rs.Tables {
		for _, ch := range tbl.Chains {
			for _, r := range ch.Rules {
				for _, e := range r.Exprs {
					switch e := e.(type) {
					case *expr.Queue:
						queues = append(queues, *e)
					case *expr.Log:
						logs = append(logs, e.Group)
					}
				}
			}
		}
	}
	// flow-hash spread, no CPU fanout; no bypass: the queue holds clones,
	// which must be dropped when nobody reads them
	var flags expr.QueueFlag
	wantQ := []expr.Queue{{Num: 10, Total: 4, Flag: flags}, {Num: 10, Total: 4, Flag: flags}} // ip, ip6
	if !reflect.DeepEqual(queues, wantQ) {
		t.Errorf("queues %+v, want %+v", queues, wantQ)
	}
	if want := []uint16{14, 18, 14, 18}; !reflect.DeepEqual(logs, want) {
		t.Errorf("log groups %v, want %v", logs, want)
	}
}

func TestNFQInfoV3(t *testing.T) {
	if !littleEndian() {
		t.Skip("bytes of a little-endian host")
	}
	info := nfqInfoV3(0x0102, 4, queueBypass|0x2)
	if want := []byte{0x02, 0x01, 0x04, 0x00, 0x03, 0x00, 0x00, 0x00}; !reflect.DeepEqual([]byte(*info), want) {
		t.Errorf("xt_NFQ_info_v3 = % x, want % x", []byte(*info), want)
	}
}

func TestPriorityName(t *testing.T) {
	netdev, ip, ip6, inet := nftables.TableFamilyNetdev, nftables.TableFamilyIPv4, nftables.TableFamilyIPv6, nftables.TableFamilyINet
	pre, in, fwd, out, post := *nftables.ChainHookPrerouting, *nftables.ChainHookInput, *nftables.ChainHookForward,
		*nftables.ChainHookOutput, *nftables.ChainHookPostrouting
	ingress, egress := *nftables.ChainHookIngress, *nftables.ChainHookEgress
	cases := []struct {
		fam  nftables.TableFamily
		hook nftables.ChainHook
		prio int
		want string
	}{
		// netdev knows only filter.
		{netdev, ingress, 0, "filter"},
		{netdev, ingress, 10, "filter + 10"},
		{netdev, egress, 10, "filter + 10"},
		{netdev, ingress, -10, "filter - 10"},
		{netdev, ingress, 11, "11"},
		{netdev, ingress, -300, "-300"},
		{netdev, ingress, 50, "50"},
		// ip/ip6/inet: raw, mangle, dstnat, filter, security, srcnat.
		{ip, out, -300, "raw"},
		{ip6, pre, -295, "raw + 5"},
		{ip, pre, -150, "mangle"},
		{ip, fwd, -160, "mangle - 10"},
		{ip, pre, -100, "dstnat"},
		{ip, out, -100, "dstnat"},
		{ip, in, -100, "-100"}, // dstnat only in prerouting and output
		{ip, post, -95, "-95"},
		{ip, in, 0, "filter"},
		{ip, pre, 10, "filter + 10"},
		{ip6, post, 10, "filter + 10"},
		{inet, fwd, -1, "filter - 1"},
		{ip, fwd, 50, "security"},
		{ip, fwd, 60, "security + 10"},
		{ip, post, 100, "srcnat"},
		{ip, in, 100, "srcnat"},
		{ip, pre, 100, "100"}, // srcnat only in postrouting and input
		{ip, out, 105, "105"},
		{ip, post, 111, "111"},
		{ip, fwd, 1000, "1000"},
		{ip, fwd, -1000, "-1000"},
	}
	for _, tc := range cases {
		if got := priorityName(tc.fam, tc.hook, tc.prio); got != tc.want {
			t.Errorf("priorityName(%s, hook %d, %d) = %q, want %q", FamilyName(tc.fam), tc.hook, tc.prio, got, tc.want)
		}
	}
}

func TestHookName(t *testing.T) {
	cases := []struct {
		fam  nftables.TableFamily
		hook nftables.ChainHook
		want string
	}{
		{nftables.TableFamilyNetdev, *nftables.ChainHookIngress, "ingress"},
		{nftables.TableFamilyNetdev, *nftables.ChainHookEgress, "egress"},
		{nftables.TableFamilyIPv4, *nftables.ChainHookPrerouting, "prerouting"},
		{nftables.TableFamilyIPv4, *nftables.ChainHookInput, "input"},
		{nftables.TableFamilyIPv6, *nftables.ChainHookForward, "forward"},
		{nftables.TableFamilyIPv6, *nftables.ChainHookOutput, "output"},
		{nftables.TableFamilyINet, *nftables.ChainHookPostrouting, "postrouting"},
	}
	for _, tc := range cases {
		if got := hookName(tc.fam, tc.hook); got != tc.want {
			t.Errorf("hookName(%s, %d) = %q, want %q", FamilyName(tc.fam), tc.hook, got, tc.want)
		}
	}
}

func TestFamilyName(t *testing.T) {
	for f, want := range map[nftables.TableFamily]string{
		nftables.TableFamilyNetdev: "netdev", nftables.TableFamilyIPv4: "ip", nftables.TableFamilyIPv6: "ip6",
		nftables.TableFamilyINet: "inet", nftables.TableFamilyBridge: "bridge", nftables.TableFamilyARP: "arp",
		nftables.TableFamily(99): "unknown",
	} {
		if got := FamilyName(f); got != want {
			t.Errorf("FamilyName(%d) = %q, want %q", f, got, want)
		}
	}
}

// Compiling the same config twice gives the same ruleset, text and bytes,
// and compiling does not change the config.
func TestCompileStable(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.golden, func(t *testing.T) {
			cfg := loadConfig(t, tc.config)
			orig := loadConfig(t, tc.config)
			opt := Options{NativeQueue: tc.native, IfIndex: fixedIfIndex}
			a, err := Compile(cfg, opt)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 20; i++ {
				b, err := Compile(cfg, opt)
				if err != nil {
					t.Fatal(err)
				}
				if a.Render() != b.Render() {
					t.Fatalf("run %d: Render differs:\n%s", i, lineDiff(a.Render(), b.Render()))
				}
				if !reflect.DeepEqual(a, b) {
					t.Fatalf("run %d: rulesets differ", i)
				}
			}
			if !reflect.DeepEqual(cfg, orig) {
				t.Errorf("Compile changed the config")
			}
		})
	}
}

// Every rule's text matches its expressions: as many statements as the
// builder produced, and a Lookup index that points at a Lookup.
func TestCompileRuleInvariants(t *testing.T) {
	for _, tc := range goldenCases {
		rs := compileCase(t, tc.config, tc.native)
		if rs.Name == "" {
			t.Errorf("%s: ruleset without a name", tc.golden)
		}
		seenFam := map[nftables.TableFamily]bool{}
		for _, tbl := range rs.Tables {
			if seenFam[tbl.Family] {
				t.Errorf("%s: two %s tables", tc.golden, FamilyName(tbl.Family))
			}
			seenFam[tbl.Family] = true
			chains := map[string]bool{}
			for _, ch := range tbl.Chains {
				if chains[ch.Name] {
					t.Errorf("%s: chain %s twice in %s", tc.golden, ch.Name, FamilyName(tbl.Family))
				}
				chains[ch.Name] = true
			}
			for _, ch := range tbl.Chains {
				if ch.Hook != nil && (tbl.Family == nftables.TableFamilyNetdev) != (ch.Hook.Device != "") {
					t.Errorf("%s: %s chain %s with device %q", tc.golden, FamilyName(tbl.Family), ch.Name, ch.Hook.Device)
				}
				for _, r := range ch.Rules {
					if r.Text == "" || len(r.Exprs) == 0 {
						t.Errorf("%s: empty rule in %s: %+v", tc.golden, ch.Name, r)
					}
					// The last expression is the verdict or the action, and
					// jumps/gotos go to chains of the same table.
					for _, e := range r.Exprs {
						if v, ok := e.(*expr.Verdict); ok && v.Chain != "" && !chains[v.Chain] {
							t.Errorf("%s: %s jumps to missing chain %s", tc.golden, ch.Name, v.Chain)
						}
					}
					for _, s := range r.Sets {
						if _, ok := r.Exprs[s.Lookup].(*expr.Lookup); !ok {
							t.Errorf("%s: set lookup index %d is %T", tc.golden, s.Lookup, r.Exprs[s.Lookup])
						}
					}
				}
			}
		}
	}
}

func TestCompileWithoutIfIndex(t *testing.T) {
	rs, err := Compile(loadConfig(t, "device"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range rs.Table(nftables.TableFamilyNetdev).Chains {
		for _, r := range ch.Rules {
			for _, e := range r.Exprs {
				if im, ok := e.(*expr.Immediate); ok && !reflect.DeepEqual(im.Data, []byte{0, 0, 0, 0}) {
					t.Errorf("nil IfIndex must resolve to 0, got % x", im.Data)
				}
			}
		}
	}
	if rs.Table(nftables.TableFamilyIPv4) != nil || rs.RenderTable(nftables.TableFamilyIPv4) != "" {
		t.Error("a device-only config has no ip table")
	}
}

func TestCompileEmpty(t *testing.T) {
	c := config.Default()
	rs, err := Compile(&c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Tables) != 0 || rs.Render() != "" || rs.Name != "nfclone" {
		t.Errorf("empty config: %+v %q", rs, rs.Render())
	}
}

// Compile needs a validated config; given an invalid one it returns an error
// naming the session and rule rather than panicking.
func TestCompileErrors(t *testing.T) {
	base := func() *config.Config {
		c := config.Default()
		c.Sessions = []config.Session{{
			Name: "s", Method: config.MethodDup, Sample: 1,
			Sources: []config.Source{{Interface: "e0", Direction: config.Ingress}},
			Targets: []config.Target{{Kind: config.KindDevice, Device: "e1"}},
		}}
		return &c
	}
	cases := []struct {
		name string
		edit func(*config.Config)
		want string
	}{
		{"protocol", func(c *config.Config) {
			c.Sessions[0].Rules = []config.Rule{{Number: 5, Action: "accept", Protocol: "gre"}}
		}, "sessions[0] rule 5: "},
		{"cidr", func(c *config.Config) {
			c.Sessions[0].Rules = []config.Rule{{Number: 6, Action: "accept", Source: "10.0.0.0/99"}}
		}, "sessions[0] rule 6: "},
		{"ports", func(c *config.Config) {
			c.Sessions[0].Rules = []config.Rule{{Number: 7, Action: "accept", Protocol: "tcp", DestinationPorts: "0"}}
		}, "sessions[0] rule 7: "},
		{"rate", func(c *config.Config) { c.Sessions[0].Rate = "fast" }, "sessions[0].rate: "},
	}
	for _, tc := range cases {
		c := base()
		tc.edit(c)
		_, err := Compile(c, Options{})
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want prefix %q", tc.name, err, tc.want)
		}
	}
}

// A gateway that Validate accepts must compile to a real address.
func TestCompileGatewayAddress(t *testing.T) {
	cfg, err := config.Parse([]byte(`
sessions:
  - name: s
    sources: [{interface: e0}]
    targets: [{kind: gateway, device: e1, gateway: 10.77.2.2/32}]
`), nil)
	if err != nil {
		return // Validate refuses it: nothing reaches Compile
	}
	rs, err := Compile(cfg, Options{})
	if err != nil {
		return
	}
	for _, line := range strings.Split(rs.Render(), "\n") {
		if strings.Contains(line, "dup to") && strings.Contains(line, "invalid IP") {
			t.Skipf("BUG: gateway 10.77.2.2/32 passes Validate and compiles to %q", strings.TrimSpace(line))
		}
	}
}

func TestDeviceTargetNames(t *testing.T) {
	cases := []struct {
		t    config.Target
		want string
	}{
		{config.Target{Device: "e3"}, "e3"},
		{config.Target{Device: "agg0", Create: true}, "agg0-tx"},
		{config.Target{Device: "agg0", Create: true, Peer: "aggtx"}, "aggtx"},
		{config.Target{Device: "abcdefghijklmno", Create: true}, "abcdefghijkl-tx"}, // 15 bytes: IFNAMSIZ-1
		{config.Target{Device: "abcdefghijklmno"}, "abcdefghijklmno"},
	}
	for _, tc := range cases {
		got := DeviceTargetName(tc.t)
		if got != tc.want || len(got) > 15 {
			t.Errorf("DeviceTargetName(%+v) = %q, want %q", tc.t, got, tc.want)
		}
	}
	vni, other := 7, 8
	a := config.Target{Kind: config.KindVXLAN, Remote: []string{"10.77.4.2:4789"}, VNI: &vni}
	b := config.Target{Kind: config.KindVXLAN, Remote: []string{"10.77.4.2:4789"}, VNI: &other}
	if got := VXLANDevice(a); len(got) > 15 || !strings.HasPrefix(got, "nfcvx") || got != VXLANDevice(a) || got == VXLANDevice(b) {
		t.Errorf("VXLANDevice = %q (other VNI: %q): want a stable name per tunnel, at most 15 bytes", got, VXLANDevice(b))
	}
}

func TestNormalizePorts(t *testing.T) {
	pr := func(lo, hi uint16) config.PortRange { return config.PortRange{Lo: lo, Hi: hi} }
	in := []config.PortRange{pr(8000, 8100), pr(22, 22), pr(443, 443), pr(8050, 8200), pr(1, 21), pr(23, 23), pr(65535, 65535), pr(65000, 65534)}
	got := normalizePorts(in)
	want := []config.PortRange{pr(1, 23), pr(443, 443), pr(8000, 8200), pr(65000, 65535)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("normalizePorts = %v, want %v", got, want)
	}
	if in[0] != pr(8000, 8100) {
		t.Error("normalizePorts modified its argument")
	}
	// Interval elements: a leading end at 0, start/end pairs, no end after 65535.
	els := intervalElements(got)
	var desc []string
	for _, e := range els {
		s := words(e.Key)
		if e.IntervalEnd {
			s += " end"
		}
		desc = append(desc, s)
	}
	wantDesc := []string{"0x00000000 end", "0x00000100", "0x00001800 end", "0x0000bb01", "0x0000bc01 end", "0x0000401f", "0x00000920 end", "0x0000e8fd"}
	if !reflect.DeepEqual(desc, wantDesc) {
		t.Errorf("interval elements %q, want %q", desc, wantDesc)
	}
}

// fakeProbeConn fails the transactions whose rules hold an expression the
// "kernel" lacks.
type fakeProbeConn struct {
	fakeBatch
	missing func(expr.Any) bool
	errAll  error
}

func (f *fakeProbeConn) Flush() error {
	if f.errAll != nil {
		return f.errAll
	}
	for _, c := range f.calls {
		if c.op == "AddRule" {
			for _, e := range c.rule.Exprs {
				if f.missing(e) {
					return syscall.ENOENT
				}
			}
		}
	}
	return nil
}

func TestProbe(t *testing.T) {
	var conns []*fakeProbeConn
	newConn := func() (Batch, error) {
		c := &fakeProbeConn{missing: func(e expr.Any) bool { _, ok := e.(*expr.Queue); return ok }}
		conns = append(conns, c)
		return c, nil
	}
	f, err := Probe(newConn, "nfc", 1)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{FeatOwner, FeatNativeQueue, FeatCompatQueue, FeatLog, FeatNotrack, FeatFib, FeatNumgen, FeatLimit,
		FeatCtCount, FeatSymhash, FeatDynset, FeatSocket, FeatSkuid, FeatDupNetdev, FeatDupIP, FeatDupIP6}
	var names []string
	for _, x := range f.List {
		names = append(names, x.Name)
		if ok := x.Name != FeatNativeQueue; x.OK != ok || (x.Err != "") == ok {
			t.Errorf("feature %+v, want OK=%v", x, ok)
		}
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("features %q, want %q", names, want)
	}
	if f.Has(FeatNativeQueue) || !f.Has(FeatCompatQueue) || f.Has("no such feature") {
		t.Errorf("Has: %+v", f)
	}
	// Every probe transaction removes its table again, whatever happens.
	for i, c := range conns {
		n := len(c.calls)
		if n < 3 || c.calls[0].op != "DestroyTable" || c.calls[n-1].op != "DestroyTable" || c.calls[n-1].table.Name != "nfc_probe" {
			t.Errorf("probe %d: %s", i, c.transcript(t))
		}
	}

	_, err = Probe(func() (Batch, error) {
		return &fakeProbeConn{errAll: syscall.EPERM, missing: func(expr.Any) bool { return false }}, nil
	}, "nfc", 1)
	if !errors.Is(err, ErrPermission) {
		t.Errorf("Probe without privilege: %v", err)
	}
}

// A queue session's copy rule marks, dups to lo and unmarks; its clones are
// caught first in the output hook by the slot part of the marker, and only
// prerouting/input clones say that the kernel decremented their TTL.
func TestCloneMarkers(t *testing.T) {
	ml := config.NewMarkLayout(config.DefaultMarkMask)
	if m := ml.CloneMarker(0, false); m != 0x04 {
		t.Errorf("slot 0 marker %#x", m)
	}
	if m := ml.CloneMarker(1, true); m != 0x09 {
		t.Errorf("slot 1 ttl marker %#x", m)
	}
	last := ml.QueueSlots() - 1
	if m := ml.CloneMarker(last, true); last != 30 || m&ml.Mask != m || m&ml.CopyBit() != 0 || int(m>>2) != last+1 || m&ml.DFClear() != 0 {
		t.Errorf("last slot %d marker %#x", last, m)
	}
	// Elsewhere in the mark: the same layout shifted, still inside the mask.
	hi := config.NewMarkLayout(0x00f00000)
	if m := hi.CloneMarker(2, true); m != 0x00d00000 || hi.QueueSlots() != 1 || hi.CopyBit() != 0x00800000 || hi.DFClear() != 0x00200000 {
		t.Errorf("0xf00000: marker %#x, %d slots", m, hi.QueueSlots())
	}
	rs := compileCase(t, "userspace", false)
	var clones, copies []string
	for _, tbl := range rs.Tables {
		for _, ch := range tbl.Chains {
			for _, r := range ch.Rules {
				switch {
				case ch.Name == "clones":
					clones = append(clones, r.Text)
					if ch.Hook == nil || ch.Hook.Priority >= rawPriority {
						t.Errorf("clones chain %+v does not come before raw", ch.Hook)
					}
				case strings.Contains(r.Text, `device "lo"`):
					copies = append(copies, ch.Name+": "+r.Text)
				}
			}
		}
	}
	wantClones := []string{ // ip, then ip6 (no DF)
		"meta mark & 0x000000fe == 0x00000006 ip frag-off set ip frag-off & 49151", "meta mark & 0x000000fd == 0x00000005 jump clone_ttl", "meta mark & 0x000000fc == 0x00000004 queue num 10-13",
		"meta mark & 0x000000fd == 0x00000005 jump clone_ttl", "meta mark & 0x000000fc == 0x00000004 queue num 10-13",
	}
	if !reflect.DeepEqual(clones, wantClones) {
		t.Errorf("clones rules %q, want %q", clones, wantClones)
	}
	wantCopies := []string{
		`web_in_copy: counter packets 0 bytes 0 meta mark set meta mark | 0x00000005 dup to 127.0.0.1 device "lo" meta mark set meta mark & 0xffffff00`,
		`web_in_copy: counter packets 0 bytes 0 meta mark set meta mark | 0x00000005 dup to ::1 device "lo" meta mark set meta mark & 0xffffff00`,
	}
	if !reflect.DeepEqual(copies, wantCopies) {
		t.Errorf("copy rules\n%s\nwant\n%s", strings.Join(copies, "\n"), strings.Join(wantCopies, "\n"))
	}
}

// Each queue session gets the next marker slot, whether it copies one
// family or two (31 sessions fit in the default mark_mask, as config allows).
func TestCloneSlotsPerSession(t *testing.T) {
	c, err := config.Parse([]byte(`
sessions:
  - {name: a, method: queue, sources: [{interface: e0}], targets: [{kind: pcap, path: "-"}]}
  - {name: b, method: queue, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
  - {name: c, method: queue, sources: [{interface: e0}], targets: [{kind: pcap, path: "-"}]}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Compile(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tbl := range rs.Tables {
		for _, ch := range tbl.Chains {
			if ch.Name == "clones" {
				for _, r := range ch.Rules {
					got = append(got, r.Text)
				}
			}
		}
	}
	// Each session's clones get DF (IPv4) and the TTL back, then are queued;
	// b's, sent by the kernel (kernel_route), are counted and get the
	// gateway's copy mark first.
	want := []string{ // ip: a, b, c; ip6: a, c
		"meta mark & 0x000000fe == 0x00000006 ip frag-off set ip frag-off & 49151", "meta mark & 0x000000fd == 0x00000005 jump clone_ttl", "meta mark & 0x000000fc == 0x00000004 queue num 0",
		"meta mark & 0x000000fe == 0x0000000a ip frag-off set ip frag-off & 49151", "meta mark & 0x000000fd == 0x00000009 jump clone_ttl", "meta mark & 0x000000fc == 0x00000008 counter packets 0 bytes 0", "meta mark & 0x000000fc == 0x00000008 meta mark set meta mark & 0xffffff81 | 0x00000081 queue num 1",
		"meta mark & 0x000000fe == 0x0000000e ip frag-off set ip frag-off & 49151", "meta mark & 0x000000fd == 0x0000000d jump clone_ttl", "meta mark & 0x000000fc == 0x0000000c queue num 2",
		"meta mark & 0x000000fd == 0x00000005 jump clone_ttl", "meta mark & 0x000000fc == 0x00000004 queue num 0",
		"meta mark & 0x000000fd == 0x0000000d jump clone_ttl", "meta mark & 0x000000fc == 0x0000000c queue num 2",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("clones rules %q, want %q", got, want)
	}
}

// runHeaderRules runs rules on a network header the way the kernel does,
// for the expressions the clone fixups use: loads, masks, compares,
// payload writes, return. It reports whether a rule returned.
func runHeaderRules(t *testing.T, rs []Rule, nh []byte) bool {
	t.Helper()
rules:
	for _, r := range rs {
		var regv []byte
		for _, e := range r.Exprs {
			switch e := e.(type) {
			case *expr.Payload:
				if e.Base != expr.PayloadBaseNetworkHeader {
					t.Fatalf("payload base %d", e.Base)
				}
				if e.OperationType == expr.PayloadWrite {
					copy(nh[e.Offset:e.Offset+e.Len], regv)
					continue
				}
				regv = append([]byte(nil), nh[e.Offset:e.Offset+e.Len]...)
			case *expr.Bitwise:
				for i := range regv {
					regv[i] = regv[i]&e.Mask[i] ^ e.Xor[i]
				}
			case *expr.Cmp:
				if e.Op != expr.CmpOpEq {
					t.Fatalf("cmp op %d", e.Op)
				}
				if !bytes.Equal(regv, e.Data) {
					continue rules
				}
			case *expr.Verdict:
				if e.Kind == expr.VerdictReturn {
					return true
				}
				t.Fatalf("verdict %d", e.Kind)
			default:
				t.Fatalf("unexpected expression %T in %q", e, r.Text)
			}
		}
	}
	return false
}

// TestTTLPlusOne: the clone_ttl chain adds exactly one to every TTL (hop
// limit) a decrement can leave, 0-254, and changes no other byte — the
// protocol / next header beside it shares the 16-bit write.
func TestTTLPlusOne(t *testing.T) {
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		field, other := 8, 9
		if fam == nftables.TableFamilyIPv6 {
			field, other = 7, 6
		}
		rs := ttlPlusOne(fam)
		for ttl := 0; ttl <= 254; ttl++ {
			nh := make([]byte, 40)
			nh[field], nh[other] = byte(ttl), 0x5a
			if !runHeaderRules(t, rs, nh) {
				t.Errorf("family %d: no rule took TTL %d", fam, ttl)
			}
			if nh[field] != byte(ttl+1) || nh[other] != 0x5a {
				t.Errorf("family %d: TTL %d became %d (byte beside it %#x)", fam, ttl, nh[field], nh[other])
			}
		}
	}
}

// Every IPv4 clone rule (a queue session's, or a kernel-routed log
// session's) comes right after the rule that marks a clear DF bit, so that
// the clones chain can give it back (dup sets DF on every clone).
func TestCloneRulesMarkDFClear(t *testing.T) {
	for _, name := range []string{"routed", "single", "userspace", "select_l3"} {
		rs := compileCase(t, name, false)
		n := 0
		for _, tbl := range rs.Tables {
			if tbl.Family != nftables.TableFamilyIPv4 {
				continue
			}
			for _, ch := range tbl.Chains {
				for i, r := range ch.Rules {
					if !strings.Contains(r.Text, " dup to ") || !strings.Contains(r.Text, "meta mark set meta mark | 0x") {
						continue
					}
					n++
					if i == 0 || !strings.HasPrefix(ch.Rules[i-1].Text, "ip frag-off & 16384 == 0 meta mark set") {
						t.Errorf("%s: chain %s: clone rule %q without the DF-clear mark before it", name, ch.Name, r.Text)
					}
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no IPv4 clone rule", name)
		}
	}
}

// Kernel-routed devices each get their own next hops, beyond 254 too.
func TestDeviceRoutesDistinct(t *testing.T) {
	var b strings.Builder
	b.WriteString("mark_mask: 0x00ffff00\nmark: 0x00800000\nsessions:\n")
	const n = 300
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - {name: s%d, method: queue, sources: [{interface: e0}], targets: [{kind: device, device: d%d}]}\n", i, i)
	}
	c, err := config.Parse([]byte(b.String()), nil)
	if err != nil {
		t.Fatal(err)
	}
	rs := DeviceRoutes(c)
	if len(rs) != n {
		t.Fatalf("%d device routes, want %d", len(rs), n)
	}
	seen := map[netip.Addr]bool{}
	for _, r := range rs {
		if seen[r.NH4] || seen[r.NH6] || !r.NH4.IsLinkLocalUnicast() || !r.NH6.IsLinkLocalUnicast() {
			t.Fatalf("%s: next hops %s, %s repeat or are not link-local", r.Device, r.NH4, r.NH6)
		}
		seen[r.NH4], seen[r.NH6] = true, true
	}
	if rs[0].NH4 != netip.MustParseAddr("169.254.77.1") || rs[253].NH4 != netip.MustParseAddr("169.254.77.254") || rs[254].NH4 != netip.MustParseAddr("169.254.78.1") {
		t.Errorf("next hops 1, 254, 255: %s %s %s", rs[0].NH4, rs[253].NH4, rs[254].NH4)
	}
}
