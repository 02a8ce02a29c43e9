package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pcapfile"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/nfq"
	"github.com/nfclone/nfclone/pipeline"
	"github.com/nfclone/nfclone/rules"
	"github.com/nfclone/nfclone/sink"
	"github.com/nfclone/nfclone/status"
)

// reader is a QueueReader or a LogReader.
type reader interface {
	Run(ctx context.Context) error
	Stats() nfq.ReaderStats
	Close() error
}

// session is one running userspace session: readers → copy queue → workers
// → sinks. It lives across reloads as long as its key does not change.
type session struct {
	name    string
	method  config.Method
	hold    bool
	key     string // what the session is: a reload with the same key keeps it
	first   int    // first queue number / log group
	count   int
	queue   *pipeline.CopyQueue
	ledger  *pipeline.Ledger
	readers []reader
	targets []sink.Sink
	kinds   []config.Kind
	missing []string // device targets whose interface is gone
	routed  string   // the target the kernel sends the clones to ("": nfclone sends)
	// routedLedger counts the clones the kernel sends of a session that
	// sends the rest itself (config.KernelRoutedTCP; nil otherwise), read
	// from the session's second group: its losses are copies the kernel
	// sent (WithQueued), unlike those of the first.
	routedLedger *pipeline.Ledger
	fanout       sink.Sink
	deliver      func(batch []*packet.Packet) // sends to fanout and accounts (setFanout)
	workers      int
	mtu          int // copies are cut to this size (sessionMTU)
	log          *slog.Logger

	readerCancel context.CancelFunc
	readerWG     sync.WaitGroup
	workerCancel context.CancelFunc
	workerWG     sync.WaitGroup
	running      []bool             // per reader
	final        *pipeline.Snapshot // the ledger at stop, with the kernel's counts
	mu           sync.Mutex
}

// sessionKey identifies everything a running session depends on: its config,
// the queue settings, the marks of its gateways and the interface indexes of
// its device targets (a re-created interface restarts the session).
func sessionKey(c *config.Config, s config.Session, gws []rules.GatewayRoute, idx map[string]int) string {
	type key struct {
		S       config.Session
		Routed  bool // the kernel sends its copies (it also depends on the host's MTUs)
		TCP     bool // the kernel sends its TCP copies, nfclone the rest
		Q       config.Queue
		Mark    uint32
		Marks   []uint32
		Devices map[string]int
	}
	k := key{S: s, Routed: c.KernelRouted(&s), TCP: c.KernelRoutedTCP(&s), Q: c.Queue, Mark: c.Mark, Devices: map[string]int{}}
	for _, t := range s.Targets {
		switch t.Kind {
		case config.KindGateway:
			m, _ := rules.GatewayMark(gws, t.GatewayIP, t.Device)
			k.Marks = append(k.Marks, m)
		case config.KindDevice:
			k.Devices[rules.DeviceTargetName(t)] = idx[rules.DeviceTargetName(t)]
		case config.KindVXLAN:
			if t.KernelVXLAN() {
				k.Devices[rules.VXLANDevice(t)] = idx[rules.VXLANDevice(t)]
			}
		}
	}
	if annotates(s) {
		// Its pcapng records name source interfaces by index.
		for _, src := range s.Sources {
			k.Devices["source:"+src.Interface] = idx[src.Interface]
		}
	}
	b, _ := json.Marshal(k)
	return string(b)
}

