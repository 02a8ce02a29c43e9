package config

import (
	"strings"
	"testing"
)

// A dup device target that another dup session copies on egress would copy
// copies: refused with the path of the target. Ingress-only is fine.
func TestLoopsRefused(t *testing.T) {
	base := `
sessions:
  - name: a
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: device, device: e1}]
  - name: b
    sources: [{interface: e1, direction: %s}]
    targets: [{kind: device, device: e3}]
`
	_, err := Parse([]byte(strings.Replace(base, "%s", "both", 1)), nil)
	want := `sessions[0].targets[0].device: "e1" is an egress source of sessions[1] (b): its copies would be copied again (a loop); copy only ingress there`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	if _, err := Parse([]byte(strings.Replace(base, "%s", "ingress", 1)), nil); err != nil {
		t.Fatalf("ingress-only source refused: %v", err)
	}
}
