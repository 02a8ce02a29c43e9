package config

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// designExample is the DESIGN §6 example, adapted so that it is valid as a
// whole (a device target cannot also be a source, vlan needs L2, ...), plus a
// second session that leaves every optional key out.
const designExample = `
table: nfclone                 # name of nfclone's own nft tables
watch: false
state_dir: /run/nfclone
metrics: {listen: 127.0.0.1:9464}
queue:
  num: 0
  count: 1
  max_len: 4096
  cap: 8192
  workers: 2
sessions:
  - name: web
    method: queue
    sources:
      - {interface: e0, direction: ingress}
    host_only: false
    rules:
      - {number: 100, action: accept, protocol: tcp, destination_ports: "80,443"}
      - {number: 200, action: accept, protocol: icmp, source: 10.0.0.0/8}
      - {number: 300, action: reject, protocol: udp, destination: "fd00::/8", source_ports: "1024-65535"}
    sample: 1
    rate: ""
    snaplen: 0
    targets:
      - {kind: gateway, gateway: 10.77.2.2, device: e1, arp: off}
      - {kind: device, device: e3}
      - {kind: device, device: agg0, create: true}
      - {kind: vxlan, remote: "10.77.4.2:4789", vni: 123}
      - {kind: geneve, remote: ["10.77.4.2:6081", "[fd77:4::2]:6081"], vni: 124}
      - {kind: pcap, path: /var/lib/nfclone/web.pcap, rotate_size: 100MB, rotate_keep: 5}
  - name: tap
    sources:
      - {interface: e4}
    rules:
      - {number: 7, action: accept, vlan: 0}
    targets:
      - {kind: device, device: e5}
`

func intp(n int) *int { return &n }

