// Package sink holds nfclone's targets for userspace copies: a raw-IP
// Gateway sink (policy-routed by fwmark), an AF_PACKET Device sink, and the
// Fanout that replicates one batch to several sinks.
package sink

import (
	"errors"
	"fmt"
	"github.com/nfclone/nfclone/packet"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Sink is a target for copies. Send is called concurrently by workers with
// batches of copies; it must not keep the packets after it returns. For every
// copy it fails to send it increments p.Errs. It returns the number of copies
// sent and the last error, if any.
type Sink interface {
	Name() string
	Send(batch []*packet.Packet) (sent int, err error)
	Close() error
}

// Stats are a sink's counters.
type Stats struct {
	Sent      uint64 `json:"sent"`
	Bytes     uint64 `json:"bytes"`
	Errors    uint64 `json:"errors"`
	LastError string `json:"last_error,omitempty"`
}

// counters are the per-target counters and the rate-limited warning.
type counters struct {
	name    string
	log     *slog.Logger
	sent    atomic.Uint64
	bytes   atomic.Uint64
	errors  atomic.Uint64
	mu      sync.Mutex
	lastErr error
	lastLog time.Time
	quiet   uint64 // errors since the last warning
}

// warnEvery is the minimum interval between two warnings of one sink.
const warnEvery = 10 * time.Second

func (c *counters) init(name string, log *slog.Logger) {
	c.name = name
	if log == nil {
		log = slog.Default()
	}
	c.log = log
}

func (c *counters) ok(n int, b int) {
	c.sent.Add(uint64(n))
	c.bytes.Add(uint64(b))
}

// fail counts n failed copies and logs at most one warning per warnEvery.
func (c *counters) fail(n int, err error) {
	c.errors.Add(uint64(n))
	c.mu.Lock()
	c.lastErr = err
	c.quiet += uint64(n)
	now := time.Now()
	if now.Sub(c.lastLog) < warnEvery {
		c.mu.Unlock()
		return
	}
	c.lastLog = now
	q := c.quiet
	c.quiet = 0
	c.mu.Unlock()
	c.log.Warn("sink: cannot send copies", "target", c.name, "err", err, "failed_since_last_warning", q,
		"hint", hint(err))
}

func hint(err error) string {
	switch {
	case errors.Is(err, unix.EHOSTUNREACH), errors.Is(err, unix.ENETUNREACH):
		return "no route to the target (policy routing table missing?)"
	case errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENETDOWN):
		return "target device is gone or down"
	case errors.Is(err, unix.EMSGSIZE):
		return "copy larger than the egress MTU (set a snaplen)"
	case errors.Is(err, unix.EPERM):
		return "dropped by a local firewall rule"
	}
	return ""
}

func (c *counters) Stats() Stats {
	s := Stats{Sent: c.sent.Load(), Bytes: c.bytes.Load(), Errors: c.errors.Load()}
	c.mu.Lock()
	if c.lastErr != nil {
		s.LastError = c.lastErr.Error()
	}
	c.mu.Unlock()
	return s
}

// sendmmsgFunc is the send syscall (mmsg.Send), replaceable in tests.
type sendmmsgFunc func(fd int, hdrs []unix.Mmsghdr) (int, error)

// sendAll sends hdrs (built for pkts, same order) with as few syscalls as
// possible. A copy the kernel refuses is counted as failed (p.Errs++) and
// skipped; the rest of the batch is still sent.
func sendAll(fn sendmmsgFunc, fd int, hdrs []unix.Mmsghdr, pkts []*packet.Packet, c *counters) (sent int, last error) {
	i := 0
	bytes := 0
	for i < len(hdrs) {
		n, err := fn(fd, hdrs[i:])
		if n > 0 {
			for _, p := range pkts[i : i+n] {
				bytes += len(p.Data)
			}
			sent += n
			i += n
			continue
		}
		if err == nil {
			err = syscall.EIO // 0 sent and no error: should not happen
		}
		if errors.Is(err, unix.EAGAIN) {
			// Blocking sockets do not return EAGAIN; if one does (send
			// timeout), drop the rest of the batch rather than spin.
			for _, p := range pkts[i:] {
				p.Errs++
			}
			c.fail(len(pkts)-i, err)
			return sent, err
		}
		pkts[i].Errs++
		c.fail(1, err)
		last = err
		i++
	}
	c.ok(sent, bytes)
	return sent, last
}

func setMark(fd int, mark uint32) error {
	if mark == 0 {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
		return fmt.Errorf("sink: SO_MARK %#x: %w", mark, err)
	}
	return nil
}

// Fanout sends every batch to several sinks (replication), one after the
// other. A copy counts as sent only if every sink sent it.
type Fanout struct {
	sinks []Sink
}

// NewFanout returns a Fanout over sinks.
func NewFanout(sinks ...Sink) *Fanout { return &Fanout{sinks: sinks} }

// Name lists the sinks' names.
func (f *Fanout) Name() string {
	s := "fanout("
	for i, k := range f.sinks {
		if i > 0 {
			s += ","
		}
		s += k.Name()
	}
	return s + ")"
}

// Send sends batch to every sink; one failing target does not stop the
// others. sent is the number of copies that every sink sent.
func (f *Fanout) Send(batch []*packet.Packet) (int, error) {
	var errs []error
	for _, s := range f.sinks {
		if _, err := s.Send(batch); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Name(), err))
		}
	}
	sent := 0
	for _, p := range batch {
		if p.Errs == 0 {
			sent++
		}
	}
	return sent, errors.Join(errs...)
}

// AcceptsGSO reports whether every sink takes TCP super-packets whole.
func (f *Fanout) AcceptsGSO() bool {
	for _, s := range f.sinks {
		if g, ok := s.(gsoSink); !ok || !g.AcceptsGSO() {
			return false
		}
	}
	return len(f.sinks) > 0
}

// gsoSink is a sink that can hand TCP super-packets (Packet.GSO) to the
// kernel whole, to be segmented on their way out.
type gsoSink interface{ AcceptsGSO() bool }

// Close closes every sink.
func (f *Fanout) Close() error {
	var errs []error
	for _, s := range f.sinks {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
