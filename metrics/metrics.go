// Package metrics exports the daemon's Status as Prometheus metrics.
//
// The Collector reads one status.Status snapshot per scrape and turns it into
// const metrics, so a scrape always shows one consistent view and nothing is
// kept between scrapes. It has its own registry (never the global one), with
// the Go runtime and process collectors of client_golang next to it.
//
// Every counter comes from a counter of the engine (ledger, reader, sink
// stats): it only goes down when the daemon restarts, which
// nfclone_start_time_seconds tells. Counters of a session start again from 0
// when a reload recreates the session.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nfclone/nfclone/pipeline"
	"github.com/nfclone/nfclone/status"
)

// Path is where Serve answers with the metrics.
const Path = "/metrics"

// HealthPath answers "ok" while the server runs (a liveness probe).
const HealthPath = "/healthz"

// Drop reasons, the values of the reason label (the ledger's Drops fields).
const (
	ReasonKernelQueue   = "kernel_queue"
	ReasonUser          = "user"
	ReasonSocketOverrun = "socket_overrun"
	ReasonQueueOverflow = "queue_overflow"
	ReasonRateLimit     = "rate_limit"
	ReasonMalformed     = "malformed"
	ReasonSendError     = "send_error"
	ReasonTooBig        = "too_big"
	ReasonKernelLost    = "kernel_lost"
	ReasonDedup         = "dedup"
)

// Session states, the values of nfclone_session_state's state label.
var sessionStates = []string{"running", "waiting"}

type reasonValue struct {
	reason string
	value  uint64
}

func dropsByReason(d pipeline.Drops) []reasonValue {
	return []reasonValue{
		{ReasonKernelQueue, d.KernelQueue},
		{ReasonUser, d.User},
		{ReasonSocketOverrun, d.SocketOverrun},
		{ReasonQueueOverflow, d.QueueOverflow},
		{ReasonRateLimit, d.RateLimit},
		{ReasonMalformed, d.Malformed},
		{ReasonSendError, d.SendError},
		{ReasonTooBig, d.TooBig},
		{ReasonKernelLost, d.KernelLost},
		{ReasonDedup, d.Dedup},
	}
}

var (
	sessionLabels = []string{"session", "method"}
	readerLabels  = []string{"session", "method", "kind", "num"}
	targetLabels  = []string{"session", "method", "target", "kind"}
)

// descs are the metric descriptions, built once per Collector.
type descs struct {
	buildInfo, startTime, generation, reloadOK, reloadTime *prometheus.Desc

	seenPackets, seenBytes, copiedPackets, copiedBytes *prometheus.Desc
	offered, received, inFlight, dropped, kernelSent   *prometheus.Desc
	skipped                                            *prometheus.Desc
	enobufs, verdictErrors, state, missing             *prometheus.Desc
	missingRoutes, drift                               *prometheus.Desc

	queueDepth, queueCap, workers *prometheus.Desc

	readerUp, readerPackets, readerDatagrams, readerENOBUFS *prometheus.Desc
	readerRecvErrors, readerVerdicts, readerVerdictErrors   *prometheus.Desc

	targetPackets, targetBytes, targetErrors *prometheus.Desc
	tunnelCut, tunnelFrag                    *prometheus.Desc
	clientRecords, clientDropped             *prometheus.Desc

	ifaceUp *prometheus.Desc
}