func TestParseDesignExample(t *testing.T) {
	cfg, err := Parse([]byte(designExample), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Config{
		Table: "nfclone", StateDir: "/run/nfclone", Mark: 0x80, MarkMask: 0xff, RouteTable: 0x4e43, RulePref: 100,
		Metrics: Metrics{Listen: "127.0.0.1:9464"},
		Queue: Queue{Num: 0, Count: 1, MaxLen: 4096, Cap: 8192, CapBytes: "16MiB", Workers: 2, Nice: 10, CapByteCount: 16 << 20,
			SocketBuffer: "64MiB", SocketBufferBytes: 64 << 20, KernelRoute: true, LogKernelRoute: LogRouteTCP, VXLANKernelRoute: VXLANRouteAuto},
		Sessions: []Session{
			{
				Name: "web", Method: "queue",
				Sources: []Source{{Interface: "e0", Direction: "ingress"}},
				// Validate fills each rule's typed match.
				Rules: []Rule{
					{Number: 100, Action: "accept", Protocol: "tcp", DestinationPorts: "80,443",
						Match: &RuleMatch{Proto: 6, HasProto: true, DstPorts: []PortRange{{80, 80}, {443, 443}}}},
					{Number: 200, Action: "accept", Protocol: "icmp", Source: "10.0.0.0/8",
						Match: &RuleMatch{Proto: 1, HasProto: true, Src: netip.MustParsePrefix("10.0.0.0/8")}},
					{Number: 300, Action: "reject", Protocol: "udp", Destination: "fd00::/8", SourcePorts: "1024-65535",
						Match: &RuleMatch{Proto: 17, HasProto: true, Dst: netip.MustParsePrefix("fd00::/8"), SrcPorts: []PortRange{{1024, 65535}}}},
				},
				Sample: 1,
				Targets: []Target{
					// Validate fills the typed forms (GatewayIP, RemoteAddrs,
					// RotateBytes): nothing downstream parses the strings.
					{Kind: "gateway", Gateway: "10.77.2.2", Device: "e1", ARP: "off", GatewayIP: netip.MustParseAddr("10.77.2.2")},
					{Kind: "device", Device: "e3"},
					{Kind: "device", Device: "agg0", Create: true},
					{Kind: "vxlan", Remote: []string{"10.77.4.2:4789"}, VNI: intp(123), Encap: EncapKernel,
						RemoteAddrs: []netip.AddrPort{netip.MustParseAddrPort("10.77.4.2:4789")}},
					{Kind: "geneve", Remote: []string{"10.77.4.2:6081", "[fd77:4::2]:6081"}, VNI: intp(124), Encap: EncapUserspace,
						RemoteAddrs: []netip.AddrPort{netip.MustParseAddrPort("10.77.4.2:6081"), netip.MustParseAddrPort("[fd77:4::2]:6081")}},
					{Kind: "pcap", Path: "/var/lib/nfclone/web.pcap", RotateSize: "100MB", RotateKeep: 5, RotateBytes: 100_000_000},
				},
			},
			{
				// Defaults filled in: method dup, direction both, sample 1,
				// arp and rate empty, snaplen 0.
				Name: "tap", Method: "dup",
				Sources: []Source{{Interface: "e4", Direction: "both"}},
				Rules:   []Rule{{Number: 7, Action: "accept", VLAN: intp(0), Match: &RuleMatch{}}},
				Sample:  1,
				Targets: []Target{{Kind: "device", Device: "e5"}},
			},
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", *cfg, *want)
	}
	if !cfg.UsesUserspace() {
		t.Error("UsesUserspace() = false with a queue session")
	}
}

func TestParseEmptyGivesDefaults(t *testing.T) {
	for _, in := range []string{"", "{}", "# nothing\n", "sessions: []\n"} {
		cfg, err := Parse([]byte(in), nil)
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		want := Default()
		want.Sessions = cfg.Sessions // nil or empty
		if len(cfg.Sessions) != 0 || !reflect.DeepEqual(*cfg, want) {
			t.Errorf("Parse(%q) = %+v, want the defaults %+v", in, *cfg, want)
		}
		if cfg.UsesUserspace() {
			t.Errorf("UsesUserspace() = true without sessions")
		}
	}
}

func TestParseDefaultsAndSpellings(t *testing.T) {
	cfg, err := Parse([]byte(`
sessions:
  - name: s
    sources: [{interface: e0}, {interface: e1, direction: egress}]
    targets:
      - {kind: gateway, device: e2, gateway: 10.77.2.2}
      - {kind: gateway, device: e2, gateway: "fd77:2::2", arp: false}
      - {kind: gateway, device: e2, gateway: 10.77.2.3, arp: true}
      - {kind: gateway, device: e2, gateway: 10.77.2.4, arp: "on", mac: "02:00:00:77:02:04"}
      - {kind: vxlan, remote: "10.77.4.2:4789", vni: 0}
`), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	s := cfg.Sessions[0]
	if s.Method != MethodDup || s.Sample != 1 || s.Snaplen != 0 || s.Rate != "" || s.HostOnly {
		t.Errorf("session defaults: %+v", s)
	}
	if s.Sources[0].Direction != Both || s.Sources[1].Direction != Egress {
		t.Errorf("directions: %+v", s.Sources)
	}
	for i, want := range []ARP{"", ARPOff, ARPOn, ARPOn} {
		if got := s.Targets[i].ARP; got != want {
			t.Errorf("targets[%d].arp = %q, want %q", i, got, want)
		}
	}
	if v := s.Targets[4].VNI; v == nil || *v != 0 {
		t.Errorf("vni 0 must be kept as set: %v", v)
	}
}

func TestParseEnvOverrides(t *testing.T) {
	cfg, err := Parse([]byte("queue: {cap: 5, workers: 3}\ntable: fromfile\n"), env(map[string]string{
		"NFCLONE_QUEUE_CAP":                "100",
		"NFCLONE_QUEUE_CPUS":               "1",
		"NFCLONE_QUEUE_SOCKET_BUFFER":      "8MiB",
		"NFCLONE_QUEUE_REALTIME":           "5",
		"NFCLONE_QUEUE_KERNEL_ROUTE":       "false",
		"NFCLONE_QUEUE_LOG_KERNEL_ROUTE":   "true",
		"NFCLONE_QUEUE_VXLAN_KERNEL_ROUTE": "true",
		"NFCLONE_WATCH":                    "true",
		"NFCLONE_MARK":                     "0x9000",
		"NFCLONE_MARK_MASK":                "0xff00",
		"NFCLONE_STATE_DIR":                "/tmp/nfc",
		"NFCLONE_METRICS_LISTEN":           "",
		"NFCLONE_SESSIONS":                 "ignored: only scalar keys are bound",
		"OTHER_QUEUE_CAP":                  "7",
	}))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Default()
	want.Table = "fromfile"
	want.Queue.Cap = 100 // env wins over the file
	want.Queue.Workers = 3
	want.Queue.CPUs = 1
	want.Queue.SocketBuffer, want.Queue.SocketBufferBytes = "8MiB", 8<<20
	want.Queue.Realtime = 5
	want.Queue.KernelRoute = false
	want.Queue.LogKernelRoute = LogRouteOn     // "true" is on
	want.Queue.VXLANKernelRoute = VXLANRouteOn // "true" is on
	want.Watch = true
	want.Mark = 0x9000
	want.MarkMask = 0xff00
	want.StateDir = "/tmp/nfc"
	want.Metrics.Listen = ""
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("got  %+v\nwant %+v", *cfg, want)
	}
}

func TestDefaultsWithEnvNoFile(t *testing.T) {
	t.Setenv("NFCLONE_TABLE", "nfc_env")
	cfg, err := DefaultsWithEnv()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Table != "nfc_env" || cfg.Queue.Cap != DefaultQueueCap {
		t.Errorf("DefaultsWithEnv: %+v", *cfg)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(t.TempDir() + "/nope.yaml")
	if err == nil || !strings.Contains(err.Error(), "reading config") {
		t.Fatalf("Load of a missing file: %v", err)
	}
}

// TestAllProblemsAtOnce checks that one file with many mistakes lists all of
// them, sorted by key path with numeric indexes (sessions[2] before
// sessions[10]).
func TestAllProblemsAtOnce(t *testing.T) {
	var b strings.Builder
	b.WriteString("table: \"\"\nqueue: {workers: 0, cpus: -1}\nmark: 0\nsessions:\n")
	for i := 0; i < 12; i++ {
		switch i {
		case 2:
			b.WriteString("  - {name: s2, method: sideways, sources: [{interface: e0}], targets: [{kind: device, device: e1}]}\n")
		case 10:
			b.WriteString("  - {name: s10, sources: [{interface: e0}], targets: [{kind: device, device: e1, vni: 3}, {kind: gateway, device: e1, gateway: x}]}\n")
		case 11:
			b.WriteString("  - {name: s2, sample: -1, sources: [{interface: e0}], targets: [{kind: device, device: e1}]}\n")
		default:
			fmt.Fprintf(&b, "  - {name: s%d, sources: [{interface: e0}], targets: [{kind: device, device: e1}]}\n", i)
		}
	}
	got := problemLines(t, b.String(), nil)
	want := []string{
		"mark: must not be 0 (copies are recognised by their mark)",
		"queue.cpus: -1 is out of range 0-1024 (0: all)",
		"queue.workers: 0 is out of range 1-256",
		`sessions[2].method: "sideways" is not one of queue, log, dup`,
		"sessions[10].targets[0].vni: is not a field of device targets (only vxlan, geneve)",
		`sessions[10].targets[1].gateway: "x" is not an IP address`,
		`sessions[11].name: "s2" is already the name of sessions[2]`,
		"sessions[11].sample: -1 is out of range 1-1048576 (copy 1 packet in N)",
		`table: "" must start with a letter and hold at most 32 letters, digits or _`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n got: %q\nwant: %q", got, want)
	}
}

func TestPathLess(t *testing.T) {
	ordered := []string{
		"(config)",
		"(file)",
		"mark",
		"queue",
		"queue.cap",
		"sessions[0]",
		"sessions[0].rules[1].number",
		"sessions[0].rules[10].number",
		"sessions[0].targets[0].remote",
		"sessions[0].targets[0].remote[1]",
		"sessions[0].targets[0].remote[2]",
		"sessions[0].targets[0].vni",
		"sessions[2].name",
		"sessions[10].name",
		"sessions[100].name",
		"state_dir",
	}
	for i := range ordered {
		for j := range ordered {
			if got, want := pathLess(ordered[i], ordered[j]), i < j; got != want {
				t.Errorf("pathLess(%q, %q) = %v, want %v", ordered[i], ordered[j], got, want)
			}
		}
	}
}

func TestErrorsError(t *testing.T) {
	e := Errors{{Path: "a", Msg: "x"}, {Path: "b[1]", Msg: "y z"}}
	if got := e.Error(); got != "a: x\nb[1]: y z" {
		t.Errorf("Error() = %q", got)
	}
	var err error = e
	var back Errors
	if !errors.As(err, &back) || len(back) != 2 {
		t.Errorf("errors.As: %v", back)
	}
}

// Integer keys must refuse values their Go type cannot hold instead of
// wrapping around (mark: 4294967297 silently became 1) or truncating
// (workers: 2.5 silently became 2).
func TestParseIntegerOverflow(t *testing.T) {
	cases := []struct {
		name, yaml, path string
		env              map[string]string
	}{
		{name: "mark wraps", yaml: "mark: 4294967297\n", path: "mark"},
		{name: "route_table wraps to 0", yaml: "route_table: 4294967296\n", path: "route_table"},
		{name: "env mark wraps", yaml: "{}", path: "mark", env: map[string]string{"NFCLONE_MARK": "4294967297"}},
		{name: "env rule_pref wraps", yaml: "{}", path: "rule_pref", env: map[string]string{"NFCLONE_RULE_PREF": "4294967396"}},
		{name: "fraction", yaml: "queue: {workers: 2.5}\n", path: "queue.workers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var lookup func(string) (string, bool)
			if tc.env != nil {
				lookup = env(tc.env)
			}
			cfg, err := Parse([]byte(tc.yaml), lookup)
			var errs Errors
			if err == nil {
				t.Fatalf("regression (fixed bug): %s (%q, env %v) is accepted and decoded as mark=%d route_table=%d rule_pref=%d workers=%d",
					tc.name, tc.yaml, tc.env, cfg.Mark, cfg.RouteTable, cfg.RulePref, cfg.Queue.Workers)
			}
			if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Path != tc.path {
				t.Fatalf("want one problem at %s, got %v", tc.path, err)
			}
			if strings.Contains(errs[0].Msg, "reserved") {
				t.Fatalf("regression (fixed bug): the value wrapped around before validation: %v", err)
			}
		})
	}
}

// Values that do not fit are reported, and the message shows the number the
// user wrote, not what it became after conversion.
func TestParseHugeNumbersReported(t *testing.T) {
	got := problemLines(t, "queue: {num: 99999999999999999999999}\n", nil)
	if len(got) != 1 || !strings.HasPrefix(got[0], "queue.num: ") {
		t.Fatalf("problems: %q", got)
	}
	if strings.Contains(got[0], "-9223372036854775808") {
		t.Fatalf("regression (fixed bug): 1e23 converted to int64 min before validation: %q", got[0])
	}
}

// The default mark lies in the upper half of the default mark_mask, and
// that mask collides with none of kube-proxy's, Calico's or Cilium's bits.
func TestDefaultMarkInsideDefaultMask(t *testing.T) {
	if DefaultMark&^DefaultMarkMask != 0 || DefaultMark&NewMarkLayout(DefaultMarkMask).CopyBit() == 0 {
		t.Fatalf("default mark %#x outside the upper half of mark_mask %#x", DefaultMark, DefaultMarkMask)
	}
	for _, other := range []uint32{0x4000, 0x8000, 0xffff0000, 0x0f00} { // kube-proxy, Calico, Cilium
		if other&DefaultMarkMask != 0 {
			t.Errorf("default mark_mask %#x overlaps %#x", DefaultMarkMask, other)
		}
	}
}

// TestEncapDefaults: a vxlan target with one remote is encapsulated by a
// kernel VXLAN device whatever the method; several remotes and geneve by
// nfclone; an explicit userspace stays.
func TestEncapDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`
sessions:
  - name: q
    method: queue
    sources: [{interface: e0}]
    targets:
      - {kind: vxlan, remote: "10.77.4.2:4789", vni: 1}
      - {kind: vxlan, remote: ["10.77.4.2:4789", "10.77.4.3:4789"], vni: 2}
      - {kind: geneve, remote: "10.77.4.2:6081", vni: 3}
      - {kind: vxlan, remote: "10.77.4.2:4789", vni: 4, encap: userspace}
  - name: d
    sources: [{interface: e2}]
    targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 5}]
`), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	var got []Encap
	var kernel []bool
	for _, s := range cfg.Sessions {
		for _, tg := range s.Targets {
			got = append(got, tg.Encap)
			kernel = append(kernel, tg.KernelVXLAN())
		}
	}
	want := []Encap{EncapKernel, EncapUserspace, EncapUserspace, EncapUserspace, EncapKernel}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("encap = %v, want %v", got, want)
	}
	if wantK := []bool{true, false, false, false, true}; !reflect.DeepEqual(kernel, wantK) {
		t.Errorf("KernelVXLAN = %v, want %v", kernel, wantK)
	}
}

