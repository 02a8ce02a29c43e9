package rules

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// call is one recorded Batch call.
type call struct {
	op    string // DestroyTable, AddTable, AddChain, AddSet, AddRule, Flush
	table *nftables.Table
	chain *nftables.Chain
	set   *nftables.Set
	elems []nftables.SetElement
	rule  *nftables.Rule
}

// fakeBatch records what Queue asks for. Like *nftables.Conn, AddSet gives
// an anonymous set the name "__set%d" and a fresh transaction id.
type fakeBatch struct {
	calls    []call
	nextID   uint32
	flushErr error
	// failFlush, if not 0, makes only that Flush (counted from 1) fail
	// with flushErr.
	failFlush int
	flushes   int
	// chains holds the rules added per chain ("family table chain"), with
	// handles, for GetRules.
	chains     map[string][]*nftables.Rule
	nextHandle uint64
}

func chainKey(t *nftables.Table, chain string) string {
	return fmt.Sprintf("%s %s %s", FamilyName(t.Family), t.Name, chain)
}

func (f *fakeBatch) ReplaceRule(r *nftables.Rule) *nftables.Rule {
	f.calls = append(f.calls, call{op: "ReplaceRule", rule: r})
	return r
}

func (f *fakeBatch) GetRules(t *nftables.Table, c *nftables.Chain) ([]*nftables.Rule, error) {
	return f.chains[chainKey(t, c.Name)], nil
}

func (f *fakeBatch) AddTable(t *nftables.Table) *nftables.Table {
	f.calls = append(f.calls, call{op: "AddTable", table: t})
	return t
}

func (f *fakeBatch) DestroyTable(t *nftables.Table) {
	f.calls = append(f.calls, call{op: "DestroyTable", table: t})
	for k := range f.chains {
		if strings.HasPrefix(k, chainKey(t, "")) {
			delete(f.chains, k)
		}
	}
}

func (f *fakeBatch) AddChain(c *nftables.Chain) *nftables.Chain {
	f.calls = append(f.calls, call{op: "AddChain", chain: c})
	return c
}

func (f *fakeBatch) AddSet(s *nftables.Set, el []nftables.SetElement) error {
	if s.Anonymous && !s.Constant {
		return errors.New("anonymous sets must be constant")
	}
	if s.ID == 0 {
		f.nextID++
		s.ID = f.nextID
		if s.Anonymous {
			s.Name = "__set%d"
		}
	}
	f.calls = append(f.calls, call{op: "AddSet", set: s, elems: el})
	return nil
}

func (f *fakeBatch) AddRule(r *nftables.Rule) *nftables.Rule {
	f.calls = append(f.calls, call{op: "AddRule", rule: r})
	if f.chains == nil {
		f.chains = map[string][]*nftables.Rule{}
	}
	f.nextHandle++
	k := chainKey(r.Table, r.Chain.Name)
	f.chains[k] = append(f.chains[k], &nftables.Rule{Table: r.Table, Chain: r.Chain, Handle: f.nextHandle, Exprs: r.Exprs})
	return r
}

func (f *fakeBatch) Flush() error {
	f.calls = append(f.calls, call{op: "Flush"})
	f.flushes++
	if f.failFlush != 0 && f.flushes != f.failFlush {
		return nil
	}
	return f.flushErr
}

