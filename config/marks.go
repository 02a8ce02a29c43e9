package config

import "math/bits"

// MarkLayout is how nfclone uses its own field of the packet mark, the
// contiguous bits of mark_mask. Every value nfclone puts there is the
// field's lowest bit (Unit) times a number:
//   - the upper half of the field (its top bit set) holds the marks of
//     userspace copies: mark for device and tunnel copies, mark+(1+k)·Unit
//     for the copies of gateway route k;
//   - the lower half holds the clone markers of queue sessions: the session
//     slot+1 above two flags, DF clear (2·Unit) and TTL decremented (Unit).
//
// No other bit of the mark is ever read or changed on an original.
type MarkLayout struct {
	Mask  uint32
	shift int
	width int
}

// Marks returns the layout of c.MarkMask (which Validate checked).
func (c *Config) Marks() MarkLayout { return NewMarkLayout(c.MarkMask) }

// NewMarkLayout returns the layout of a mark mask.
func NewMarkLayout(mask uint32) MarkLayout {
	return MarkLayout{Mask: mask, shift: bits.TrailingZeros32(mask), width: bits.OnesCount32(mask)}
}

// Contiguous reports whether the mask is one run of bits.
func (l MarkLayout) Contiguous() bool {
	return l.Mask != 0 && (l.Mask>>l.shift)&(l.Mask>>l.shift+1) == 0
}

// Unit is the lowest bit of the field.
func (l MarkLayout) Unit() uint32 {
	if l.Mask == 0 {
		return 0
	}
	return 1 << l.shift
}

// CopyBit is the top bit of the field: set in every copy's mark, clear in
// every clone marker.
func (l MarkLayout) CopyBit() uint32 {
	if l.Mask == 0 {
		return 0
	}
	return 1 << (l.shift + l.width - 1)
}

// TTLDecremented is the flag of clones taken in prerouting and input, whose
// TTL (hop limit) the kernel's dup decremented.
func (l MarkLayout) TTLDecremented() uint32 { return l.Unit() }

// DFClear is the flag of IPv4 clones whose original had DF clear.
func (l MarkLayout) DFClear() uint32 { return l.Unit() << 1 }

// SlotMask selects a clone marker's slot, and the copy bit (clear in
// markers): what the clones chain compares.
func (l MarkLayout) SlotMask() uint32 { return l.Mask &^ (3 * l.Unit()) }

// QueueSlots is how many queue sessions the clone markers tell apart: the
// slot number (1-based) has the field's width less the copy bit and the two
// flags.
func (l MarkLayout) QueueSlots() int {
	if l.width < 4 {
		return 0
	}
	return 1<<(l.width-3) - 1
}

// CloneMarker is the marker of the clones of queue session slot (0-based,
// < QueueSlots), with the TTL flag for chains in prerouting and input.
func (l MarkLayout) CloneMarker(slot int, ttlDecremented bool) uint32 {
	m := uint32(slot+1) << (l.shift + 2)
	if ttlDecremented {
		m |= l.TTLDecremented()
	}
	return m
}

// GatewayMark is the mark of the copies to gateway route k.
func (l MarkLayout) GatewayMark(mark uint32, k uint32) uint32 { return mark + (1+k)*l.Unit() }

// GatewayRoom is how many gateway routes fit above mark in the field.
func (l MarkLayout) GatewayRoom(mark uint32) int {
	if l.Mask == 0 || mark > l.Mask {
		return 0
	}
	return int((l.Mask - mark) / l.Unit())
}
