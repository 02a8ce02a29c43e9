package lab

import (
	"strings"
	"testing"
)

// WireOffloads turns TSO, GSO, GRO and transmit checksumming off on dev in namespace ns
// (ethtool -K dev tso off gso off gro off tx off). With both ends of a veth link so
// configured, the link carries what a wire would: the sender's stack segments and checksums
// in software, the receiver does not merge, and a capture there sees wire frames with final
// checksums. The namespaces go with the lab, so nothing needs undoing.
func (l *Lab) WireOffloads(t testing.TB, ns, dev string) {
	t.Helper()
	RequireTools(t, "ethtool")
	l.MustExec(t, ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", "tx", "off")
	on := l.Offloads(t, ns, dev)
	for _, f := range []string{"tcp-segmentation-offload", "generic-segmentation-offload", "generic-receive-offload", "tx-checksumming"} {
		if on[f] {
			t.Fatalf("[%s] %s: %s is still on after ethtool -K ... off", ns, dev, f)
		}
	}
}

// Offload reports whether an offload feature of dev in ns is on, as `ethtool -k` names it
// (e.g. "tcp-segmentation-offload"); it fails the test when ethtool does not list it.
func (l *Lab) Offload(t testing.TB, ns, dev, feature string) bool {
	t.Helper()
	on, ok := l.Offloads(t, ns, dev)[feature]
	if !ok {
		t.Fatalf("[%s] ethtool -k %s lists no %q", ns, dev, feature)
	}
	return on
}

// Offloads returns every feature `ethtool -k dev` lists in ns, true when on.
func (l *Lab) Offloads(t testing.TB, ns, dev string) map[string]bool {
	t.Helper()
	RequireTools(t, "ethtool")
	out := l.MustExec(t, ns, "ethtool", "-k", dev)
	m := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		name, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && !strings.HasPrefix(line, "Features") {
			m[name] = strings.HasPrefix(strings.TrimSpace(val), "on")
		}
	}
	return m
}
