package rules

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/nftables/expr"
)

// queues reports whether a rule's last expression queues the packet
// (native queue or the xt NFQUEUE target).
func queues(exprs []expr.Any) bool {
	if len(exprs) == 0 {
		return false
	}
	switch e := exprs[len(exprs)-1].(type) {
	case *expr.Queue:
		return true
	case *expr.Target:
		return e.Name == "NFQUEUE"
	}
	return false
}

// heldIn lists the held rules of rs.
func heldIn(rs *Ruleset) []Rule {
	var out []Rule
	for _, t := range rs.Tables {
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				if r.Hold != nil {
					out = append(out, r)
				}
			}
		}
	}
	return out
}

// The rules whose queued packets wait for a verdict — a kernel-routed
// clone's, a held original's — are the held ones, and only those: a queue
// of clones nfclone copies itself, or a log rule, is not. A held rule's
// Released form is the rule with accept in place of the queue, and it has
// no counter (replacing it would restart the counter) and no set.
func TestHeldRules(t *testing.T) {
	for _, tc := range []struct {
		cfg  string
		want []string // the held rules' text
	}{
		{"routed", []string{
			"meta mark & 0x000000fc == 0x00000004 meta mark set meta mark & 0xffffff81 | 0x00000081 queue num 0",
			"meta mark & 0x000000fc == 0x00000010 meta mark set meta mark & 0xffffff80 | 0x00000080 queue num 3", // dev, ip
			"meta mark & 0x000000fc == 0x00000014 meta mark set meta mark & 0xffffff80 | 0x00000080 queue num 4", // tun, ip
			"meta mark & 0x000000fc == 0x00000008 meta mark set meta mark & 0xffffff82 | 0x00000082 queue num 1",
			"meta mark & 0x000000fc == 0x00000010 meta mark set meta mark & 0xffffff80 | 0x00000080 queue num 3", // dev, ip6
			"meta mark & 0x000000fc == 0x00000014 meta mark set meta mark & 0xffffff80 | 0x00000080 queue num 4", // tun, ip6
		}},
		{"hold", []string{"queue num 0-1 bypass", "queue num 0-1 bypass"}}, // each direction's copy chain
		{"userspace", nil},
		{"gateway", nil},
	} {
		for _, native := range []bool{false, true} {
			rs := compileCase(t, tc.cfg, native)
			var got []string
			for _, r := range heldIn(rs) {
				got = append(got, r.Text)
				if !queues(r.Exprs) {
					t.Errorf("%s: held rule %q does not end in a queue statement", tc.cfg, r.Text)
				}
				n := len(r.Exprs)
				rel := r.Hold.Released
				if len(rel) != n || !reflect.DeepEqual(rel[:n-1], r.Exprs[:n-1]) {
					t.Errorf("%s: %q released is %v, want its expressions but the last", tc.cfg, r.Text, rel)
				} else if v, ok := rel[n-1].(*expr.Verdict); !ok || v.Kind != expr.VerdictAccept {
					t.Errorf("%s: %q released ends in %#v, want accept", tc.cfg, r.Text, rel[n-1])
				}
				if r.Counter != nil || len(r.Sets) > 0 || slices.ContainsFunc(r.Exprs, func(e expr.Any) bool { _, ok := e.(*expr.Counter); return ok }) {
					t.Errorf("%s: held rule %q has a counter or a set", tc.cfg, r.Text)
				}
				if len(r.Hold.Queues) == 0 {
					t.Errorf("%s: held rule %q feeds no queue", tc.cfg, r.Text)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s (native %v): held rules\n%q\nwant\n%q", tc.cfg, native, got, tc.want)
			}
		}
	}
}

// One replacement of tables holding held rules: the held rules in place are
// released first (one batch) and their queues drained; the new tables come
// with theirs released; then theirs are put in by handle (one batch). No
// batch that deletes a table runs while a held rule queues.
func TestReplaceReleasesHeldRules(t *testing.T) {
	for _, cfg := range []string{"routed", "hold"} {
		t.Run(cfg, func(t *testing.T) { testReplaceReleases(t, compileCase(t, cfg, false)) })
	}
}

func testReplaceReleases(t *testing.T, rs *Ruleset) {
	var wantQueues []uint16
	for _, r := range heldIn(rs) {
		wantQueues = append(wantQueues, r.Hold.Queues...)
	}
	var fb fakeBatch
	var drained [][]uint16
	var drainedAt []int // flushes done when drain ran
	drain := func(q []uint16) { drained = append(drained, q); drainedAt = append(drainedAt, fb.flushes) }

	st, err := replace(&fb, state{}, rs, nil, drain)
	if err != nil {
		t.Fatal(err)
	}
	held := st.held
	if len(held) != len(heldIn(rs)) || len(drained) != 0 {
		t.Fatalf("first apply: %d held rules, drained %v; want %d, none (nothing was held)", len(held), drained, len(heldIn(rs)))
	}
	checkBatches(t, fb.calls, rs)

	fb.calls = nil
	fb.flushes = 0
	old := held
	st, err = replace(&fb, st, rs, nil, drain)
	if err != nil {
		t.Fatal(err)
	}
	held = st.held
	if len(held) != len(old) {
		t.Fatalf("second apply: %d held rules, want %d", len(held), len(old))
	}
	// Batch 1 releases the old rules, by their handles.
	for i, h := range old {
		c := fb.calls[i]
		if c.op != "ReplaceRule" || c.rule.Handle != h.handle || !reflect.DeepEqual(c.rule.Exprs, h.hold.Released) {
			t.Fatalf("call %d: %s handle %d, want the old held rule %d released", i, c.op, c.rule.Handle, h.handle)
		}
	}
	if fb.calls[len(old)].op != "Flush" {
		t.Fatalf("call %d is %s, want the releasing batch's Flush", len(old), fb.calls[len(old)].op)
	}
	if !slices.Equal(drainedAt, []int{1}) || !slices.Equal(drained[0], wantQueues) {
		t.Fatalf("drain ran after flush %v for queues %v, want once after the first, for queues %v", drainedAt, drained, wantQueues)
	}
	checkBatches(t, fb.calls[len(old)+1:], rs)
	for i := range held {
		if held[i].handle == old[i].handle {
			t.Errorf("held rule %d kept the old handle %d: the new tables' rules have new ones", i, old[i].handle)
		}
	}

	// Remove releases and drains before destroying the tables.
	fb.calls, fb.flushes, drained, drainedAt = nil, 0, nil, nil
	if err := release(&fb, held, drain); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(drainedAt, []int{1}) || len(fb.calls) != len(held)+1 {
		t.Errorf("release: %d calls, drained after flushes %v; want %d replacements, a flush, drained after it", len(fb.calls), drainedAt, len(held))
	}
}

// checkBatches checks the calls of a replacement after any release: the
// tables with every held rule released, a flush, then the held rules put
// in by the handles the kernel gave them, a flush.
func checkBatches(t *testing.T, calls []call, rs *Ruleset) {
	t.Helper()
	end := slices.IndexFunc(calls, func(c call) bool { return c.op == "Flush" })
	if end < 0 {
		t.Fatal("no flush")
	}
	for _, c := range calls[:end] {
		if c.op == "ReplaceRule" {
			t.Fatalf("a rule replaced in the batch that replaces the tables")
		}
	}
	var queued, unheld int
	for _, c := range calls[:end] {
		if c.op == "AddRule" && queues(c.rule.Exprs) {
			queued++
		}
	}
	for _, t := range rs.Tables {
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				if r.Hold == nil && queues(r.Exprs) {
					unheld++
				}
			}
		}
	}
	if queued != unheld {
		t.Errorf("%d queue rules in the batch that replaces the tables, want %d (held rules go in released)", queued, unheld)
	}
	rest := calls[end+1:]
	want := heldIn(rs)
	if len(rest) != len(want)+1 || rest[len(want)].op != "Flush" {
		t.Fatalf("after the tables: %d calls, want %d replacements and a flush", len(rest), len(want))
	}
	for i, r := range want {
		c := rest[i]
		if c.op != "ReplaceRule" || !reflect.DeepEqual(c.rule.Exprs, r.Exprs) || c.rule.Handle == 0 {
			t.Errorf("call %d after the tables: %s handle %d, want held rule %q put in by handle", i, c.op, c.rule.Handle, r.Text)
		}
	}
}

