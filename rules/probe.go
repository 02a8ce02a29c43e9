package rules

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/nfclone/nfclone/config"
)

// Feature is one kernel capability nfclone may need.
type Feature struct {
	Name string
	OK   bool
	Err  string `json:",omitempty"`
}

// Features is what Probe found.
type Features struct {
	List []Feature
}

// Has reports whether the named feature loaded.
func (f Features) Has(name string) bool {
	for _, x := range f.List {
		if x.Name == name {
			return x.OK
		}
	}
	return false
}

// Feature names.
const (
	FeatOwner       = "table owner flag"
	FeatNativeQueue = "nft queue (native)"
	FeatCompatQueue = "xt NFQUEUE target (nft compat)"
	FeatLog         = "nft log (NFLOG)"
	FeatDupNetdev   = "nft dup to device (netdev)"
	FeatDupIP       = "nft dup to address (ip)"
	FeatDupIP6      = "nft dup to address (ip6)"
	FeatFib         = "nft fib"
	FeatNumgen      = "nft numgen"
	FeatLimit       = "nft limit"
	FeatNotrack     = "nft notrack"
	// Selectors (select.go).
	FeatCtCount = "nft ct counters (first_packets)"
	FeatSymhash = "nft symhash (sample_flows)"
	FeatDynset  = "nft dynset limit (flow_rate)"
	FeatSocket  = "nft socket cgroupv2 (cgroup)"
	FeatSkuid   = "nft meta skuid (user)"
)

// probeSet is the dynamic set of the flow_rate probe.
var probeSet = flowSet("probe", false, true, config.Rate{Count: 1, Unit: "second"})

// Probe loads each expression nfclone uses in a throw-away table that the
// same transaction deletes again, so nothing stays behind whatever happens.
// lo is an interface index valid for dup probes (the loopback device).
func Probe(newConn func() (Batch, error), table string, lo uint32) (Features, error) {
	name := table + "_probe"
	b := newBuilder
	probes := []struct {
		name string
		fam  nftables.TableFamily
		rule func() Rule
		set  *Set
	}{
		{name: FeatNativeQueue, fam: nftables.TableFamilyINet, rule: func() Rule { return b(nftables.TableFamilyINet).queue(0, 1, true).rule() }},
		{name: FeatCompatQueue, fam: nftables.TableFamilyINet, rule: func() Rule { return b(nftables.TableFamilyINet).queue(0, 1, false).rule() }},
		{name: FeatLog, fam: nftables.TableFamilyINet, rule: func() Rule { return b(nftables.TableFamilyINet).log(0, 128, 1).rule() }},
		{name: FeatNotrack, fam: nftables.TableFamilyINet, rule: func() Rule { return b(nftables.TableFamilyINet).notrackMarks(0xff, 1, 1).rule() }},
		{name: FeatFib, fam: nftables.TableFamilyINet, rule: func() Rule { return b(nftables.TableFamilyINet).fibLocal("ingress").rule() }},
		{name: FeatNumgen, fam: nftables.TableFamilyINet, rule: func() Rule { return b(nftables.TableFamilyINet).sample(2).rule() }},
		{name: FeatLimit, fam: nftables.TableFamilyINet, rule: func() Rule {
			return b(nftables.TableFamilyINet).add("", &expr.Limit{Type: expr.LimitTypePkts, Rate: 1, Unit: expr.LimitTimeSecond, Over: true, Burst: 5}).rule()
		}},
		{name: FeatCtCount, fam: nftables.TableFamilyIPv4, rule: func() Rule {
			return b(nftables.TableFamilyIPv4).ctDirCount(0, expr.CtKeyPKTS, 1).rule()
		}},
		{name: FeatSymhash, fam: nftables.TableFamilyIPv4, rule: func() Rule { return b(nftables.TableFamilyIPv4).sampleFlows(2).rule() }},
		{name: FeatDynset, fam: nftables.TableFamilyIPv4, rule: func() Rule {
			return b(nftables.TableFamilyIPv4).flowRate("probe", false, true, config.Rate{Count: 1, Unit: "second"}).rule()
		}, set: &probeSet},
		{name: FeatSocket, fam: nftables.TableFamilyIPv4, rule: func() Rule {
			return b(nftables.TableFamilyIPv4).scope(config.Selectors{Cgroup: "probe"}, 1).rule()
		}},
		{name: FeatSkuid, fam: nftables.TableFamilyIPv4, rule: func() Rule {
			uid := uint32(0)
			return b(nftables.TableFamilyIPv4).scope(config.Selectors{UID: &uid}, 0).rule()
		}},
		{name: FeatDupNetdev, fam: nftables.TableFamilyNetdev, rule: func() Rule { return b(nftables.TableFamilyNetdev).dupDevice("lo", lo).rule() }},
		{name: FeatDupIP, fam: nftables.TableFamilyIPv4, rule: func() Rule {
			return b(nftables.TableFamilyIPv4).dupGateway(netip.MustParseAddr("127.0.0.1"), "lo", lo).rule()
		}},
		{name: FeatDupIP6, fam: nftables.TableFamilyIPv6, rule: func() Rule {
			return b(nftables.TableFamilyIPv6).dupGateway(netip.MustParseAddr("::1"), "lo", lo).rule()
		}},
	}
	var out Features
	try := func(fam nftables.TableFamily, flags nftables.TableFlags, r *Rule, set *Set) error {
		c, err := newConn()
		if err != nil {
			return err
		}
		t := &nftables.Table{Name: name, Family: fam, Flags: flags}
		c.DestroyTable(t)
		c.AddTable(t)
		if r != nil {
			rs := &Ruleset{Name: name, Tables: []Table{{Family: fam, Chains: []Chain{{Name: "probe", Rules: []Rule{*r}}}}}}
			if set != nil {
				rs.Tables[0].Sets = []Set{*set}
			}
			if err := queueTable(c, &rs.Tables[0], t); err != nil {
				return err
			}
		}
		c.DestroyTable(t)
		return c.Flush()
	}
	// The first transaction tells whether we may talk to nf_tables at all.
	if err := try(nftables.TableFamilyINet, 0, nil, nil); err != nil {
		return out, explain(fmt.Errorf("probing nf_tables: %w", err))
	}
	add := func(n string, err error) {
		f := Feature{Name: n, OK: err == nil}
		if err != nil {
			f.Err = err.Error()
		}
		out.List = append(out.List, f)
	}
	add(FeatOwner, try(nftables.TableFamilyINet, nftables.TableFlagOwner, nil, nil))
	for _, p := range probes {
		r := p.rule()
		add(p.name, try(p.fam, 0, &r, p.set))
	}
	return out, nil
}
