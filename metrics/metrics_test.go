package metrics

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nfclone/nfclone/nfq"
	"github.com/nfclone/nfclone/pipeline"
	"github.com/nfclone/nfclone/sink"
	"github.com/nfclone/nfclone/status"
)

var started = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func fakeStatus() status.Status {
	return status.Status{
		PID:        4242,
		Version:    "v1.2.3",
		Started:    started,
		Config:     "/etc/nfclone/nfclone.yaml",
		Table:      "nfclone",
		Generation: 3,
		LastReload: &status.ReloadStatus{Time: started.Add(time.Hour), OK: false, Error: "sessions[0].name: bad"},
		Sessions: []status.SessionStatus{
			{
				Name:   "ids",
				Method: "queue",
				State:  "running",
				Seen:   status.Counter{Packets: 1000, Bytes: 98000},
				Copied: status.Counter{Packets: 950, Bytes: 93100},
				Ledger: &pipeline.Snapshot{
					Offered: 1010, Received: 1000, Copied: 950, Bytes: 93100, InFlight: 5,
					Drops: pipeline.Drops{KernelQueue: 1, User: 2, SocketOverrun: 7, QueueOverflow: 30,
						RateLimit: 0, Malformed: 4, SendError: 11},
					ENOBUFS: 2, VerdictErrors: 1, KernelSent: 6,
					Skipped: pipeline.Skipped{FirstPackets: 300, Priority: 12},
				},
				Queue: &status.QueueStatus{Depth: 17, Cap: 8192, Workers: 2},
				Readers: []status.ReaderStatus{
					{Kind: "nfqueue", Num: 0, Running: true, Stats: nfq.ReaderStats{Datagrams: 40, Packets: 600, Verdicts: 12, ENOBUFS: 1}},
					{Kind: "nfqueue", Num: 1, Running: false, Stats: nfq.ReaderStats{Datagrams: 30, Packets: 400, Verdicts: 9, ENOBUFS: 1, RecvErrors: 3, VerdictErrors: 1}},
				},
				Targets: []status.TargetStatus{
					{Name: "gateway 10.77.2.2 dev e1", Kind: "gateway", Stats: &sink.Stats{Sent: 955, Bytes: 93590, Errors: 6, LastError: "no route"}},
					{Name: "device e3", Kind: "device", Stats: &sink.Stats{Sent: 961, Bytes: 94178, Errors: 0}},
					{Name: "ids/2:pcap-over-ip", Kind: "pcap-over-ip", Stats: &sink.Stats{Sent: 961},
						Clients: []sink.PcapClientStats{{ID: 1, Remote: "10.77.2.2:40000", Sent: 900, Dropped: 61}, {ID: 2, Remote: "10.77.2.2:40002", Sent: 961}}},
				},
			},
			{
				Name:    "tap",
				Method:  "dup",
				State:   "waiting",
				Missing: []string{"e9"},
				// Not a combination a dup session has; the collector does not care.
				MissingRoutes: []string{"default via 10.77.2.2 dev e1 table 20036 (device e1 is down)"},
				Seen:          status.Counter{Packets: 77, Bytes: 7700},
				Copied:        status.Counter{Packets: 70, Bytes: 7000},
				Skipped:       &pipeline.Skipped{SampleFlows: 7},
				Targets:       []status.TargetStatus{{Name: "device e9", Kind: "device"}},
			},
		},
		Drift: []string{"inet route default via 10.77.2.2 dev e1 table 20036: device e1 is down"},
		Interfaces: []status.InterfaceStatus{
			{Name: "e0", Present: true, Index: 2, UsedBy: []string{"ids"}},
			{Name: "e9", Present: false, UsedBy: []string{"tap"}},
		},
	}
}

// scrape fetches the handler's output in the Prometheus text format.
func scrape(t *testing.T, c *Collector) []byte {
	t.Helper()
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+Path, nil)
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	return body
}

func parse(t *testing.T, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, body)
	}
	return fams
}

