package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// TestBenchQuick runs the whole harness in quick mode (about 1 s per phase)
// and checks only that every phase produced numbers and that every ledger
// of the UDP phases balances: it is a benchmark, the figures are not
// asserted (nor the TCP phases' copy ratios, which depend on the data path).
func TestBenchQuick(t *testing.T) {
	lab.RequireRoot(t)
	lab.RequireTools(t, "trafgen", "nft", "iperf3", "ethtool")
	if testing.Short() {
		t.Skip("-short")
	}
	root, err := lab.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "nfclone")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/nfclone")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building nfclone: %v\n%s", err, out)
	}
	l := lab.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	out := filepath.Join(t.TempDir(), "bench.json")
	var log strings.Builder
	r, err := Run(ctx, Options{
		Lab:     Lab{Suffix: l.Suffix, Src: l.Src, Eng: l.Eng, Col: l.Col, Col2: l.Col2},
		Nfclone: bin, WorkDir: t.TempDir(), Out: out, Quick: true, Log: &log,
	})
	t.Log(log.String())
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	var sb strings.Builder
	Print(&sb, r)
	t.Log(sb.String())
	if _, err := os.Stat(out); err != nil {
		t.Errorf("JSON results: %v", err)
	}

	checkLoad := func(lr *LoadRun) {
		t.Helper()
		if lr == nil {
			t.Errorf("a load phase is missing")
			return
		}
		if lr.OfferedPPS <= 0 || lr.OriginalsPPS <= 0 {
			t.Errorf("%s: offered %.0f originals %.0f pps", lr.Phase, lr.OfferedPPS, lr.OriginalsPPS)
		}
		if lr.Method == "none" {
			return
		}
		if lr.CopiesPPS <= 0 {
			t.Errorf("%s: no copies", lr.Phase)
		}
		if lr.VmHWMKiB <= 0 {
			t.Errorf("%s: no VmHWM", lr.Phase)
		}
		if lr.Method == "dup" {
			return
		}
		if lr.Ledger == nil {
			t.Errorf("%s: no session ledger line", lr.Phase)
		} else if !lr.Ledger.Balanced || lr.Ledger.Offered == 0 {
			t.Errorf("%s: ledger %+v", lr.Phase, *lr.Ledger)
		}
	}
	if len(r.Saturate) != 7 { // none, dup, queue, log, queue count 2, queue and log to vxlan
		t.Errorf("%d saturating phases, want 7", len(r.Saturate))
	}
	for _, lr := range r.Saturate {
		checkLoad(lr)
	}
	if r.Lossless == nil || r.Lossless.Dup == nil {
		t.Fatalf("no lossless phase")
	}
	checkLoad(r.Lossless.Dup)
	checkLoad(r.Lossless.Queue)
	checkLoad(r.Lossless.Log)
	checkLoad(r.Overload)
	if len(r.Latency) != 4 {
		t.Errorf("%d latency phases, want 4", len(r.Latency))
	}
	for _, l := range r.Latency {
		if l.Received == 0 || l.P50US <= 0 || l.P99US <= 0 {
			t.Errorf("latency/%s: %+v", l.Method, l.Latency)
		}
		if l.Method != "none" && l.Method != "dup" && (l.Ledger == nil || !l.Ledger.Balanced || l.Ledger.Offered == 0) {
			t.Errorf("latency/%s: ledger %+v", l.Method, l.Ledger)
		}
	}
	for _, k := range []string{"copies_queue_over_dup", "copies_log_over_dup", "originals_queue_over_dup", "lossless_copies_queue_over_dup"} {
		if r.Ratios[k] <= 0 {
			t.Errorf("ratio %s = %v", k, r.Ratios[k])
		}
	}

	// TCP bulk (quick: dup and log to the gateway, 1 stream, unlimited and 1 Gbit/s).
	if want := len(tcpCases(true, nil)); len(r.TCP) != want {
		t.Errorf("%d TCP phases, want %d", len(r.TCP), want)
	}
	for _, tr := range r.TCP {
		if tr.OriginalsGbps <= 0 || tr.Seconds <= 0 || tr.OrigPackets == 0 || tr.OrigPayload == 0 {
			t.Errorf("%s: originals %.2f Gbit/s over %.1f s, %d packets / %d payload bytes at col2", tr.Phase, tr.OriginalsGbps, tr.Seconds, tr.OrigPackets, tr.OrigPayload)
		}
		if tr.VmHWMKiB <= 0 {
			t.Errorf("%s: no VmHWM", tr.Phase)
		}
		if tr.Method == "dup" && tr.CopyPayload == 0 {
			t.Errorf("%s: the kernel's dup copied nothing to col", tr.Phase)
		}
		if tr.Method != "dup" && (tr.Ledger == nil || tr.Ledger.Offered == 0) {
			t.Errorf("%s: ledger %+v", tr.Phase, tr.Ledger)
		}
		if tr.OriginalsOverDup <= 0 {
			t.Errorf("%s: no ratio to dup", tr.Phase)
		}
		if tr.CC != DefaultTCPCC {
			t.Errorf("%s: iperf3's sender used congestion control %q, want the default %q", tr.Phase, tr.CC, DefaultTCPCC)
		}
	}
	if s := r.TCPSetup; s == nil || len(s.Offloads) != 2 {
		t.Errorf("TCP setup: %+v", s)
	}
}

