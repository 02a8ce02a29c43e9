package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// SchemaID is the $id of the configuration's JSON Schema: the path of the
// checked-in copy in the repository.
const SchemaID = "https://github.com/nfclone/nfclone/raw/main/packaging/nfclone.schema.json"

// keyInfo is what the Go types cannot say about one key: its meaning and
// the constraints Validate checks without looking at the host. Keys are
// paths like "queue.cap" or "sessions[].targets[].kind".
type keyInfo struct {
	desc     string
	enum     []any
	pattern  string
	min, max *int64
	// numbersToo: a string key that may be written as a YAML number
	// (destination_ports: 443); boolToo: one that may be a boolean (arp).
	numbersToo, boolToo bool
	required            bool
	// emptyOK: "" is accepted (and means the default or "none").
	emptyOK bool
	def     any
	// anyOf replaces the generated type for keys with more than one form.
	anyOf []map[string]any
}

func rng(lo, hi int64) (*int64, *int64) { return &lo, &hi }

func ranged(desc string, lo, hi int64) keyInfo {
	k := keyInfo{desc: desc}
	k.min, k.max = rng(lo, hi)
	return k
}

const (
	patSize  = `^\s*[0-9]+\s*([KkMmGg][Ii]?[Bb]?|[Bb])?\s*$`
	patPorts = `^\s*[0-9]+\s*(-\s*[0-9]+\s*)?(,\s*[0-9]+\s*(-\s*[0-9]+\s*)?)*$`
	patRate  = `^\s*[0-9]+\s*/\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$`
)