// A session that holds its originals makes nfclone's threads run at nice 0
// unless queue.nice is set (in the file or the environment): they wait for
// nfclone, so yielding to the host would make the host's traffic yield.
func TestHoldNiceDefault(t *testing.T) {
	const session = `
sessions:
  - name: h
    method: queue
    hold: %t
    sources: [{interface: e0}]
    targets: [{kind: device, device: e1}]
`
	for _, c := range []struct {
		name string
		hold bool
		file string
		env  map[string]string
		want int
	}{
		{"no hold", false, "", nil, DefaultNice},
		{"hold", true, "", nil, HoldNice},
		{"hold, nice in the file", true, "queue: {nice: 10}\n", nil, 10},
		{"hold, nice in the environment", true, "", map[string]string{"NFCLONE_QUEUE_NICE": "5"}, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.file+fmt.Sprintf(session, c.hold)), env(c.env))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Queue.Nice != c.want {
				t.Errorf("queue.nice %d, want %d", cfg.Queue.Nice, c.want)
			}
		})
	}
}

// kernelRouted names the sessions of c the kernel sends the copies of.
func kernelRouted(c *Config) []string {
	var out []string
	for i := range c.Sessions {
		if c.KernelRouted(&c.Sessions[i]) {
			out = append(out, c.Sessions[i].Name)
		}
	}
	return out
}