// A failed replacement leaves the old held rules holding again; a failed
// putting-in of the new ones falls back to the whole ruleset in one batch.
func TestReplaceFailures(t *testing.T) {
	rs := compileCase(t, "routed", false)
	var fb fakeBatch
	st, err := replace(&fb, state{}, rs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	held := st.held

	// The table batch (flush 2, after the release) fails.
	fb = fakeBatch{chains: fb.chains, nextHandle: fb.nextHandle, flushErr: syscall.ENOENT, failFlush: 2}
	got, err := replace(&fb, st, rs, nil, nil)
	if !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), "applying ruleset") {
		t.Fatalf("error %v, want the table batch's ENOENT", err)
	}
	if !reflect.DeepEqual(got.held, held) {
		t.Errorf("after a failed replacement the held rules are %v, want the old ones", got)
	}
	last := fb.calls[len(fb.calls)-len(held)-1:]
	for i, h := range held {
		if c := last[i]; c.op != "ReplaceRule" || c.rule.Handle != h.handle || !reflect.DeepEqual(c.rule.Exprs, h.exprs) {
			t.Errorf("after the failure, call %s handle %d, want old held rule %d put back", c.op, c.rule.Handle, h.handle)
		}
	}

	// Putting the new held rules in (flush 3) fails: rs goes in whole.
	fb = fakeBatch{chains: fb.chains, nextHandle: fb.nextHandle, flushErr: syscall.EINVAL, failFlush: 3}
	got, err = replace(&fb, st, rs, nil, nil)
	if err != nil {
		t.Fatalf("fallback: %v", err)
	}
	if len(got.held) != len(held) {
		t.Errorf("fallback: %d held rules, want %d", len(got.held), len(held))
	}
	tail := fb.calls[slices.IndexFunc(fb.calls[1:], func(c call) bool { return c.op == "DestroyTable" })+1:]
	tail = tail[slices.IndexFunc(tail[1:], func(c call) bool { return c.op == "Flush" })+2:]
	var whole int
	for _, c := range tail {
		if c.op == "AddRule" && queues(c.rule.Exprs) {
			whole++
		}
	}
	if whole != len(held) {
		t.Errorf("fallback batch adds %d queue rules, want the %d held ones in place", whole, len(held))
	}
}

