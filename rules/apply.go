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
	ReplaceRule(*nftables.Rule) *nftables.Rule
	Flush() error
}

// kernelTables is a Batch that can also read a chain's rules back (their
// handles and counters): what the applier needs of the kernel.
type kernelTables interface {
	Batch
	ruleReader
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
	// Drain, if set, waits (bounded) until the kernel's queues hold no
	// packet: called after the held rules are released, before the tables
	// are replaced or removed.
	Drain func(queues []uint16)
	// cur is what is in place.
	cur state
}

// state is what the applier knows of the tables in place.
type state struct {
	rs   *Ruleset // nil: none applied
	held []heldRule
}

// NewApplier opens a lasting connection in the current network namespace.
func NewApplier(table string) (*Applier, error) {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	return &Applier{conn: c, name: table}, nil
}

// Apply replaces nfclone's tables with rs (replace). The counters of the
// sessions carry names go on from what the tables in place counted.
func (a *Applier) Apply(rs *Ruleset, carry func(session string) bool) error {
	cur, err := replace(a.conn, a.cur, rs, carry, a.Drain)
	a.cur = cur
	return err
}

// Remove deletes nfclone's tables (every family), releasing held packets
// first.
func (a *Applier) Remove() error {
	err := release(a.conn, a.cur.held, a.Drain)
	a.cur = state{}
	return errors.Join(err, RemoveTables(a.conn, a.name))
}

// Close removes the tables and closes the socket.
func (a *Applier) Close() error {
	err := a.Remove()
	return errors.Join(err, a.conn.CloseLasting())
}

// heldRule is a held rule in the kernel: where it is and its two forms.
type heldRule struct {
	table  *nftables.Table
	chain  string
	handle uint64
	exprs  []expr.Any
	hold   *Hold
}

// replace makes rs nfclone's tables in place of cur's, and returns what is
// in place then.
//
// The kernel drops every queued packet when a hook goes away, and a
// replacement deletes base chains: a kernel-routed clone or a held original
// in a queue then would be lost. So no packet is queued when it happens:
//
//  1. the held rules in place are released (one batch: each replaced by
//     its Released form), and drain waits until their queues are empty;
//  2. the tables are replaced in one batch (Queue) by rs with its held
//     rules released — originals never see a gap — and the counters of the
//     sessions carry names starting from what cur's counted (read just
//     before: what is counted in between is not carried);
//  3. rs's held rules are put in (one batch, by the handles read back).
//
// Between 1 and 3 those packets go on unqueued: a kernel-routed clone is
// sent by the kernel (as its fail-open queue would), a held original goes
// on uncopied (as with no reader bound). If 2 fails, the rules in place are
// held again (if rs cannot even be put in a batch, they stay released
// until the next apply). If 3 fails, rs is applied whole in one batch, as a
// table replacement without held rules would be.
func replace(k kernelTables, cur state, rs *Ruleset, carry func(string) bool, drain func([]uint16)) (state, error) {
	if err := release(k, cur.held, drain); err != nil {
		return cur, err
	}
	next := rs.released()
	if cur.rs != nil && carry != nil {
		// A failed read costs the counters' continuity, not the apply.
		if sums, err := readCounters(k, cur.rs); err == nil {
			for session := range sums {
				if !carry(session) {
					delete(sums, session)
				}
			}
			next = next.withCounters(sums)
		}
	}
	if err := Queue(k, next); err != nil {
		// Nothing is flushed now: the batch holds a part of the tables.
		// The held rules stay released until the next apply.
		return cur, err
	}
	if err := k.Flush(); err != nil {
		return cur, errors.Join(explain(fmt.Errorf("applying ruleset (%d tables) in one batch: %w", len(rs.Tables), err)), putHeld(k, cur.held))
	}
	held, err := heldRules(k, rs)
	if err == nil {
		err = putHeld(k, held)
	}
	if err == nil {
		return state{rs: rs, held: held}, nil
	}
	// Whole, in one batch, as before held rules had their own step.
	if qerr := Queue(k, rs); qerr != nil {
		return state{}, errors.Join(fmt.Errorf("holding queued packets again: %w", err), qerr)
	}
	if ferr := k.Flush(); ferr != nil {
		return state{}, errors.Join(fmt.Errorf("holding queued packets again: %w", err), explain(ferr))
	}
	held, err = heldRules(k, rs)
	return state{rs: rs, held: held}, err
}

