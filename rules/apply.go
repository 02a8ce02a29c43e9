package rules

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Batch is the part of *nftables.Conn the applier uses: queue messages, then
// send them as one transaction.
type Batch interface {
	AddTable(*nftables.Table) *nftables.Table
	DestroyTable(*nftables.Table)
	AddChain(*nftables.Chain) *nftables.Chain
	AddSet(*nftables.Set, []nftables.SetElement) error
	AddRule(*nftables.Rule) *nftables.Rule
	Flush() error
}

// Queue adds the whole ruleset to b: every table nfclone may own (in every
// family, named rs.Name) is destroyed and the desired ones are created, so
// one Flush replaces nfclone's state atomically — all or nothing. Tables get
// the owner flag: the kernel removes them when b's socket closes.
func Queue(b Batch, rs *Ruleset) error {
	for _, f := range Families {
		b.DestroyTable(&nftables.Table{Name: rs.Name, Family: f})
	}
	for i := range rs.Tables {
		t := &rs.Tables[i]
		nt := b.AddTable(&nftables.Table{Name: rs.Name, Family: t.Family, Flags: nftables.TableFlagOwner})
		if err := queueTable(b, t, nt); err != nil {
			return err
		}
	}
	return nil
}

// queueTable adds t's sets, chains and rules to the table nt (already
// added to b).
func queueTable(b Batch, t *Table, nt *nftables.Table) error {
	sets := map[string]*nftables.Set{}
	for _, s := range t.Sets {
		ns := &nftables.Set{Table: nt, Name: s.Name, KeyType: s.KeyType, Dynamic: true, HasTimeout: true,
			Timeout: s.Timeout, Size: s.Size, Concatenation: len(nftables.ConcatSetTypeElements(s.KeyType)) > 1}
		if err := b.AddSet(ns, nil); err != nil {
			return fmt.Errorf("adding set %s: %w", s.Name, err)
		}
		sets[s.Name] = ns
	}
	chains := map[string]*nftables.Chain{}
	for _, c := range t.Chains {
		nc := &nftables.Chain{Name: c.Name, Table: nt}
		if c.Hook != nil {
			hook, prio, policy := c.Hook.Num, c.Hook.Priority, nftables.ChainPolicyAccept
			nc.Type, nc.Hooknum, nc.Priority, nc.Policy, nc.Device = nftables.ChainTypeFilter, &hook, &prio, &policy, c.Hook.Device
		}
		chains[c.Name] = b.AddChain(nc)
	}
	for _, c := range t.Chains {
		for _, r := range c.Rules {
			exprs := append([]expr.Any(nil), r.Exprs...)
			for i, e := range exprs {
				if ds, ok := e.(*expr.Dynset); ok && sets[ds.SetName] != nil {
					d := *ds
					d.SetID = sets[ds.SetName].ID
					exprs[i] = &d
				}
			}
			for _, s := range r.Sets {
				set := &nftables.Set{
					Table: nt, Anonymous: true, Constant: true, Interval: s.Interval, KeyType: s.KeyType,
				}
				if err := b.AddSet(set, s.Elements); err != nil {
					return fmt.Errorf("adding anonymous set for chain %s: %w", c.Name, err)
				}
				lk := *(exprs[s.Lookup].(*expr.Lookup))
				lk.SetName, lk.SetID = set.Name, set.ID
				exprs[s.Lookup] = &lk
			}
			b.AddRule(&nftables.Rule{Table: nt, Chain: chains[c.Name], Exprs: exprs})
		}
	}
	return nil
}

// Applier owns nfclone's lasting nftables connection: the tables it creates
// belong to this socket and vanish with it (also when the process is killed).
type Applier struct {
	conn *nftables.Conn
	name string
}

// NewApplier opens a lasting connection in the current network namespace.
func NewApplier(table string) (*Applier, error) {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	return &Applier{conn: c, name: table}, nil
}

// Apply replaces nfclone's tables with rs in one transaction.
func (a *Applier) Apply(rs *Ruleset) error {
	if err := Queue(a.conn, rs); err != nil {
		return err
	}
	if err := a.conn.Flush(); err != nil {
		return explain(fmt.Errorf("applying ruleset (%d tables) in one batch: %w", len(rs.Tables), err))
	}
	return nil
}

// Remove deletes nfclone's tables (every family).
func (a *Applier) Remove() error {
	return RemoveTables(a.conn, a.name)
}

// Close removes the tables and closes the socket.
func (a *Applier) Close() error {
	err := a.Remove()
	return errors.Join(err, a.conn.CloseLasting())
}

// RemoveTables destroys nfclone's tables of every family in one batch; absent
// tables are not an error.
func RemoveTables(b Batch, name string) error {
	for _, f := range Families {
		b.DestroyTable(&nftables.Table{Name: name, Family: f})
	}
	if err := b.Flush(); err != nil {
		return explain(fmt.Errorf("removing nfclone tables %q: %w", name, err))
	}
	return nil
}

// ErrPermission marks errors caused by missing privilege (exit code 2).
var ErrPermission = errors.New("permission denied")

func explain(err error) error {
	switch {
	case errors.Is(err, syscall.EPERM) || errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w (%w: nfclone needs CAP_NET_ADMIN; or another process owns the table — is nfclone already running?)", err, ErrPermission)
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w (the kernel lacks an expression or an interface does not exist; `nfclone check` lists the kernel features)", err)
	}
	return err
}

// CounterValue is packets and bytes.
type CounterValue struct{ Packets, Bytes uint64 }

// Counters reads back the counters of the ruleset's rules from the kernel
// and sums them per session and kind (CounterSeen, CounterCopied).
// It reads through a connection of its own, so it can run beside an apply.
func (a *Applier) Counters(rs *Ruleset) (map[string]map[string]CounterValue, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables to read counters: %w", err)
	}
	out := map[string]map[string]CounterValue{}
	for _, t := range rs.Tables {
		nt := &nftables.Table{Name: rs.Name, Family: t.Family}
		for _, c := range t.Chains {
			var refs bool
			for _, r := range c.Rules {
				refs = refs || r.Counter != nil
			}
			if !refs {
				continue
			}
			got, err := conn.GetRules(nt, &nftables.Chain{Name: c.Name, Table: nt})
			if err != nil {
				return nil, fmt.Errorf("reading rules of chain %s %s: %w", FamilyName(t.Family), c.Name, err)
			}
			for i, r := range c.Rules {
				if r.Counter == nil || i >= len(got) {
					continue
				}
				for _, e := range got[i].Exprs {
					if ce, ok := e.(*expr.Counter); ok {
						m := out[r.Counter.Session]
						if m == nil {
							m = map[string]CounterValue{}
							out[r.Counter.Session] = m
						}
						v := m[r.Counter.Kind]
						v.Packets += ce.Packets
						v.Bytes += ce.Bytes
						m[r.Counter.Kind] = v
					}
				}
			}
		}
	}
	return out, nil
}