// Which sessions the kernel sends the clones of: queue (and, with
// queue.log_kernel_route, log) sessions with one
// gateway target and nothing done to the copy in userspace.
func TestKernelRouted(t *testing.T) {
	c, err := Parse([]byte(`
sessions:
  - {name: gw, method: queue, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
  - {name: gw6, method: queue, sources: [{interface: e0}], targets: [{kind: gateway, gateway: "fd77:2::2", device: e1}]}
  - {name: hold, method: queue, hold: true, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
  - {name: cut, method: queue, snaplen: 96, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
  - {name: dedup, method: queue, dedup: 50ms, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
  - {name: two, method: queue, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}, {kind: device, device: e3}]}
  - {name: dev, method: queue, sources: [{interface: e0}], targets: [{kind: device, device: e3}]}
  - {name: tagged, method: queue, sources: [{interface: e0}], targets: [{kind: device, device: e3, vlan: 7}]}
  - {name: made, method: queue, sources: [{interface: e0}], targets: [{kind: device, device: agg0, create: true}]}
  - {name: log, method: log, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
  - {name: logsnap, method: log, snaplen: 96, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
  - {name: dup, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
  - {name: vx, method: queue, sources: [{interface: e0}], targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 7}]}
  - {name: vxlog, method: log, sources: [{interface: e0}], targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 8}]}
  - {name: vxuser, method: queue, sources: [{interface: e0}], targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 9, encap: userspace}]}
  - {name: vxtwo, method: queue, sources: [{interface: e0}], targets: [{kind: vxlan, remote: "10.77.4.2:4789,10.77.4.3:4789", vni: 9}]}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := kernelRouted(c), []string{"gw", "gw6", "dev", "made"}; !reflect.DeepEqual(got, want) {
		t.Errorf("kernel-routed sessions %v, want %v", got, want)
	}
	// By default (log_kernel_route: tcp) the kernel sends the TCP clones of
	// the log sessions it could send whole.
	if got, want := names(c, c.KernelRoutedTCP), []string{"log"}; !reflect.DeepEqual(got, want) {
		t.Errorf("log sessions whose TCP clones the kernel sends: %v, want %v", got, want)
	}
	if got, want := names(c, c.RoutesClones), []string{"gw", "gw6", "dev", "made", "log"}; !reflect.DeepEqual(got, want) {
		t.Errorf("sessions whose clones the kernel sends (some or all): %v, want %v", got, want)
	}
	// vxlan targets with nfclone's VXLAN device (one remote) only with
	// queue.vxlan_kernel_route.
	c.Queue.VXLANKernelRoute = VXLANRouteOn
	if got, want := kernelRouted(c), []string{"gw", "gw6", "dev", "made", "vx"}; !reflect.DeepEqual(got, want) {
		t.Errorf("with vxlan_kernel_route: kernel-routed sessions %v, want %v", got, want)
	}
	if got, want := names(c, c.KernelRoutedTCP), []string{"log", "vxlog"}; !reflect.DeepEqual(got, want) {
		t.Errorf("with vxlan_kernel_route: log sessions whose TCP clones the kernel sends: %v, want %v", got, want)
	}
	// log sessions whole only with queue.log_kernel_route: on; each key alone.
	c.Queue.KernelRoute, c.Queue.LogKernelRoute = false, LogRouteOn
	if got, want := kernelRouted(c), []string{"log", "vxlog"}; !reflect.DeepEqual(got, want) {
		t.Errorf("with only log_kernel_route (and vxlan_kernel_route): kernel-routed sessions %v, want %v", got, want)
	}
	if got := names(c, c.KernelRoutedTCP); got != nil {
		t.Errorf("with log_kernel_route: on, the TCP clones alone of %v", got)
	}
	c.Queue.LogKernelRoute = LogRouteOff
	if got := names(c, c.RoutesClones); got != nil {
		t.Errorf("with neither key: the kernel sends clones of %v", got)
	}
}

func names(c *Config, pred func(*Session) bool) []string {
	var out []string
	for i := range c.Sessions {
		if pred(&c.Sessions[i]) {
			out = append(out, c.Sessions[i].Name)
		}
	}
	return out
}

// queue.log_kernel_route takes tcp, on and off, and YAML's booleans.
func TestLogKernelRouteValues(t *testing.T) {
	for in, want := range map[string]VXLANRoute{"": VXLANRouteAuto, "auto": VXLANRouteAuto, "on": VXLANRouteOn, "true": VXLANRouteOn, "off": VXLANRouteOff, "false": VXLANRouteOff} {
		body := "sessions: [{name: a, method: log, sources: [{interface: e0}], targets: [{kind: pcap, path: /tmp/x.pcap}]}]\n"
		if in != "" {
			body = "queue: {vxlan_kernel_route: " + in + "}\n" + body
		}
		c, err := Parse([]byte(body), nil)
		if err != nil || c.Queue.VXLANKernelRoute != want {
			t.Errorf("vxlan_kernel_route %q: %v, %v; want %q", in, c, err, want)
		}
	}
	for in, want := range map[string]LogRoute{"": LogRouteTCP, "tcp": LogRouteTCP, "on": LogRouteOn, "true": LogRouteOn, "off": LogRouteOff, "false": LogRouteOff} {
		body := "sessions: [{name: a, method: log, sources: [{interface: e0}], targets: [{kind: pcap, path: /tmp/x.pcap}]}]\n"
		if in != "" {
			body = "queue: {log_kernel_route: " + in + "}\n" + body
		}
		c, err := Parse([]byte(body), nil)
		if err != nil {
			t.Errorf("log_kernel_route %q: %v", in, err)
			continue
		}
		if c.Queue.LogKernelRoute != want {
			t.Errorf("log_kernel_route %q: %q, want %q", in, c.Queue.LogKernelRoute, want)
		}
	}
	_, err := Parse([]byte("queue: {log_kernel_route: udp}\nsessions: [{name: a, method: log, sources: [{interface: e0}], targets: [{kind: pcap, path: /tmp/x.pcap}]}]\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "queue.log_kernel_route") {
		t.Errorf("log_kernel_route: udp: %v, want an error naming the key", err)
	}
}

func noPath(netip.AddrPort) int { return 0 }

// queue.vxlan_kernel_route auto (the default): the kernel sends into
// nfclone's VXLAN device the copies of the sessions whose path to the
// remote takes the outer datagram of their sources' largest packet whole
// (MTU + 50 toward an IPv4 remote, + 70 toward IPv6); on: every such
// session's; off: none. An unknown path or source MTU is not a fit.
func TestVXLANKernelRouteAuto(t *testing.T) {
	c, err := Parse([]byte(`
sessions:
  - {name: jumbo, method: queue, sources: [{interface: e0}], targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 7}]}
  - {name: edge, method: log, sources: [{interface: e0}], targets: [{kind: vxlan, remote: "10.77.5.2:4789", vni: 8}]}
  - {name: thin, method: queue, sources: [{interface: e0}], targets: [{kind: vxlan, remote: "10.77.6.2:4789", vni: 9}]}
  - {name: six, method: queue, sources: [{interface: e0}], targets: [{kind: vxlan, remote: "[fd77:4::2]:4789", vni: 10}]}
  - {name: nosrc, method: queue, sources: [{interface: e9}], targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 11}]}
  - {name: user, method: queue, sources: [{interface: e0}], targets: [{kind: vxlan, remote: "10.77.4.2:4789", vni: 12, encap: userspace}]}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]int{"10.77.4.2": 9000, "10.77.5.2": 1550, "10.77.6.2": 1549, "fd77:4::2": 1569}
	mtu := func(n string) int { return map[string]int{"e0": 1500}[n] }
	path := func(ap netip.AddrPort) int { return paths[ap.Addr().String()] }
	if notes := KernelRouteMTU(c, mtu, path, false); len(notes) != 0 {
		t.Errorf("notes %v", notes)
	}
	if got, want := names(c, c.RoutesClones), []string{"jumbo", "edge"}; !reflect.DeepEqual(got, want) {
		t.Errorf("auto: the kernel sends the clones of %v, want %v", got, want)
	}
	paths["fd77:4::2"] = 1570
	KernelRouteMTU(c, mtu, path, false)
	if got, want := names(c, c.RoutesClones), []string{"jumbo", "edge", "six"}; !reflect.DeepEqual(got, want) {
		t.Errorf("auto, the IPv6 path grown: %v, want %v", got, want)
	}
	if got := names(c, c.TunnelTrimmed); got != nil {
		t.Errorf("no trim: trimmed %v", got)
	}
	// With the host cutting super-packets to the path (gsotrim), a path
	// with room for an inner packet of 1280 bytes is enough: thin too.
	// nosrc's path fits nothing known; a path of 1329 toward IPv4 leaves
	// 1279.
	paths["10.77.5.2"] = 1329
	KernelRouteMTU(c, mtu, path, true)
	if got, want := names(c, c.RoutesClones), []string{"jumbo", "thin", "six"}; !reflect.DeepEqual(got, want) {
		t.Errorf("auto with trim: %v, want %v", got, want)
	}
	if got, want := names(c, c.TunnelTrimmed), []string{"thin"}; !reflect.DeepEqual(got, want) {
		t.Errorf("auto with trim: trimmed %v, want %v", got, want)
	}
	paths["10.77.5.2"] = 1330
	KernelRouteMTU(c, mtu, path, true)
	if got, want := names(c, c.RoutesClones), []string{"jumbo", "edge", "thin", "six"}; !reflect.DeepEqual(got, want) {
		t.Errorf("auto with trim, edge's path 1330: %v, want %v", got, want)
	}
	c.Queue.VXLANKernelRoute = VXLANRouteOn
	if got, want := names(c, c.RoutesClones), []string{"jumbo", "edge", "thin", "six", "nosrc"}; !reflect.DeepEqual(got, want) {
		t.Errorf("on: %v, want %v", got, want)
	}
	c.Queue.VXLANKernelRoute = VXLANRouteOff
	if got := names(c, c.RoutesClones); got != nil {
		t.Errorf("off: %v", got)
	}
}