// release puts the Released form of each held rule in (one batch) and
// waits until their queues are empty.
func release(b Batch, held []heldRule, drain func([]uint16)) error {
	if len(held) == 0 {
		return nil
	}
	var queues []uint16
	for _, h := range held {
		b.ReplaceRule(&nftables.Rule{Table: h.table, Chain: &nftables.Chain{Name: h.chain, Table: h.table}, Handle: h.handle, Exprs: h.hold.Released})
		queues = append(queues, h.hold.Queues...)
	}
	if err := b.Flush(); err != nil {
		return explain(fmt.Errorf("releasing %d held rules before replacing the tables: %w", len(held), err))
	}
	if drain != nil {
		drain(queues)
	}
	return nil
}

// putHeld puts the held form of each rule in (one batch).
func putHeld(b Batch, held []heldRule) error {
	if len(held) == 0 {
		return nil
	}
	for _, h := range held {
		b.ReplaceRule(&nftables.Rule{Table: h.table, Chain: &nftables.Chain{Name: h.chain, Table: h.table}, Handle: h.handle, Exprs: h.exprs})
	}
	if err := b.Flush(); err != nil {
		return explain(fmt.Errorf("holding queued packets: %w", err))
	}
	return nil
}

// heldRules finds rs's held rules in the kernel: a chain's rules come back
// in the order they were added.
func heldRules(k kernelTables, rs *Ruleset) ([]heldRule, error) {
	var out []heldRule
	for _, t := range rs.Tables {
		nt := &nftables.Table{Name: rs.Name, Family: t.Family}
		for _, c := range t.Chains {
			var got []*nftables.Rule
			for i, r := range c.Rules {
				if r.Hold == nil {
					continue
				}
				if got == nil {
					var err error
					if got, err = k.GetRules(nt, &nftables.Chain{Name: c.Name, Table: nt}); err != nil {
						return nil, fmt.Errorf("reading the rules of chain %s %s: %w", FamilyName(t.Family), c.Name, err)
					}
				}
				if i >= len(got) {
					return nil, fmt.Errorf("chain %s %s: %d rules in the kernel, want %d", FamilyName(t.Family), c.Name, len(got), len(c.Rules))
				}
				out = append(out, heldRule{table: nt, chain: c.Name, handle: got[i].Handle, exprs: r.Exprs, hold: r.Hold})
			}
		}
	}
	return out, nil
}

// released is a copy of rs with each held rule in its Released form.
func (rs *Ruleset) released() *Ruleset {
	out := &Ruleset{Name: rs.Name, Tables: make([]Table, len(rs.Tables))}
	for i, t := range rs.Tables {
		t.Chains = append([]Chain(nil), t.Chains...)
		for j, c := range t.Chains {
			c.Rules = append([]Rule(nil), c.Rules...)
			for k, r := range c.Rules {
				if r.Hold != nil {
					c.Rules[k].Exprs, c.Rules[k].Hold = r.Hold.Released, nil
				}
			}
			t.Chains[j] = c
		}
		out.Tables[i] = t
	}
	return out
}

// withCounters is a copy of rs whose counters start from sums: each
// session's kind in the first rule of rs that counts it (Counters adds a
// session's rules of a kind up).
func (rs *Ruleset) withCounters(sums map[string]map[string]CounterValue) *Ruleset {
	out := &Ruleset{Name: rs.Name, Tables: make([]Table, len(rs.Tables))}
	done := map[CounterRef]bool{}
	for i, t := range rs.Tables {
		t.Chains = append([]Chain(nil), t.Chains...)
		for j, c := range t.Chains {
			c.Rules = append([]Rule(nil), c.Rules...)
			for k, r := range c.Rules {
				if r.Counter == nil || done[*r.Counter] {
					continue
				}
				v, ok := sums[r.Counter.Session][r.Counter.Kind]
				if !ok {
					continue
				}
				done[*r.Counter] = true
				exprs := append([]expr.Any(nil), r.Exprs...)
				for x, e := range exprs {
					if _, ok := e.(*expr.Counter); ok {
						exprs[x] = &expr.Counter{Packets: v.Packets, Bytes: v.Bytes}
					}
				}
				c.Rules[k].Exprs = exprs
			}
			t.Chains[j] = c
		}
		out.Tables[i] = t
	}
	return out
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
	return readCounters(conn, rs)
}

// ruleReader reads a chain's rules back.
type ruleReader interface {
	GetRules(*nftables.Table, *nftables.Chain) ([]*nftables.Rule, error)
}

// readCounters sums the counters of rs's rules in the kernel per session
// and kind: a chain's rules come back in the order they were added.
func readCounters(k ruleReader, rs *Ruleset) (map[string]map[string]CounterValue, error) {
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
			got, err := k.GetRules(nt, &nftables.Chain{Name: c.Name, Table: nt})
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
