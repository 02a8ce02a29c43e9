package rules

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
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
)

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
		{name: FeatDupNetdev, fam: nftables.TableFamilyNetdev, rule: func() Rule { return b(nftables.TableFamilyNetdev).dupDevice("lo", lo).rule() }},
		{name: FeatDupIP, fam: nftables.TableFamilyIPv4, rule: func() Rule {
			return b(nftables.TableFamilyIPv4).dupGateway(netip.MustParseAddr("127.0.0.1"), "lo", lo).rule()
		}},
		{name: FeatDupIP6, fam: nftables.TableFamilyIPv6, rule: func() Rule {
			return b(nftables.TableFamilyIPv6).dupGateway(netip.MustParseAddr("::1"), "lo", lo).rule()
		}},
	}
	var out Features
	try := func(fam nftables.TableFamily, flags nftables.TableFlags, r *Rule) error {
		c, err := newConn()
		if err != nil {
			return err
		}
		t := &nftables.Table{Name: name, Family: fam, Flags: flags}
		c.DestroyTable(t)
		c.AddTable(t)
		if r != nil {
			ch := c.AddChain(&nftables.Chain{Name: "probe", Table: t})
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.Exprs})
		}
		c.DestroyTable(t)
		return c.Flush()
	}
	// The first transaction tells whether we may talk to nf_tables at all.
	if err := try(nftables.TableFamilyINet, 0, nil); err != nil {
		return out, explain(fmt.Errorf("probing nf_tables: %w", err))
	}
	add := func(n string, err error) {
		f := Feature{Name: n, OK: err == nil}
		if err != nil {
			f.Err = err.Error()
		}
		out.List = append(out.List, f)
	}
	add(FeatOwner, try(nftables.TableFamilyINet, nftables.TableFlagOwner, nil))
	for _, p := range probes {
		r := p.rule()
		add(p.name, try(p.fam, 0, &r))
	}
	return out, nil
}