// A kernel-routed session whose gateway device has a smaller MTU than one of
// its sources is sent by nfclone instead (the kernel would answer a longer
// DF copy with "fragmentation needed" to the original's sender); unknown
// MTUs change nothing; a dup session gets a warning (it has no other way).
func TestKernelRouteMTU(t *testing.T) {
	c, err := Parse([]byte(`
sessions:
  - {name: small, method: queue, sources: [{interface: e0}, {interface: e2}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
  - {name: same, method: queue, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.3.2, device: e3}]}
  - {name: unknown, method: queue, sources: [{interface: e9}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
  - {name: dup, sources: [{interface: e2}], targets: [{kind: gateway, gateway: 10.77.3.2, device: e3}]}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	mtus := map[string]int{"e0": 1500, "e2": 9000, "e1": 1500, "e3": 1500}
	notes := KernelRouteMTU(c, func(n string) int { return mtus[n] }, noPath, false)
	if routed, want := kernelRouted(c), []string{"same", "unknown"}; !reflect.DeepEqual(routed, want) {
		t.Errorf("kernel-routed %v, want %v", routed, want)
	}
	// Asked again after the MTU grew: the kernel sends again.
	mtus["e1"] = 9000
	if notes := KernelRouteMTU(c, func(n string) int { return mtus[n] }, noPath, false); len(notes) != 1 || !c.KernelRouted(&c.Sessions[0]) {
		t.Errorf("after e1 grew: notes %v, session small kernel-routed %v", notes, c.KernelRouted(&c.Sessions[0]))
	}
	if len(notes) != 2 || notes[0].Path != "sessions[0].targets[0].device" || !strings.Contains(notes[0].Msg, "e1 has MTU 1500, below 9000 of source e2: nfclone sends") ||
		notes[1].Path != "sessions[3].targets[0].device" || !strings.Contains(notes[1].Msg, "the kernel's dup drops") {
		t.Errorf("notes %v, want one for sessions[0]'s e1 below e2 and one for the dup session", notes)
	}
}
