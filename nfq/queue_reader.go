package nfq

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pipeline"
)

// QueueConfig configures a QueueReader.
type QueueConfig struct {
	// Num is the NFQUEUE number.
	Num uint16
	// Snaplen is the copy range: bytes of each packet copied to userspace
	// (0 = 0xffff, the whole packet).
	Snaplen uint32
	// MaxLen is the kernel queue length (0 = 4096).
	MaxLen uint32
	// RcvBuf is the netlink receive buffer in bytes, set with
	// SO_RCVBUFFORCE (0 = DefaultRcvBuf; the engine sets queue.socket_buffer).
	RcvBuf int
	// Batch is the number of packets after which a batch verdict is sent
	// and the number of datagrams fetched per recvmmsg (0 = 256, or
	// RouteBatch for a Route reader; at most
	// BufBudget / buffer size datagrams, at least 16). Measured in the lab
	// at saturation, 256 instead of 64 forwarded 3-9 % more originals and
	// copied 3-10 % more in each of 4 paired runs.
	Batch int
	// BufBudget bounds the receive slab in bytes (0 = 16 MiB): with whole
	// packets (snaplen 0) a buffer is ~66 KiB.
	BufBudget int
	// Clones describes the marker nfclone's rules put on the kernel's
	// clones of the originals (`dup to 127.0.0.1 device "lo"`, caught in
	// output by `queue num N` without bypass; mark_mask,
	// config.MarkLayout). The queue only ever holds clones, which the
	// rules gave back the TTL and DF bit dup changed: every packet gets a
	// drop verdict (its original went on in the kernel) and the marker is
	// cleared from Packet.Mark.
	Clones CloneMarks
	// Route lets the kernel send the clones itself (a kernel-routed
	// session: dup routed them to the gateway, the clones chain gave them
	// its copy mark): the reader reads their headers (a copy range such as
	// RouteSnaplen is enough), gives them to Send to be counted, and
	// accepts each read with one batch verdict; the kernel sends them on
	// as dup sends its clones, super-packets segmented on the way out. The
	// queue is bound fail-open (NFQA_CFG_F_FAIL_OPEN): a clone the full
	// queue or socket cannot take is sent at once by the kernel, not
	// dropped, and the reader sees its id missing (Ledger.AddOverruns; the
	// engine's account calls them kernel_sent).
	Route bool
	// Hold: the queue holds originals (a hold session's `queue ... bypass`),
	// not clones. The reader sends the copies of each read itself, through
	// Send, and then gives the read one accept verdict: each copy leaves
	// before its original, which goes on unchanged (Clones is not used), at
	// the pace the copies are sent. No copy queue, no worker to wake: the
	// originals wait for the sinks anyway. (Lab, TCP bulk through a hold
	// session to a device, three alternated runs against the copy queue and
	// its workers: one stream 9.3–11.9 Gbit/s instead of 6.6–8.1, at
	// 0.64–0.76 CPU instead of 0.81–0.84, a third of the retransmissions.)
	Hold bool
	// Send takes the copies of a Hold or Route reader's reads, in order, and
	// accounts them (pipeline.Deliver; with Route, the clones the kernel
	// sends); the reader releases them after. Required with Hold or Route
	// and refused without: a clone reader must not wait for the sinks (its
	// kernel queue would fill), its copies go to the copy queue.
	Send func(batch []*packet.Packet)
	// Coalesce is how long the reader waits after a
	// read that did not fill its batch before reading again (0 = 250 µs):
	// the kernel queues meanwhile without waking it. It delays copies only;
	// a Hold reader does not wait (its originals would).
	Coalesce time.Duration
	// Session is stamped on every Packet and selects nothing else.
	Session int
	// NetNS is a network namespace fd to open the socket in (0 = current).
	NetNS int
	// StatsPath is the nfnetlink_queue proc file (default
	// /proc/net/netfilter/nfnetlink_queue).
	StatsPath string
	// Logger receives rate-limited warnings (nil = slog.Default()).
	Logger *slog.Logger
}

// CloneMarks describes the marker the rules put on clones.
type CloneMarks struct {
	// Mask is the part of the mark holding the marker (mark_mask): the
	// reader clears it whole and keeps every bit others set.
	Mask uint32
	// TTLDecremented is the marker bit of clones taken in prerouting and
	// input (whose TTL the rules gave back): they are copies of ingress.
	TTLDecremented uint32
}

// RouteSnaplen is the copy range of a Route reader: the headers, enough to
// tell the family and the length.
const RouteSnaplen = 128

