package config

import (
	"fmt"
	"os/user"
	"path"
	"strconv"
	"strings"
)

// MaxPriority is the largest session priority (as a rule number).
const MaxPriority = 32766

// Selectors is the typed form of a session's selector keys: which flows,
// and how much of each, the session copies. Validate fills it; the rules
// compiler reads only this.
type Selectors struct {
	// FirstPackets: copy a connection's first N packets in each direction
	// (conntrack counters); 0: no limit.
	FirstPackets uint64
	// FirstBytes: the same in bytes (packets while the direction's byte
	// count, the packet included, is at most B); 0: no limit.
	FirstBytes uint64
	// SampleFlows: copy whole flows, 1 in N (a symmetric hash of the flow);
	// 0 or 1: every flow.
	SampleFlows uint32
	// FlowRate: at most this many copies per flow (a dynamic set keyed by
	// the 5-tuple); nil: none.
	FlowRate *Rate
	// Cgroup is a cgroup v2 path below the cgroup2 root, cleaned, without
	// a leading slash ("system.slice/nginx.service"); "" none.
	Cgroup string
	// UID is the owner of the sockets whose packets are copied; nil none.
	UID *uint32
	// Priority orders the sessions that have one (1 first); 0: none.
	Priority int
}

// CgroupLevel is the depth of the cgroup below the root (nft's `socket
// cgroupv2 level N`): "system.slice/nginx.service" is level 2.
func (s Selectors) CgroupLevel() int {
	if s.Cgroup == "" {
		return 0
	}
	return strings.Count(s.Cgroup, "/") + 1
}

// Conntrack reports whether a selector reads conntrack's counters.
func (s Selectors) Conntrack() bool { return s.FirstPackets > 0 || s.FirstBytes > 0 }

// Scoped reports whether the session copies only the packets of some of the
// host's sockets (cgroup or user).
func (s Selectors) Scoped() bool { return s.Cgroup != "" || s.UID != nil }

// LookupUser resolves a user name to its uid (os/user: /etc/passwd, or
// NSS with cgo). Tests replace it.
type LookupUser func(name string) (uint32, error)

// SystemUser looks a user up on this host.
func SystemUser(name string) (uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("user %q has uid %q, not a number", name, u.Uid)
	}
	return uint32(n), nil
}

// ParseCgroup cleans a cgroup v2 path given relative to the cgroup2 root
// ("system.slice/nginx.service", a leading slash allowed).
func ParseCgroup(s string) (string, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return "", fmt.Errorf("empty cgroup path")
	}
	for _, part := range strings.Split(strings.Trim(t, "/"), "/") {
		if part == ".." || part == "." {
			return "", fmt.Errorf("%q: give a cgroup path below the cgroup2 root, without . or .. in it", s)
		}
	}
	c := strings.TrimPrefix(path.Clean("/"+t), "/")
	if c == "" {
		return "", fmt.Errorf("%q is the root cgroup (every socket): leave cgroup out and use host_only", s)
	}
	if strings.ContainsAny(c, "\x00\n") {
		return "", fmt.Errorf("%q is not a cgroup path", s)
	}
	if n := strings.Count(c, "/") + 1; n > 255 {
		return "", fmt.Errorf("%q is %d levels deep, at most 255", s, n)
	}
	return c, nil
}

// kernelSocketL3 reports whether a session is compiled into ip/ip6 tables
// only (where the kernel knows the socket and conntrack has run): userspace
// methods, and dup with gateway targets only.
func kernelSocketL3(s *Session) bool {
	if s.Method != MethodDup {
		return true
	}
	for _, t := range s.Targets {
		if t.Kind != KindGateway {
			return false
		}
	}
	return true
}