// transcript prints the recorded calls, expressions included, so that two
// runs can be compared.
func (f *fakeBatch) transcript(t *testing.T) string {
	var sb strings.Builder
	for _, c := range f.calls {
		switch c.op {
		case "DestroyTable", "AddTable":
			fmt.Fprintf(&sb, "%s %s %s flags=%d\n", c.op, FamilyName(c.table.Family), c.table.Name, c.table.Flags)
		case "AddChain":
			fmt.Fprintf(&sb, "AddChain %s %s", FamilyName(c.chain.Table.Family), c.chain.Name)
			if c.chain.Hooknum != nil {
				fmt.Fprintf(&sb, " type=%s hook=%d prio=%d policy=%d dev=%q", c.chain.Type, *c.chain.Hooknum, *c.chain.Priority, *c.chain.Policy, c.chain.Device)
			}
			sb.WriteString("\n")
		case "AddSet":
			fmt.Fprintf(&sb, "AddSet %s id=%d interval=%v key=%s elems=%v\n", c.set.Name, c.set.ID, c.set.Interval, c.set.KeyType.Name, c.elems)
		case "AddRule", "ReplaceRule":
			fmt.Fprintf(&sb, "%s %s %s", c.op, FamilyName(c.rule.Table.Family), c.rule.Chain.Name)
			if c.op == "ReplaceRule" {
				fmt.Fprintf(&sb, " handle %d", c.rule.Handle)
			}
			sb.WriteString("\n")
			for _, e := range c.rule.Exprs {
				fmt.Fprintf(&sb, "  [ %s ]\n", dumpExpr(t, c.rule.Table.Family, e))
			}
		default:
			sb.WriteString(c.op + "\n")
		}
	}
	return sb.String()
}

func lookups(rs *Ruleset) []*expr.Lookup {
	var out []*expr.Lookup
	for _, t := range rs.Tables {
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				for _, e := range r.Exprs {
					if lk, ok := e.(*expr.Lookup); ok {
						out = append(out, lk)
					}
				}
			}
		}
	}
	return out
}

