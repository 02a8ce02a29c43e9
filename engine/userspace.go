package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/nfq"
	"github.com/nfclone/nfclone/rules"
	"github.com/nfclone/nfclone/sink"
)

// reader is a QueueReader or a LogReader.
type reader interface {
	Run(ctx context.Context) error
	Close() error
}

// session is one running userspace session: readers → copy queue → workers → sinks.
type session struct {
	name    string
	method  string
	queue   *nfq.CopyQueue
	ledger  *nfq.Ledger
	readers []reader
	targets []sink.Sink
	fanout  sink.Sink
	workers int
}

// Ledger returns the session's drop ledger.
func (s *session) Snapshot() nfq.Snapshot { return s.ledger.Snapshot() }

// openSessions binds the queues/groups and opens the sinks of every userspace
// session (before the rules exist, so no copy is lost at start).
func openSessions(c *config.Config, log *slog.Logger) (out []*session, err error) {
	defer func() {
		if err != nil {
			closeSessions(out, log)
			out = nil
		}
	}()
	routes := rules.GatewayRoutes(c)
	for i, sc := range c.Sessions {
		if sc.Method != config.MethodQueue && sc.Method != config.MethodLog {
			continue
		}
		s := &session{
			name: sc.Name, method: sc.Method,
			queue: nfq.NewCopyQueue(c.Queue.Cap), ledger: &nfq.Ledger{}, workers: c.Queue.Workers,
		}
		out = append(out, s)
		slog := log.With("session", sc.Name)
		for ti, t := range sc.Targets {
			name := fmt.Sprintf("%s/%d:%s", sc.Name, ti, t.Kind)
			var sk sink.Sink
			switch t.Kind {
			case config.KindGateway:
				gw, _ := netip.ParseAddr(t.Gateway)
				mark, _ := rules.GatewayMark(routes, gw, t.Device)
				fam := uint8(4)
				if gw.Unmap().Is6() {
					fam = 6
				}
				sk, err = sink.NewGateway(sink.GatewayConfig{Name: name, Mark: mark, Family: fam, Logger: slog})
			case config.KindDevice:
				var mac net.HardwareAddr
				if t.MAC != "" {
					mac, _ = net.ParseMAC(t.MAC)
				}
				sk, err = sink.NewDevice(sink.DeviceConfig{Name: name, Device: rules.DeviceTargetName(t), DstMAC: mac, Mark: c.Mark, Logger: slog})
			default:
				err = fmt.Errorf("target kind %s is not implemented yet for method %s", t.Kind, sc.Method)
			}
			if err != nil {
				return out, hostErr("sessions[%d].targets[%d]: %v", i, ti, err)
			}
			s.targets = append(s.targets, sk)
		}
		s.fanout = sink.NewFanout(s.targets...)
		first := rules.QueueNum(c, i)
		if sc.Method == config.MethodQueue {
			for k := 0; k < c.Queue.Count; k++ {
				r, err := nfq.NewQueueReader(nfq.QueueConfig{
					Num: uint16(first + k), Snaplen: uint32(sc.Snaplen), MaxLen: uint32(c.Queue.MaxLen),
					Session: 0, Logger: slog,
				}, s.queue, s.ledger)
				if err != nil {
					return out, hostErr("sessions[%d]: binding NFQUEUE %d: %v", i, first+k, err)
				}
				s.readers = append(s.readers, r)
			}
		} else {
			r, err := nfq.NewLogReader(nfq.LogConfig{
				Group: uint16(first), Snaplen: uint32(sc.Snaplen), QThresh: rules.LogThreshold, Session: 0, Logger: slog,
			}, s.queue, s.ledger)
			if err != nil {
				return out, hostErr("sessions[%d]: binding NFLOG group %d: %v", i, first, err)
			}
			s.readers = append(s.readers, r)
		}
	}
	return out, nil
}

func closeSessions(ss []*session, log *slog.Logger) {
	for _, s := range ss {
		for _, r := range s.readers {
			if err := r.Close(); err != nil {
				log.Warn("closing reader", "session", s.name, "err", err)
			}
		}
		for _, t := range s.targets {
			if err := t.Close(); err != nil {
				log.Warn("closing target", "session", s.name, "target", t.Name(), "err", err)
			}
		}
	}
}

// dataPath runs the readers and workers of the sessions. Stop it in order:
// stopReaders (after the rules are gone: nothing new is queued), then
// drain (bounded), then close.
type dataPath struct {
	sessions []*session
	log      *slog.Logger

	readerCancel context.CancelFunc
	readerWG     sync.WaitGroup
	workerCancel context.CancelFunc
	workerWG     sync.WaitGroup
	errMu        sync.Mutex
	errs         []error
}

func startDataPath(ss []*session, log *slog.Logger) *dataPath {
	dp := &dataPath{sessions: ss, log: log}
	rctx, rcancel := context.WithCancel(context.Background())
	wctx, wcancel := context.WithCancel(context.Background())
	dp.readerCancel, dp.workerCancel = rcancel, wcancel
	for _, s := range ss {
		for _, r := range s.readers {
			dp.readerWG.Add(1)
			go func() {
				defer dp.readerWG.Done()
				if err := r.Run(rctx); err != nil {
					dp.errMu.Lock()
					dp.errs = append(dp.errs, fmt.Errorf("session %s reader: %w", s.name, err))
					dp.errMu.Unlock()
				}
			}()
		}
		dp.workerWG.Add(1)
		go func() {
			defer dp.workerWG.Done()
			nfq.RunWorkers(wctx, s.queue, s.workers, sink.Deliver(s.fanout, s.ledger))
		}()
	}
	return dp
}

// stop stops the readers (they accept every original still held), lets the
// workers drain the copy queues for at most drain, then closes everything.
func (dp *dataPath) stop(drain time.Duration) error {
	dp.readerCancel()
	dp.readerWG.Wait()
	deadline := time.Now().Add(drain)
	for time.Now().Before(deadline) && dp.queued() > 0 {
		time.Sleep(5 * time.Millisecond)
	}
	dp.workerCancel()
	dp.workerWG.Wait()
	closeSessions(dp.sessions, dp.log)
	for _, s := range dp.sessions {
		snap := s.ledger.Snapshot()
		dp.log.Info("session ledger", "session", s.name, "offered", snap.Offered, "copied", snap.Copied,
			"drops", snap.Drops.Total(), "queue_overflow", snap.Drops.QueueOverflow, "send_errors", snap.Drops.SendError,
			"kernel_queue", snap.Drops.KernelQueue, "socket_overrun", snap.Drops.SocketOverrun)
	}
	dp.errMu.Lock()
	defer dp.errMu.Unlock()
	return errors.Join(dp.errs...)
}

func (dp *dataPath) queued() int {
	n := 0
	for _, s := range dp.sessions {
		n += s.queue.Len()
	}
	return n
}
