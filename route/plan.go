// Package route owns the routing-side state nfclone changes on the host
// (docs/architecture.md): fwmark policy rules and the
// default routes of nfclone's tables, the move of the `local` rule behind
// nfclone's rules, link flags (IFF_NOARP, IFF_PROMISC), permanent neighbour
// entries, and the interfaces nfclone itself creates (veth pairs, kernel
// VXLAN devices).
//
// The desired state is a Plan (pure data: validated and rendered without
// touching the kernel). An Applier applies a Plan through a Kernel and
// returns a Journal of what it actually changed; Undo reverts a Journal.
// The Journal is JSON-serialisable so it can live in nfclone's state file and
// be undone by a later run after a crash.
package route

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"golang.org/x/sys/unix"
)

// Family is an address family: IPv4 (unix.AF_INET) or IPv6 (unix.AF_INET6).
type Family uint8

// Address families.
const (
	IPv4 Family = unix.AF_INET
	IPv6 Family = unix.AF_INET6
)

// Well-known routing tables and preferences.
const (
	// LocalPref is the preference the `local` rule is moved to, after
	// nfclone's own fwmark rules.
	LocalPref uint32 = 1000
	// TableLocal is the kernel's `local` table.
	TableLocal uint32 = unix.RT_TABLE_LOCAL
	// TableMain is the kernel's `main` table.
	TableMain uint32 = unix.RT_TABLE_MAIN
	// TableDefault is the kernel's `default` table.
	TableDefault uint32 = unix.RT_TABLE_DEFAULT
	// DefaultVXLANPort is the IANA VXLAN port, used when VXLAN.Port is 0.
	DefaultVXLANPort uint16 = 4789
)

// FamilyOf returns the family of an address (IPv4-mapped IPv6 counts as IPv4).
func FamilyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// Valid reports whether f is IPv4 or IPv6.
func (f Family) Valid() bool { return f == IPv4 || f == IPv6 }

// String returns "inet", "inet6" or "family(N)".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "inet"
	case IPv6:
		return "inet6"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// MarshalText encodes the family as "inet" or "inet6".
func (f Family) MarshalText() ([]byte, error) {
	if !f.Valid() {
		return nil, fmt.Errorf("invalid address family %d", uint8(f))
	}
	return []byte(f.String()), nil
}

// UnmarshalText accepts "inet"/"ipv4"/"4" and "inet6"/"ipv6"/"6".
func (f *Family) UnmarshalText(b []byte) error {
	switch strings.ToLower(string(b)) {
	case "inet", "ipv4", "ip4", "4":
		*f = IPv4
	case "inet6", "ipv6", "ip6", "6":
		*f = IPv6
	default:
		return fmt.Errorf("invalid address family %q (want inet or inet6)", b)
	}
	return nil
}

// ipCmd is the `ip` invocation for a family: "ip" or "ip -6".
func (f Family) ipCmd() string {
	if f == IPv6 {
		return "ip -6"
	}
	return "ip"
}

// PolicyRule is `ip rule add pref Pref [to To] [fwmark Mark/MarkMask]
// lookup Table`. Mark 0 means no fwmark selector (used for the `local` rule
// itself); MarkMask 0 means the whole mark (0xffffffff, what the kernel
// takes when no mask is given). To, if valid, selects the lookups of that
// destination: nfclone's made-up next hop for a device the kernel sends
// copies to (a lookup that carries no mark).
type PolicyRule struct {
	Family   Family       `json:"family"`
	Pref     uint32       `json:"pref"`
	To       netip.Prefix `json:"to,omitzero"`
	Mark     uint32       `json:"mark,omitempty"`
	MarkMask uint32       `json:"mark_mask,omitempty"`
	Table    uint32       `json:"table"`
}

// FwMask is the fwmark mask the kernel holds for the rule: 0 without a
// mark, MarkMask or 0xffffffff with one.
func (r PolicyRule) FwMask() uint32 {
	switch {
	case r.Mark == 0:
		return 0
	case r.MarkMask == 0:
		return 0xffffffff
	}
	return r.MarkMask
}

func (r PolicyRule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pref %d", r.Pref)
	if r.To.IsValid() {
		if r.To.IsSingleIP() {
			fmt.Fprintf(&b, " to %s", r.To.Addr())
		} else {
			fmt.Fprintf(&b, " to %s", r.To)
		}
	}
	if r.Mark != 0 {
		fmt.Fprintf(&b, " fwmark %#x", r.Mark)
		if m := r.FwMask(); m != 0xffffffff {
			fmt.Fprintf(&b, "/%#x", m)
		}
	}
	b.WriteString(" lookup " + tableName(r.Table))
	return b.String()
}