func TestQueueOrderAndObjects(t *testing.T) {
	for _, cfgName := range []string{"device", "gateway", "userspace", "hostonly"} {
		t.Run(cfgName, func(t *testing.T) {
			rs := compileCase(t, cfgName, false)
			var fb fakeBatch
			if err := Queue(&fb, rs); err != nil {
				t.Fatalf("Queue: %v", err)
			}
			calls := fb.calls

			// 1. Every family's table is destroyed first, in Families order.
			if len(calls) < len(Families) {
				t.Fatalf("only %d calls", len(calls))
			}
			for i, f := range Families {
				c := calls[i]
				if c.op != "DestroyTable" || c.table.Family != f || c.table.Name != rs.Name {
					t.Errorf("call %d = %s %v, want DestroyTable %s %s", i, c.op, c.table, FamilyName(f), rs.Name)
				}
			}
			calls = calls[len(Families):]

			// 2. Then each desired table: AddTable (owner flag), all of its
			// chains, then its sets and rules.
			ti := -1
			var curTable *nftables.Table
			chains := map[string]*nftables.Chain{}
			rulesSeen := false
			var pendingSets []*nftables.Set
			var ruleCalls []*nftables.Rule
			for i, c := range calls {
				switch c.op {
				case "AddTable":
					if len(pendingSets) > 0 {
						t.Errorf("call %d: %d sets added without a rule that looks them up", i, len(pendingSets))
					}
					ti++
					if ti >= len(rs.Tables) {
						t.Fatalf("more AddTable calls than tables")
					}
					want := rs.Tables[ti]
					if c.table.Family != want.Family || c.table.Name != rs.Name || c.table.Flags != nftables.TableFlagOwner {
						t.Errorf("AddTable %+v, want %s %s with the owner flag", c.table, FamilyName(want.Family), rs.Name)
					}
					curTable, chains, rulesSeen = c.table, map[string]*nftables.Chain{}, false
				case "AddChain":
					if curTable == nil || c.chain.Table != curTable {
						t.Fatalf("call %d: chain %s not in the table just added", i, c.chain.Name)
					}
					if rulesSeen {
						t.Errorf("call %d: chain %s added after a set or rule of its table", i, c.chain.Name)
					}
					chains[c.chain.Name] = c.chain
				case "AddSet":
					rulesSeen = true
					if c.set.Table != curTable || !c.set.Anonymous || !c.set.Constant {
						t.Errorf("call %d: set %+v must be an anonymous constant set of the current table", i, c.set)
					}
					pendingSets = append(pendingSets, c.set)
				case "AddRule":
					rulesSeen = true
					if c.rule.Table != curTable {
						t.Errorf("call %d: rule in another table", i)
					}
					if chains[c.rule.Chain.Name] != c.rule.Chain {
						t.Errorf("call %d: rule's chain %s is not the chain object AddChain returned", i, c.rule.Chain.Name)
					}
					// Every set added since the last rule is looked up by
					// this rule, by name and transaction id.
					var lks []*expr.Lookup
					for _, e := range c.rule.Exprs {
						if lk, ok := e.(*expr.Lookup); ok {
							lks = append(lks, lk)
						}
					}
					if len(lks) != len(pendingSets) {
						t.Errorf("call %d: rule with %d lookups follows %d sets", i, len(lks), len(pendingSets))
					}
					for k := range min(len(lks), len(pendingSets)) {
						if lks[k].SetName != pendingSets[k].Name || lks[k].SetID != pendingSets[k].ID || lks[k].SetID == 0 {
							t.Errorf("call %d: lookup %+v does not refer to set %s id %d", i, lks[k], pendingSets[k].Name, pendingSets[k].ID)
						}
					}
					pendingSets = nil
					ruleCalls = append(ruleCalls, c.rule)
				default:
					t.Errorf("call %d: unexpected %s", i, c.op)
				}
			}
			if ti != len(rs.Tables)-1 {
				t.Errorf("%d tables added, want %d", ti+1, len(rs.Tables))
			}

			// 3. Base chains: filter type, policy accept, the hook,
			// priority and device of the plan; regular chains: no hook.
			// Rules in plan order.
			k := 0
			var chainCalls []*nftables.Chain
			for _, c := range fb.calls {
				if c.op == "AddChain" {
					chainCalls = append(chainCalls, c.chain)
				}
			}
			n := 0
			for _, tbl := range rs.Tables {
				for _, ch := range tbl.Chains {
					got := chainCalls[n]
					n++
					if got.Name != ch.Name || got.Table.Family != tbl.Family {
						t.Errorf("chain %d is %s %s, want %s %s", n, FamilyName(got.Table.Family), got.Name, FamilyName(tbl.Family), ch.Name)
						continue
					}
					if ch.Hook == nil {
						if got.Hooknum != nil || got.Priority != nil || got.Policy != nil || got.Type != "" {
							t.Errorf("regular chain %s has base-chain fields: %+v", ch.Name, got)
						}
					} else {
						if got.Type != nftables.ChainTypeFilter || got.Hooknum == nil || *got.Hooknum != ch.Hook.Num ||
							got.Priority == nil || *got.Priority != ch.Hook.Priority || got.Policy == nil ||
							*got.Policy != nftables.ChainPolicyAccept || got.Device != ch.Hook.Device {
							t.Errorf("base chain %s = %+v, want filter hook %d priority %d device %q policy accept",
								ch.Name, got, ch.Hook.Num, ch.Hook.Priority, ch.Hook.Device)
						}
						if (tbl.Family == nftables.TableFamilyNetdev) != (got.Device != "") {
							t.Errorf("base chain %s: device %q in family %s", ch.Name, got.Device, FamilyName(tbl.Family))
						}
					}
					for _, r := range ch.Rules {
						if k >= len(ruleCalls) {
							t.Fatalf("fewer rules added than planned")
						}
						if ruleCalls[k].Chain.Name != ch.Name || len(ruleCalls[k].Exprs) != len(r.Exprs) {
							t.Errorf("rule %d added to %s with %d exprs, want %s with %d", k, ruleCalls[k].Chain.Name, len(ruleCalls[k].Exprs), ch.Name, len(r.Exprs))
						}
						k++
					}
				}
			}
			if k != len(ruleCalls) || n != len(chainCalls) {
				t.Errorf("added %d chains and %d rules, planned %d and %d", len(chainCalls), len(ruleCalls), n, k)
			}
			for _, c := range fb.calls {
				if c.op == "Flush" {
					t.Error("Queue must not flush: the caller sends the batch")
				}
			}
		})
	}
}

