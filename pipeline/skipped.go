package pipeline

// Skipped are the packets a session's selectors kept from being copied
// (docs/configuration.md, "Selecting flows"), from the kernel's counters on the selector
// rules. Like a filter's non-matches they are neither offered nor dropped:
// they stay out of the ledger's invariant.
type Skipped struct {
	// Priority: a session with a lower priority number accepted the packet.
	Priority uint64 `json:"priority"`
	// Scope: not a packet of the session's cgroup or user.
	Scope uint64 `json:"scope"`
	// FirstPackets, FirstBytes: past the first packets (bytes) of its
	// connection's direction, or of a connection conntrack did not count.
	FirstPackets uint64 `json:"first_packets"`
	FirstBytes   uint64 `json:"first_bytes"`
	// SampleFlows: a flow sample_flows did not choose.
	SampleFlows uint64 `json:"sample_flows"`
	// FlowRate: over its flow's flow_rate.
	FlowRate uint64 `json:"flow_rate"`
}

// SkipReason is one selector and what it kept from being copied.
type SkipReason struct {
	Name    string
	Packets uint64
}

// Reasons lists the selectors in the order the rules test them.
func (s Skipped) Reasons() []SkipReason {
	return []SkipReason{
		{"priority", s.Priority}, {"scope", s.Scope}, {"first_packets", s.FirstPackets},
		{"first_bytes", s.FirstBytes}, {"sample_flows", s.SampleFlows}, {"flow_rate", s.FlowRate},
	}
}

// Total is the sum over the selectors.
func (s Skipped) Total() uint64 {
	var n uint64
	for _, r := range s.Reasons() {
		n += r.Packets
	}
	return n
}

// Add sums two counts field by field.
func (s Skipped) Add(x Skipped) Skipped {
	s.Priority += x.Priority
	s.Scope += x.Scope
	s.FirstPackets += x.FirstPackets
	s.FirstBytes += x.FirstBytes
	s.SampleFlows += x.SampleFlows
	s.FlowRate += x.FlowRate
	return s
}
