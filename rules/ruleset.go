// Package rules turns a Config into nfclone's desired nftables state — values
// only, no kernel — renders it in `nft -f` syntax, and (apply.go) sends it to
// the kernel in one batch.
package rules

import (
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Ruleset is nfclone's whole desired nftables state: one table per family it
// needs, all with the same name. Nothing outside these tables is touched.
type Ruleset struct {
	Name   string
	Tables []Table
}

// Table is one of nfclone's tables.
type Table struct {
	Family nftables.TableFamily
	Sets   []Set
	Chains []Chain
}

// Set is a named set a table holds: the dynamic sets of flow_rate, filled
// by the packet path (`update @set { key limit rate over R }`), each
// element forgotten Timeout after its flow's last packet.
type Set struct {
	Name string
	// KeyType's name is the key type as nft prints it ("ipv4_addr . inet_proto").
	KeyType nftables.SetDatatype
	Size    uint32
	Timeout time.Duration
}

// Chain is a base chain (Hook set) or a regular chain.
type Chain struct {
	Name  string
	Hook  *Hook
	Rules []Rule
}

// Hook places a base chain.
type Hook struct {
	Num      nftables.ChainHook
	Priority nftables.ChainPriority
	Device   string // netdev chains only
}

// Rule is one rule: the expressions the kernel gets and the nft text for it.
type Rule struct {
	Exprs []expr.Any
	Sets  []AnonSet
	Text  string
	// Counter, if set, says what the rule's counter counts.
	Counter *CounterRef
	// Hold, if set: the packets this rule queues wait for the reader's
	// verdict to go on.
	Hold *Hold
}

// Hold is what the applier needs of a rule whose queued packets wait for
// the reader's verdict to go on: a kernel-routed clone, a held original.
// The kernel drops every queued packet of the network namespace when a hook
// goes away (nfnetlink_queue's hook-drop flush: a base chain deleted, as in
// every replacement of the tables), so the applier first puts Released in
// its place and waits until the queues are empty (Applier.Apply). Such a
// rule has no counter (a replaced rule's counter starts again) and no
// anonymous set.
type Hold struct {
	// Released is the rule with accept in place of its queue statement:
	// the packet goes on at once, as if the reader had accepted it.
	Released []expr.Any
	// Queues are the queue numbers the rule feeds.
	Queues []uint16
}

// Counter kinds.
const (
	CounterSeen   = "seen"   // packets entering a session's filter
	CounterCopied = "copied" // packets reaching its copy statement
	// CounterQueued: clones of a kernel-routed queue session reaching its
	// queue statement (the reader sees them, or the fail-open queue lets
	// them through).
	CounterQueued = "queued"
	// CounterRateLimited: packets the session's rate kept from being copied.
	CounterRateLimited = "rate_limited"
	// Selector counters (select.go): packets each selector kept from being
	// copied.
	CounterFirstPackets = "first_packets"
	CounterFirstBytes   = "first_bytes"
	CounterSampleFlows  = "sample_flows"
	CounterFlowRate     = "flow_rate"
	CounterScope        = "scope"    // not a socket of the cgroup / user
	CounterPriority     = "priority" // a session of lower priority number took it
)

// SelectorCounters are the counter kinds of the selectors, in the order
// the copy chain tests them.
var SelectorCounters = []string{CounterPriority, CounterScope, CounterFirstPackets, CounterFirstBytes, CounterSampleFlows, CounterFlowRate}

// CounterRef ties a rule's counter to a session.
type CounterRef struct {
	Session string
	Kind    string
}

// AnonSet is an anonymous constant set a rule looks up (port lists). Lookup is
// the index in Exprs of the *expr.Lookup that refers to it; the applier fills
// in the set's name and transaction id.
type AnonSet struct {
	KeyType  nftables.SetDatatype
	Interval bool
	Elements []nftables.SetElement
	Lookup   int
}

// Families lists every family nfclone may own a table in, in apply order.
var Families = []nftables.TableFamily{
	nftables.TableFamilyNetdev, nftables.TableFamilyIPv4, nftables.TableFamilyIPv6, nftables.TableFamilyINet,
}

// FamilyName is the nft keyword of a family.
func FamilyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyNetdev:
		return "netdev"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyARP:
		return "arp"
	}
	return "unknown"
}

// Table returns the table of a family, or nil.
func (rs *Ruleset) Table(f nftables.TableFamily) *Table {
	for i := range rs.Tables {
		if rs.Tables[i].Family == f {
			return &rs.Tables[i]
		}
	}
	return nil
}