func newDescs() *descs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("nfclone_"+name, help, labels, nil)
	}
	sl := func(extra ...string) []string { return append(append([]string{}, sessionLabels...), extra...) }
	return &descs{
		buildInfo:  d("build_info", "Always 1; the version label is nfclone's version.", "version"),
		startTime:  d("start_time_seconds", "Start time of the daemon, seconds since the Unix epoch."),
		generation: d("rule_generation", "Successful rule applies: 1 after start, +1 per reload or re-bind."),
		reloadOK:   d("last_reload_success", "1 if the last reload (or the start, before any reload) succeeded, 0 if it failed and the previous configuration still runs."),
		reloadTime: d("last_reload_timestamp_seconds", "Time of the last reload (or of the start), seconds since the Unix epoch."),

		seenPackets:   d("session_seen_packets_total", "Packets that entered the session's filter (dup: kernel rule counter; queue/log: packets received from the kernel).", sl()...),
		seenBytes:     d("session_seen_bytes_total", "Bytes of the packets that entered the session's filter.", sl()...),
		copiedPackets: d("session_copied_packets_total", "Copies made: sent to every target (queue/log) or reaching the dup statement (dup).", sl()...),
		copiedBytes:   d("session_copied_bytes_total", "Bytes of the copies made.", sl()...),
		offered:       d("session_offered_packets_total", "Packets the kernel tried to hand to nfclone (userspace sessions): copied + dropped + in flight.", sl()...),
		kernelSent:    d("session_kernel_sent_packets_total", "Of the copies made, those a kernel-routed session's kernel sent without nfclone reading them (its fail-open queue or its socket was full).", sl()...),
		received:      d("session_received_packets_total", "Packets read from the kernel (userspace sessions).", sl()...),
		inFlight:      d("session_in_flight_packets", "Copies received but not yet sent or dropped (userspace sessions).", sl()...),
		dropped:       d("session_dropped_packets_total", "Copies lost, by reason (the session's ledger); originals are never dropped.", sl("reason")...),
		skipped:       d("session_skipped_packets_total", "Packets a session's selectors kept from being copied, by selector (kernel rule counters; not losses).", sl("selector")...),
		enobufs:       d("session_enobufs_events_total", "ENOBUFS receive errors on the session's netlink sockets (events, not packets).", sl()...),
		verdictErrors: d("session_verdict_errors_total", "Verdict messages the kernel refused.", sl()...),
		state:         d("session_state", "1 for the session's current state: running, or waiting for a missing interface or gateway route.", sl("state")...),
		missing:       d("session_missing_interfaces", "Interfaces the session needs that are missing.", sl()...),
		missingRoutes: d("session_missing_routes", "Gateway routes the session's copies need that are not in the kernel (a link down or a device missing); copies to them are not sent until the route is back.", sl()...),
		drift:         d("routing_drift", "Items of the routing plan (routes, rules, neighbours, flags, created devices) the kernel does not hold and nfclone cannot put back yet."),

		queueDepth: d("copy_queue_depth", "Copies waiting in the session's userspace copy queue.", sl()...),
		queueCap:   d("copy_queue_capacity", "Capacity of the session's copy queue; copies beyond it are dropped (reason queue_overflow).", sl()...),
		workers:    d("workers", "Worker goroutines sending the session's copies.", sl()...),

		readerUp:            d("reader_up", "1 if the NFQUEUE/NFLOG reader is running.", readerLabels...),
		readerPackets:       d("reader_packets_total", "Packet messages read by the reader.", readerLabels...),
		readerDatagrams:     d("reader_datagrams_total", "Netlink datagrams read by the reader.", readerLabels...),
		readerENOBUFS:       d("reader_enobufs_total", "ENOBUFS errors on the reader's socket (events, not packets).", readerLabels...),
		readerRecvErrors:    d("reader_receive_errors_total", "Receive errors on the reader's socket.", readerLabels...),
		readerVerdicts:      d("reader_verdict_messages_total", "Verdict messages sent by the reader (batch verdicts).", readerLabels...),
		readerVerdictErrors: d("reader_verdict_errors_total", "Verdict messages of the reader the kernel refused.", readerLabels...),

		targetPackets: d("target_sent_packets_total", "Copies the target sent (userspace targets).", targetLabels...),
		targetBytes:   d("target_sent_bytes_total", "Bytes the target sent.", targetLabels...),
		targetErrors:  d("target_errors_total", "Copies the target failed to send.", targetLabels...),
		tunnelCut:     d("target_tunnel_cut_total", "TCP super-packets the kernel sent into the target's VXLAN device with their segment size lowered to fit the path (nfclone's segment-size program).", targetLabels...),
		tunnelFrag:    d("target_tunnel_fragmented_total", "Single packets longer than the path takes that the kernel sent into the target's VXLAN device, each in two outer fragments.", targetLabels...),
		clientRecords: d("target_client_records_total", "Copies streamed to one connected client of a pcap-over-ip target.", append(append([]string{}, targetLabels...), "client")...),
		clientDropped: d("target_client_dropped_total", "Copies dropped for one client of a pcap-over-ip target (its buffer was full: a slow or stopped client).", append(append([]string{}, targetLabels...), "client")...),

		ifaceUp: d("interface_up", "1 if the interface is present, 0 if it is missing (sessions using it wait).", "interface"),
	}
}

