package sink

import (
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pcapfile"
)

// Link types of pcap targets (see pcapfile).
const (
	LinkTypeRaw      = pcapfile.LinkTypeRaw
	LinkTypeEthernet = pcapfile.LinkTypeEthernet
)

// PcapConfig configures a Pcap sink: a pcapfile.Writer plus a name and a logger.
// Its LinkType is LinkTypeRaw (default: records are the L3 copies) or
// LinkTypeEthernet (each copy gets a synthesized Ethernet header: source =
// the packet's hardware address if the kernel gave one, else
// DefaultTunnelSrcMAC; destination DefaultTunnelDstMAC).
type PcapConfig struct {
	// Name identifies the target (default "pcap:" + Path).
	Name string
	pcapfile.Config
	Logger *slog.Logger
	// Annotate, with format pcapng, notes on every record where and how
	// the copy was taken (see PcapAnnotation).
	Annotate *PcapAnnotation
}

// PcapAnnotation makes a pcapng Pcap sink annotate its records: one
// interface block per source interface, named as on the host, each record
// on the block of the interface its packet was copied on, with its
// direction in the EPB flags and a comment
// `session=NAME rule=N dir=ingress|egress` (rule when the session's rules
// marked it, uid= gid= when NFLOG gave the packet's local socket owner).
type PcapAnnotation struct {
	Session string
	// Names names the interface indexes the kernel gives (Packet.InIf for
	// ingress copies, OutIf for egress ones).
	Names map[uint32]string
	// In and Out name the interface of copies the kernel did not name
	// (queue clones): the session's only source interface in that
	// direction, or "" when it has several.
	In, Out string
	// Rules maps rule ordinals (Packet.Rule, from 1) to the rules' numbers.
	Rules []int
}

// interfaces lists the interface blocks an annotation needs, sorted.
func (a *PcapAnnotation) interfaces() []string {
	set := map[string]bool{}
	for _, n := range a.Names {
		set[n] = true
	}
	for _, n := range []string{a.In, a.Out} {
		if n != "" {
			set[n] = true
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// note writes p's annotation into n (its comment into b, returned for
// reuse: no allocation per packet).
func (a *PcapAnnotation) note(p *packet.Packet, n *pcapfile.Note, b []byte) []byte {
	*n = pcapfile.Note{}
	b = append(b[:0], "session="...)
	b = append(b, a.Session...)
	if p.Rule > 0 && int(p.Rule) <= len(a.Rules) {
		b = append(b, " rule="...)
		b = strconv.AppendInt(b, int64(a.Rules[p.Rule-1]), 10)
	}
	switch p.Dir {
	case packet.DirIngress:
		n.Direction = pcapgo.NgEpbFlagDirectionInbound
		n.Interface = a.Names[p.InIf]
		if n.Interface == "" {
			n.Interface = a.In
		}
		b = append(b, " dir=ingress"...)
	case packet.DirEgress:
		n.Direction = pcapgo.NgEpbFlagDirectionOutbound
		n.Interface = a.Names[p.OutIf]
		if n.Interface == "" {
			n.Interface = a.Out
		}
		b = append(b, " dir=egress"...)
	}
	if p.HasUID {
		b = append(b, " uid="...)
		b = strconv.AppendUint(b, uint64(p.UID), 10)
		b = append(b, " gid="...)
		b = strconv.AppendUint(b, uint64(p.GID), 10)
	}
	n.Comment = b
	return b
}

// Pcap is a Sink that writes copies into a pcap or pcapng file. Each copy
// becomes one record: timestamp = the packet's Time (the kernel's; the time
// of the Send when it has none), captured length =
// len(Data), original length = OrigLen. Every Send ends with a flush, so a
// reader (tcpdump -r, tail -f | tshark) sees copies promptly. Copies lost to
// a write error (ENOSPC, EIO) are counted (p.Errs++, the target's error
// counter, a rate-limited warning); the file keeps only complete records and
// the next Send tries again (see pcapfile.Writer).
type Pcap struct {
	counters
	w     *pcapfile.Writer
	eth   bool
	src   [6]byte
	dst   [6]byte
	mu    sync.Mutex
	added []int // batch indexes of the records not yet known written
	ann   *PcapAnnotation
	note  pcapfile.Note
	nbuf  []byte
}

// NewPcap opens the output.
func NewPcap(cfg PcapConfig) (*Pcap, error) {
	lt := cfg.LinkType
	if lt == 0 {
		lt = LinkTypeRaw
	}
	if lt != LinkTypeRaw && lt != LinkTypeEthernet {
		return nil, fmt.Errorf("sink: pcap link type %v: want raw or ethernet", lt)
	}
	wc := cfg.Config
	wc.LinkType = lt
	if cfg.Annotate != nil && wc.Format == "pcapng" {
		wc.Interfaces = cfg.Annotate.interfaces()
	}
	w, err := pcapfile.Open(wc)
	if err != nil {
		return nil, err
	}
	name := cfg.Name
	if name == "" {
		name = "pcap:" + w.Path()
	}
	s := &Pcap{w: w, eth: lt == LinkTypeEthernet}
	if cfg.Annotate != nil && wc.Format == "pcapng" {
		s.ann = cfg.Annotate
	}
	copy(s.src[:], DefaultTunnelSrcMAC)
	copy(s.dst[:], DefaultTunnelDstMAC)
	s.init(name, cfg.Logger)
	return s, nil
}

// Name is the target's name.
func (s *Pcap) Name() string { return s.name }

// Writer returns the underlying writer.
func (s *Pcap) Writer() *pcapfile.Writer { return s.w }

// Send writes the batch and flushes.
func (s *Pcap) Send(batch []*packet.Packet) (int, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.added = s.added[:0]
	var last error
	failed := 0
	// drop marks the last lost records added as failed copies.
	drop := func(lost int, err error) {
		for ; lost > 0 && len(s.added) > 0; lost-- {
			batch[s.added[len(s.added)-1]].Errs++
			s.added = s.added[:len(s.added)-1]
			failed++
		}
		last = err
	}
	lost, err := s.w.Batch(func(add func(time.Time, []byte, int, *pcapfile.Note) (bool, int, error)) {
		for i, p := range batch {
			data, orig := p.Data, p.OrigLen
			if s.eth {
				f := p.Frame(EthHdrLen)
				if f == nil || (p.Family != 4 && p.Family != 6) {
					p.Errs++
					failed++
					last = errUnsendable
					continue
				}
				et := uint16(0x0800)
				if p.Family == 6 {
					et = 0x86dd
				}
				src := s.src
				if p.HwAddrLen == 6 {
					copy(src[:], p.HwAddr[:6])
				}
				PutEthernet(f, s.dst, src, et)
				data = f
				orig += EthHdrLen
			}
			ts := now
			if p.Time != 0 {
				ts = time.Unix(0, p.Time)
			}
			var note *pcapfile.Note
			if s.ann != nil {
				s.nbuf = s.ann.note(p, &s.note, s.nbuf)
				note = &s.note
			}
			added, lost, err := add(ts, data, orig, note)
			if lost > 0 || err != nil {
				drop(lost, err)
			}
			if added {
				s.added = append(s.added, i)
			} else {
				p.Errs++
				failed++
			}
		}
	})
	if err != nil {
		drop(lost, err)
	}
	bytes := 0
	for _, i := range s.added {
		bytes += len(batch[i].Data)
	}
	sent := len(s.added)
	s.ok(sent, bytes)
	if failed > 0 {
		s.fail(failed, last)
	}
	return sent, last
}

// Close flushes and closes the file.
func (s *Pcap) Close() error { return s.w.Close() }