// value returns the value of the one sample of name whose labels include
// want; it fails if there is not exactly one.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	var found []float64
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			found = append(found, m.GetCounter().GetValue())
		case dto.MetricType_GAUGE:
			found = append(found, m.GetGauge().GetValue())
		default:
			t.Fatalf("%s: unexpected type %v", name, f.GetType())
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d samples, want 1", name, want, len(found))
	}
	return found[0]
}

func TestMetricsValues(t *testing.T) {
	c := New(fakeStatus)
	fams := parse(t, scrape(t, c))
	ids := map[string]string{"session": "ids", "method": "queue"}
	tap := map[string]string{"session": "tap", "method": "dup"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name   string
		labels map[string]string
		typ    dto.MetricType
		want   float64
	}{
		{"nfclone_build_info", map[string]string{"version": "v1.2.3"}, dto.MetricType_GAUGE, 1},
		{"nfclone_start_time_seconds", nil, dto.MetricType_GAUGE, float64(started.Unix())},
		{"nfclone_rule_generation", nil, dto.MetricType_GAUGE, 3},
		{"nfclone_last_reload_success", nil, dto.MetricType_GAUGE, 0},
		{"nfclone_last_reload_timestamp_seconds", nil, dto.MetricType_GAUGE, float64(started.Add(time.Hour).Unix())},

		{"nfclone_session_seen_packets_total", ids, dto.MetricType_COUNTER, 1000},
		{"nfclone_session_seen_bytes_total", ids, dto.MetricType_COUNTER, 98000},
		{"nfclone_session_copied_packets_total", ids, dto.MetricType_COUNTER, 950},
		{"nfclone_session_copied_bytes_total", ids, dto.MetricType_COUNTER, 93100},
		{"nfclone_session_offered_packets_total", ids, dto.MetricType_COUNTER, 1010},
		{"nfclone_session_received_packets_total", ids, dto.MetricType_COUNTER, 1000},
		{"nfclone_session_kernel_sent_packets_total", ids, dto.MetricType_COUNTER, 6},
		{"nfclone_session_in_flight_packets", ids, dto.MetricType_GAUGE, 5},
		{"nfclone_session_dropped_packets_total", with(ids, "reason", "kernel_queue"), dto.MetricType_COUNTER, 1},
		{"nfclone_session_dropped_packets_total", with(ids, "reason", "user"), dto.MetricType_COUNTER, 2},
		{"nfclone_session_dropped_packets_total", with(ids, "reason", "socket_overrun"), dto.MetricType_COUNTER, 7},
		{"nfclone_session_dropped_packets_total", with(ids, "reason", "queue_overflow"), dto.MetricType_COUNTER, 30},
		{"nfclone_session_dropped_packets_total", with(ids, "reason", "rate_limit"), dto.MetricType_COUNTER, 0},
		{"nfclone_session_dropped_packets_total", with(ids, "reason", "malformed"), dto.MetricType_COUNTER, 4},
		{"nfclone_session_dropped_packets_total", with(ids, "reason", "send_error"), dto.MetricType_COUNTER, 11},
		{"nfclone_session_skipped_packets_total", with(ids, "selector", "first_packets"), dto.MetricType_COUNTER, 300},
		{"nfclone_session_skipped_packets_total", with(ids, "selector", "priority"), dto.MetricType_COUNTER, 12},
		{"nfclone_session_skipped_packets_total", with(ids, "selector", "flow_rate"), dto.MetricType_COUNTER, 0},
		{"nfclone_session_skipped_packets_total", with(tap, "selector", "sample_flows"), dto.MetricType_COUNTER, 7},
		{"nfclone_session_enobufs_events_total", ids, dto.MetricType_COUNTER, 2},
		{"nfclone_session_verdict_errors_total", ids, dto.MetricType_COUNTER, 1},
		{"nfclone_session_state", with(ids, "state", "running"), dto.MetricType_GAUGE, 1},
		{"nfclone_session_state", with(ids, "state", "waiting"), dto.MetricType_GAUGE, 0},
		{"nfclone_session_missing_interfaces", ids, dto.MetricType_GAUGE, 0},
		{"nfclone_copy_queue_depth", ids, dto.MetricType_GAUGE, 17},
		{"nfclone_copy_queue_capacity", ids, dto.MetricType_GAUGE, 8192},
		{"nfclone_workers", ids, dto.MetricType_GAUGE, 2},

		{"nfclone_reader_up", with(ids, "kind", "nfqueue", "num", "0"), dto.MetricType_GAUGE, 1},
		{"nfclone_reader_up", with(ids, "kind", "nfqueue", "num", "1"), dto.MetricType_GAUGE, 0},
		{"nfclone_reader_packets_total", with(ids, "num", "0"), dto.MetricType_COUNTER, 600},
		{"nfclone_reader_packets_total", with(ids, "num", "1"), dto.MetricType_COUNTER, 400},
		{"nfclone_reader_datagrams_total", with(ids, "num", "1"), dto.MetricType_COUNTER, 30},
		{"nfclone_reader_enobufs_total", with(ids, "num", "1"), dto.MetricType_COUNTER, 1},
		{"nfclone_reader_receive_errors_total", with(ids, "num", "1"), dto.MetricType_COUNTER, 3},
		{"nfclone_reader_verdict_messages_total", with(ids, "num", "0"), dto.MetricType_COUNTER, 12},
		{"nfclone_reader_verdict_errors_total", with(ids, "num", "1"), dto.MetricType_COUNTER, 1},

		{"nfclone_target_sent_packets_total", with(ids, "target", "gateway 10.77.2.2 dev e1", "kind", "gateway"), dto.MetricType_COUNTER, 955},
		{"nfclone_target_sent_bytes_total", with(ids, "target", "gateway 10.77.2.2 dev e1"), dto.MetricType_COUNTER, 93590},
		{"nfclone_target_errors_total", with(ids, "target", "gateway 10.77.2.2 dev e1"), dto.MetricType_COUNTER, 6},
		{"nfclone_target_sent_packets_total", with(ids, "target", "device e3", "kind", "device"), dto.MetricType_COUNTER, 961},

		{"nfclone_session_seen_packets_total", tap, dto.MetricType_COUNTER, 77},
		{"nfclone_session_copied_bytes_total", tap, dto.MetricType_COUNTER, 7000},
		{"nfclone_session_state", with(tap, "state", "waiting"), dto.MetricType_GAUGE, 1},
		{"nfclone_session_missing_interfaces", tap, dto.MetricType_GAUGE, 1},
		{"nfclone_session_missing_routes", tap, dto.MetricType_GAUGE, 1},
		{"nfclone_session_missing_routes", ids, dto.MetricType_GAUGE, 0},
		{"nfclone_routing_drift", map[string]string{}, dto.MetricType_GAUGE, 1},

		{"nfclone_interface_up", map[string]string{"interface": "e0"}, dto.MetricType_GAUGE, 1},
		{"nfclone_interface_up", map[string]string{"interface": "e9"}, dto.MetricType_GAUGE, 0},
	}
	for _, tc := range cases {
		if got := fams[tc.name].GetType(); got != tc.typ {
			t.Errorf("%s: type %v, want %v", tc.name, got, tc.typ)
		}
		if got := value(t, fams, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}

	// A dup session has no ledger, queue, readers or userspace targets.
	for _, name := range []string{"nfclone_session_offered_packets_total", "nfclone_copy_queue_depth",
		"nfclone_session_dropped_packets_total", "nfclone_target_sent_packets_total"} {
		for _, m := range fams[name].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "session" && l.GetValue() == "tap" {
					t.Errorf("%s has a sample for the dup session", name)
				}
			}
		}
	}
	// Every drop reason is exported, zero or not (rates need the series).
	if n := len(fams["nfclone_session_dropped_packets_total"].GetMetric()); n != 10 {
		t.Errorf("dropped: %d series, want 10", n)
	}
	// The Go and process collectors are in the registry.
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no %s", name)
		}
	}
}