// The counters of the sessions carry names go on from what the tables in
// place counted: their sums (what Counters reports) are the same after the
// replacement; the other sessions' counters start again.
func TestReplaceCarriesCounters(t *testing.T) {
	rs := compileCase(t, "routed", false)
	var fb fakeBatch
	st, err := replace(&fb, state{}, rs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel counts: 7 packets of 100 bytes in every counter.
	for _, rules := range fb.chains {
		for _, r := range rules {
			exprs := append([]expr.Any(nil), r.Exprs...)
			for i, e := range exprs {
				if _, ok := e.(*expr.Counter); ok {
					exprs[i] = &expr.Counter{Packets: 7, Bytes: 700}
				}
			}
			r.Exprs = exprs
		}
	}
	before, err := readCounters(&fb, rs)
	if err != nil {
		t.Fatal(err)
	}
	if before["v4"][CounterQueued].Packets != 7 || before["v4"][CounterSeen].Packets == 0 {
		t.Fatalf("counters before: %v", before)
	}
	if _, err := replace(&fb, st, rs, func(s string) bool { return s == "v4" }, nil); err != nil {
		t.Fatal(err)
	}
	after, err := readCounters(&fb, rs)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(after["v4"], before["v4"]) {
		t.Errorf("v4 (carried): %v after the replacement, want %v", after["v4"], before["v4"])
	}
	for _, s := range []string{"v6", "lg"} {
		for kind, v := range after[s] {
			if v.Packets != 0 || v.Bytes != 0 {
				t.Errorf("%s %s (not carried): %v after the replacement, want 0", s, kind, v)
			}
		}
	}
	// rs itself is untouched: a later apply of it starts from zero.
	for _, tb := range rs.Tables {
		for _, c := range tb.Chains {
			for _, r := range c.Rules {
				for _, e := range r.Exprs {
					if ce, ok := e.(*expr.Counter); ok && (ce.Packets != 0 || ce.Bytes != 0) {
						t.Fatalf("rs's rule %q has counter %v", r.Text, ce)
					}
				}
			}
		}
	}
}