// schemaKeys documents and constrains the keys; the generator fails on an
// entry that names no field, so this table cannot outlive a key.
func schemaKeys() map[string]keyInfo {
	nameDesc := "starts with a letter; at most 32 letters, digits or _"
	k := map[string]keyInfo{
		"table":       {desc: "Name of nfclone's own nft tables (one per family it needs); " + nameDesc, pattern: reName.String()},
		"watch":       {desc: "Reload when the config file changes (SIGHUP always reloads)."},
		"state_dir":   {desc: "Absolute directory of the state file (crash-safe cleanup) and the status socket nfclone.sock (the default is per network namespace outside the host's).", pattern: "^/", def: DefaultStateDir},
		"mark":        ranged("Mark carried by userspace copies (and mark+1, ... for further gateways): inside mark_mask, with its top bit set. Packets with it are never copied again.", 1, 1<<32-1),
		"mark_mask":   ranged("The bits of the packet mark nfclone owns (one run of bits); it reads, sets and clears nothing else.", 1, 1<<32-1),
		"route_table": ranged("Policy-routing table of the userspace copies (not 0, 253, 254, 255).", 1, 1<<32-1),
		"rule_pref":   ranged("Preference of nfclone's ip rule (before the main table's 32766).", 1, 32765),
		"metrics":     {desc: "Prometheus endpoint."},
		"metrics.listen": {desc: `host:port of http://LISTEN/metrics and /healthz; "" disables the endpoint.`,
			pattern: `^$|:`},
		"queue":                    {desc: "Defaults of the userspace methods (queue, log)."},
		"queue.num":                ranged("First NFQUEUE number / NFLOG group.", 0, 65535),
		"queue.count":              ranged("Queues per session, spread by a hash of the flow.", 1, 64),
		"queue.max_len":            ranged("Kernel-side queue length.", 1, 1<<20),
		"queue.cap":                ranged("Userspace copy queue, in copies; copies beyond it are dropped and counted.", 1, 1<<22),
		"queue.cap_bytes":          {desc: "Userspace copy queue bound in bytes of buffers (1MiB-4GiB), a size like 16MiB.", pattern: patSize},
		"queue.socket_buffer":      {desc: "Kernel receive buffer of each NFQUEUE/NFLOG socket (1MiB-512MiB, a size like 64MiB; the kernel holds up to twice this): copies wait there while nfclone is behind.", pattern: patSize},
		"queue.workers":            ranged("Goroutines sending copies, per session.", 1, 256),
		"queue.nice":               ranged("Niceness of nfclone's threads (below 0 needs CAP_SYS_NICE).", -20, 19),
		"queue.cpus":               ranged("CPUs nfclone's Go code runs on at once (GOMAXPROCS); 0: all.", 0, 1024),
		"queue.realtime":           ranged("SCHED_FIFO priority of nfclone's threads (needs CAP_SYS_NICE): copies before the host's own work; 0: off.", 0, 99),
		"queue.kernel_route":       {desc: "The kernel sends the clones of queue sessions whose one target is a gateway (not hold, no snaplen, no dedup): dup routes them to the gateway, nfclone reads their headers from a fail-open queue, counts them and accepts them; a clone its full queue or socket cannot take the kernel sends at once (kernel_sent). false: nfclone sends every copy itself.", def: true},
		"queue.vxlan_kernel_route": {desc: "When the kernel sends the clones of queue sessions (and log sessions, as log_kernel_route says) whose one target is a vxlan target with one remote: dup routes the clone into nfclone's VXLAN device, which encapsulates the original packet as it is. auto: where the path to the remote takes the outer datagram of the sources' largest packet whole (MTU + 50, IPv6 remote + 70: a jumbo underlay), and where it does not but this host loads nfclone's segment-size program (BPF, on the device's egress), which cuts TCP super-packets to the path (a full-size packet that came alone goes in two outer fragments); on (true): also where neither holds, the outer datagram of every full-size packet fragmented; off (false): never (nfclone cuts every copy to the path)", enum: []any{"auto", "on", "off", true, false}, boolToo: true, def: "auto"},
		"queue.log_kernel_route":   {desc: "Which clones of log sessions whose one target is a gateway or an untagged device (no snaplen, no dedup) the kernel sends, as kernel_route does for queue: tcp: the clones of TCP packets (complete TCP bulk at little CPU), nfclone logging and sending the rest (a flood of small packets forwards faster that way), so each connection's copies stay on one path; on (true): every clone; off (false): none.", enum: []any{"tcp", "on", "off", true, false}, boolToo: true, def: "tcp"},
		"sessions":                 {desc: "Mirroring sessions: sources, filter, targets.", required: true},
		"sessions[]":               {desc: "One mirroring session."},

		"sessions[].name": {desc: "Session name, unique; " + nameDesc, pattern: reName.String(), required: true},
		"sessions[].method": {emptyOK: true, desc: "dup: kernel fast path (whole frames); queue: NFQUEUE, originals accepted at once; log: NFLOG.",
			enum: []any{MethodDup, MethodQueue, MethodLog}, def: MethodDup},
		"sessions[].sources":             {desc: "Interfaces to copy from.", required: true},
		"sessions[].sources[]":           {desc: "An interface and a direction."},
		"sessions[].sources[].interface": {desc: "Interface name.", pattern: reIfname.String(), required: true},
		"sessions[].sources[].direction": {emptyOK: true, desc: "Which traffic of the interface is copied.", enum: []any{Ingress, Egress, Both}, def: Both},
		"sessions[].host_only":           {desc: "Only packets to or from this host (not forwarded ones)."},
		"sessions[].hold":                {desc: "queue: hold each original until nfclone has sent its copy (copies complete, each before its original; originals paced by the copies)."},
		"sessions[].rules":               {desc: "Numbered filter rules; the lowest number matches first, the first match decides. None: copy everything."},
		"sessions[].rules[]":             {desc: "One filter rule."},
		"sessions[].rules[].number": func() keyInfo {
			k := ranged("Rule number, unique in the session; lowest first.", 1, 32766)
			k.required = true
			return k
		}(),
		"sessions[].rules[].action": {desc: "accept: copy; reject: do not copy.", enum: []any{"accept", "reject"}, required: true},
		"sessions[].rules[].protocol": {desc: "tcp, udp, icmp, icmpv6, sctp, any, or an IP protocol number 0-255.",
			anyOf: []map[string]any{
				{"enum": []any{"tcp", "udp", "icmp", "icmpv6", "sctp", "any"}},
				{"type": "integer", "minimum": 0, "maximum": 255},
				{"type": "string", "pattern": `^\s*([Tt][Cc][Pp]|[Uu][Dd][Pp]|[Ii][Cc][Mm][Pp]|[Ii][Cc][Mm][Pp][Vv]6|[Ss][Cc][Tt][Pp]|[Aa][Nn][Yy]|[0-9]{1,3})?\s*$`},
			}},
		"sessions[].rules[].source":            {desc: "Source address or CIDR (10.0.0.0/8, fd00::/8)."},
		"sessions[].rules[].destination":       {desc: "Destination address or CIDR."},
		"sessions[].rules[].source_ports":      {emptyOK: true, desc: `Source ports: "80", "80,443", "1024-65535" (needs protocol tcp, udp or sctp).`, pattern: patPorts, numbersToo: true},
		"sessions[].rules[].destination_ports": {emptyOK: true, desc: "Destination ports, like source_ports.", pattern: patPorts, numbersToo: true},
		"sessions[].rules[].direction":         {emptyOK: true, desc: "Match only one direction of the session's sources.", enum: []any{Ingress, Egress}},
		"sessions[].rules[].vlan":              ranged("VLAN id (method dup with device or vxlan targets only).", 0, 4094),
		"sessions[].sample":                    func() keyInfo { k := ranged("Copy 1 packet in N.", 1, 1<<20); k.def = DefaultSample; return k }(),
		"sessions[].dedup":                     {emptyOK: true, desc: "queue, log: send a packet seen twice within this window once (1ms-10s, like 50ms).", pattern: `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`},
		"sessions[].rate":                      {emptyOK: true, desc: "At most this many copies: 20000/second (also /minute, /hour, /day).", pattern: patRate},
		"sessions[].snaplen":                   ranged("Truncate copies to N bytes (60-65535; queue and log only); 0 = whole packet.", 0, 65535),
		"sessions[].targets":                   {desc: "Where copies go.", required: true},
		"sessions[].targets[]":                 {desc: "One target; its kind decides which other keys it takes."},
		"sessions[].targets[].kind": {desc: "device: an interface (a software TAP port); gateway: IP-layer copy routed to a gateway; vxlan, geneve, erspan: tunnels; pcap: a file; pcap-over-ip: a TCP stream.",
			enum: []any{KindDevice, KindGateway, KindVXLAN, KindGENEVE, KindERSPAN, KindPcap, KindPcapOverIP}, required: true},
		"sessions[].targets[].vlan":       ranged("device (queue, log): tag every copy 802.1Q with this VLAN id.", 1, 4094),
		"sessions[].targets[].version":    ranged("erspan: ERSPAN type (2 or 3).", 2, 3),
		"sessions[].targets[].session_id": ranged("erspan: ERSPAN session id.", 0, 1023),
		"sessions[].targets[].listen":     {desc: `pcap-over-ip: the TCP address to serve, host:port (":PORT" is 127.0.0.1).`, pattern: `:[0-9]+$`},
		"sessions[].targets[].allow":      {desc: "pcap-over-ip: client addresses or CIDRs allowed to connect (\"any\": all)."},
		"sessions[].targets[].device":     {emptyOK: true, desc: "Interface (device: the one written; gateway: the one the gateway is reached through; vxlan, geneve: bind).", pattern: reIfname.String()},
		"sessions[].targets[].gateway":    {desc: "IP address of the gateway the copies are routed to."},
		"sessions[].targets[].mac":        {emptyOK: true, desc: "Ethernet address of the next hop (device, gateway), like 02:00:00:00:00:01.", pattern: `^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$`},
		"sessions[].targets[].arp":        {emptyOK: true, desc: "gateway: resolve the gateway with ARP/ND (on) or not (off).", enum: []any{"on", "off", true, false}, boolToo: true},
		"sessions[].targets[].create":     {desc: "device: create the device as a veth pair (copies can be read on its peer)."},
		"sessions[].targets[].peer":       {emptyOK: true, desc: "device with create: the name of the pair's other end.", pattern: reIfname.String()},
		"sessions[].targets[].promisc":    {desc: "device: put the device in promiscuous mode."},
		"sessions[].targets[].remote": {desc: "vxlan, geneve: address:port of the collector, or a list of them.",
			anyOf: []map[string]any{
				{"type": "string", "minLength": 1},
				{"type": "array", "minItems": 1, "items": map[string]any{"type": "string"}},
			}},
		"sessions[].targets[].vni": ranged("vxlan, geneve: network identifier (24 bits).", 0, MaxVNI),
		"sessions[].targets[].encap": {emptyOK: true, desc: "vxlan, geneve: kernel (a kernel VXLAN device nfclone creates; vxlan with one remote, the default there) or userspace (nfclone writes the headers; several remotes, geneve).",
			enum: []any{EncapKernel, EncapUserspace}},
		"sessions[].targets[].path":        {desc: `pcap: absolute file path, or "-" for standard output.`, pattern: `^(/|-$)`},
		"sessions[].targets[].format":      {emptyOK: true, desc: "pcap: file format.", enum: []any{"pcap", "pcapng"}},
		"sessions[].targets[].rotate_size": {emptyOK: true, desc: "pcap: rotate at this size (100MB).", pattern: patSize},
		"sessions[].targets[].rotate_keep": ranged("pcap: rotated files kept.", 0, 1<<31-1),
		"sessions[].targets[].rotate_every": {emptyOK: true, desc: "pcap: a new file at every multiple of this duration (10s, 15m, 1h: on the hour); the path may hold strftime conversions (%Y%m%d-%H%M).",
			pattern: `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`},
	}
	return k
}