// openSession binds the queues/group and opens the sinks of one userspace
// session (before the rules feed it, so no copy is lost at start).
func openSession(c *config.Config, i int, first int, key string, gws []rules.GatewayRoute, idx map[string]int, log *slog.Logger) (_ *session, err error) {
	sc := c.Sessions[i]
	slog := log.With("session", sc.Name)
	s := &session{
		name: sc.Name, method: sc.Method, hold: sc.Hold, key: key, first: first, count: 1,
		queue: pipeline.NewLaneQueue(c.Queue.Cap, c.Queue.CapByteCount, c.Queue.Workers), ledger: &pipeline.Ledger{}, workers: c.Queue.Workers, log: slog,
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if c.KernelRouted(&sc) {
		return openRoutedSession(c, s, i)
	}
	for ti, t := range sc.Targets {
		name := fmt.Sprintf("%s/%d:%s", sc.Name, ti, t.Kind)
		var sk sink.Sink
		switch t.Kind {
		case config.KindGateway:
			gw := t.GatewayIP
			mark, _ := rules.GatewayMark(gws, gw, t.Device)
			fam := uint8(4)
			if t.GatewayIs6() {
				fam = 6
			}
			sk, err = sink.NewGateway(sink.GatewayConfig{Name: name, Mark: mark, Family: fam, Device: t.Device, Gateway: gw, Logger: slog})
		case config.KindDevice:
			dev := rules.DeviceTargetName(t)
			if idx[dev] == 0 {
				s.missing = append(s.missing, dev)
				slog.Warn("target interface is missing; the session goes on without it", "target", name, "interface", dev)
				continue
			}
			mac := t.HWAddr
			var vlan uint16
			if t.VLAN != nil {
				vlan = uint16(*t.VLAN)
			}
			sk, err = sink.NewDevice(sink.DeviceConfig{Name: name, Device: dev, DstMAC: mac, Mark: c.Mark, VLAN: vlan, Logger: slog})
		case config.KindVXLAN:
			if !t.KernelVXLAN() {
				sk, err = openExtraTarget(c, sc, t, name, slog)
				break
			}
			// nfclone's VXLAN device encapsulates: frames with the inner
			// Ethernet header the userspace tunnel writes, TCP
			// super-packets whole (the kernel cuts them after the outer
			// headers are on, and picks the outer source port per flow).
			dev := rules.VXLANDevice(t)
			if idx[dev] == 0 {
				s.missing = append(s.missing, dev)
				slog.Warn("target's VXLAN device is missing; the session goes on without it", "target", name, "interface", dev)
				continue
			}
			sk, err = sink.NewDevice(sink.DeviceConfig{Name: name, Device: dev, SrcMAC: sink.DefaultTunnelSrcMAC, DstMAC: sink.DefaultTunnelDstMAC, Mark: c.Mark, Logger: slog})
		default:
			sk, err = openExtraTarget(c, sc, t, name, slog)
		}
		if err != nil {
			return nil, hostErr("sessions[%d].targets[%d]: %v", i, ti, err)
		}
		s.targets = append(s.targets, sk)
		s.kinds = append(s.kinds, t.Kind)
	}
	s.mtu = sessionMTU(sc, c.Mark)
	fanout := sink.Sink(sink.NewWire(sink.NewFanout(s.targets...), s.mtu))
	if sc.DedupWindow > 0 {
		// Before the cutter: duplicates are the kernel's packets.
		fanout = sink.NewDedup(fanout, sc.DedupWindow)
	}
	s.setFanout(fanout)
	if sc.Method == config.MethodQueue {
		s.count = c.Queue.Count
		for k := 0; k < c.Queue.Count; k++ {
			r, err := nfq.NewQueueReader(nfq.QueueConfig{
				Num: uint16(first + k), Snaplen: uint32(sc.Snaplen), MaxLen: uint32(c.Queue.MaxLen), Logger: slog,
				RcvBuf:    int(c.Queue.SocketBufferBytes),
				BufBudget: (4 << 20) / c.Queue.Count, // the session's receive slabs stay within 4 MiB (63 whole 64 KiB messages; 8 MiB peaked 3–6 MiB higher and copied no more)
				Clones:    nfq.CloneMarks{Mask: c.MarkMask, TTLDecremented: c.Marks().TTLDecremented()},
				Hold:      sc.Hold, Send: s.holdSend(),
			}, s.queue, s.ledger)
			if err != nil {
				return nil, hostErr("sessions[%d]: binding NFQUEUE %d: %v", i, first+k, err)
			}
			s.readers = append(s.readers, r)
		}
	} else {
		r, err := nfq.NewLogReader(nfq.LogConfig{
			Group: uint16(first), Snaplen: uint32(sc.Snaplen), QThresh: rules.LogThreshold, Logger: slog,
			RcvBuf:   int(c.Queue.SocketBufferBytes),
			RuleMask: rules.RuleMarks(c, i),
		}, s.queue, s.ledger)
		if err != nil {
			return nil, hostErr("sessions[%d]: binding NFLOG group %d: %v", i, first, err)
		}
		s.readers = append(s.readers, r)
		if c.KernelRoutedTCP(&sc) {
			if err := openRoutedTCP(c, s, i); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// openRoutedTCP binds the second group of a log session whose TCP clones
// the kernel sends (config.KernelRoutedTCP): the clones chain logs them
// there, and its reader reads their headers and counts them in the
// session's routed ledger, as openRoutedSession's does; the first group's
// reader copies the rest.
func openRoutedTCP(c *config.Config, s *session, i int) error {
	t := c.Sessions[i].Targets[0]
	s.routed = fmt.Sprintf("%s/0:%s", s.name, t.Kind)
	s.routedLedger = &pipeline.Ledger{}
	s.count = 2
	group := s.first + 1
	r, err := nfq.NewLogReader(nfq.LogConfig{
		Group: uint16(group), Snaplen: nfq.RouteSnaplen, QThresh: rules.LogThreshold, Logger: s.log,
		RcvBuf: int(c.Queue.SocketBufferBytes), Send: s.routedLedger.AccountRouted,
	}, s.queue, s.routedLedger)
	if err != nil {
		return hostErr("sessions[%d]: binding NFLOG group %d: %v", i, group, err)
	}
	s.readers = append(s.readers, r)
	return nil
}

// openRoutedSession binds the readers of a session whose clones the kernel
// sends (config.KernelRouted): dup routed them to the gateway and the clones
// chain gave them its copy mark; its readers read the clones' headers and
// count them — queue readers accept them, from fail-open queues (what a full
// queue cannot take, the kernel sends at once); NFLOG holds nothing. No sink,
// no copy queue, no worker.
func openRoutedSession(c *config.Config, s *session, i int) (*session, error) {
	sc := c.Sessions[i]
	t := sc.Targets[0]
	s.routed = fmt.Sprintf("%s/0:%s", sc.Name, t.Kind)
	s.workers = 0
	if sc.Method == config.MethodLog {
		r, err := nfq.NewLogReader(nfq.LogConfig{
			Group: uint16(s.first), Snaplen: nfq.RouteSnaplen, QThresh: rules.LogThreshold, Logger: s.log,
			RcvBuf: int(c.Queue.SocketBufferBytes), Send: s.ledger.AccountRouted,
		}, s.queue, s.ledger)
		if err != nil {
			return nil, hostErr("sessions[%d]: binding NFLOG group %d: %v", i, s.first, err)
		}
		s.readers = append(s.readers, r)
		return s, nil
	}
	s.count = c.Queue.Count
	for k := 0; k < c.Queue.Count; k++ {
		r, err := nfq.NewQueueReader(nfq.QueueConfig{
			Num: uint16(s.first + k), Snaplen: nfq.RouteSnaplen, MaxLen: uint32(c.Queue.MaxLen), Logger: s.log,
			RcvBuf: int(c.Queue.SocketBufferBytes),
			Clones: nfq.CloneMarks{Mask: c.MarkMask, TTLDecremented: c.Marks().TTLDecremented()},
			Route:  true, Send: s.ledger.AccountRouted,
		}, s.queue, s.ledger)
		if err != nil {
			return nil, hostErr("sessions[%d]: binding NFQUEUE %d: %v", i, s.first+k, err)
		}
		s.readers = append(s.readers, r)
	}
	return s, nil
}

// defaultWireMTU is the MTU copies are cut to when no interface of the
// session says (Ethernet's).
const defaultWireMTU = 1500

// sessionMTU is the size a session's copies are cut to, so that each is
// what a wire would carry: the largest MTU of its source interfaces (the
// wires the originals came from), and no more than the MTU of any gateway
// or device target's interface (a raw or packet socket cannot send more),
// nor than what fits in one outer datagram on the path to each tunnel
// remote (the path MTU less the outer IP, UDP, tunnel and inner Ethernet
// headers: a kernel VXLAN device's MTU is chosen the same way), so tunnel
// copies are never fragmented.
func sessionMTU(sc config.Session, mark uint32) int {
	mtu := 0
	for _, src := range sc.Sources {
		if ifc, err := net.InterfaceByName(src.Interface); err == nil && ifc.MTU > mtu {
			mtu = ifc.MTU
		}
	}
	if mtu == 0 || mtu > nfq.MaxCopy {
		mtu = defaultWireMTU
	}
	limit := func(m int) {
		if m > 0 && m < mtu {
			mtu = m
		}
	}
	for _, t := range sc.Targets {
		switch t.Kind {
		case config.KindGateway, config.KindDevice:
			dev := t.Device
			if t.Kind == config.KindDevice {
				dev = rules.DeviceTargetName(t)
			}
			if ifc, err := net.InterfaceByName(dev); err == nil {
				limit(ifc.MTU)
			}
		case config.KindVXLAN, config.KindGENEVE:
			for _, ap := range t.RemoteAddrs {
				if pm := config.SystemPathMTU(ap, mark); pm > 0 {
					limit(pm - config.TunnelOverhead(ap.Addr()))
				}
			}
			if t.KernelVXLAN() {
				// A packet socket cannot send more than the device's MTU.
				if ifc, err := net.InterfaceByName(rules.VXLANDevice(t)); err == nil {
					limit(ifc.MTU)
				}
			}
		case config.KindERSPAN:
			limit(erspanMTU(t, mark))
		}
	}
	return mtu
}

// nflogLinger is how long a log session keeps reading after its rules are
// gone: twice the kernel's NFLOG flush timeout (nfq.LogConfig.Timeout, 10 ms).
const nflogLinger = 20 * time.Millisecond

// setFanout makes f the sink of the session's copies, and s.deliver the
// function that sends to it and accounts: the workers' and, in a hold
// session, the readers'.
func (s *session) setFanout(f sink.Sink) {
	s.fanout, s.deliver = f, pipeline.Deliver(f, s.ledger)
}

// holdSend is the Send of a hold session's readers (nil for other
// sessions): they send their copies themselves, through s.deliver, before
// they let the originals go. (start may set another fanout, before any
// reader runs.)
func (s *session) holdSend() func(batch []*packet.Packet) {
	if !s.hold {
		return nil
	}
	return func(batch []*packet.Packet) { s.deliver(batch) }
}

// start runs the readers and the workers.
func (s *session) start(wrap func(sink.Sink) sink.Sink) {
	if wrap != nil {
		// Inside the cutter: `capture -c N` counts wire packets, as
		// tcpdump does, not the kernel's super-packets.
		if w, ok := s.fanout.(*sink.Wire); ok {
			s.setFanout(sink.NewWire(wrap(w.Inner()), w.MTU()))
		} else {
			s.setFanout(wrap(s.fanout))
		}
	}
	rctx, rcancel := context.WithCancel(context.Background())
	wctx, wcancel := context.WithCancel(context.Background())
	s.readerCancel, s.workerCancel = rcancel, wcancel
	s.running = make([]bool, len(s.readers))
	for i, r := range s.readers {
		s.running[i] = true
		s.readerWG.Add(1)
		go func() {
			defer s.readerWG.Done()
			err := r.Run(rctx)
			s.mu.Lock()
			s.running[i] = false
			s.mu.Unlock()
			if err != nil {
				s.log.Error("reader stopped", "err", err)
			}
		}()
	}
	if s.hold || s.routed != "" && s.routedLedger == nil {
		return // its readers send the copies, or the kernel does; nothing is ever queued
	}
	s.workerWG.Add(1)
	go func() {
		defer s.workerWG.Done()
		pipeline.RunWorkers(wctx, s.queue, s.workers, s.deliver)
	}()
}

// stop stops the readers (they drain what the kernel already queued), lets
// the workers drain the copy queue, then closes everything and logs the
// ledger. Call it after the rules stopped feeding the session. kernel holds
// the session's rule counters (nil: unknown), so that packets that never
// reached the reader are in the ledger.
//
// It returns within drain (plus a short grace) whatever the sinks do: at
// the deadline the copies still queued are taken out and counted as
// queue_overflow, and workers still blocked in a sink (a full socket
// buffer, a hung file system) are left behind; what they hold is reported
// as in flight.
func (s *session) stop(drain time.Duration, kernel map[string]rules.CounterValue) {
	abandoned := false
	if s.readerCancel != nil {
		deadline := time.Now().Add(drain)
		if s.method == config.MethodLog && drain > 0 {
			// NFLOG batches packets in the kernel for up to its timeout (10 ms)
			// before sending them: keep reading that long after the rules went.
			time.Sleep(nflogLinger)
		}
		s.readerCancel()
		if !waitUntil(&s.readerWG, deadline.Add(stopGrace)) {
			// A hold session's reader may be inside a sink: as for a
			// worker, its sinks stay open (abandoned).
			abandoned = true
			s.log.Warn("stopping: a reader did not stop in time; left behind")
		}
		for time.Now().Before(deadline) && s.queue.Len() > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		if n := s.discardQueued(); n > 0 {
			s.log.Warn("stopping: drain deadline reached; copies still queued are dropped", "dropped", n, "drain", drain)
		}
		s.workerCancel()
		if !waitUntil(&s.workerWG, time.Now().Add(stopGrace)) {
			abandoned = true
			s.log.Warn("stopping: a target is blocked; its workers are left behind", "drain", drain)
		}
	}
	if !abandoned {
		s.close()
	} else {
		// A worker may still be inside a sink: closing the sinks under it
		// could make its next send reach a reused descriptor. The process
		// is exiting (or the session is retired); the readers go.
		for _, r := range s.readers {
			_ = r.Close()
		}
	}
	snap, _ := s.account(kernel)
	s.mu.Lock()
	s.final = &snap
	s.mu.Unlock()
	s.log.Info("session ledger", "offered", snap.Offered, "copied", snap.Copied, "kernel_sent", snap.KernelSent, "kernel_lost", snap.Drops.KernelLost,
		"rate_limit", snap.Drops.RateLimit, "skipped_by_selectors", snap.Skipped.Total(),
		"drops", snap.Drops.Total(), "queue_overflow", snap.Drops.QueueOverflow, "send_errors", snap.Drops.SendError,
		"kernel_queue", snap.Drops.KernelQueue, "user", snap.Drops.User, "socket_overrun", snap.Drops.SocketOverrun,
		"malformed", snap.Drops.Malformed, "too_big", snap.Drops.TooBig, "dedup", snap.Drops.Dedup, "in_flight", snap.InFlight, "balanced", snap.Balanced())
}

// stopGrace is how long stop waits, after the drain deadline, for readers
// and workers to return before leaving them behind.
const stopGrace = 100 * time.Millisecond

// discardQueued takes every copy still in the queue out, releases it and
// counts it as dropped (queue_overflow: the queue could not be drained).
func (s *session) discardQueued() uint64 {
	var arr [pipeline.WorkerBatch]*packet.Packet
	var n uint64
	for {
		k := s.queue.TryPopBatch(arr[:])
		if k == 0 {
			break
		}
		for i := range arr[:k] {
			arr[i].Release()
			arr[i] = nil
		}
		n += uint64(k)
	}
	if n > 0 {
		s.ledger.AddQueueOverflow(n)
	}
	return n
}

// waitUntil waits for wg until deadline and reports whether it finished.
func waitUntil(wg *sync.WaitGroup, deadline time.Time) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// stopSessions stops sessions in parallel (each within its own bound).
func stopSessions(ss map[string]userSession, drain time.Duration, counters map[string]map[string]rules.CounterValue) {
	var wg sync.WaitGroup
	for name, s := range ss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.stop(drain, counters[name])
		}()
	}
	wg.Wait()
}

func (s *session) close() {
	var errs []error
	for _, r := range s.readers {
		errs = append(errs, r.Close())
	}
	for _, t := range s.targets {
		errs = append(errs, t.Close())
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Warn("closing session", "err", err)
	}
}

// status reports the session for Status; m are its rule counters (nil:
// unknown), which the ledger needs (account).
func (s *session) status(m map[string]rules.CounterValue) status.SessionStatus {
	st := status.SessionStatus{
		Name: s.name, Method: string(s.method), Hold: s.hold, State: "running", Missing: s.missing,
		Queue: &status.QueueStatus{Depth: s.queue.Len(), Cap: s.queue.Cap(), Workers: s.workers},
	}
	if len(s.missing) > 0 {
		st.State = "waiting"
	}
	total, routed := s.account(m) // before s.mu: account takes it
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range s.readers {
		kind := "nflog"
		if s.method == config.MethodQueue {
			kind = "nfqueue"
		}
		st.Readers = append(st.Readers, status.ReaderStatus{Kind: kind, Num: s.first + i, Running: i < len(s.running) && s.running[i], Stats: r.Stats()})
	}
	if s.routed != "" && s.routedLedger == nil {
		st.Targets = append(st.Targets, status.TargetStatus{Name: s.routed, Kind: string(config.KindGateway), Kernel: true})
	}
	for i, t := range s.targets {
		ts := status.TargetStatus{Name: t.Name(), Kind: string(s.kinds[i])}
		if sp, ok := t.(interface{ Stats() sink.Stats }); ok {
			x := sp.Stats()
			ts.Stats = &x
		}
		if cp, ok := t.(interface{ Clients() []sink.PcapClientStats }); ok {
			ts.Clients = cp.Clients()
		}
		st.Targets = append(st.Targets, ts)
	}
	setLedger(&st, total)
	if routed != nil && len(st.Targets) == 1 && st.Targets[0].Stats != nil {
		// The one target's copies: nfclone's and the kernel's.
		x := st.Targets[0].Stats
		x.Sent += routed.Copied
		x.Bytes += routed.Bytes
		st.Targets[0].KernelTCP = true
	}
	return st
}

// openExtraTarget opens the targets beyond gateway and device: tunnels and
// pcap files. Their copies carry the configured mark (no policy route: the
// tunnel's UDP is routed like any other traffic of the host).
// annotates reports whether the session has an annotated (pcapng) target.
func annotates(s config.Session) bool {
	for _, t := range s.Targets {
		if (t.Kind == config.KindPcap || t.Kind == config.KindPcapOverIP) && t.Format == config.FormatPcapng {
			return true
		}
	}
	return false
}

// annotation is what a pcapng target of the session notes on its records:
// the session, its source interfaces by index (as they are now; a
// re-created source interface restarts the session, see sessionKey), the
// interface of each direction when there is only one (queue clones do not
// say), and the rules' numbers by ordinal.
func annotation(sc config.Session) *sink.PcapAnnotation {
	a := &sink.PcapAnnotation{Session: sc.Name, Names: map[uint32]string{}}
	byDir := map[config.Direction]map[string]bool{}
	for _, src := range sc.Sources {
		if i := ifIndex(src.Interface); i != 0 {
			a.Names[i] = src.Interface
		}
		for _, d := range config.SourceDirections(src.Direction) {
			if byDir[d] == nil {
				byDir[d] = map[string]bool{}
			}
			byDir[d][src.Interface] = true
		}
	}
	only := func(set map[string]bool) string {
		if len(set) != 1 {
			return ""
		}
		for n := range set {
			return n
		}
		return ""
	}
	a.In, a.Out = only(byDir[config.Ingress]), only(byDir[config.Egress])
	for _, r := range config.SortedRules(sc.Rules) {
		a.Rules = append(a.Rules, r.Number)
	}
	return a
}

func openExtraTarget(c *config.Config, sc config.Session, t config.Target, name string, log *slog.Logger) (sink.Sink, error) {
	switch t.Kind {
	case config.KindVXLAN, config.KindGENEVE:
		return sink.NewTunnel(sink.TunnelConfig{Name: name, Kind: string(t.Kind), Remotes: t.RemoteAddrs, VNI: uint32(*t.VNI), Mark: c.Mark, Logger: log})
	case config.KindERSPAN:
		return openERSPAN(c, t, name, log)
	case config.KindPcapOverIP:
		return openPcapOverIP(sc, t, name, log)
	case config.KindPcap:
		keep := t.RotateKeep
		if keep == 0 && t.RotateSize != "" {
			keep = config.DefaultRotateKeep
		}
		var ann *sink.PcapAnnotation
		if t.Format == config.FormatPcapng {
			ann = annotation(sc)
		}
		return sink.NewPcap(sink.PcapConfig{Name: name, Logger: log, Annotate: ann, Config: pcapfile.Config{
			Path: t.Path, Format: string(t.Format), LinkType: sink.LinkTypeRaw, Snaplen: sc.Snaplen, RotateSize: t.RotateBytes, RotateKeep: keep, RotateEvery: t.RotateInterval}})
	}
	return nil, fmt.Errorf("target kind %s is not available with method %s", t.Kind, sc.Method)
}

func (s *session) ident() sessionIdent {
	return sessionIdent{Name: s.name, Key: s.key, First: s.first, Count: s.count}
}

// snapshot is the session's ledger: the final one once stopped, else the
// readers' and workers' counts so far.
func (s *session) snapshot() pipeline.Snapshot {
	s.mu.Lock()
	f := s.final
	s.mu.Unlock()
	if f != nil {
		return *f
	}
	if s.routedLedger != nil {
		return addSnapshots(s.ledger.Snapshot(), s.routedLedger.Snapshot())
	}
	return s.ledger.Snapshot()
}

// account is the session's ledger with what only its rule counters m know
// (withKernelCounts): the final one once stopped. routed is the share of
// the clones the kernel sends of a session that sends the rest itself
// (nil for other sessions): the losses its reader saw are copies the kernel
// sent, the losses of the other reader are lost copies.
func (s *session) account(m map[string]rules.CounterValue) (total pipeline.Snapshot, routed *pipeline.Snapshot) {
	s.mu.Lock()
	f := s.final
	s.mu.Unlock()
	if f != nil && s.routedLedger == nil {
		return *f, nil
	}
	if s.routedLedger == nil {
		return withKernelCounts(s.ledger.Snapshot(), m), nil
	}
	r := s.routedLedger.Snapshot()
	q := m[rules.CounterQueued]
	r = r.WithQueued(q.Packets, q.Bytes)
	if f != nil {
		return *f, &r
	}
	return withRuleCounts(addSnapshots(s.ledger.Snapshot(), r), m), &r
}

// setLedger makes l a userspace session's ledger in its status, with what
// follows from it: seen (offered), copied, and the counters of a target the
// kernel sends for (every copy: a super-packet counts once, as the kernel
// handed it over).
func setLedger(st *status.SessionStatus, l pipeline.Snapshot) {
	st.Ledger = &l
	st.Seen = status.Counter{Packets: l.Offered}
	st.Copied = status.Counter{Packets: l.Copied, Bytes: l.Bytes}
	for i := range st.Targets {
		if st.Targets[i].Kernel {
			st.Targets[i].Stats = &sink.Stats{Sent: l.Copied, Bytes: l.Bytes}
		}
	}
}

// withKernelCounts adds to a session's ledger what only the kernel's rule
// counters know: the clones a kernel-routed session's fail-open queue let
// the kernel send (kernel_sent; only such a session's clones chain counts
// CounterQueued), packets the copy rule matched that never reached the
// reader, counted by no other kernel counter (kernel_lost), and packets the
// session's rate kept from it.
func withKernelCounts(s pipeline.Snapshot, m map[string]rules.CounterValue) pipeline.Snapshot {
	if q, ok := m[rules.CounterQueued]; ok {
		s = s.WithQueued(q.Packets, q.Bytes)
	}
	return withRuleCounts(s, m)
}

// withRuleCounts adds what the copy and rate rules' counters know
// (kernel_lost, rate_limit) and the selectors' skips.
func withRuleCounts(s pipeline.Snapshot, m map[string]rules.CounterValue) pipeline.Snapshot {
	s = s.WithMatched(m[rules.CounterCopied].Packets).WithRateLimited(m[rules.CounterRateLimited].Packets)
	s.Skipped = skippedCounts(m)
	return s
}

// written is how many packets the session's targets sent (wire packets:
// a super-packet cut into 40 segments counts 40).
func (s *session) written() uint64 {
	var n uint64
	for _, t := range s.targets {
		if sp, ok := t.(interface{ Stats() sink.Stats }); ok {
			n += sp.Stats().Sent
		}
	}
	return n
}
