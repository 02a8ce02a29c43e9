package config

import (
	"reflect"
	"testing"
)

// A gateway whose family the session's filter or rules can never match is
// refused: its chains would copy nothing.
func TestGatewayFamilyNoMatch(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{`
sessions:
  - name: s
    sources: [{interface: e0}]
    filter: "tcp port 80 and host 10.0.0.1"
    targets: [{kind: gateway, gateway: "fd77:2::2", device: e1}]
`, `sessions[0].targets[0].gateway: fd77:2::2 is IPv6 but the session's filter matches IPv4 packets only: its chains would copy nothing (add a rule for IPv6, or a gateway of the rules' family)`},
		{`
sessions:
  - name: s
    sources: [{interface: e0}]
    rules: [{number: 1, action: reject}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
`, `sessions[0].targets[0].gateway: 10.77.2.2 would never get a copy: no rule of this session accepts a packet`},
		{`
sessions:
  - name: s
    sources: [{interface: e0}]
    rules: [{number: 1, action: accept, protocol: icmpv6}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}, {kind: gateway, gateway: "fd77:2::2", device: e1}]
`, `sessions[0].targets[0].gateway: 10.77.2.2 is IPv4 but every accept rule of this session matches IPv6 only: its chains would copy nothing (add a rule for IPv4, or a gateway of the rules' family)`},
	} {
		got := problemLines(t, tc.yaml, nil)
		if !reflect.DeepEqual(got, []string{tc.want}) {
			t.Errorf("got %q\nwant %q", got, tc.want)
		}
	}
	// Either family matches: fine.
	if got := problemLines(t, `
sessions:
  - name: s
    sources: [{interface: e0}]
    filter: "port 53"
    targets: [{kind: gateway, gateway: "fd77:2::2", device: e1}]
`, nil); got != nil {
		t.Errorf("port 53 with an IPv6 gateway: %q", got)
	}
}

// Every problem of a file names its line: the key's, or for a missing key
// that of the map it belongs in.
func TestProblemLines(t *testing.T) {
	_, err := Parse([]byte(`table: x
sessions:
  - name: s
    sources: [{interface: e0}]
    rules:
      - {number: 1, action: accept}
      - number: 2
        action: maybe
    targets:
      - kind: gateway
        device: e1
`), nil)
	errs, _ := err.(Errors)
	want := "sessions[0].rules[1].action: \"maybe\" is not accept or reject (line 8)\n" +
		"sessions[0].targets[0].gateway: is required (line 10)"
	if got := errs.Text(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}
