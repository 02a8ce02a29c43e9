package rules

import (
	"net/netip"

	"github.com/nfclone/nfclone/config"
)

// GatewayRoute is the policy routing of one distinct (gateway, device) of the
// userspace methods: copies sent with Mark are routed by `ip rule pref Pref
// fwmark Mark lookup Table` to `default via Gateway dev Device table Table`.
// The first gets the configured mark, table and preference; each further one
// the next numbers, so copies of all of them carry marks in
// [cfg.Mark, cfg.Mark+len-1] — the range every capture rule skips.
type GatewayRoute struct {
	Gateway netip.Addr
	Device  string
	Mark    uint32
	Table   uint32
	Pref    uint32
}

// GatewayRoutes lists the policy routes the userspace gateway targets need,
// in config order, one per distinct (gateway, device).
func GatewayRoutes(c *config.Config) []GatewayRoute {
	var out []GatewayRoute
	seen := map[string]bool{}
	for _, s := range c.Sessions {
		if s.Method != config.MethodQueue && s.Method != config.MethodLog {
			continue
		}
		for _, t := range s.Targets {
			if t.Kind != config.KindGateway {
				continue
			}
			gw, err := netip.ParseAddr(t.Gateway)
			if err != nil {
				continue
			}
			key := gw.Unmap().String() + "%" + t.Device
			if seen[key] {
				continue
			}
			seen[key] = true
			k := uint32(len(out))
			out = append(out, GatewayRoute{Gateway: gw.Unmap(), Device: t.Device,
				Mark: c.Mark + k, Table: c.RouteTable + k, Pref: c.RulePref + k})
		}
	}
	return out
}

// GatewayMark returns the mark userspace copies to (gateway, device) carry;
// ok=false when the pair has no route.
func GatewayMark(routes []GatewayRoute, gw netip.Addr, device string) (uint32, bool) {
	for _, r := range routes {
		if r.Gateway == gw.Unmap() && r.Device == device {
			return r.Mark, true
		}
	}
	return 0, false
}

// markRange is the range of marks nfclone's copies carry.
func markRange(c *config.Config) (lo, hi uint32) {
	n := uint32(len(GatewayRoutes(c)))
	if n == 0 {
		n = 1
	}
	return c.Mark, c.Mark + n - 1
}