// Route is `ip route add default via Gateway dev Device table Table`
// (without Gateway: `ip route add default dev Device table Table`, a device
// route, for the made-up next hop of a device the kernel sends copies to),
// or, with Unreachable, `ip route add unreachable default metric 4294967295
// table Table`: the backstop of a copy table, which ends the lookup of
// marked copies whenever the gateway route is gone (link down, device
// deleted, someone's `ip route flush`), so that they can never fall through
// to the main table and reach the destinations of the traffic they copy.
type Route struct {
	Family      Family     `json:"family"`
	Table       uint32     `json:"table"`
	Gateway     netip.Addr `json:"gateway,omitzero"`
	Device      string     `json:"device,omitempty"`
	Unreachable bool       `json:"unreachable,omitempty"`
}

// BackstopMetric is the metric of the unreachable default route in each
// copy table: the highest, so any gateway route wins while it exists.
const BackstopMetric uint32 = 0xffffffff

func (r Route) String() string {
	if r.Unreachable {
		return fmt.Sprintf("unreachable default metric %d table %s", BackstopMetric, tableName(r.Table))
	}
	if !r.Gateway.IsValid() {
		return fmt.Sprintf("default dev %s table %s", r.Device, tableName(r.Table))
	}
	return fmt.Sprintf("default via %s dev %s table %s", r.Gateway, r.Device, tableName(r.Table))
}

// Neighbour is `ip neigh replace Addr lladdr MAC dev Device nud permanent`.
type Neighbour struct {
	Device string
	Addr   netip.Addr
	MAC    net.HardwareAddr
}

// LinkFlag sets flags on an existing device. A false field means "leave
// as it is", never "clear": nfclone only sets these bits, and Undo clears
// only the bits that were not set before.
type LinkFlag struct {
	Device  string `json:"device"`
	NoARP   bool   `json:"noarp,omitempty"`   // set IFF_NOARP (`arp off`)
	Promisc bool   `json:"promisc,omitempty"` // set IFF_PROMISC (`promisc on`)
}

// VethPair is a veth pair nfclone creates: copies are written into Name,
// readers attach to Peer. Up and Promisc apply to both ends.
type VethPair struct {
	Name    string `json:"name"`
	Peer    string `json:"peer"`
	Up      bool   `json:"up,omitempty"`
	Promisc bool   `json:"promisc,omitempty"`
	MTU     int    `json:"mtu,omitempty"` // both ends; 0: the kernel's (1500)
}

// VethMTU is the MTU nfclone gives both ends of a veth pair it creates:
// the largest (ETH_MAX_MTU). A clone the kernel routes into the near end
// is the original packet, as long as its source's MTU lets it be: a
// smaller MTU would drop a longer one with DF set and tell its sender to
// shrink its packets. nfclone's own frames are cut to the sources' MTU.
const VethMTU = 65535

// VXLAN is a kernel VXLAN device nfclone creates (and brings up).
type VXLAN struct {
	Name   string     `json:"name"`
	VNI    uint32     `json:"vni"`
	Remote netip.Addr `json:"remote"`
	Port   uint16     `json:"port,omitempty"`   // 0: DefaultVXLANPort (4789)
	Local  netip.Addr `json:"local,omitzero"`   // optional source address
	Device string     `json:"device,omitempty"` // optional underlay device
	MTU    int        `json:"mtu,omitempty"`    // 0: the kernel's (the underlay's less the headers)
}

// VXLANMTU is the MTU nfclone gives the VXLAN devices it creates with no
// underlay device: the largest the kernel allows (65535 less the outer
// IPv6, UDP, VXLAN and inner Ethernet headers). A clone the kernel routes
// into the device is the original packet, DF set and as long as the
// source's MTU lets it be; with the kernel's default MTU (1450 behind a
// 1500-byte path) it would be dropped, and its sender told to shrink its
// packets. The outer datagram of a longer frame is fragmented on the way,
// as netdev dup's copies into the device always were. nfclone's own frames
// are cut to the path MTU less the headers, whatever the device's MTU.
const VXLANMTU = 65535 - 70

// port returns the destination UDP port, defaulting to 4789.
func (v VXLAN) port() uint16 {
	if v.Port == 0 {
		return DefaultVXLANPort
	}
	return v.Port
}

