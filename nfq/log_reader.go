package nfq

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"time"

	nflog "github.com/florianl/go-nflog/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pipeline"
)

// LogConfig configures a LogReader.
type LogConfig struct {
	// Group is the NFLOG group.
	Group uint16
	// Snaplen is the copy range (0 = 0xffff). A rule's own snaplen, if
	// smaller, wins in the kernel.
	Snaplen uint32
	// QThresh is the number of packets the kernel batches into one netlink
	// datagram (0 = 64). A rule's queue-threshold wins in the kernel.
	QThresh uint32
	// Timeout is the longest the kernel waits before sending a partial
	// batch, in 1/100 s (0 = 1, i.e. 10 ms). NFLOG never holds originals,
	// so this only delays copies.
	Timeout uint32
	// NlBufSize is the kernel's per-group batch buffer (0 = 60 KiB). The
	// kernel allocates max(NlBufSize, one message) at once, in GFP_ATOMIC,
	// rounded up to a power of two: 60 KiB keeps that an order-4 allocation
	// for small packets and order 5 for a 64 KiB one (128 KiB asked for
	// order 6, which failed under load: copies lost without a trace).
	NlBufSize uint32
	// RcvBuf is the netlink receive buffer (0 = DefaultRcvBuf,
	// SO_RCVBUFFORCE; the engine sets queue.socket_buffer).
	RcvBuf  int
	Session int
	NetNS   int
	Logger  *slog.Logger
	// RuleMask, when set, is the part of the mark where the session's
	// rules put the ordinal of the rule that accepted the packet
	// (rules.RuleMarks): the reader moves it to Packet.Rule and clears it
	// from Packet.Mark.
	RuleMask uint32
	// Send, when set, takes the copies of each read instead of the copy
	// queue (a kernel-routed session: the kernel sends the clones it logs,
	// Send counts them; a copy range such as RouteSnaplen is enough).
	Send func(batch []*packet.Packet)
}

func (c *LogConfig) defaults() {
	if c.Snaplen == 0 || c.Snaplen > MaxCopy {
		c.Snaplen = MaxCopy
	}
	if c.QThresh == 0 {
		c.QThresh = 64
	}
	if c.Timeout == 0 {
		c.Timeout = 1
	}
	if c.NlBufSize == 0 {
		c.NlBufSize = 60 << 10
	}
	if c.NlBufSize > 131072 {
		c.NlBufSize = 131072
	}
	if c.RcvBuf == 0 {
		c.RcvBuf = DefaultRcvBuf
	}
}

// LogReader reads one NFLOG group (with NFULNL_CFG_F_SEQ, so losses are
// counted from sequence gaps) and pushes copies into a pipeline.CopyQueue.
type LogReader struct {
	cfg  LogConfig
	r    *reader
	once sync.Once
}

// NewLogReader opens and binds NFLOG group cfg.Group.
func NewLogReader(cfg LogConfig, q *pipeline.CopyQueue, led *pipeline.Ledger) (*LogReader, error) {
	cfg.defaults()
	nl, err := nflog.Open(&nflog.Config{
		Group:    cfg.Group,
		Copymode: nflog.CopyPacket,
		Bufsize:  cfg.Snaplen,
		QThresh:  cfg.QThresh,
		Timeout:  cfg.Timeout,
		Flags:    nflog.FlagSeq,
		NetNS:    cfg.NetNS,
	})
	if err != nil {
		return nil, wrapErr("open nflog", err)
	}
	// NETLINK_NO_ENOBUFS: overruns are counted from sequence gaps.
	if err := nl.SetOption(netlink.NoENOBUFS, true); err != nil {
		nl.Close()
		return nil, wrapErr("set NETLINK_NO_ENOBUFS", err)
	}
	// NFLOG never holds originals: read in coalesced batches from a socket
	// outside the netpoller (pollNL), like a queue of clones.
	sock, err := newPollNL(nl.Con, cfg.RcvBuf, 250*time.Microsecond, false)
	nl.Close()
	if err != nil {
		return nil, err
	}
	lr, err := newLogReader(cfg, sock, q, led)
	if err != nil {
		sock.Close()
		return nil, err
	}
	return lr, nil
}

func newLogReader(cfg LogConfig, sock nlSocket, q *pipeline.CopyQueue, led *pipeline.Ledger) (*LogReader, error) {
	cfg.defaults()
	// One datagram carries what fits in the kernel's buffer of
	// max(NlBufSize, one message): the allocation is rounded up to a power
	// of two and the kernel fills its tailroom, so a datagram can be almost
	// twice the size asked for.
	bufSize := int(cfg.NlBufSize)
	if n := int(cfg.Snaplen) + nlOverhead; n > bufSize {
		bufSize = n
	}
	bufSize = nlAlign(2*bufSize + nlOverhead)
	lr := &LogReader{cfg: cfg}
	lr.r = newReader(kindLog, sock, q, led, cfg.Session, cfg.Group, 8, bufSize, 1, cfg.Logger)
	lr.r.whole = cfg.Snaplen >= MaxCopy
	// A datagram holds up to QThresh packets, or two whole super-packets in
	// its buffer of twice the kernel's.
	lr.r.dgramCopies, lr.r.dgramBytes = int(cfg.QThresh), 2*packet.MaxBuf
	lr.r.ruleMask = cfg.RuleMask
	lr.r.send = cfg.Send
	if err := lr.bind(); err != nil {
		return nil, err
	}
	return lr, nil
}

func (lr *LogReader) bind() error {
	r := lr.r
	seq := r.nextSeq()
	mb := &r.mb
	mb.start(subsysUlog<<8|nfulnlMsgConfig, nlmFRequest|nlmFAck, seq, unix.AF_UNSPEC, lr.cfg.Group)
	mb.attr(nfulaCfgCmd, []byte{nfulnlCfgCmdBind})
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, lr.cfg.Snaplen)
	mode[4] = nfulnlCopyPacket
	mb.attr(nfulaCfgMode, mode)
	mb.be32(nfulaCfgNlBufSiz, lr.cfg.NlBufSize)
	mb.be32(nfulaCfgTimeout, lr.cfg.Timeout)
	mb.be32(nfulaCfgQThresh, lr.cfg.QThresh)
	mb.attr(nfulaCfgFlags, []byte{0, nfulnlCfgFSeq})
	msg := append([]byte(nil), mb.finish()...)
	if err := r.execute(msg, seq, 5*time.Second); err != nil {
		return fmt.Errorf("nfq: bind nflog group %d: %w", lr.cfg.Group, err)
	}
	return nil
}

// Run reads until ctx is done and returns nil (an error only if the socket
// was closed under it).
func (lr *LogReader) Run(ctx context.Context) error { return lr.r.run(ctx) }

// Stats returns the reader's own counters.
func (lr *LogReader) Stats() ReaderStats { return lr.r.stats() }

// Close closes the socket (the kernel unbinds the group). Call it after Run
// has returned.
func (lr *LogReader) Close() error {
	var err error
	lr.once.Do(func() { err = lr.r.sock.Close() })
	return err
}