// validateSelectors checks the selector keys and fills s.Select.
func validateSelectors(p *problems, spath string, s *Session, lookup LookupUser) {
	sel := Selectors{}
	if s.FirstPackets < 0 {
		p.add(spath+".first_packets", "%d must not be negative (0: no limit)", s.FirstPackets)
	} else if s.FirstPackets > 1<<32-1 {
		p.add(spath+".first_packets", "%d is out of range 0-%d", s.FirstPackets, uint64(1<<32-1))
	} else {
		sel.FirstPackets = uint64(s.FirstPackets)
	}
	if s.FirstBytes != "" {
		if n, err := ParseSize(s.FirstBytes); err != nil {
			p.add(spath+".first_bytes", "%v", err)
		} else {
			sel.FirstBytes = uint64(n)
		}
	}
	switch {
	case s.SampleFlows < 0 || s.SampleFlows > 1<<20:
		p.add(spath+".sample_flows", "%d is out of range 1-1048576 (copy 1 flow in N)", s.SampleFlows)
	case s.SampleFlows > 1:
		sel.SampleFlows = uint32(s.SampleFlows)
	}
	if s.FlowRate != "" {
		if r, err := ParseRate(s.FlowRate); err != nil {
			p.add(spath+".flow_rate", "%v", err)
		} else {
			sel.FlowRate = &r
		}
	}
	if s.Cgroup != "" {
		if c, err := ParseCgroup(s.Cgroup); err != nil {
			p.add(spath+".cgroup", "%v", err)
		} else {
			sel.Cgroup = c
		}
	}
	if s.User != "" {
		u := strings.TrimSpace(s.User)
		if n, err := strconv.ParseUint(u, 10, 32); err == nil {
			if n == 1<<32-1 {
				p.add(spath+".user", "%d is not a uid (it means no user)", n)
			} else {
				uid := uint32(n)
				sel.UID = &uid
			}
		} else if lookup == nil {
			p.add(spath+".user", "%q: only a numeric uid here", u)
		} else if uid, err := lookup(u); err != nil {
			p.add(spath+".user", "%q is not a user of this host (%v); give the numeric uid", u, err)
		} else {
			sel.UID = &uid
		}
	}
	if s.Priority < 0 || s.Priority > MaxPriority {
		p.add(spath+".priority", "%d is out of range 1-%d (0: none)", s.Priority, MaxPriority)
	} else {
		sel.Priority = s.Priority
	}
	if sel.Scoped() {
		key := "cgroup"
		if sel.Cgroup == "" {
			key = "user"
		}
		if !kernelSocketL3(s) {
			p.add(spath+"."+key, "needs the packet's socket, which the kernel knows only in the ip/ip6 input and output hooks: use method queue or log, or gateway targets (not device or vxlan targets with method dup)")
		}
		s.HostOnly = true // only this host's sockets
	}
	if sel.Conntrack() && !kernelSocketL3(s) {
		key := "first_packets"
		if sel.FirstPackets == 0 {
			key = "first_bytes"
		}
		p.add(spath+"."+key, "reads conntrack's counters, which the netdev tables of method dup with device or vxlan targets cannot (the kernel refuses ct there): use method queue or log, or gateway targets")
	}
	s.Select = sel
}

// validatePriorities refuses two sessions with the same priority: the
// lowest-numbered session that accepts a packet copies it, so the order
// must be total.
func validatePriorities(p *problems, c *Config) {
	seen := map[int]int{}
	for i, s := range c.Sessions {
		if s.Priority <= 0 {
			continue
		}
		if j, dup := seen[s.Priority]; dup {
			p.add(fmt.Sprintf("sessions[%d].priority", i), "%d is already the priority of sessions[%d] (%s)", s.Priority, j, c.Sessions[j].Name)
			continue
		}
		seen[s.Priority] = i
	}
	// A later session tests an earlier one's scope in its own chains: the
	// kernel's socket expression exists only in the ip/ip6 input, output and
	// prerouting hooks.
	for i, s := range c.Sessions {
		if s.Priority <= 0 || s.HostOnly && kernelSocketL3(&s) {
			continue
		}
		for j, q := range c.Sessions {
			if q.Priority > 0 && q.Priority < s.Priority && q.Select.Cgroup != "" {
				p.add(fmt.Sprintf("sessions[%d].priority", i), "%d comes after sessions[%d] (%s), which has a cgroup: the kernel tells a packet's cgroup only in the ip/ip6 input and output hooks, so this session needs host_only and no device or vxlan targets with method dup", s.Priority, j, q.Name)
			}
		}
	}
}
