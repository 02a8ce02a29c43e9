package config

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

// fakeHost is a Host made of a map: interface name → its prefixes. An
// interface listed in fail answers with an error.
type fakeHost struct {
	ifs  map[string][]string
	fail map[string]bool
}

func (h fakeHost) Interface(name string) (bool, []netip.Prefix, error) {
	if h.fail[name] {
		return false, nil, errors.New("netlink: operation not permitted")
	}
	ps, ok := h.ifs[name]
	if !ok {
		return false, nil, nil
	}
	var out []netip.Prefix
	for _, p := range ps {
		out = append(out, netip.MustParsePrefix(p))
	}
	return true, out, nil
}

var labHost = fakeHost{ifs: map[string][]string{
	"e0":   {"10.77.1.1/24", "fd77:1::1/64"},
	"e1":   {"10.77.2.1/24"},                 // IPv4 only
	"e2":   {"fd77:2::1/64", "fe80::1/64"},   // IPv6 only
	"e3":   nil,                              // no address (an L2 port)
	"e4":   {"10.77.4.1/24", "10.77.5.1/24"}, // two v4 networks
	"agg0": nil,
	"lo":   {"127.0.0.1/8", "::1/128"},
}}

func mustParse(t *testing.T, y string) *Config {
	t.Helper()
	cfg, err := Parse([]byte(y), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

func TestCheckHost(t *testing.T) {
	cases := []struct {
		name  string
		yaml  string
		owned map[string]bool
		host  Host
		want  []string
	}{
		{
			name: "all present",
			yaml: `
sessions:
  - name: s
    sources: [{interface: e0}, {interface: e4}]
    targets:
      - {kind: device, device: e3}
      - {kind: gateway, device: e1, gateway: 10.77.2.2}
      - {kind: gateway, device: e2, gateway: "fd77:2::2"}
      - {kind: gateway, device: e2, gateway: "fe80::2"}
      - {kind: gateway, device: e4, gateway: 10.77.5.9}
`,
		},
		{
			name: "missing interfaces",
			yaml: `
sessions:
  - name: s
    sources: [{interface: e0}, {interface: nope0}]
    targets:
      - {kind: device, device: nope1}
      - {kind: gateway, device: nope2, gateway: 10.77.2.2}
`,
			want: []string{
				`sessions[0].sources[1].interface: interface "nope0" does not exist`,
				`sessions[0].targets[0].device: interface "nope1" does not exist (create: true makes nfclone create it)`,
				`sessions[0].targets[1].device: interface "nope2" does not exist`,
			},
		},
		{
			name: "gateway not on a connected network",
			yaml: `
sessions:
  - name: s
    sources: [{interface: e0}]
    targets:
      - {kind: gateway, device: e1, gateway: 10.77.3.2}
      - {kind: gateway, device: e4, gateway: 10.77.6.2}
`,
			want: []string{
				"sessions[0].targets[0].gateway: 10.77.3.2 is not on a network connected to e1 (its IPv4 networks: [10.77.2.0/24])",
				"sessions[0].targets[1].gateway: 10.77.6.2 is not on a network connected to e4 (its IPv4 networks: [10.77.4.0/24 10.77.5.0/24])",
			},
		},
		{
			name: "address family mismatch",
			yaml: `
sessions:
  - name: s
    sources: [{interface: e0}]
    targets:
      - {kind: gateway, device: e1, gateway: "fd77:2::2"}
      - {kind: gateway, device: e2, gateway: 10.77.2.2}
      - {kind: gateway, device: e3, gateway: 10.77.2.2}
`,
			want: []string{
				"sessions[0].targets[0].gateway: fd77:2::2 is not on a network connected to e1 (it has no IPv6 address: address family mismatch)",
				"sessions[0].targets[1].gateway: 10.77.2.2 is not on a network connected to e2 (it has no IPv4 address: address family mismatch)",
				"sessions[0].targets[2].gateway: 10.77.2.2 is not on a network connected to e3 (it has no IPv4 address: address family mismatch)",
			},
		},
		{
			name: "create on an existing interface nfclone does not own",
			yaml: `
sessions:
  - name: s
    sources: [{interface: e0}]
    targets: [{kind: device, device: e3, create: true}]
`,
			want: []string{
				`sessions[0].targets[0].device: interface "e3" already exists and was not created by nfclone; refusing to touch it (remove create: true to mirror into it)`,
			},
		},
		{
			name:  "create on an interface nfclone owns",
			owned: map[string]bool{"agg0": true},
			yaml: `
sessions:
  - name: s
    sources: [{interface: e0}]
    targets: [{kind: device, device: agg0, create: true}]
`,
		},
		{
			name: "create on a new interface; other sessions may use it",
			yaml: `
sessions:
  - name: a
    sources: [{interface: e0}]
    targets: [{kind: device, device: new0, create: true}]
  - name: b
    sources: [{interface: new0, direction: ingress}]
    targets: [{kind: device, device: e3}]
  - name: c
    sources: [{interface: e4}]
    targets: [{kind: device, device: new0}]
`,
		},
		{
			name: "lookup errors are reported",
			host: fakeHost{ifs: labHost.ifs, fail: map[string]bool{"e1": true}},
			yaml: `
sessions:
  - name: s
    sources: [{interface: e0}]
    targets: [{kind: device, device: e1}]
`,
			want: []string{
				`sessions[0].targets[0].device: looking up interface "e1": netlink: operation not permitted`,
				`sessions[0].targets[0].device: interface "e1" does not exist (create: true makes nfclone create it)`,
			},
		},
		{
			name: "tunnel and pcap targets need no interface",
			yaml: `
sessions:
  - name: s
    method: queue
    sources: [{interface: e0}]
    targets:
      - {kind: vxlan, remote: "10.9.9.9:4789", vni: 1}
      - {kind: pcap, path: "-"}
`,
		},
		{
			name: "queue without a usable loopback",
			yaml: `
sessions:
  - name: s
    method: queue
    sources: [{interface: e0}]
    targets: [{kind: pcap, path: "-"}]
  - name: l
    method: log
    sources: [{interface: e0}]
    targets: [{kind: pcap, path: "-"}]
`,
			host: fakeHost{ifs: map[string][]string{"e0": nil, "lo": nil}},
			want: []string{`sessions[0].method: queue needs the loopback interface up with 127.0.0.1 (the kernel's copies are routed to lo and read there): ip link set lo up`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustParse(t, tc.yaml)
			h := tc.host
			if h == nil {
				h = labHost
			}
			var got []string
			for _, p := range CheckHost(cfg, h, tc.owned) {
				got = append(got, p.String())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("CheckHost:\n got: %q\nwant: %q", got, tc.want)
			}
		})
	}
}