// targetKinds: for each kind, the keys it takes and those it requires
// (validateTarget's rules, for editors).
var targetKinds = []struct {
	kind     Kind
	allowed  []string
	required []string
}{
	{KindDevice, []string{"kind", "device", "mac", "create", "peer", "promisc", "vlan"}, []string{"device"}},
	{KindGateway, []string{"kind", "device", "gateway", "mac", "arp"}, []string{"gateway", "device"}},
	{KindVXLAN, []string{"kind", "device", "remote", "vni", "encap"}, []string{"remote", "vni"}},
	{KindGENEVE, []string{"kind", "device", "remote", "vni", "encap"}, []string{"remote", "vni"}},
	{KindPcap, []string{"kind", "path", "format", "rotate_size", "rotate_keep", "rotate_every"}, []string{"path"}},
	{KindERSPAN, []string{"kind", "device", "remote", "version", "session_id"}, []string{"remote", "session_id"}},
	{KindPcapOverIP, []string{"kind", "listen", "allow", "format"}, []string{"listen"}},
}

// JSONSchema returns the JSON Schema (draft 2020-12) of the configuration
// file, generated from the Config types (their mapstructure keys) and the
// constraints Validate checks without the host. packaging/nfclone.schema.json
// is its output (`nfclone schema`); a test keeps the two equal.
func JSONSchema() ([]byte, error) {
	keys := schemaKeys()
	used := map[string]bool{}
	root, err := schemaOf(reflect.TypeOf(Config{}), "", reflect.ValueOf(Default()), keys, used)
	if err != nil {
		return nil, err
	}
	var unused []string
	for k := range keys {
		if !used[k] {
			unused = append(unused, k)
		}
	}
	if len(unused) > 0 {
		sort.Strings(unused)
		return nil, fmt.Errorf("config schema: keys %s describe no field of config.Config", strings.Join(unused, ", "))
	}
	root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	root["$id"] = SchemaID
	root["title"] = "nfclone configuration"
	root["description"] = "The file read by nfclone run/check/render -c FILE (/etc/nfclone/nfclone.yaml). Generated from the Go types by `nfclone schema`; nfclone check also validates what a schema cannot (marks, loops, the host)."
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("config schema: encoding: %w", err)
	}
	return buf.Bytes(), nil
}