func TestTCPCases(t *testing.T) {
	full := tcpCases(false, nil)
	if len(full) != 3*4*2*2 { // targets × methods × streams × rates
		t.Errorf("%d TCP phases, want 48", len(full))
	}
	seen := map[string]bool{}
	for i, c := range full {
		n := c.name()
		if seen[n] {
			t.Errorf("phase %s twice", n)
		}
		seen[n] = true
		// dup runs before the phases compared with it
		if c.method != "dup" && !seen[c.peer()] {
			t.Errorf("phase %d %s runs before %s", i, n, c.peer())
		}
	}
	for _, n := range []string{"tcp/dup/gateway/P1/max", "tcp/queue/device/P4/1G", "tcp/hold/vxlan/P1/max", "tcp/log/vxlan/P4/max"} {
		if !seen[n] {
			t.Errorf("no phase %s", n)
		}
	}
	o := Options{Phases: []string{"tcp/log/vxlan", "tcp/dup/gateway/P1"}}
	if o.selected("udp", "") || !o.anyTCP() || !o.selected("tcp", "tcp/log/vxlan/P4/1G") || o.selected("tcp", "tcp/log/device/P1/max") ||
		!o.selected("tcp", "tcp/dup/gateway/P1/1G") {
		t.Errorf("selection %v wrong", o.Phases)
	}
	o = Options{Phases: []string{"udp"}}
	if !o.selected("udp", "") || o.anyTCP() {
		t.Errorf("selection %v wrong", o.Phases)
	}
	if o := (Options{}); !o.selected("udp", "") || !o.selected("tcp", "tcp/dup/gateway/P1/max") {
		t.Error("empty selection must select everything")
	}
	for d, want := range map[time.Duration]float64{0: 1, 500 * time.Millisecond: 1, 3 * time.Second: 3, 2500 * time.Millisecond: 3} {
		if got := tcpSeconds(d); got != want {
			t.Errorf("tcpSeconds(%v) = %v, want %v", d, got, want)
		}
	}
}

