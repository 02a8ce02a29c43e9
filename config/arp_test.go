package config

import (
	"net/netip"
	"strings"
	"testing"
)

type useHost map[string]DeviceUse

func (h useHost) DeviceUse(name string, skip func(uint32) bool) (DeviceUse, bool, error) {
	u, ok := h[name]
	return u, ok, nil
}

// check warns about arp: off on a device that carries other traffic (issue
// 11): IFF_NOARP is per device, and the host's own traffic through it stops.
func TestARPOffWarnsOnBusyDevice(t *testing.T) {
	c, err := Parse([]byte(`
sessions:
  - name: a
    method: queue
    sources: [{interface: e0}]
    targets:
      - {kind: gateway, gateway: 10.77.2.2, device: e1, arp: off}
      - {kind: gateway, gateway: 10.77.5.2, device: e5, arp: off}
      - {kind: gateway, gateway: 10.77.4.2, device: e3}
  - name: b
    method: log
    sources: [{interface: e0}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1, arp: off}]
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := useHost{
		"e1": {Addrs: []netip.Prefix{netip.MustParsePrefix("10.77.2.1/24")}},
		"e3": {Addrs: []netip.Prefix{netip.MustParsePrefix("10.77.4.1/24")}, Routes: 1},
		"e5": {}, // carries only copies
	}
	ws := ARPWarnings(c, h)
	if len(ws) != 1 {
		t.Fatalf("want one warning (e1, once), got %d:\n%v", len(ws), ws)
	}
	w := ws[0]
	if w.Path != "sessions[0].targets[0].arp" || !strings.Contains(w.Msg, "IFF_NOARP on e1") ||
		!strings.Contains(w.Msg, "addresses 10.77.2.1/24") || !strings.Contains(w.Msg, "use mac:") {
		t.Fatalf("warning: %s", w)
	}
	h["e5"] = DeviceUse{Neighbours: 2}
	if ws := ARPWarnings(c, h); len(ws) != 2 || !strings.Contains(ws[1].Msg, "2 neighbours") {
		t.Fatalf("a device with neighbours: %v", ws)
	}
}