// Plan is the desired routing-side state. Apply order: links created
// (Veths, then VXLANs) → Flags → Neighbours → Routes → Rules → MoveLocal.
type Plan struct {
	Rules  []PolicyRule
	Routes []Route
	// MoveLocal lists the families whose `local` rule is moved from pref 0 to
	// LocalPref.
	MoveLocal  []Family
	Neighbours []Neighbour
	Flags      []LinkFlag
	Veths      []VethPair
	VXLANs     []VXLAN
}

// Empty reports whether the plan changes nothing.
func (p Plan) Empty() bool {
	return len(p.Rules) == 0 && len(p.Routes) == 0 && len(p.MoveLocal) == 0 &&
		len(p.Neighbours) == 0 && len(p.Flags) == 0 && len(p.Veths) == 0 && len(p.VXLANs) == 0
}

// moveFamilies returns MoveLocal without duplicates, in order.
func (p Plan) moveFamilies() []Family {
	var out []Family
	seen := map[Family]bool{}
	for _, f := range p.MoveLocal {
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

// Validate checks the plan without touching the kernel.
func (p Plan) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	moving := map[Family]bool{}
	for _, f := range p.MoveLocal {
		if !f.Valid() {
			bad("move local rule: invalid address family %d", uint8(f))
		}
		moving[f] = true
	}
	names := map[string]bool{}
	newName := func(what, n string) {
		if err := checkIfName(n); err != nil {
			bad("%s: %w", what, err)
			return
		}
		if names[n] {
			bad("%s: interface %s is created twice in the plan", what, n)
		}
		names[n] = true
	}
	for _, v := range p.Veths {
		newName("veth "+v.Name, v.Name)
		newName("veth "+v.Name+" peer", v.Peer)
	}
	for _, v := range p.VXLANs {
		what := "vxlan " + v.Name
		newName(what, v.Name)
		if v.VNI >= 1<<24 {
			bad("%s: VNI %d out of range (0..16777215)", what, v.VNI)
		}
		if !v.Remote.IsValid() || v.Remote.IsUnspecified() {
			bad("%s: remote address missing", what)
		} else if v.Local.IsValid() && FamilyOf(v.Local) != FamilyOf(v.Remote) {
			bad("%s: local %s and remote %s are of different families", what, v.Local, v.Remote)
		}
		if v.Device != "" {
			if err := checkIfName(v.Device); err != nil {
				bad("%s: underlay device: %w", what, err)
			}
		}
	}
	for _, f := range p.Flags {
		if err := checkIfName(f.Device); err != nil {
			bad("link flags: %w", err)
		}
	}
	for _, n := range p.Neighbours {
		what := fmt.Sprintf("neighbour %s dev %s", n.Addr, n.Device)
		if err := checkIfName(n.Device); err != nil {
			bad("%s: %w", what, err)
		}
		if !n.Addr.IsValid() || n.Addr.IsUnspecified() || n.Addr.IsMulticast() {
			bad("%s: invalid neighbour address", what)
		}
		if len(n.MAC) != 6 {
			bad("%s: lladdr %q is not a 6-byte MAC address", what, n.MAC)
		}
	}
	for _, r := range p.Routes {
		what := "route " + r.String()
		if !r.Family.Valid() {
			bad("%s: invalid address family %d", what, uint8(r.Family))
		}
		if err := checkTable(r.Table); err != nil {
			bad("%s: %w", what, err)
		}
		if r.Unreachable {
			if r.Gateway.IsValid() || r.Device != "" {
				bad("%s: an unreachable route has no gateway or device", what)
			}
			continue
		}
		if r.Gateway.IsValid() && r.Gateway.IsUnspecified() {
			bad("%s: gateway missing", what)
		} else if r.Gateway.IsValid() && FamilyOf(r.Gateway) != r.Family {
			bad("%s: gateway is not an %s address", what, r.Family)
		}
		if err := checkIfName(r.Device); err != nil {
			bad("%s: %w", what, err)
		}
	}
	for _, r := range p.Rules {
		what := fmt.Sprintf("rule %s (%s)", r, r.Family)
		if !r.Family.Valid() {
			bad("%s: invalid address family %d", what, uint8(r.Family))
		}
		if err := checkTable(r.Table); err != nil {
			bad("%s: %w", what, err)
		}
		switch {
		case r.To.IsValid() && FamilyOf(r.To.Addr()) != r.Family:
			bad("%s: destination is not an %s prefix", what, r.Family)
		case r.To.IsValid() && r.To != r.To.Masked():
			bad("%s: destination %s has host bits set", what, r.To)
		case r.Mark == 0 && !r.To.IsValid():
			bad("%s: no fwmark and no destination would match every packet", what)
		}
		if r.Mark&^r.FwMask() != 0 {
			bad("%s: fwmark has bits outside its mask", what)
		}
		if r.Pref == 0 {
			bad("%s: pref 0 is reserved for the local rule", what)
		}
		if moving[r.Family] && r.Pref >= LocalPref {
			bad("%s: pref must be below %d (where the local rule is moved to), or local delivery wins", what, LocalPref)
		}
	}
	return errors.Join(errs...)
}

func checkIfName(n string) error {
	switch {
	case n == "":
		return errors.New("empty interface name")
	case len(n) >= unix.IFNAMSIZ:
		return fmt.Errorf("interface name %q longer than %d bytes", n, unix.IFNAMSIZ-1)
	case strings.ContainsAny(n, "/ \t\n:") || n == "." || n == "..":
		return fmt.Errorf("invalid interface name %q", n)
	}
	return nil
}

func checkTable(t uint32) error {
	switch t {
	case 0, TableLocal, TableMain, TableDefault:
		return fmt.Errorf("table %d is reserved (use a table of nfclone's own)", t)
	}
	return nil
}

func tableName(t uint32) string {
	switch t {
	case TableLocal:
		return "local"
	case TableMain:
		return "main"
	case TableDefault:
		return "default"
	}
	return fmt.Sprint(t)
}

// Render returns the plan as `ip` commands, one line per command, in apply
// order. The output is deterministic (plan order is kept). Each item is one
// line, except a MoveLocal family, which is two commands (add pref 1000
// first, then delete pref 0), and a VethPair with Up, whose peer is brought
// up by a second command.
func (p Plan) Render() string {
	var b strings.Builder
	line := func(format string, a ...any) {
		fmt.Fprintf(&b, format, a...)
		b.WriteByte('\n')
	}
	for _, v := range p.Veths {
		// The peer cannot be brought up while the pair is being created
		// (the kernel answers ENOTCONN): it is set up by a second command.
		peerOpts := ""
		if v.Promisc {
			peerOpts = " promisc on"
		}
		line("ip link add name %s%s type veth peer name %s%s", v.Name, vethOpts(v), v.Peer, peerOpts)
		line("ip link set %s gso_max_segs 1", v.Name) // wireNearEnd
		line("ethtool -K %s tx off", v.Name)
		if v.Up {
			line("ip link set %s up", v.Peer)
		}
	}
	for _, v := range p.VXLANs {
		var o strings.Builder
		fmt.Fprintf(&o, " id %d", v.VNI)
		if v.Remote.IsMulticast() {
			fmt.Fprintf(&o, " group %s", v.Remote)
		} else {
			fmt.Fprintf(&o, " remote %s", v.Remote)
		}
		if v.Local.IsValid() {
			fmt.Fprintf(&o, " local %s", v.Local)
		}
		if v.Device != "" {
			fmt.Fprintf(&o, " dev %s", v.Device)
		}
		fmt.Fprintf(&o, " dstport %d", v.port())
		line("ip link add name %s up type vxlan%s", v.Name, o.String())
	}
	for _, f := range p.Flags {
		s := "ip link set " + f.Device
		if f.NoARP {
			s += " arp off"
		}
		if f.Promisc {
			s += " promisc on"
		}
		line("%s", s)
	}
	for _, n := range p.Neighbours {
		line("ip neigh replace %s lladdr %s dev %s nud permanent", n.Addr, n.MAC, n.Device)
	}
	for _, r := range p.Routes {
		line("%s route add %s", r.Family.ipCmd(), r)
	}
	for _, r := range p.Rules {
		line("%s rule add %s", r.Family.ipCmd(), r)
	}
	for _, f := range p.moveFamilies() {
		line("%s rule add %s", f.ipCmd(), localRule(f, LocalPref))
		line("%s rule del %s", f.ipCmd(), localRule(f, 0))
	}
	return b.String()
}

func vethOpts(v VethPair) string {
	s := ""
	if v.Up {
		s += " up"
	}
	if v.Promisc {
		s += " promisc on"
	}
	return s
}

func localRule(f Family, pref uint32) PolicyRule {
	return PolicyRule{Family: f, Pref: pref, Table: TableLocal}
}