func TestTCPRatesSweep(t *testing.T) {
	rates, err := ParseTCPRates(" 4, 2,2.5,")
	if err != nil || !slices.Equal(rates, []int64{4e9, 2e9, 2.5e9}) {
		t.Fatalf("ParseTCPRates: %v %v", rates, err)
	}
	for _, bad := range []string{"x", "0", "-1", "401", "NaN"} {
		if _, err := ParseTCPRates(bad); err == nil {
			t.Errorf("ParseTCPRates(%q) accepted", bad)
		}
	}
	// 1 Gbit/s twice is one rate; the rates run ascending after unlimited.
	cases := tcpCases(true, []int64{4e9, 1e9, 2.5e9})
	var names []string
	for _, c := range cases {
		names = append(names, c.name())
	}
	want := []string{
		"tcp/dup/gateway/P1/max", "tcp/log/gateway/P1/max",
		"tcp/dup/gateway/P1/1G", "tcp/log/gateway/P1/1G",
		"tcp/dup/gateway/P1/2.5G", "tcp/log/gateway/P1/2.5G",
		"tcp/dup/gateway/P1/4G", "tcp/log/gateway/P1/4G",
	}
	if !slices.Equal(names, want) {
		t.Errorf("phases\n got %v\nwant %v", names, want)
	}
	if n := len(tcpCases(false, []int64{2e9, 4e9})); n != 3*4*2*4 {
		t.Errorf("%d phases with two extra rates, want %d", n, 3*4*2*4)
	}

	run := func(method string, streams int, rate int64, ratio float64) *TCPRun {
		return &TCPRun{Method: method, Target: "device", Streams: streams, OfferedBps: rate, CopyRatio: ratio, OriginalsGbps: 9, HostCPU: 1.2}
	}
	dupSat, dup6 := run("dup", 1, 0, 1), run("dup", 1, 6e9, 1)
	dupSat.OriginalsGbps, dup6.HostCPU = 12, 0.8
	got := completeness([]*TCPRun{
		dupSat, dup6, run("queue", 1, 0, 0.4),
		run("queue", 1, 1e9, 1), run("queue", 1, 4e9, 0.999), run("queue", 1, 2e9, 0.995),
		run("queue", 1, 8e9, 0.7), run("queue", 1, 6e9, 1), // complete again above a short rate: still short at 8
		run("log", 1, 1e9, 0.5), run("log", 1, 2e9, 1),
		run("hold", 4, 1e9, 1), run("hold", 4, 0, 1),
	}, 2)
	if len(got) != 3 {
		t.Fatalf("%d summaries, want queue, log, hold: %+v", len(got), got)
	}
	q, l, h := got[0], got[1], got[2]
	if q.Method != "queue" || q.CompleteUpToBps != 6e9 || q.CompleteGbps != 9 || q.ShortAtBps != 8e9 || q.ShortRatio != 0.7 || !q.SaturationRan || q.SaturationRatio != 0.4 {
		t.Errorf("queue: %+v", q)
	}
	// The cost at 6 Gbit/s: 1.2 CPUs for 9 Gbit/s, so two CPUs carry 15; dup took 0.8 there, 12 unlimited.
	if q.CompleteHostCPU != 1.2 || q.DupHostCPU != 0.8 || q.AllCoresGbps != 15 || q.DupSaturationGbps != 12 {
		t.Errorf("queue's cost: %+v", q)
	}
	// No dup phase at hold's complete rate (1 Gbit/s, four streams): no dup cost; nothing complete for log: no cost.
	if h.DupHostCPU != 0 || h.DupSaturationGbps != 0 || h.AllCoresGbps != 15 || l.CompleteHostCPU != 0 || l.AllCoresGbps != 0 {
		t.Errorf("hold's or log's cost: %+v %+v", h, l)
	}
	// Short at the lowest rate: complete up to none, even if a higher rate was complete.
	if l.Method != "log" || l.CompleteUpToBps != 0 || l.ShortAtBps != 1e9 || l.SaturationRan {
		t.Errorf("log: %+v", l)
	}
	if h.Method != "hold" || h.Streams != 4 || h.CompleteUpToBps != 1e9 || h.ShortAtBps != 0 || h.SaturationRatio != 1 {
		t.Errorf("hold: %+v", h)
	}
	var b strings.Builder
	printComplete(&b, &Results{TCPComplete: got, TCPCC: "cubic"})
	for _, want := range []string{"queue", "6 (9.00)", "8 (0.70)", "none", "1 (0.50)", "9.00 (1.00)", "1.20 (0.80)", "15.0 (12.0)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestParseHostIdle(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice, in USER_HZ
	idle, err := parseHostIdle("cpu  100 5 50 800 20 3 40 2 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
	if err != nil || idle != 8.2 {
		t.Errorf("idle %v s: %v, want 8.2", idle, err)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4 5 6 7 8\n", "cpu 1 2 3\n", "cpu 1 2 3 x 5 6 7 8\n"} {
		if _, err := parseHostIdle(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if idle, err := hostIdle(); err != nil || idle <= 0 {
		t.Errorf("this machine: idle %v s: %v", idle, err)
	}
	// Two seconds of wall time in which the CPUs were idle for 0.5 s in all:
	// NumCPU - 0.25 busy.
	t0 := time.Unix(100, 0)
	a, b := hostSample{idle: 10, at: t0}, hostSample{idle: 10.5, at: t0.Add(2 * time.Second)}
	if got, want := b.busySince(a), float64(runtime.NumCPU())-0.25; got != want {
		t.Errorf("busySince: %v, want %v", got, want)
	}
	if got := a.busySince(a); got != 0 {
		t.Errorf("busySince over no time: %v", got)
	}
}

func TestParseIperfAndPayload(t *testing.T) {
	out := `{"start":{},"intervals":[],"end":{"sum_sent":{"seconds":3,"bytes":1000,"bits_per_second":5.5e9,"retransmits":7},
"sum_received":{"seconds":3.01,"bytes":990,"bits_per_second":5.4e9},"sender_tcp_congestion":"cubic","receiver_tcp_congestion":"cubic"}}`
	r, err := parseIperf(out)
	if err != nil || r.End.SumReceived.BitsPerSecond != 5.4e9 || r.End.SumSent.Retransmits != 7 || r.End.SumReceived.Seconds != 3.01 ||
		r.End.SenderCC != "cubic" {
		t.Errorf("%+v %v", r, err)
	}
	if _, err := parseIperf(`{"start":{},"error":"unable to connect to server: Connection refused"}`); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("error not reported: %v", err)
	}
	// One 64 KiB super-packet and the 45 wire segments it becomes carry the same payload.
	const seg = 1448
	if a, b := payload(1, 45*seg+tcpHeaders), payload(45, 45*(seg+tcpHeaders)); a != b || a != 45*seg {
		t.Errorf("payload %d vs %d", a, b)
	}
	if payload(3, 100) != 0 {
		t.Error("payload below zero")
	}
}

func TestCheckCC(t *testing.T) {
	b, err := os.ReadFile(availableCC)
	if err != nil {
		t.Skipf("no %s: %v", availableCC, err)
	}
	if have := strings.Fields(string(b)); len(have) > 0 {
		if err := checkCC(have[0]); err != nil {
			t.Errorf("checkCC(%q), listed in %q: %v", have[0], b, err)
		}
	}
	if err := checkCC("no-such-cc"); err == nil || !strings.Contains(err.Error(), "the kernel has only") {
		t.Errorf("checkCC of an unknown congestion control: %v", err)
	}
}

func TestParseLedgers(t *testing.T) {
	in := `{"time":"x","level":"INFO","msg":"rules installed"}
{"time":"2026","level":"INFO","msg":"session ledger","session":"bench","offered":822528,"copied":814227,"drops":8301,"queue_overflow":8301,"send_errors":0,"kernel_queue":0,"socket_overrun":0}
{"time":"2026","level":"INFO","msg":"session ledger","session":"b2","offered":10,"copied":5,"drops":4,"queue_overflow":1,"send_errors":0,"kernel_queue":0,"socket_overrun":0}
{"time":"2026","level":"INFO","msg":"session ledger","session":"b3","offered":100,"copied":60,"drops":40,"queue_overflow":10,"user":25,"malformed":5}
`
	ls, err := parseLedgers(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 3 {
		t.Fatalf("%d ledgers", len(ls))
	}
	if !ls[0].Balanced || ls[0].QueueOverflow != 8301 || ls[0].Session != "bench" {
		t.Errorf("%+v", ls[0])
	}
	if ls[1].Balanced || ls[1].Other != 3 {
		t.Errorf("%+v", ls[1])
	}
	if !ls[2].Balanced || ls[2].User != 25 || ls[2].Other != 5 || !strings.Contains(ledgerCell(&ls[2]), "user 25, other 5") {
		t.Errorf("%+v: %s", ls[2], ledgerCell(&ls[2]))
	}
}

func TestParseNetDev(t *testing.T) {
	in := `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
    e0: 98995200 1649920    0    7    0     0          0         0     1234      12    0    3    0     0       0          0
`
	for stat, want := range map[string]uint64{"rx_packets": 1649920, "rx_dropped": 7, "tx_packets": 12, "tx_dropped": 3} {
		got, err := parseNetDev(in, "e0", stat)
		if err != nil || got != want {
			t.Errorf("%s = %d, %v; want %d", stat, got, err, want)
		}
	}
	if _, err := parseNetDev(in, "e9", "rx_packets"); err == nil {
		t.Error("missing interface: no error")
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if p := percentile(v, 50); p != 5 {
		t.Errorf("p50 %v", p)
	}
	if p := percentile(v, 99); p != 10 {
		t.Errorf("p99 %v", p)
	}
	l := summarize([]float64{3, 1, 2}, 4, time.Second)
	if l.Lost != 1 || l.P50US != 2 || l.MaxUS != 3 || l.RatePPS != 4 {
		t.Errorf("%+v", l)
	}
}
