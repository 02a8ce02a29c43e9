package rules

import (
	"strings"
	"testing"

	"github.com/nfclone/nfclone/config"
)

// A session's filter expression becomes one rule per conjunction, in the
// tables of the families it can match, each with its guards.
func TestCompileFilterExpression(t *testing.T) {
	c, err := config.Parse([]byte(`
sessions:
  - name: l
    method: log
    sources: [{interface: e0, direction: ingress}]
    filter: "tcp port 7777 and host 10.77.4.2"
    targets: [{kind: pcap, path: /tmp/x.pcap}]
  - name: d
    sources: [{interface: e0, direction: ingress}]
    filter: "not port 22 and ip6"
    targets: [{kind: device, device: e1}]
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Compile(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := rs.Render()
	for _, want := range []string{
		"\tchain l_in {\n" +
			"\t\tip saddr 10.77.4.2 tcp sport 7777 goto l_copy\n" +
			"\t\tip daddr 10.77.4.2 tcp sport 7777 goto l_copy\n" +
			"\t\tip saddr 10.77.4.2 tcp dport 7777 goto l_copy\n" +
			"\t\tip daddr 10.77.4.2 tcp dport 7777 goto l_copy\n" +
			"\t}\n",
		"\tchain d_in {\n" +
			"\t\tmeta protocol ip6 meta l4proto != sctp meta l4proto != udp meta l4proto != tcp goto d_copy\n" +
			"\t\tmeta protocol ip6 sctp sport != 22 sctp dport != 22 goto d_copy\n" +
			"\t\tmeta protocol ip6 udp sport != 22 udp dport != 22 goto d_copy\n" +
			"\t\tmeta protocol ip6 tcp sport != 22 tcp dport != 22 goto d_copy\n" +
			"\t}\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing\n%s\nin\n%s", want, out)
		}
	}
	// The ip6 table's chain of the IPv4-only expression copies nothing.
	if i := strings.Index(out, "table ip6"); i < 0 || !strings.Contains(out[i:], "\tchain l_in {\n\t}\n") {
		t.Errorf("the ip6 chain of an IPv4-only expression is not empty:\n%s", out)
	}
}
