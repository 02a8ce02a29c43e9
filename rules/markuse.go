package rules

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// MarkUse is one use of the packet mark by a rule of the host's ruleset:
// what `check` compares with nfclone's own field (mark_mask).
type MarkUse struct {
	Family nftables.TableFamily
	Table  string
	Chain  string
	Handle uint64
	// What says how the rule uses the mark (`meta mark & 0x0000ff00 ==
	// 0x00004000`, `xt MARK --set-xmark 0x4000/0x4000`).
	What string
	// Bits are the bits of the packet mark the rule reads or changes.
	Bits uint32
}

func (u MarkUse) String() string {
	return fmt.Sprintf("table %s %s chain %s (handle %d): %s (bits 0x%08x)", FamilyName(u.Family), u.Table, u.Chain, u.Handle, u.What, u.Bits)
}

// regVal is what the analysis knows a register holds.
type regVal struct {
	src  string // "meta mark", "ct mark", "immediate"; "" unknown
	mask uint32 // bits of src kept (after bitwise)
	xor  uint32
	imm  uint32 // immediate value
}

// MarkUses lists the uses of the packet mark in one rule: meta mark (and
// ct mark) loads followed by bitwise masks and compares, `meta mark set`
// statements, and the xt matches and targets iptables-nft writes (`mark`,
// `MARK`, `CONNMARK`; `connmark` reads the conntrack mark only and is left
// out). Expressions it cannot follow are skipped.
func MarkUses(r *nftables.Rule) []MarkUse {
	var out []MarkUse
	add := func(what string, bits uint32) {
		u := MarkUse{What: what, Bits: bits, Handle: r.Handle}
		if r.Table != nil {
			u.Family, u.Table = r.Table.Family, r.Table.Name
		}
		if r.Chain != nil {
			u.Chain = r.Chain.Name
		}
		out = append(out, u)
	}
	u32 := func(b []byte) (uint32, bool) {
		if len(b) != 4 {
			return 0, false
		}
		return binary.NativeEndian.Uint32(b), true
	}
	regs := map[uint32]regVal{}
	// read reports a compare on a register holding a mark: the bits read
	// are the mask, or the compared value when the whole mark is compared.
	read := func(reg uint32, op string, vals ...uint32) {
		v, ok := regs[reg]
		if !ok || v.src == "" || v.src == "immediate" {
			return
		}
		bits := v.mask
		what := fmt.Sprintf("%s & 0x%08x %s", v.src, v.mask, op)
		if v.mask == 0xffffffff {
			bits, what = 0, fmt.Sprintf("%s %s", v.src, op)
			for _, x := range vals {
				bits |= x
			}
		}
		for _, x := range vals {
			what += fmt.Sprintf(" 0x%08x", x)
		}
		if v.src == "meta mark" {
			add(what, bits)
		}
	}
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Meta:
			switch {
			case e.Key == expr.MetaKeyMARK && !e.SourceRegister:
				regs[e.Register] = regVal{src: "meta mark", mask: 0xffffffff}
			case e.Key == expr.MetaKeyMARK && e.SourceRegister:
				v := regs[e.Register]
				switch v.src {
				case "meta mark":
					// (mark & mask) ^ xor: changes the bits cleared and the bits flipped
					add(fmt.Sprintf("meta mark set meta mark & 0x%08x ^ 0x%08x", v.mask, v.xor), ^v.mask|v.xor)
				case "immediate":
					add(fmt.Sprintf("meta mark set 0x%08x (the whole mark)", v.imm), 0xffffffff)
				case "ct mark":
					what := "meta mark set ct mark"
					if v.mask != 0xffffffff || v.xor != 0 {
						what += fmt.Sprintf(" & 0x%08x ^ 0x%08x", v.mask, v.xor)
					}
					add(what, 0xffffffff)
				default:
					add("meta mark set (a value this check cannot follow)", 0xffffffff)
				}
			case !e.SourceRegister:
				delete(regs, e.Register)
			}
		case *expr.Ct:
			if e.Key == expr.CtKeyMARK && !e.SourceRegister {
				regs[e.Register] = regVal{src: "ct mark", mask: 0xffffffff}
			} else if !e.SourceRegister {
				delete(regs, e.Register)
			}
		case *expr.Immediate:
			if v, ok := u32(e.Data); ok {
				regs[e.Register] = regVal{src: "immediate", imm: v}
			} else {
				delete(regs, e.Register)
			}
		case *expr.Bitwise:
			v, ok := regs[e.SourceRegister]
			m, ok1 := u32(e.Mask)
			x, ok2 := u32(e.Xor)
			if !ok || v.src == "" || !ok1 || !ok2 || e.Len != 4 {
				delete(regs, e.DestRegister)
				continue
			}
			if v.src == "immediate" {
				regs[e.DestRegister] = regVal{src: "immediate", imm: v.imm&m ^ x}
				continue
			}
			regs[e.DestRegister] = regVal{src: v.src, mask: v.mask & m, xor: v.xor&m ^ x}
		case *expr.Byteorder:
			// hton before a range: the value is the same mark
			if v, ok := regs[e.SourceRegister]; ok {
				regs[e.DestRegister] = v
			}
		case *expr.Cmp:
			if v, ok := u32(e.Data); ok {
				read(e.Register, cmpOpText(e.Op), v)
			}
		case *expr.Range:
			if len(e.FromData) == 4 && len(e.ToData) == 4 {
				read(e.Register, "range", binary.BigEndian.Uint32(e.FromData), binary.BigEndian.Uint32(e.ToData))
			}
		case *expr.Lookup:
			read(e.SourceRegister, "in set @"+e.SetName)
		case *expr.Match:
			if u, ok := xtMarkMatch(e); ok {
				add(u.What, u.Bits)
			}
		case *expr.Target:
			if u, ok := xtMarkTarget(e); ok {
				add(u.What, u.Bits)
			}
		}
	}
	return out
}

