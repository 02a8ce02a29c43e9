package config

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Validate fills the typed forms of a session's rate, dedup and filter and
// of every rule's match: what the rules compiler and the engine read.
func TestValidateTypesSessionKeys(t *testing.T) {
	cfg, err := Parse([]byte(`
sessions:
  - name: q
    method: queue
    rate: "10 mbytes/second"
    dedup: 50ms
    sources: [{interface: e0}]
    rules:
      - {number: 2, action: reject, source: 10.1.2.3/8, protocol: 17, source_ports: "53, 5353-5354"}
      - {number: 1, action: accept, destination: "fd00::1", direction: ingress}
    targets: [{kind: gateway, device: e1, gateway: "fd77:2::2"}]
  - name: f
    method: log
    rate: 20/s
    filter: "tcp port 80"
    sources: [{interface: e0, direction: egress}]
    targets: [{kind: gateway, device: e1, gateway: "::ffff:10.77.2.2"}]
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	q, f := cfg.Sessions[0], cfg.Sessions[1]
	if want := (Rate{Count: 10 << 20, Unit: "second", Bytes: true}); q.RateLimit == nil || *q.RateLimit != want {
		t.Errorf("q.RateLimit = %v, want %v", q.RateLimit, want)
	}
	if want := (Rate{Count: 20, Unit: "second"}); f.RateLimit == nil || *f.RateLimit != want {
		t.Errorf("f.RateLimit = %v, want %v", f.RateLimit, want)
	}
	if q.DedupWindow != 50*time.Millisecond || f.DedupWindow != 0 {
		t.Errorf("DedupWindow = %v, %v; want 50ms, 0", q.DedupWindow, f.DedupWindow)
	}
	if q.FilterExpr != nil || f.FilterExpr == nil || f.FilterExpr.String() != "tcp port 80" {
		t.Errorf("FilterExpr = %v, %v; want nil, tcp port 80", q.FilterExpr, f.FilterExpr)
	}
	wantRules := []RuleMatch{
		{Proto: 17, HasProto: true, Src: netip.MustParsePrefix("10.0.0.0/8"), SrcPorts: []PortRange{{53, 53}, {5353, 5354}}},
		{Dst: netip.MustParsePrefix("fd00::1/128")},
	}
	for i, want := range wantRules {
		if m := q.Rules[i].Match; m == nil || !reflect.DeepEqual(*m, want) {
			t.Errorf("rules[%d].Match = %+v, want %+v", i, m, want)
		}
	}
	if q.Rules[1].Direction != Ingress || q.Sources[0].Direction != Both || f.Sources[0].Direction != Egress {
		t.Errorf("directions: %q %q %q", q.Rules[1].Direction, q.Sources[0].Direction, f.Sources[0].Direction)
	}
	// The gateway's family: an IPv4-mapped address is IPv4.
	if !q.Targets[0].GatewayIs6() || f.Targets[0].GatewayIs6() {
		t.Errorf("GatewayIs6: %v %v, want true false", q.Targets[0].GatewayIs6(), f.Targets[0].GatewayIs6())
	}
	if !q.Method.Userspace() || !f.Method.Userspace() || MethodDup.Userspace() {
		t.Error("Method.Userspace")
	}
}

// A rule with a problem gets no typed match (Validate refuses the config;
// the compiler refuses a rule without one).
func TestValidateNoMatchForBadRule(t *testing.T) {
	c := Default()
	c.Sessions = []Session{{
		Name: "s", Sources: []Source{{Interface: "e0"}}, Targets: []Target{{Kind: KindDevice, Device: "e1"}},
		Rules: []Rule{
			{Number: 1, Action: "accept", Protocol: "tcp", DestinationPorts: "80"},
			{Number: 2, Action: "accept", Protocol: "tcp", DestinationPorts: "0"},
			{Number: 3, Action: "accept", Source: "10.0.0.0/8", Destination: "fd00::/8"},
		},
	}}
	if errs := Validate(&c); len(errs) != 2 {
		t.Fatalf("Validate: %v, want 2 problems", errs)
	}
	r := c.Sessions[0].Rules
	if r[0].Match == nil || r[1].Match != nil || r[2].Match != nil {
		t.Errorf("matches: %v %v %v; want only the first", r[0].Match, r[1].Match, r[2].Match)
	}
}

// The enums read and write the same strings as before they were typed.
func TestEnumsAreStrings(t *testing.T) {
	b, err := json.Marshal(Session{Method: MethodQueue, Sources: []Source{{Direction: Egress}},
		Rules: []Rule{{Direction: Ingress}}, Targets: []Target{{Kind: KindPcapOverIP}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"method":"queue"`, `"direction":"egress"`, `"direction":"ingress"`, `"kind":"pcap-over-ip"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
	for _, typed := range []string{"Match", "RateLimit", "DedupWindow", "FilterExpr"} {
		if strings.Contains(string(b), typed) {
			t.Errorf("%s holds the typed form %s", b, typed)
		}
	}
}
