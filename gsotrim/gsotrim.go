// Package gsotrim lowers the segment size of the TCP super-packets that
// enter one of nfclone's VXLAN devices, so that each segment's outer
// datagram fits the path to the remote.
//
// The kernel routes a session's clones into the device whole (dup): a GSO
// super-packet of up to 64 KiB whose segments are as long as the source's
// MTU allows. VXLAN adds 50 bytes (70 toward an IPv6 remote), so over an
// underlay with the sources' MTU every segment's outer datagram is too long
// and the kernel fragments it: two frames per segment, which RFC 7348 asks
// a VTEP not to send, and more than a receiver's backlog takes at line
// rate. A tc program (tcx egress) on the device lowers the super-packet's
// segment size (gso_size) by what the path lacks before the device
// encapsulates it, leaving its bytes as they are: the kernel then cuts it
// into shorter TCP segments, each with its headers and checksum, whose
// outer datagrams fit. Packets that are not TCP super-packets pass as they
// are.
//
// The kernel has no helper that sets gso_size; bpf_skb_adjust_room does it
// as a side effect: growing the room after the network header lowers the
// segment size by as much, and shrinking it again with
// BPF_F_ADJ_ROOM_FIXED_GSO keeps it. The pair leaves the packet's bytes
// unchanged (the same bytes are inserted and removed at the same offset);
// the first call also gives the clone a header of its own, so the
// original's shared info is not touched.
package gsotrim

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// Offsets in struct __sk_buff (include/uapi/linux/bpf.h).
const (
	skbProtocol = 16
	skbGSOSize  = 176
)

// Flags of bpf_skb_adjust_room.
const (
	adjRoomNet         = 0      // BPF_ADJ_ROOM_NET: after the network header
	adjRoomFixedGSO    = 1 << 0 // BPF_F_ADJ_ROOM_FIXED_GSO
	adjRoomNoCsumReset = 1 << 5 // BPF_F_ADJ_ROOM_NO_CSUM_RESET
)

// tcxNext lets the next program on the hook decide (TCX_NEXT): the
// program never drops or redirects.
const tcxNext = -1

// ethLen is the Ethernet header the device's frames start with at egress.
const ethLen = 14

// MinLimit is the smallest limit Instructions takes: an IPv6 packet no
// longer than the minimum IPv6 MTU must always fit.
const MinLimit = 1280

// maxShrink is the most bpf_skb_adjust_room moves at a time (0xfff).
const maxShrink = 0xfff

// Counter slots of the program's per-CPU array (Counts).
const (
	slotCut   = 0 // super-packets whose segment size it lowered
	slotWhole = 1 // single packets longer than the limit (the kernel fragments their outer datagram)
	nSlots    = 2
)

// Instructions returns the program for limit, the longest inner IP packet
// (IP header, TCP header and payload) the path takes whole: the path's MTU
// less the tunnel's overhead. For a TCP super-packet whose segments would
// be longer, it lowers the segment size to fit; everything else passes.
// It counts into the per-CPU array of file descriptor counts (slotCut,
// slotWhole).
func Instructions(limit, counts int) asm.Instructions {
	const (
		ctx    = asm.R6 // the __sk_buff
		gso    = asm.R7 // gso_size
		hdrs   = asm.R8 // IP header + TCP header, then the excess
		byteAt = -8     // stack slot bpf_skb_load_bytes writes to
		keyAt  = -16    // stack slot of the counter's key
	)
	// count adds one to slot and goes on to the label next.
	count := func(slot int64, label, next string) asm.Instructions {
		return asm.Instructions{
			asm.StoreImm(asm.RFP, keyAt, slot, asm.Word).WithSymbol(label),
			asm.LoadMapPtr(asm.R1, counts),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, keyAt),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, next),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Ja.Label(next),
		}
	}
	// loadByte puts the packet's byte at the offset in R2 into R0, or
	// jumps to pass if it cannot.
	loadByte := func(offset asm.Instruction) asm.Instructions {
		return asm.Instructions{
			offset,
			asm.Mov.Reg(asm.R1, ctx),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, byteAt),
			asm.Mov.Imm(asm.R4, 1),
			asm.FnSkbLoadBytes.Call(),
			asm.JNE.Imm(asm.R0, 0, "pass"),
			asm.LoadMem(asm.R0, asm.RFP, byteAt, asm.Byte),
		}
	}
	var in asm.Instructions
	in = append(in,
		asm.Mov.Reg(ctx, asm.R1),
		asm.LoadMem(gso, ctx, skbGSOSize, asm.Word),
		asm.JNE.Imm(gso, 0, "super"),
		// Not a super-packet: counted if it is longer than the path takes.
		asm.LoadMem(asm.R2, ctx, 0, asm.Word), // len
		asm.JGT.Imm(asm.R2, int32(limit+ethLen), "whole"),
		asm.Ja.Label("pass"),
		asm.LoadMem(asm.R2, ctx, skbProtocol, asm.Word).WithSymbol("super"),
		asm.JEq.Imm(asm.R2, 0x0008, "ipv4"), // htons(ETH_P_IP) read little-endian
		asm.JEq.Imm(asm.R2, 0xdd86, "ipv6"), // htons(ETH_P_IPV6)
		asm.Ja.Label("pass"),
	)
	// IPv4: the protocol must be TCP; the header's length from IHL.
	in = append(in, loadByte(asm.Mov.Imm(asm.R2, ethLen+9).WithSymbol("ipv4"))...)
	in = append(in, asm.JNE.Imm(asm.R0, 6, "pass"))
	in = append(in, loadByte(asm.Mov.Imm(asm.R2, ethLen))...)
	in = append(in,
		asm.And.Imm(asm.R0, 0x0f),
		asm.LSh.Imm(asm.R0, 2),
		asm.Mov.Reg(hdrs, asm.R0),
		asm.Ja.Label("tcp"),
	)
	// IPv6: a fixed 40-byte header whose next header must be TCP (a
	// super-packet with extension headers passes as it is).
	in = append(in, loadByte(asm.Mov.Imm(asm.R2, ethLen+6).WithSymbol("ipv6"))...)
	in = append(in,
		asm.JNE.Imm(asm.R0, 6, "pass"),
		asm.Mov.Imm(hdrs, 40),
	)
	// TCP: the data offset, at ethLen + hdrs + 12.
	in = append(in, asm.Mov.Reg(asm.R2, hdrs).WithSymbol("tcp"))
	in = append(in, loadByte(asm.Add.Imm(asm.R2, ethLen+12))...)
	in = append(in,
		asm.RSh.Imm(asm.R0, 4),
		asm.LSh.Imm(asm.R0, 2),
		asm.Add.Reg(hdrs, asm.R0),
		asm.Add.Reg(hdrs, gso),                  // a whole segment's IP packet
		asm.JLE.Imm(hdrs, int32(limit), "pass"), // it fits
		asm.Sub.Imm(hdrs, int32(limit)),         // what the path lacks
		asm.JGT.Imm(hdrs, maxShrink, "pass"),
		asm.JGE.Reg(hdrs, gso, "pass"), // no payload would be left
		// Grow the room after the network header: gso_size is lowered.
		asm.Mov.Reg(asm.R1, ctx),
		asm.Mov.Reg(asm.R2, hdrs),
		asm.Mov.Imm(asm.R3, adjRoomNet),
		asm.Mov.Imm(asm.R4, adjRoomNoCsumReset),
		asm.FnSkbAdjustRoom.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		// And shrink it again, the segment size kept.
		asm.Mov.Reg(asm.R1, ctx),
		asm.Mov.Imm(asm.R2, 0),
		asm.Sub.Reg(asm.R2, hdrs),
		asm.Mov.Imm(asm.R3, adjRoomNet),
		asm.Mov.Imm(asm.R4, adjRoomFixedGSO|adjRoomNoCsumReset),
		asm.FnSkbAdjustRoom.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
	)
	in = append(in, count(slotCut, "cut", "pass")...)
	in = append(in, count(slotWhole, "whole", "pass")...)
	in = append(in,
		asm.Mov.Imm(asm.R0, tcxNext).WithSymbol("pass"),
		asm.Return(),
	)
	return in
}