// TestMetricsFollowSource: one snapshot per scrape, counters equal what the
// source says at that moment.
func TestMetricsFollowSource(t *testing.T) {
	var n atomic.Uint64
	src := func() status.Status {
		s := fakeStatus()
		v := n.Load()
		s.Sessions[0].Copied.Packets = v
		s.Sessions[0].Ledger.Copied = v
		return s
	}
	c := New(src)
	for _, v := range []uint64{0, 1, 12345, 1 << 40} {
		n.Store(v)
		fams := parse(t, scrape(t, c))
		got := value(t, fams, "nfclone_session_copied_packets_total", map[string]string{"session": "ids"})
		if got != float64(v) {
			t.Errorf("copied = %v, want %v", got, v)
		}
	}
}

// TestMetricsEmptyAndDuplicates: an empty status scrapes cleanly, and
// repeated names never break a scrape.
func TestMetricsEmptyAndDuplicates(t *testing.T) {
	fams := parse(t, scrape(t, New(func() status.Status { return status.Status{} })))
	if v := value(t, fams, "nfclone_build_info", map[string]string{"version": "unknown"}); v != 1 {
		t.Errorf("build_info = %v", v)
	}
	if v := value(t, fams, "nfclone_last_reload_success", nil); v != 1 {
		t.Errorf("last_reload_success before any reload = %v, want 1", v)
	}

	dup := func() status.Status {
		s := fakeStatus()
		s.Sessions = append(s.Sessions, s.Sessions[0])
		s.Sessions[0].Targets = append(s.Sessions[0].Targets, s.Sessions[0].Targets[0])
		s.Sessions[0].Readers = append(s.Sessions[0].Readers, s.Sessions[0].Readers[0])
		s.Interfaces = append(s.Interfaces, s.Interfaces[0])
		return s
	}
	fams = parse(t, scrape(t, New(dup)))
	if v := value(t, fams, "nfclone_session_seen_packets_total", map[string]string{"session": "ids#2"}); v != 1000 {
		t.Errorf("second ids = %v", v)
	}
	if v := value(t, fams, "nfclone_target_sent_packets_total", map[string]string{"session": "ids", "target": "gateway 10.77.2.2 dev e1#2"}); v != 955 {
		t.Errorf("second target = %v", v)
	}
	if v := value(t, fams, "nfclone_target_client_dropped_total", map[string]string{"session": "ids", "target": "ids/2:pcap-over-ip", "client": "1:10.77.2.2:40000"}); v != 61 {
		t.Errorf("client drops = %v", v)
	}
	if v := value(t, fams, "nfclone_target_client_records_total", map[string]string{"session": "ids", "client": "2:10.77.2.2:40002"}); v != 961 {
		t.Errorf("client records = %v", v)
	}
	if v := value(t, fams, "nfclone_interface_up", map[string]string{"interface": "e0#2"}); v != 1 {
		t.Errorf("second e0 = %v", v)
	}
}

