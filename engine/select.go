package engine

import (
	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/nfq"
	"github.com/nfclone/nfclone/rules"
)

// skippedCounts reads what each selector kept from being copied out of a
// session's rule counters.
func skippedCounts(m map[string]rules.CounterValue) nfq.Skipped {
	return nfq.Skipped{
		Priority:     m[rules.CounterPriority].Packets,
		Scope:        m[rules.CounterScope].Packets,
		FirstPackets: m[rules.CounterFirstPackets].Packets,
		FirstBytes:   m[rules.CounterFirstBytes].Packets,
		SampleFlows:  m[rules.CounterSampleFlows].Packets,
		FlowRate:     m[rules.CounterFlowRate].Packets,
	}
}

// selectorNeeds adds the kernel features a session's selectors need.
func selectorNeeds(sel config.Selectors, need map[string]bool) {
	if sel.Conntrack() {
		need[rules.FeatCtCount] = true
	}
	if sel.SampleFlows > 1 {
		need[rules.FeatSymhash] = true
	}
	if sel.FlowRate != nil {
		need[rules.FeatDynset] = true
	}
	if sel.Cgroup != "" {
		need[rules.FeatSocket] = true
	}
	if sel.UID != nil {
		need[rules.FeatSkuid] = true
	}
}
