package rules

import (
	"fmt"
	"math/bits"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/nfclone/nfclone/config"
)

// Annotated pcapng copies name the session rule that accepted each packet.
// A log session with a pcapng target marks it for NFLOG: the rule puts its
// ordinal (1, 2, … in number order) into nfclone's field of the mark just
// before the copy chain, NFLOG reports the mark, and the session's base
// chain clears the field again once the copy chain is done — so the
// original leaves with the mark it came with, and nothing outside
// nfclone's field is touched. (queue clones carry their own markers there,
// and dup has no userspace: their copies are annotated without a rule.)

// RuleMarks returns the mask of nfclone's field when session i's rules
// mark the packets they accept with their ordinal, else 0: a log session
// with rules and a pcapng target, whose ordinals fit under the copy marks
// in the field.
func RuleMarks(c *config.Config, i int) uint32 {
	s := &c.Sessions[i]
	if s.Method != config.MethodLog || len(s.Rules) == 0 {
		return 0
	}
	pcapng := false
	for _, t := range s.Targets {
		if (t.Kind == config.KindPcap || t.Kind == config.KindPcapOverIP) && t.Format == config.FormatPcapng {
			pcapng = true
		}
	}
	mask := c.MarkMask
	if !pcapng || mask == 0 {
		return 0
	}
	hi := uint32(len(s.Rules)) << bits.TrailingZeros32(mask)
	if hi&^mask != 0 || hi >= c.Mark&mask {
		return 0
	}
	return mask
}

// ruleOrdinal is ordinal k placed in the field of mask.
func ruleOrdinal(mask uint32, k int) uint32 {
	return uint32(k) << bits.TrailingZeros32(mask)
}

// markRule: `meta mark set meta mark & 0xffffff02 | 0x00000002` — the
// accepting rule's ordinal in nfclone's field.
func (b *builder) markRule(mask uint32, k int) *builder {
	v := ruleOrdinal(mask, k)
	// The kernel computes (mark & ^mask) ^ v; nft lists that as
	// `& (^mask | v) | v`.
	return b.setMark(fmt.Sprintf("meta mark set meta mark & 0x%08x | 0x%08x", ^mask|v, v), ^mask, v)
}

// clearRuleMarks: `meta mark & 0x000000ff 0x00000001-0x00000003 meta mark
// set meta mark & 0xffffff00` — the field back to what it was (0) after the
// copy chain; copies' marks (above the ordinals) are left alone.
func (b *builder) clearRuleMarks(mask uint32, n int) *builder {
	lo, hi := ruleOrdinal(mask, 1), ruleOrdinal(mask, n)
	load := &expr.Meta{Key: expr.MetaKeyMARK, Register: reg}
	and := &expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4,
		Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)}
	text := fmt.Sprintf("meta mark & 0x%08x 0x%08x-0x%08x", mask, lo, hi)
	if lo == hi {
		b.add(fmt.Sprintf("meta mark & 0x%08x == 0x%08x", mask, lo), load, and, cmpEq(binaryutil.NativeEndian.PutUint32(lo)))
	} else {
		b.add(text, load, and, markHton(),
			&expr.Range{Op: expr.CmpOpEq, Register: reg,
				FromData: binaryutil.BigEndian.PutUint32(lo), ToData: binaryutil.BigEndian.PutUint32(hi)})
	}
	return b.setMark(fmt.Sprintf("meta mark set meta mark & 0x%08x", ^mask), ^mask, 0)
}