func (d *descs) all() []*prometheus.Desc {
	return []*prometheus.Desc{
		d.buildInfo, d.startTime, d.generation, d.reloadOK, d.reloadTime,
		d.seenPackets, d.seenBytes, d.copiedPackets, d.copiedBytes,
		d.offered, d.received, d.inFlight, d.dropped, d.kernelSent, d.skipped,
		d.enobufs, d.verdictErrors, d.state, d.missing, d.missingRoutes, d.drift,
		d.queueDepth, d.queueCap, d.workers,
		d.readerUp, d.readerPackets, d.readerDatagrams, d.readerENOBUFS,
		d.readerRecvErrors, d.readerVerdicts, d.readerVerdictErrors,
		d.targetPackets, d.targetBytes, d.targetErrors, d.tunnelCut, d.tunnelFrag, d.clientRecords, d.clientDropped,
		d.ifaceUp,
	}
}

// Collector is a prometheus.Collector over the daemon's Status. Create it
// with New; it is safe for concurrent scrapes (source must be too).
type Collector struct {
	source func() status.Status
	d      *descs
	reg    *prometheus.Registry
}

// New returns a Collector that calls source once per scrape. The Collector
// is registered, with the Go and process collectors, in a registry of its
// own, served by Handler.
func New(source func() status.Status) *Collector {
	c := &Collector{source: source, d: newDescs(), reg: prometheus.NewRegistry()}
	c.reg.MustRegister(
		c,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return c
}

// Registry returns the Collector's registry (for tests and embedding).
func (c *Collector) Registry() *prometheus.Registry { return c.reg }

// Handler returns the HTTP handler of the metrics (Prometheus text format,
// or OpenMetrics/protobuf when the scraper asks for them).
func (c *Collector) Handler() http.Handler {
	return promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.d.all() {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one Status snapshot per call.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.source()
	d := c.d
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}

	version := s.Version
	if version == "" {
		version = "unknown"
	}
	gauge(d.buildInfo, 1, version)
	if !s.Started.IsZero() {
		gauge(d.startTime, unixSeconds(s.Started))
	}
	gauge(d.generation, float64(s.Generation))
	gauge(d.drift, float64(len(s.Drift)))
	reloadOK, reloadAt := 1.0, s.Started
	if r := s.LastReload; r != nil {
		reloadAt = r.Time
		if !r.OK {
			reloadOK = 0
		}
	}
	gauge(d.reloadOK, reloadOK)
	if !reloadAt.IsZero() {
		gauge(d.reloadTime, unixSeconds(reloadAt))
	}

	// Label sets must be unique within a scrape, or the whole scrape
	// fails; the engine should never repeat a name, but a repeated one
	// gets a "#2" suffix rather than breaking the metrics.
	sessions := uniq{}
	for _, ss := range s.Sessions {
		name := sessions.name(ss.Name)
		sl := []string{name, ss.Method}
		with := func(extra ...string) []string { return append(append([]string{}, sl...), extra...) }

		counter(d.seenPackets, ss.Seen.Packets, sl...)
		counter(d.seenBytes, ss.Seen.Bytes, sl...)
		counter(d.copiedPackets, ss.Copied.Packets, sl...)
		counter(d.copiedBytes, ss.Copied.Bytes, sl...)
		for _, st := range sessionStates {
			v := 0.0
			if ss.State == st {
				v = 1
			}
			gauge(d.state, v, with(st)...)
		}
		gauge(d.missing, float64(len(ss.Missing)), sl...)
		gauge(d.missingRoutes, float64(len(ss.MissingRoutes)), sl...)

		sk := ss.Skipped
		if l := ss.Ledger; l != nil {
			sk = &l.Skipped
		}
		if sk != nil {
			for _, r := range sk.Reasons() {
				counter(d.skipped, r.Packets, with(r.Name)...)
			}
		}
		if l := ss.Ledger; l != nil {
			counter(d.offered, l.Offered, sl...)
			counter(d.received, l.Received, sl...)
			counter(d.kernelSent, l.KernelSent, sl...)
			gauge(d.inFlight, float64(l.InFlight), sl...)
			for _, r := range dropsByReason(l.Drops) {
				counter(d.dropped, r.value, with(r.reason)...)
			}
			counter(d.enobufs, l.ENOBUFS, sl...)
			counter(d.verdictErrors, l.VerdictErrors, sl...)
		}
		if q := ss.Queue; q != nil {
			gauge(d.queueDepth, float64(q.Depth), sl...)
			gauge(d.queueCap, float64(q.Cap), sl...)
			gauge(d.workers, float64(q.Workers), sl...)
		}

		readers := uniq{}
		for _, r := range ss.Readers {
			num := readers.name(strconv.Itoa(r.Num), r.Kind)
			rl := with(r.Kind, num)
			up := 0.0
			if r.Running {
				up = 1
			}
			gauge(d.readerUp, up, rl...)
			counter(d.readerPackets, r.Stats.Packets, rl...)
			counter(d.readerDatagrams, r.Stats.Datagrams, rl...)
			counter(d.readerENOBUFS, r.Stats.ENOBUFS, rl...)
			counter(d.readerRecvErrors, r.Stats.RecvErrors, rl...)
			counter(d.readerVerdicts, r.Stats.Verdicts, rl...)
			counter(d.readerVerdictErrors, r.Stats.VerdictErrors, rl...)
		}

		targets := uniq{}
		for _, t := range ss.Targets {
			tl := with(targets.name(t.Name, t.Kind), t.Kind)
			if c := t.Tunnel; c != nil {
				counter(d.tunnelCut, c.Cut, tl...)
				counter(d.tunnelFrag, c.Fragmented, tl...)
			}
			if t.Stats == nil {
				continue // kernel (dup) targets: the session counters tell
			}
			counter(d.targetPackets, t.Stats.Sent, tl...)
			counter(d.targetBytes, t.Stats.Bytes, tl...)
			counter(d.targetErrors, t.Stats.Errors, tl...)
			for _, c := range t.Clients {
				cl := append(append([]string{}, tl...), fmt.Sprintf("%d:%s", c.ID, c.Remote))
				counter(d.clientRecords, c.Sent, cl...)
				counter(d.clientDropped, c.Dropped, cl...)
			}
		}
	}

	ifaces := uniq{}
	for _, i := range s.Interfaces {
		up := 0.0
		if i.Present {
			up = 1
		}
		gauge(d.ifaceUp, up, ifaces.name(i.Name))
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// uniq makes names unique within one scope: the second "x" is "x#2".
type uniq map[string]int

// name returns name, suffixed if name (with the same scope keys) was seen.
func (u uniq) name(name string, scope ...string) string {
	key := strings.Join(append([]string{name}, scope...), "\x00")
	u[key]++
	if n := u[key]; n > 1 {
		return name + "#" + strconv.Itoa(n)
	}
	return name
}

// Serve serves the Collector's metrics at listen (host:port) on Path, and
// "ok" on HealthPath, until ctx is done; then it shuts the server down
// (waiting up to 5 s for scrapes in progress) and returns nil. An empty
// listen disables the endpoint: Serve returns nil at once. An address that
// cannot be bound is returned as an error at once.
func Serve(ctx context.Context, listen string, c *Collector, log *slog.Logger) error {
	if listen == "" {
		return nil
	}
	if log == nil {
		log = slog.Default()
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", listen)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, c.Handler())
	mux.HandleFunc(HealthPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "nfclone: metrics at %s\n", Path)
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("metrics: serving", "listen", ln.Addr().String(), "path", Path)

	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		// Serve only returns on its own when the listener fails.
		return fmt.Errorf("metrics: serve on %s: %w", listen, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	serr := srv.Shutdown(sctx)
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("metrics: server stopped", "err", err)
	}
	if serr != nil {
		srv.Close()
		log.Warn("metrics: shutdown", "err", serr)
	}
	return nil
}