func TestQueueSetsAndPlanUntouched(t *testing.T) {
	rs := compileCase(t, "device", false)
	if len(lookups(rs)) == 0 {
		t.Fatal("the device config must produce anonymous sets")
	}
	var first, second fakeBatch
	if err := Queue(&first, rs); err != nil {
		t.Fatal(err)
	}
	// The plan keeps its placeholders: Queue patched copies.
	for _, lk := range lookups(rs) {
		if lk.SetName != "__set%d" || lk.SetID != 0 {
			t.Errorf("Queue modified the plan's lookup: %+v", lk)
		}
	}
	// The set elements handed over are the plan's, flags included.
	var sets []call
	for _, c := range first.calls {
		if c.op == "AddSet" {
			sets = append(sets, c)
		}
	}
	var planned []AnonSet
	for _, tbl := range rs.Tables {
		for _, ch := range tbl.Chains {
			for _, r := range ch.Rules {
				planned = append(planned, r.Sets...)
			}
		}
	}
	if len(sets) != len(planned) {
		t.Fatalf("%d sets added, %d planned", len(sets), len(planned))
	}
	for i := range sets {
		if !reflect.DeepEqual(sets[i].elems, planned[i].Elements) || sets[i].set.Interval != planned[i].Interval ||
			sets[i].set.KeyType != planned[i].KeyType {
			t.Errorf("set %d: added %+v %v, planned %+v", i, sets[i].set, sets[i].elems, planned[i])
		}
	}
	// Applying the same plan again gives the same batch.
	if err := Queue(&second, rs); err != nil {
		t.Fatal(err)
	}
	if a, b := first.transcript(t), second.transcript(t); a != b {
		t.Errorf("second Queue differs from the first:\n%s", lineDiff(a, b))
	}
	if !strings.Contains(first.transcript(t), "lookup reg 1 set __set%d id 1 ]") {
		t.Errorf("transcript shows no patched lookup:\n%s", first.transcript(t))
	}
}

func TestQueueEmptyRuleset(t *testing.T) {
	var fb fakeBatch
	if err := Queue(&fb, &Ruleset{Name: "nfc"}); err != nil {
		t.Fatal(err)
	}
	want := ""
	for _, f := range Families {
		want += fmt.Sprintf("DestroyTable %s nfc flags=0\n", FamilyName(f))
	}
	if got := fb.transcript(t); got != want {
		t.Errorf("transcript:\n%s\nwant:\n%s", got, want)
	}
}

func TestRemoveTables(t *testing.T) {
	var fb fakeBatch
	if err := RemoveTables(&fb, "nfc"); err != nil {
		t.Fatal(err)
	}
	want := ""
	for _, f := range Families {
		want += fmt.Sprintf("DestroyTable %s nfc flags=0\n", FamilyName(f))
	}
	want += "Flush\n"
	if got := fb.transcript(t); got != want {
		t.Errorf("transcript:\n%s\nwant:\n%s", got, want)
	}

	fb = fakeBatch{flushErr: fmt.Errorf("netlink receive: %w", syscall.EPERM)}
	err := RemoveTables(&fb, "nfc")
	if !errors.Is(err, ErrPermission) || !errors.Is(err, syscall.EPERM) || !strings.Contains(err.Error(), `removing nfclone tables "nfc"`) {
		t.Errorf("EPERM error = %v", err)
	}
	fb = fakeBatch{flushErr: syscall.ENOENT}
	err = RemoveTables(&fb, "nfc")
	if errors.Is(err, ErrPermission) || !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), "nfclone check") {
		t.Errorf("ENOENT error = %v", err)
	}
}
