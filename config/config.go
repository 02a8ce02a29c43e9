// Package config turns a YAML file (through viper, with NFCLONE_* environment
// overrides) into a typed, validated Config. Every problem is reported at once,
// each with its key path and the offending value.
package config

import (
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/nfclone/nfclone/filter"
)

// Defaults, in one place. docs/configuration.md documents the same values.
const (
	DefaultTable    = "nfclone"
	DefaultStateDir = "/run/nfclone"
	DefaultMetrics  = "127.0.0.1:9464"
	// DefaultMarkMask is the part of the packet mark nfclone owns: the low
	// byte, which kube-proxy (0x4000, 0x8000), Calico (0xffff0000) and
	// Cilium (0x0f00 and the upper 16 bits) leave alone.
	DefaultMarkMask = 0x000000ff
	// DefaultMark is the mark of userspace copies, in the upper half of
	// DefaultMarkMask (the lower half holds the clone markers).
	DefaultMark       = 0x00000080
	DefaultRouteTable = 0x4e43 // policy-routing table for userspace copies
	DefaultRulePref   = 100    // preference of nfclone's ip rule
	DefaultQueueNum   = 0
	DefaultQueueCount = 1
	DefaultQueueMax   = 4096
	DefaultQueueCap   = 8192
	// DefaultQueueCapBytes bounds a session's copy queue in buffer bytes: a
	// copy of more than 16 KiB (a GSO super-packet) takes a 65 KiB buffer,
	// so 8192 of them would be 520 MiB; 16 MiB holds about 8000 small copies
	// (2 KiB buffers) or 250 super-packets.
	DefaultQueueCapBytes = "16MiB"
	// DefaultSocketBuffer is the receive buffer of each NFQUEUE and NFLOG
	// socket (SO_RCVBUFFORCE, which the kernel doubles): the kernel memory
	// copies wait in while nfclone is behind — a CPU it does not get, a
	// burst. TCP bulk in the lab (one stream offered 6 and 8 Gbit/s, two
	// alternated runs each): 16 MiB copied 0.87–1.00 of the bytes, 64 MiB
	// 0.95–1.00.
	DefaultSocketBuffer = "64MiB"
	DefaultWorkers      = 2
	// DefaultNice is the niceness of nfclone's threads: under CPU contention
	// the host's own work (and the packets it forwards in ksoftirqd) comes
	// before copies, which are dropped and counted instead.
	DefaultNice = 10
	// HoldNice is the default niceness when a session holds its originals
	// (hold: true): they wait for nfclone, so nfclone yielding to the host
	// would make the host's matched traffic yield too (a 64-byte flood
	// through a hold session: 29 kpps of originals at nice 10, 138 kpps at
	// nice 0).
	HoldNice          = 0
	DefaultSample     = 1
	DefaultVXLANPort  = 4789
	DefaultGENEVEPort = 6081
	DefaultRotateKeep = 5
)