func cmpOpText(op expr.CmpOp) string {
	switch op {
	case expr.CmpOpEq:
		return "=="
	case expr.CmpOpNeq:
		return "!="
	case expr.CmpOpLt:
		return "<"
	case expr.CmpOpLte:
		return "<="
	case expr.CmpOpGt:
		return ">"
	case expr.CmpOpGte:
		return ">="
	}
	return "cmp"
}

func xtBytes(info xt.InfoAny) []byte {
	if u, ok := info.(*xt.Unknown); ok && u != nil {
		return []byte(*u)
	}
	return nil
}

// xtMarkMatch decodes `-m mark --mark value/mask` (struct
// xt_mark_mtinfo1 {u32 mark, mask; u8 invert}).
func xtMarkMatch(e *expr.Match) (MarkUse, bool) {
	b := xtBytes(e.Info)
	if e.Name != "mark" || e.Rev != 1 || len(b) < 9 {
		return MarkUse{}, false
	}
	v, m := binary.NativeEndian.Uint32(b), binary.NativeEndian.Uint32(b[4:])
	not := ""
	if b[8] != 0 {
		not = "! "
	}
	return MarkUse{What: fmt.Sprintf("xt mark %s--mark 0x%x/0x%x", not, v, m), Bits: m}, true
}

// xtMarkTarget decodes `-j MARK --set-xmark value/mask` (struct
// xt_mark_tginfo2 {u32 mark, mask}: mark = (mark & ~mask) ^ value) and
// `-j CONNMARK` (struct xt_connmark_tginfo1 {u32 ctmark, ctmask, nfmask;
// u8 mode}, rev 2 adds shift_dir and shift_bits before mode): save reads and
// restore writes the nfmask bits of the packet mark.
func xtMarkTarget(e *expr.Target) (MarkUse, bool) {
	b := xtBytes(e.Info)
	switch {
	case e.Name == "MARK" && e.Rev == 2 && len(b) >= 8:
		v, m := binary.NativeEndian.Uint32(b), binary.NativeEndian.Uint32(b[4:])
		return MarkUse{What: fmt.Sprintf("xt MARK --set-xmark 0x%x/0x%x", v, m), Bits: m | v}, true
	case e.Name == "CONNMARK" && (e.Rev == 1 && len(b) >= 13 || e.Rev == 2 && len(b) >= 15):
		ctmark, ctmask, nfmask := binary.NativeEndian.Uint32(b), binary.NativeEndian.Uint32(b[4:]), binary.NativeEndian.Uint32(b[8:])
		mode := b[12]
		if e.Rev == 2 {
			mode = b[14]
		}
		switch mode {
		case 1: // XT_CONNMARK_SAVE
			return MarkUse{What: fmt.Sprintf("xt CONNMARK --save-mark --nfmask 0x%x --ctmask 0x%x", nfmask, ctmask), Bits: nfmask}, true
		case 2: // XT_CONNMARK_RESTORE
			return MarkUse{What: fmt.Sprintf("xt CONNMARK --restore-mark --nfmask 0x%x --ctmask 0x%x", nfmask, ctmask), Bits: nfmask}, true
		}
		_ = ctmark // XT_CONNMARK_SET changes the conntrack mark only
	}
	return MarkUse{}, false
}

// MarkOverlaps returns the uses whose bits overlap mask, leaving out the
// tables named skip (nfclone's own).
func MarkOverlaps(uses []MarkUse, mask uint32, skip string) []MarkUse {
	var out []MarkUse
	for _, u := range uses {
		if u.Table != skip && u.Bits&mask != 0 {
			out = append(out, u)
		}
	}
	return out
}

// HostMarkUses reads every rule of every table through netlink and lists
// their uses of the packet mark.
func HostMarkUses() ([]MarkUse, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	defer c.CloseLasting()
	chains, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("listing chains: %w", err)
	}
	var out []MarkUse
	for _, ch := range chains {
		rs, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, fmt.Errorf("listing rules of table %s %s chain %s: %w", FamilyName(ch.Table.Family), ch.Table.Name, ch.Name, err)
		}
		for _, r := range rs {
			if r.Table == nil {
				r.Table = ch.Table
			}
			if r.Chain == nil {
				r.Chain = ch
			}
			out = append(out, MarkUses(r)...)
		}
	}
	return out, nil
}