// schemaOf builds the schema of type t at key path; def is the default
// value when one is known (invalid otherwise).
func schemaOf(t reflect.Type, path string, def reflect.Value, keys map[string]keyInfo, used map[string]bool) (map[string]any, error) {
	info, ok := keys[path]
	if ok {
		used[path] = true
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
		if def.IsValid() {
			def = reflect.Value{}
		}
	}
	s := map[string]any{}
	switch t.Kind() {
	case reflect.Struct:
		props := map[string]any{}
		var required []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			sub := joinPath(path, name)
			if path == "" {
				sub = name
			}
			var fdef reflect.Value
			if def.IsValid() {
				fdef = def.Field(i)
			}
			fs, err := schemaOf(f.Type, sub, fdef, keys, used)
			if err != nil {
				return nil, err
			}
			props[name] = fs
			if keys[sub].required {
				required = append(required, name)
			}
		}
		s["type"] = "object"
		s["properties"] = props
		s["additionalProperties"] = false
		if len(required) > 0 {
			s["required"] = required
		}
		if path == "sessions[].targets[]" {
			s["allOf"] = targetConditions()
		}
	case reflect.Slice:
		if info.anyOf == nil {
			item, err := schemaOf(t.Elem(), path+"[]", reflect.Value{}, keys, used)
			if err != nil {
				return nil, err
			}
			s["type"] = "array"
			s["items"] = item
			if info.required {
				s["minItems"] = 1
			}
		}
	case reflect.String:
		s["type"] = "string"
		switch {
		case info.numbersToo:
			s["type"] = []string{"string", "integer"}
		case info.boolToo:
			s["type"] = []string{"string", "boolean"}
		}
		if info.pattern != "" {
			s["pattern"] = info.pattern
			if info.emptyOK {
				s["pattern"] = "^$|" + info.pattern
			}
		}
	case reflect.Bool:
		s["type"] = "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		// Numbers may also be strings ("0x80"), as NFCLONE_* variables are.
		s["type"] = []string{"integer", "string"}
		s["pattern"] = `^\s*[+-]?(0[xX][0-9A-Fa-f_]+|0[oObB]?[0-7_]+|[0-9_]+)\s*$`
		lo, hi := info.min, info.max
		if lo == nil {
			lo, hi = intRange(t)
		}
		s["minimum"], s["maximum"] = *lo, *hi
	default:
		return nil, fmt.Errorf("config schema: %s: no schema for Go type %s", path, t)
	}
	if info.anyOf != nil {
		delete(s, "type")
		delete(s, "pattern")
		s["anyOf"] = info.anyOf
	}
	if info.desc != "" {
		s["description"] = info.desc
	}
	if info.enum != nil {
		s["enum"] = info.enum
		if info.emptyOK {
			s["enum"] = append([]any{""}, info.enum...)
		}
	}
	switch {
	case info.def != nil:
		s["default"] = info.def
	case def.IsValid() && t.Kind() != reflect.Struct && t.Kind() != reflect.Slice:
		s["default"] = def.Interface()
	}
	return s, nil
}

func intRange(t reflect.Type) (*int64, *int64) {
	if isUint(t.Kind()) {
		if t.Bits() >= 63 {
			return rng(0, 1<<62)
		}
		return rng(0, 1<<t.Bits()-1)
	}
	return rng(-1<<(t.Bits()-1), 1<<(t.Bits()-1)-1)
}

// targetConditions: each target kind's required and allowed keys.
func targetConditions() []any {
	var out []any
	for _, k := range targetKinds {
		out = append(out, map[string]any{
			"if": map[string]any{
				"properties": map[string]any{"kind": map[string]any{"const": k.kind}},
				"required":   []string{"kind"},
			},
			"then": map[string]any{
				"required":      k.required,
				"propertyNames": map[string]any{"enum": k.allowed},
			},
		})
	}
	return out
}