// Config is the whole of nfclone's configuration (docs/configuration.md).
type Config struct {
	Table      string    `mapstructure:"table" json:"table"`
	Watch      bool      `mapstructure:"watch" json:"watch"`
	StateDir   string    `mapstructure:"state_dir" json:"state_dir"`
	Mark       uint32    `mapstructure:"mark" json:"mark"`
	MarkMask   uint32    `mapstructure:"mark_mask" json:"mark_mask"`
	RouteTable uint32    `mapstructure:"route_table" json:"route_table"`
	RulePref   uint32    `mapstructure:"rule_pref" json:"rule_pref"`
	Metrics    Metrics   `mapstructure:"metrics" json:"metrics"`
	Queue      Queue     `mapstructure:"queue" json:"queue"`
	Sessions   []Session `mapstructure:"sessions" json:"sessions"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string `mapstructure:"listen" json:"listen"`
}

// Queue holds the defaults for the userspace methods.
type Queue struct {
	Num    int `mapstructure:"num" json:"num"`
	Count  int `mapstructure:"count" json:"count"`
	MaxLen int `mapstructure:"max_len" json:"max_len"`
	Cap    int `mapstructure:"cap" json:"cap"`
	// CapBytes bounds the copy queue in bytes of buffers (a size: "16MiB").
	CapBytes string `mapstructure:"cap_bytes" json:"cap_bytes"`
	Workers  int    `mapstructure:"workers" json:"workers"`
	// Nice is the niceness of every nfclone thread while it runs (-20..19;
	// below 0 needs CAP_SYS_NICE). Unset, it is DefaultNice, or HoldNice
	// when a session holds its originals.
	Nice int `mapstructure:"nice" json:"nice"`
	// CPUs is how many CPUs nfclone's Go code runs on at once while it
	// runs (GOMAXPROCS; 0: all, Go's default). The GOMAXPROCS environment
	// variable wins.
	CPUs int `mapstructure:"cpus" json:"cpus"`
	// Realtime, 1-99, puts every nfclone thread in the SCHED_FIFO class at
	// that priority while it runs (needs CAP_SYS_NICE; nice then no longer
	// applies): copies come before the host's own work, so clones are
	// complete at rates where the default (nice) loses some, and the
	// originals yield the CPU instead. 0 (the default): off.
	Realtime int `mapstructure:"realtime" json:"realtime"`
	// KernelRoute (default true) lets the kernel send the clones of queue
	// sessions whose one target is a gateway (whole copies, no dedup, not
	// hold): dup routes them to the gateway, nfclone reads their headers
	// and counts them, accepting them from a fail-open queue, and the
	// kernel sends them as it sends dup's clones (Config.KernelRouted).
	// false: nfclone sends every copy.
	KernelRoute bool `mapstructure:"kernel_route" json:"kernel_route"`
	// LogKernelRoute says which clones of log sessions the kernel sends, as
	// KernelRoute does for queue sessions (the clone is logged to a group
	// of its own, NFLOG holds nothing, and the kernel sends it in the path
	// of its original): LogRouteTCP (the default) the clones of TCP
	// packets, while nfclone logs and sends the rest itself; LogRouteOn
	// every clone; LogRouteOff none. Complete TCP bulk at a twentieth of
	// the CPU, but a flood of small packets the kernel sends forwards less
	// (measured: 0.66–0.70× dup's instead of 1.15–1.18×): splitting by
	// protocol keeps each connection's copies on one path, in order.
	// Validate turns true and false into on and off.
	LogKernelRoute LogRoute `mapstructure:"log_kernel_route" json:"log_kernel_route"`
	// VXLANKernelRoute says whether the kernel sends the clones of such
	// sessions (queue; log as LogKernelRoute says) whose one target is a
	// vxlan target nfclone makes a VXLAN device for: dup routes each clone
	// into the device, which encapsulates the original packet as it is.
	// VXLANRouteAuto (the default): where the path to the remote takes the
	// outer datagram of the largest original whole (a jumbo underlay), and
	// where it does not but this host cuts the TCP super-packets entering
	// the device to the path (package gsotrim: a BPF program; the path must
	// take an inner packet of MinTrimLimit bytes); KernelRouteMTU decides.
	// A full-size packet that is not part of a super-packet is then sent
	// in two outer fragments. VXLANRouteOn: also where neither holds (the
	// kernel fragments every full-size copy's outer datagram,
	// docs/methods.md#kernel-route-vxlan). VXLANRouteOff: never (nfclone
	// cuts every copy to the path itself).
	// Validate turns true and false into on and off.
	VXLANKernelRoute VXLANRoute `mapstructure:"vxlan_kernel_route" json:"vxlan_kernel_route"`
	// SocketBuffer is the kernel receive buffer of each reader's socket (a
	// size: "64MiB"; the kernel holds up to twice this).
	SocketBuffer string `mapstructure:"socket_buffer" json:"socket_buffer"`
	// CapByteCount is cap_bytes in bytes, filled by Validate.
	CapByteCount int64 `mapstructure:"-" json:"-"`
	// SocketBufferBytes is socket_buffer in bytes, filled by Validate.
	SocketBufferBytes int64 `mapstructure:"-" json:"-"`
}

// LogRoute is which clones of a log session the kernel sends
// (queue.log_kernel_route).
type LogRoute string

// LogRoute values.
const (
	LogRouteTCP LogRoute = "tcp" // TCP's; nfclone sends the rest
	LogRouteOn  LogRoute = "on"  // every clone
	LogRouteOff LogRoute = "off" // none: nfclone sends every copy
)

// VXLANRoute is when the kernel sends clones into nfclone's VXLAN devices
// (queue.vxlan_kernel_route).
type VXLANRoute string

// VXLANRoute values.
const (
	VXLANRouteAuto VXLANRoute = "auto" // where the path takes whole copies, or super-packets cut to it
	VXLANRouteOn   VXLANRoute = "on"   // always: outer datagrams fragmented where it does not
	VXLANRouteOff  VXLANRoute = "off"  // never
)

// KernelRouted reports whether the kernel sends every clone of session s
// itself (queue.kernel_route, queue.log_kernel_route: on): a queue session
// that neither holds its originals, cuts, nor de-duplicates copies (or such
// a log session), with one target — a gateway, or an untagged device (one
// nfclone creates too), or with queue.vxlan_kernel_route nfclone's VXLAN
// device — whose device's MTU is no smaller than its sources'
// (KernelRouteMTU). Everything else nfclone does to a copy needs its bytes
// in userspace.
func (c *Config) KernelRouted(s *Session) bool {
	on := c.Queue.KernelRoute && s.Method == MethodQueue && !s.Hold || c.Queue.LogKernelRoute == LogRouteOn && s.Method == MethodLog
	return on && c.routable(s)
}

// KernelRoutedTCP reports whether the kernel sends the clones of session
// s's TCP packets and nfclone logs and sends the rest (a log session with
// queue.log_kernel_route: tcp, the default, that KernelRouted would take
// whole): each connection's copies stay on one path, in order.
func (c *Config) KernelRoutedTCP(s *Session) bool {
	return c.Queue.LogKernelRoute == LogRouteTCP && s.Method == MethodLog && c.routable(s)
}

// RoutesClones reports whether the kernel sends any of session s's clones
// (KernelRouted or KernelRoutedTCP): the session needs the route to its
// target and a marker for its clones.
func (c *Config) RoutesClones(s *Session) bool {
	return c.KernelRouted(s) || c.KernelRoutedTCP(s)
}

// routable: the kernel can send session s's clones (see KernelRouted).
func (c *Config) routable(s *Session) bool {
	vx := c.Queue.VXLANKernelRoute == VXLANRouteOn || c.Queue.VXLANKernelRoute == VXLANRouteAuto && (s.tunnelPathFits || s.tunnelTrim)
	return !s.smallTargetMTU && s.Snaplen == 0 && s.DedupWindow == 0 &&
		len(s.Targets) == 1 && (s.Targets[0].kernelRoutable() || vx && s.Targets[0].OwnVXLAN())
}

// kernelRoutable: the kernel can send a clone to t itself — a gateway, or
// an untagged device through a made-up next hop (for a veth pair nfclone
// creates, its near end). With queue.vxlan_kernel_route, the VXLAN device
// of an OwnVXLAN target too.
func (t Target) kernelRoutable() bool {
	return t.Kind == KindGateway || t.Kind == KindDevice && t.VLAN == nil
}

// OwnVXLAN reports whether nfclone creates a kernel VXLAN device for t (a
// vxlan target with kernel encapsulation, one remote and a VNI).
func (t Target) OwnVXLAN() bool {
	return t.KernelVXLAN() && len(t.Remote) == 1 && len(t.RemoteAddrs) == 1 && t.VNI != nil
}

// Describe names where t's copies go, for notes: the gateway, the device,
// the tunnel's remotes or the file.
func (t Target) Describe() string {
	switch t.Kind {
	case KindGateway:
		return "gateway " + t.GatewayIP.String() + " on " + t.Device
	case KindDevice:
		return "device " + t.Device
	case KindVXLAN, KindGENEVE:
		return string(t.Kind) + " " + strings.Join(t.Remote, ",")
	}
	return string(t.Kind)
}

// Method is how a session copies: in the kernel (dup) or in userspace
// (queue, log). YAML and JSON spell it as its string.
type Method string

// Method names.
const (
	MethodDup   Method = "dup"
	MethodQueue Method = "queue"
	MethodLog   Method = "log"
)

// Userspace reports whether the method copies in userspace (queue, log).
func (m Method) Userspace() bool { return m == MethodQueue || m == MethodLog }

// Direction is the direction of traffic at an interface: a source's
// ingress, egress or both, a rule's ingress or egress ("" any).
type Direction string

// Directions.
const (
	Ingress Direction = "ingress"
	Egress  Direction = "egress"
	Both    Direction = "both"
)

// Session is one mirroring session: sources, filter, targets.
type Session struct {
	Name     string   `mapstructure:"name" json:"name"`
	Method   Method   `mapstructure:"method" json:"method"`
	Sources  []Source `mapstructure:"sources" json:"sources"`
	HostOnly bool     `mapstructure:"host_only" json:"host_only"`
	// Hold (method queue): queue the original itself, not the kernel's
	// clone; the kernel lets it go on once nfclone has sent its copy, so the
	// originals go no faster than the copies (docs/methods.md, "hold").
	Hold  bool   `mapstructure:"hold" json:"hold,omitempty"`
	Rules []Rule `mapstructure:"rules" json:"rules"`
	// Filter is a tcpdump filter expression (package filter), instead of
	// rules: what it matches is copied.
	Filter  string   `mapstructure:"filter" json:"filter,omitempty"`
	Sample  int      `mapstructure:"sample" json:"sample"`
	Rate    string   `mapstructure:"rate" json:"rate"`
	Snaplen int      `mapstructure:"snaplen" json:"snaplen"`
	Targets []Target `mapstructure:"targets" json:"targets"`
	// Dedup is the de-duplication window of queue/log sessions ("50ms";
	// "" off): see outputs.go.
	Dedup string `mapstructure:"dedup" json:"dedup,omitempty"`
	// Selectors (select.go): which flows, and how much of each, are copied.
	FirstPackets int    `mapstructure:"first_packets" json:"first_packets,omitempty"`
	FirstBytes   string `mapstructure:"first_bytes" json:"first_bytes,omitempty"`
	SampleFlows  int    `mapstructure:"sample_flows" json:"sample_flows,omitempty"`
	FlowRate     string `mapstructure:"flow_rate" json:"flow_rate,omitempty"`
	Cgroup       string `mapstructure:"cgroup" json:"cgroup,omitempty"`
	User         string `mapstructure:"user" json:"user,omitempty"`
	Priority     int    `mapstructure:"priority" json:"priority,omitempty"`
	// Select is the typed form of the selector keys, filled by Validate.
	Select Selectors `mapstructure:"-" json:"-"`
	// The typed forms of rate, dedup and filter, filled by Validate:
	// RateLimit nil without a rate, DedupWindow 0 without dedup,
	// FilterExpr nil without a filter (or a blank one).
	RateLimit   *Rate         `mapstructure:"-" json:"-"`
	DedupWindow time.Duration `mapstructure:"-" json:"-"`
	FilterExpr  *filter.Expr  `mapstructure:"-" json:"-"`
	// smallTargetMTU: the host gave its gateway device a smaller MTU than
	// one of its sources (KernelRouteMTU), so the kernel does not send its
	// copies.
	smallTargetMTU bool
	// tunnelPathFits: the path to its vxlan target's remote takes the
	// outer datagram of its sources' largest packet whole
	// (KernelRouteMTU), so with vxlan_kernel_route auto the kernel sends
	// its copies into the VXLAN device.
	tunnelPathFits bool
	// tunnelTrim: it does not, but the host lowers the segment size of
	// the TCP super-packets entering nfclone's VXLAN devices to what the
	// path takes (KernelRouteMTU; package gsotrim), so with
	// vxlan_kernel_route auto the kernel sends its copies too.
	tunnelTrim bool
}

// TunnelTrimmed reports whether the kernel sends session s's copies into
// its VXLAN device because the host cuts their TCP super-packets to the
// path (the path does not take its sources' largest packet whole).
func (c *Config) TunnelTrimmed(s *Session) bool {
	return c.RoutesClones(s) && s.tunnelTrim && !s.tunnelPathFits
}

// Source is an interface and a direction to copy from.
type Source struct {
	Interface string    `mapstructure:"interface" json:"interface"`
	Direction Direction `mapstructure:"direction" json:"direction"`
}

// Action is what a rule does with the packets it matches.
type Action string

// Rule actions.
const (
	ActionAccept Action = "accept" // copy
	ActionReject Action = "reject" // do not copy
)

// ARP is how a gateway target's link-layer address is found: "" and on
// resolve it with ARP/ND, off does not (mac gives it, or the neighbour
// table has it).
type ARP string

// ARP modes.
const (
	ARPOn  ARP = "on"
	ARPOff ARP = "off"
)

// Encap says who encapsulates a vxlan target's copies.
type Encap string

// Encapsulations. Validate resolves "" for every vxlan and geneve target:
// kernel for vxlan with one remote, userspace otherwise.
const (
	// EncapKernel: a kernel VXLAN device nfclone creates (method dup
	// feeds it with netdev dup; queue and log write whole frames, TCP
	// super-packets included, to it through a packet socket).
	EncapKernel Encap = "kernel"
	// EncapUserspace: nfclone writes the tunnel headers and sends UDP
	// datagrams (several remotes, GENEVE; no VXLAN port is bound).
	EncapUserspace Encap = "userspace"
)

// Format is a pcap target's file format ("" is pcap).
type Format string

// File formats.
const (
	FormatPcap   Format = "pcap"
	FormatPcapng Format = "pcapng"
)

// Rule is one numbered filter rule; the lowest number matches first.
type Rule struct {
	Number           int       `mapstructure:"number" json:"number"`
	Action           Action    `mapstructure:"action" json:"action"`
	Protocol         string    `mapstructure:"protocol" json:"protocol"`
	Source           string    `mapstructure:"source" json:"source"`
	Destination      string    `mapstructure:"destination" json:"destination"`
	SourcePorts      string    `mapstructure:"source_ports" json:"source_ports"`
	DestinationPorts string    `mapstructure:"destination_ports" json:"destination_ports"`
	Direction        Direction `mapstructure:"direction" json:"direction"`
	VLAN             *int      `mapstructure:"vlan" json:"vlan,omitempty"`
	// Match is the typed form of protocol, source, destination and the
	// ports, filled by Validate; nil until then (or when one of them is
	// invalid), and the rules compiler refuses a rule without it.
	Match *RuleMatch `mapstructure:"-" json:"-"`
}

// RuleMatch is what a rule matches, typed.
type RuleMatch struct {
	// Proto is the IP protocol number when HasProto ("" and any: none).
	Proto    uint8
	HasProto bool
	// Src and Dst are masked prefixes (a bare address: a host prefix);
	// the invalid prefix matches any address.
	Src, Dst netip.Prefix
	// SrcPorts and DstPorts: nil matches any port.
	SrcPorts, DstPorts []PortRange
}

// Kind is a target's kind. YAML and JSON spell it as its string.
type Kind string

// Target kinds.
const (
	KindDevice  Kind = "device"
	KindGateway Kind = "gateway"
	KindVXLAN   Kind = "vxlan"
	KindGENEVE  Kind = "geneve"
	KindPcap    Kind = "pcap"
	// KindERSPAN and KindPcapOverIP: see outputs.go.
	KindERSPAN     Kind = "erspan"
	KindPcapOverIP Kind = "pcap-over-ip"
)

// Target is where copies go.
type Target struct {
	Kind Kind `mapstructure:"kind" json:"kind"`
	// device, gateway
	Device  string `mapstructure:"device" json:"device,omitempty"`
	Gateway string `mapstructure:"gateway" json:"gateway,omitempty"`
	MAC     string `mapstructure:"mac" json:"mac,omitempty"`
	ARP     ARP    `mapstructure:"arp" json:"arp,omitempty"`
	// device targets nfclone creates (a veth pair; copies can be read on Peer)
	Create  bool   `mapstructure:"create" json:"create,omitempty"`
	Peer    string `mapstructure:"peer" json:"peer,omitempty"`
	Promisc bool   `mapstructure:"promisc" json:"promisc,omitempty"`
	// vxlan, geneve
	Remote []string `mapstructure:"remote" json:"remote,omitempty"`
	VNI    *int     `mapstructure:"vni" json:"vni,omitempty"`
	Encap  Encap    `mapstructure:"encap" json:"encap,omitempty"`
	// pcap
	Path       string `mapstructure:"path" json:"path,omitempty"`
	Format     Format `mapstructure:"format" json:"format,omitempty"`
	RotateSize string `mapstructure:"rotate_size" json:"rotate_size,omitempty"`
	RotateKeep int    `mapstructure:"rotate_keep" json:"rotate_keep,omitempty"`
	// RotateEvery: a new file at every multiple of this duration ("1h": on
	// the hour); path may hold strftime conversions (%Y%m%d-%H%M).
	RotateEvery string `mapstructure:"rotate_every" json:"rotate_every,omitempty"`

	// The typed forms of the keys above, filled by Validate: nothing
	// downstream parses the strings again.
	GatewayIP      netip.Addr       `mapstructure:"-" json:"-"` // gateway
	HWAddr         net.HardwareAddr `mapstructure:"-" json:"-"` // mac
	RemoteAddrs    []netip.AddrPort `mapstructure:"-" json:"-"` // remote (erspan: port 0)
	RotateBytes    int64            `mapstructure:"-" json:"-"` // rotate_size
	RotateInterval time.Duration    `mapstructure:"-" json:"-"` // rotate_every
	ListenAddr     netip.AddrPort   `mapstructure:"-" json:"-"` // listen (pcap-over-ip)
	AllowPrefixes  []netip.Prefix   `mapstructure:"-" json:"-"` // allow; an invalid prefix stands for "any"
	// erspan (remote: the collector's address, no port)
	Version   int  `mapstructure:"version" json:"version,omitempty"` // 2 (type II) | 3 (type III)
	SessionID *int `mapstructure:"session_id" json:"session_id,omitempty"`
	// device: every copy leaves tagged 802.1Q VLAN
	VLAN *int `mapstructure:"vlan" json:"vlan,omitempty"`
	// pcap-over-ip (format too)
	Listen string   `mapstructure:"listen" json:"listen,omitempty"`
	Allow  []string `mapstructure:"allow" json:"allow,omitempty"`
}

// KernelVXLAN reports whether the target is a vxlan target whose copies a
// kernel VXLAN device encapsulates (rules.VXLANDevice names it).
func (t Target) KernelVXLAN() bool { return t.Kind == KindVXLAN && t.Encap == EncapKernel }

// GatewayIs6 reports whether a gateway target's gateway is an IPv6
// address (an IPv4-mapped one is IPv4): the one place that decides which
// family a gateway target copies.
func (t Target) GatewayIs6() bool { return t.GatewayIP.Unmap().Is6() }

// SourceDirections expands a direction (ingress|egress|both) into the list of
// single directions it covers.
func SourceDirections(d Direction) []Direction {
	switch d {
	case Both:
		return []Direction{Ingress, Egress}
	case Egress:
		return []Direction{Egress}
	default:
		return []Direction{Ingress}
	}
}

// UsesUserspace reports whether any session uses the queue or log method.
func (c *Config) UsesUserspace() bool {
	for _, s := range c.Sessions {
		if s.Method.Userspace() {
			return true
		}
	}
	return false
}