// Load loads the program for limit (see Instructions) and its counters.
func Load(limit int) (*ebpf.Program, *ebpf.Map, error) {
	if limit < MinLimit || limit > 65535 {
		return nil, nil, fmt.Errorf("loading the segment-size program: limit %d out of [%d, 65535]", limit, MinLimit)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "nfclone_gsotrim", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: nSlots})
	if err != nil {
		return nil, nil, fmt.Errorf("creating the segment-size program's counters: %w", err)
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "nfclone_gsotrim",
		Type:         ebpf.SchedCLS,
		Instructions: Instructions(limit, m.FD()),
		License:      "GPL",
	})
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("loading the segment-size program: %w", err)
	}
	return p, m, nil
}

// Attachment is the program on one device's egress. It is removed when
// closed, or when the process ends (a tcx link the kernel holds only for
// its file descriptor), so a killed nfclone leaves nothing of it behind.
type Attachment struct {
	Index  int // the device's ifindex
	Limit  int
	prog   *ebpf.Program
	counts *ebpf.Map
	link   link.Link
}

// Attach puts the program for limit on the egress of device index.
func Attach(index, limit int) (*Attachment, error) {
	p, m, err := Load(limit)
	if err != nil {
		return nil, err
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: index, Program: p, Attach: ebpf.AttachTCXEgress})
	if err != nil {
		p.Close()
		m.Close()
		return nil, fmt.Errorf("attaching the segment-size program to ifindex %d (tcx egress): %w", index, err)
	}
	return &Attachment{Index: index, Limit: limit, prog: p, counts: m, link: l}, nil
}

// Counts are what the program saw since it was attached.
type Counts struct {
	// Cut are the TCP super-packets whose segment size it lowered.
	Cut uint64 `json:"cut"`
	// Fragmented are the single packets longer than the path takes
	// (not part of a super-packet): the kernel sends each in two outer
	// fragments.
	Fragmented uint64 `json:"fragmented"`
}

// Counts sums the program's counters over the CPUs.
func (a *Attachment) Counts() (Counts, error) {
	return readCounts(a.counts)
}

func readCounts(m *ebpf.Map) (Counts, error) {
	var c Counts
	for slot, dst := range map[uint32]*uint64{slotCut: &c.Cut, slotWhole: &c.Fragmented} {
		var per []uint64
		if err := m.Lookup(slot, &per); err != nil {
			return Counts{}, fmt.Errorf("reading the segment-size program's counters: %w", err)
		}
		for _, v := range per {
			*dst += v
		}
	}
	return c, nil
}

// Close detaches and unloads the program.
func (a *Attachment) Close() error {
	return errors.Join(a.link.Close(), a.prog.Close(), a.counts.Close())
}

// Supported reports whether this host loads the program (a kernel with
// BPF and the privilege to load it); the error says why not.
func Supported() error {
	p, m, err := Load(MinLimit)
	if err != nil {
		return err
	}
	return errors.Join(p.Close(), m.Close())
}
