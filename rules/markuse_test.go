package rules

import (
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// Uses of the mark as nft and iptables-nft write them: masked compares,
// whole-mark compares, sets, and the xt MARK and CONNMARK targets. What
// `check` warns about is what overlaps nfclone's field, outside its own
// tables.
func TestMarkUses(t *testing.T) {
	tbl := &nftables.Table{Name: "cni", Family: nftables.TableFamilyINet}
	ch := &nftables.Chain{Name: "c", Table: tbl}
	rule := func(b *builder) *nftables.Rule {
		return &nftables.Rule{Table: tbl, Chain: ch, Exprs: b.exprs}
	}
	xtInfo := func(vals ...uint32) *xt.Unknown {
		b := make([]byte, 4*len(vals))
		for i, v := range vals {
			binary.NativeEndian.PutUint32(b[4*i:], v)
		}
		u := xt.Unknown(b)
		return &u
	}
	connmark := xtInfo(0, 0xffff, 0xffff, 0)
	(*connmark)[12] = 2 // XT_CONNMARK_RESTORE
	b := func() *builder { return newBuilder(nftables.TableFamilyINet) }
	rs := []*nftables.Rule{
		rule(b().markBits(0x4000, 0x4000)),                                                              // kube-proxy
		rule(b().setMark("", ^uint32(0x12000000), 0x12000000)),                                          // meta mark set meta mark | 0x12000000
		rule(b().markGuard(0xff00, 0x100, 0x200)),                                                       // masked range
		rule(b().add("", &expr.Meta{Key: expr.MetaKeyMARK, Register: 1}, cmpEq([]byte{0x40, 0, 0, 0}))), // meta mark 0x40 (host order)
		rule(b().add("", &expr.Immediate{Register: 1, Data: []byte{1, 0, 0, 0}}, &expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})),
		rule(b().add("", &expr.Target{Name: "MARK", Rev: 2, Info: xtInfo(0x8, 0xff)})),
		rule(b().add("", &expr.Target{Name: "CONNMARK", Rev: 1, Info: connmark})),
	}
	var got []string
	var uses []MarkUse
	for _, r := range rs {
		for _, u := range MarkUses(r) {
			uses = append(uses, u)
			got = append(got, u.String())
		}
	}
	want := []string{
		"table inet cni chain c (handle 0): meta mark & 0x00004000 == 0x00004000 (bits 0x00004000)",
		"table inet cni chain c (handle 0): meta mark set meta mark & 0xedffffff ^ 0x12000000 (bits 0x12000000)",
		"table inet cni chain c (handle 0): meta mark & 0x0000ff00 range 0x00000100 0x00000200 (bits 0x0000ff00)",
		"table inet cni chain c (handle 0): meta mark == 0x00000040 (bits 0x00000040)",
		"table inet cni chain c (handle 0): meta mark set 0x00000001 (the whole mark) (bits 0xffffffff)",
		"table inet cni chain c (handle 0): xt MARK --set-xmark 0x8/0xff (bits 0x000000ff)",
		"table inet cni chain c (handle 0): xt CONNMARK --restore-mark --nfmask 0xffff --ctmask 0xffff (bits 0x0000ffff)",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("uses:\n%q\nwant\n%q", got, want)
	}
	var over []string
	for _, u := range MarkOverlaps(uses, 0xff, "nfclone") {
		over = append(over, u.What)
	}
	wantOver := []string{"meta mark == 0x00000040", "meta mark set 0x00000001 (the whole mark)", "xt MARK --set-xmark 0x8/0xff", "xt CONNMARK --restore-mark --nfmask 0xffff --ctmask 0xffff"}
	if !reflect.DeepEqual(over, wantOver) {
		t.Fatalf("overlapping 0xff: %q, want %q", over, wantOver)
	}
	if n := len(MarkOverlaps(uses, 0xff, "cni")); n != 0 {
		t.Fatalf("%d overlaps reported in the skipped table", n)
	}
}