// TestMetricsLint runs client_golang's promlint (the linter behind
// `promtool check metrics`) on the nfclone_ metrics, and promtool itself
// when it is installed.
func TestMetricsLint(t *testing.T) {
	body := scrape(t, New(fakeStatus))
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "nfclone_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("NFCLONE_E2E") == "1" {
			t.Fatal("promtool not found (NFCLONE_E2E=1): install it with scripts/deps.sh")
		}
		t.Skip("promtool not found: skipping `promtool check metrics` (promlint checked above)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\n--- metrics ---\n%s", err, out, body)
	}
}

func TestServe(t *testing.T) {
	c := New(fakeStatus)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	// Disabled: returns at once.
	if err := Serve(context.Background(), "", c, log); err != nil {
		t.Fatalf("disabled: %v", err)
	}

	// Pick a free loopback port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, addr, c, log) }()

	var body []byte
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + Path)
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics server never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fams := parse(t, body)
	if v := value(t, fams, "nfclone_rule_generation", nil); v != 3 {
		t.Errorf("generation = %v", v)
	}
	resp, err := http.Get("http://" + addr + HealthPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz: %d", resp.StatusCode)
	}

	// A second server on the same address fails at once.
	if err := Serve(context.Background(), addr, c, log); err == nil {
		t.Error("second Serve on a used address succeeded")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if resp, err := http.Get("http://" + addr + Path); err == nil {
		resp.Body.Close()
		t.Error("server still answers after Serve returned")
	}
}