// RouteBatch is a Route reader's batch: its accept verdicts make the
// kernel send the clones from the reader's thread, each super-packet
// segmented there into the target's backlog; 256 at a time outran the
// softirq that drains it (lab, TCP at saturation into a VXLAN device over
// a 1500-byte link: 0.81–0.98 copied, the rest dropped by the collector
// veth, after the ledger), 16 at a time lost none (1.00 in 6 of 6 phases,
// the originals 1.10–1.65× dup's, half the reader's CPU; gateway and
// device phases unchanged at 1.00).
const RouteBatch = 16

// QueueReader reads one NFQUEUE queue of clones: it pushes copies of their
// bytes into a pipeline.CopyQueue and drops the clones with batch verdicts
// (with Hold: a queue of originals, accepted with batch verdicts; with
// Route: clones accepted, sent by the kernel).
type QueueReader struct {
	cfg  QueueConfig
	r    *reader
	led  *pipeline.Ledger
	mu   sync.Mutex
	base *QueueStats // kernel counters seen last
	once sync.Once
}

// DefaultRcvBuf is a reader socket's receive buffer when its config says
// none: config.DefaultSocketBuffer, the default of queue.socket_buffer.
const DefaultRcvBuf = 64 << 20

const nlOverhead = 1024 // room for the netlink and attribute headers around a payload

// MaxCopy is the most of a packet NFQUEUE and NFLOG can hand over: a
// netlink attribute's length is 16 bits (0xffff minus its 4-byte header).
// Longer packets (BIG TCP, IPv6 jumbograms) arrive cut short and are
// counted as too_big, never sent half.
const MaxCopy = 0xffff - nlaHdrLen

func (c *QueueConfig) defaults() {
	if c.Snaplen == 0 || c.Snaplen > MaxCopy {
		c.Snaplen = MaxCopy
	}
	if c.MaxLen == 0 {
		c.MaxLen = 4096
	}
	if c.RcvBuf == 0 {
		c.RcvBuf = DefaultRcvBuf
	}
	if c.Batch <= 0 {
		c.Batch = 256
		if c.Route {
			c.Batch = RouteBatch
		}
	}
	if c.BufBudget <= 0 {
		c.BufBudget = 16 << 20
	}
	if c.Coalesce == 0 {
		c.Coalesce = 250 * time.Microsecond
	}
	if c.StatsPath == "" {
		c.StatsPath = StatsPath
	}
}

// NewQueueReader opens and binds NFQUEUE cfg.Num (packet copy mode, copy
// range = snaplen, GSO packets whole, never fail-open) and returns a reader
// that pushes copies to q and counts into led. Call Run, then Close.
func NewQueueReader(cfg QueueConfig, q *pipeline.CopyQueue, led *pipeline.Ledger) (*QueueReader, error) {
	cfg.defaults()
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      cfg.Num,
		MaxQueueLen:  cfg.MaxLen,
		MaxPacketLen: cfg.Snaplen,
		Copymode:     nfqueue.NfQnlCopyPacket,
		Flags:        0, // the flags are set by bind
		AfFamily:     unix.AF_UNSPEC,
		NetNS:        cfg.NetNS,
		Logger:       nil,
	})
	if err != nil {
		return nil, wrapErr("open nfqueue", err)
	}
	// NETLINK_NO_ENOBUFS: the socket never enters the congested state;
	// overruns are counted exactly from gaps in packet ids instead.
	if err := nf.SetOption(netlink.NoENOBUFS, true); err != nil {
		nf.Close()
		return nil, wrapErr("set NETLINK_NO_ENOBUFS", err)
	}
	// Read in coalesced batches from a socket outside the netpoller
	// (pollNL); go-nfqueue's connection is closed at once.
	sock, err := newPollNL(nf.Con, cfg.RcvBuf, cfg.Coalesce, cfg.Hold)
	nf.Close()
	if err != nil {
		return nil, err
	}
	qr, err := newQueueReader(cfg, sock, q, led)
	if err != nil {
		sock.Close()
		return nil, err
	}
	return qr, nil
}

func newQueueReader(cfg QueueConfig, sock nlSocket, q *pipeline.CopyQueue, led *pipeline.Ledger) (*QueueReader, error) {
	if (cfg.Hold || cfg.Route) != (cfg.Send != nil) || (cfg.Hold && cfg.Route) {
		return nil, fmt.Errorf("nfq: queue %d: a reader has Send if and only if it holds the originals or routes the clones (Hold %t, Route %t)", cfg.Num, cfg.Hold, cfg.Route)
	}
	cfg.defaults()
	bufSize := nlAlign(int(cfg.Snaplen) + nlOverhead)
	nbufs := min(cfg.Batch, max(16, cfg.BufBudget/bufSize))
	qr := &QueueReader{cfg: cfg, led: led}
	qr.r = newReader(kindQueue, sock, q, led, cfg.Session, cfg.Num, nbufs, bufSize, cfg.Batch, cfg.Logger)
	qr.r.clones, qr.r.verdict = &qr.cfg.Clones, nfDrop
	switch {
	case cfg.Hold:
		qr.r.clones, qr.r.verdict, qr.r.send = nil, nfAccept, cfg.Send
	case cfg.Route:
		qr.r.verdict, qr.r.send = nfAccept, cfg.Send
	}
	qr.r.whole = cfg.Snaplen >= MaxCopy
	if err := qr.bind(); err != nil {
		return nil, err
	}
	// Baseline of the kernel counters (a missing file is fine: no stats).
	qr.PollKernelStats()
	return qr, nil
}

// bind sends one config message: bind + params + maxlen + flags, so that no
// packet is ever queued with the default (metadata-only) copy mode.
func (qr *QueueReader) bind() error {
	r := qr.r
	seq := r.nextSeq()
	mb := &r.mb
	mb.start(subsysQueue<<8|nfqnlMsgConfig, nlmFRequest|nlmFAck, seq, unix.AF_UNSPEC, qr.cfg.Num)
	mb.attr(nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, 0})
	params := make([]byte, 5)
	binary.BigEndian.PutUint32(params, qr.cfg.Snaplen)
	params[4] = nfqnlCopyPacket
	mb.attr(nfqaCfgParams, params)
	mb.be32(nfqaCfgQueueMaxLen, qr.cfg.MaxLen)
	// GSO super-packets come whole, in one message, flagged (NFQA_SKB_GSO),
	// and unfinished checksums stay unfinished, flagged
	// (NFQA_SKB_CSUMNOTREADY): the workers segment and complete them.
	// Without it the kernel cuts every super-packet into MTU segments in the
	// forwarding path, one message each. Fail-open (NFQA_CFG_F_FAIL_OPEN)
	// only for a Route reader, whose clones dup routed to the gateway: the
	// kernel sends what the full queue cannot take. Never otherwise: a
	// clone routed to lo that the full queue let through would be routed
	// like its original (a second original on the wire); without it the
	// kernel drops the clone and counts it (queue_dropped:
	// Drops.KernelQueue). A held original is dropped likewise (the
	// sender's TCP slows down, as at a full router queue), never let
	// through uncopied and uncounted. The mask names both flags, so a
	// rebind sets exactly these.
	flags := uint32(cfgFlagGSO)
	if qr.cfg.Route {
		flags |= cfgFlagFailOpen
	}
	mb.be32(nfqaCfgMask, cfgFlagGSO|cfgFlagFailOpen)
	mb.be32(nfqaCfgFlags, flags)
	msg := append([]byte(nil), mb.finish()...)
	if err := r.execute(msg, seq, 5*time.Second); err != nil {
		return fmt.Errorf("nfq: bind queue %d: %w", qr.cfg.Num, err)
	}
	return nil
}

// Run reads until ctx is done, then gives every packet still held its
// verdict (drop a clone, accept a held original) and returns nil. It returns an error only if the socket was closed under it.
// Kernel counters are polled every second while it runs.
func (qr *QueueReader) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				qr.PollKernelStats()
			}
		}
	}()
	err := qr.r.run(ctx)
	cancel()
	wg.Wait()
	qr.PollKernelStats()
	return err
}

// PollKernelStats reads the queue's kernel drop counters and adds what is
// new to the ledger. It is called by Run; call it yourself for a fresher
// figure.
func (qr *QueueReader) PollKernelStats() error {
	b, err := os.ReadFile(qr.cfg.StatsPath)
	if err != nil {
		return err
	}
	all, err := ParseQueueStats(b)
	if err != nil {
		return err
	}
	qr.mu.Lock()
	defer qr.mu.Unlock()
	for i := range all {
		st := all[i]
		if st.Queue != qr.cfg.Num {
			continue
		}
		if qr.base == nil {
			qr.base = &st
			return nil
		}
		dq, du := delta32(qr.base.QueueDropped, st.QueueDropped), delta32(qr.base.UserDropped, st.UserDropped)
		qr.base = &st
		qr.led.AddKernelDrops(dq, du)
		return nil
	}
	return nil
}

func delta32(old, cur uint64) uint64 { return uint64(uint32(cur - old)) }

// Stats returns the reader's own counters.
func (qr *QueueReader) Stats() ReaderStats { return qr.r.stats() }

// Close closes the socket (the kernel unbinds the queue). Call it after Run
// has returned.
func (qr *QueueReader) Close() error {
	var err error
	qr.once.Do(func() { err = qr.r.sock.Close() })
	return err
}
