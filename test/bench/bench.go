// Package bench is nfclone's benchmark harness: in the network-namespace lab
// (test/lab) it measures, in one run and at the same generator settings, the
// copies per second of the methods dup, queue and log, the originals'
// throughput past the engine (also with no rules at all), the latency the
// methods add to the originals, nfclone's peak RSS and the drop ledger of
// every userspace run. See docs/methods.md; scripts/bench.sh (make bench) drives it
// through cmd/nfbench, TestBenchQuick runs it in quick mode.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Lab names the lab's namespaces (scripts/lab.sh or test/lab build them).
type Lab struct {
	Suffix              string
	Src, Eng, Col, Col2 string
}

// Options configure one benchmark run.
type Options struct {
	Lab     Lab
	Nfclone string        // nfclone binary
	WorkDir string        // configs and state dirs (created if missing)
	Out     string        // JSON results path ("" = none)
	Quick   bool          // ~1 s per phase, one step of the lossless search
	Phase   time.Duration // measured window of each load phase (default 5 s, quick 1 s)
	// Flood, if set, adds flood/dup and flood/queue: the generator on every
	// CPU for this long (the hardening flood: RSS, originals, ledger).
	Flood time.Duration
	// FloodRate is the session rate (packets/s) of the flood/queue/rate and
	// flood/log/rate phases: the kernel's limit sheds what is over it before
	// any copy is made (0 = 50000).
	FloodRate int
	// ProbePPS is the rate of the latency probe (moderate load), default 5000.
	ProbePPS int
	// LosslessSteps bounds the search for the highest lossless dup load
	// (default 6, quick 1).
	LosslessSteps int
	// TCPPhase is the length of each TCP bulk phase (iperf3 -t, whole
	// seconds, at least 1; default 3 s, quick 1 s).
	TCPPhase time.Duration
	// TCPCC is the TCP senders' congestion control (iperf3 -C), default
	// DefaultTCPCC. It decides how much a single stream keeps in flight:
	// cubic fills the path until loss, bbr keeps about twice the
	// bandwidth-delay product of the lowest RTT it saw, so that the
	// latency a method adds to the originals limits bbr's stream.
	TCPCC string
	// TCPRates are offered rates (bit/s over all streams) that every TCP
	// case runs at too, beside unlimited and 1 Gbit/s: a sweep that finds up
	// to which rate each method copies everything (Results.TCPComplete).
	TCPRates []int64
	// UnderlayMTU, when set, is the MTU of the collector link (eng:e1,
	// col:e0) in the TCP phases: 9000 gives the vxlan targets a path that
	// takes a whole 1500-byte copy in VXLAN, where the kernel sends the
	// copies into nfclone's VXLAN device (queue.vxlan_kernel_route auto).
	// 0: the lab's 1500.
	UnderlayMTU int
	// Phases selects what runs: empty or "all" runs everything; "udp" the
	// 64-byte UDP phases (saturate, latency, lossless, overload, flood);
	// "tcp" the TCP bulk phases; any other entry is a prefix of TCP phase
	// names ("tcp/log", "tcp/dup/vxlan"). BENCH_PHASES=tcp,udp in nfbench.
	Phases []string
	Log    io.Writer // progress (default os.Stderr)
}

// selected reports whether the group ("udp", "tcp") or the TCP phase name
// runs under o.Phases.
func (o *Options) selected(group, name string) bool {
	if len(o.Phases) == 0 {
		return true
	}
	for _, p := range o.Phases {
		switch {
		case p == "all" || p == group:
			return true
		case group == "tcp" && name != "" && strings.HasPrefix(name, p):
			return true
		}
	}
	return false
}

// anyTCP reports whether some TCP phase may run under o.Phases.
func (o *Options) anyTCP() bool {
	if len(o.Phases) == 0 {
		return true
	}
	for _, p := range o.Phases {
		if p == "all" || strings.HasPrefix(p, "tcp") {
			return true
		}
	}
	return false
}

// Lab addresses and ports the benchmark uses.
const (
	srcIP    = "10.77.1.2"
	col2IP   = "10.77.4.2"
	colIP    = "10.77.2.2"
	sinkUDP  = 9    // discard port on col2: nothing listens (ICMP errors are rate-limited)
	probeUDP = 7777 // latency probe receiver on col2
	srcUDP   = 7778 // latency probe client port on src
)

// LoadRun is one phase of flooding src → col2 through eng.
type LoadRun struct {
	Phase      string `json:"phase"`
	Method     string `json:"method"` // none | dup | queue | log
	QueueCount int    `json:"queue_count,omitempty"`
	// TargetPPS is trafgen's rate limit (0: as fast as it can); GenCPUs its forks.
	TargetPPS int     `json:"target_pps"`
	GenCPUs   int     `json:"gen_cpus"`
	Seconds   float64 `json:"seconds"`
	// OfferedPPS: packets received by eng:e0 (what the generator got into the engine).
	OfferedPPS float64 `json:"offered_pps"`
	// OriginalsPPS: packets received by col2:e0 (originals forwarded past the engine).
	OriginalsPPS float64 `json:"originals_pps"`
	// CopiesPPS: packets received by col:e0 (copies that reached the collector).
	CopiesPPS float64 `json:"copies_pps"`
	// CopyFraction = CopiesPPS / OfferedPPS.
	CopyFraction float64 `json:"copy_fraction"`
	EngRxDropped uint64  `json:"eng_e0_rx_dropped"`
	// NfcloneCPU is nfclone's CPU time per second of the window (1.0 = one core).
	NfcloneCPU float64 `json:"nfclone_cpu,omitempty"`
	VmHWMKiB   int64   `json:"vmhwm_kib,omitempty"`
	// Whole-run totals (generator start to stop), to hold against the ledger.
	MatchedTotal   uint64  `json:"matched_total"`
	CopiesAtCol    uint64  `json:"copies_at_col_total"`
	Ledger         *Ledger `json:"ledger,omitempty"`
	UnledgeredLoss int64   `json:"unledgered_loss,omitempty"` // MatchedTotal - ledger offered
	ColVsCopied    int64   `json:"col_minus_ledger_copied,omitempty"`
	// KernelQueue is eng's /proc/net/netfilter/nfnetlink_queue just before
	// SIGTERM (queue, portid, waiting, copy mode, range, queue_dropped,
	// user_dropped, last id, 1), as evidence for the ledger.
	KernelQueue []string `json:"nfnetlink_queue,omitempty"`
}

// LatencyRun is one latency probe phase.
type LatencyRun struct {
	Method   string  `json:"method"`
	VmHWMKiB int64   `json:"vmhwm_kib,omitempty"`
	Ledger   *Ledger `json:"ledger,omitempty"`
	Latency
}

// Lossless is the search for the highest load that dup copies without loss.
type Lossless struct {
	Found   bool       `json:"found"`
	LoadPPS float64    `json:"load_pps"` // offered pps of the lossless dup step
	Steps   []*LoadRun `json:"steps"`
	Dup     *LoadRun   `json:"dup"`
	Queue   *LoadRun   `json:"queue"`
	Log     *LoadRun   `json:"log"`
}

// Target is one of the project's goals, reported (never asserted).
type Target struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Goal  string  `json:"goal"`
	Met   bool    `json:"met"`
}

// Results is everything one run measured.
type Results struct {
	Started   time.Time     `json:"started"`
	Kernel    string        `json:"kernel"`
	CPUs      int           `json:"cpus"`
	Quick     bool          `json:"quick"`
	PhaseSecs float64       `json:"phase_seconds"`
	Generator string        `json:"generator"`
	Saturate  []*LoadRun    `json:"saturate"`
	Latency   []*LatencyRun `json:"latency"`
	Lossless  *Lossless     `json:"lossless"`
	Overload  *LoadRun      `json:"overload"`
	Flood     []*LoadRun    `json:"flood,omitempty"`
	// TCP bulk phases (iperf3 through the engine, see tcp.go).
	TCPPhaseSecs float64            `json:"tcp_phase_seconds,omitempty"`
	TCPCC        string             `json:"tcp_congestion_control,omitempty"`
	TCPSetup     *TCPSetup          `json:"tcp_setup,omitempty"`
	TCP          []*TCPRun          `json:"tcp,omitempty"`
	TCPComplete  []*Completeness    `json:"tcp_complete,omitempty"`
	Ratios       map[string]float64 `json:"ratios"`
	Targets      []Target           `json:"targets"`
	Problems     []string           `json:"problems"`
	Elapsed      float64            `json:"elapsed_seconds"`
}

type harness struct {
	o       Options
	ctx     context.Context
	log     io.Writer
	pktFile string
	warm    time.Duration
}

func (h *harness) logf(format string, a ...any) {
	fmt.Fprintf(h.log, "bench: "+format+"\n", a...)
}

// Run runs the whole benchmark. It stops early (with an error) when ctx is
// cancelled; every process it started is gone when it returns.
func Run(ctx context.Context, o Options) (*Results, error) {
	if o.Log == nil {
		o.Log = os.Stderr
	}
	if o.Phase == 0 {
		o.Phase = 5 * time.Second
		if o.Quick {
			o.Phase = time.Second
		}
	}
	if o.ProbePPS == 0 {
		o.ProbePPS = 5000
	}
	if o.LosslessSteps == 0 {
		o.LosslessSteps = 6
		if o.Quick {
			o.LosslessSteps = 1
		}
	}
	if o.WorkDir == "" {
		d, err := os.MkdirTemp("", "nfclone-bench-")
		if err != nil {
			return nil, err
		}
		o.WorkDir = d
	}
	if err := os.MkdirAll(o.WorkDir, 0o700); err != nil {
		return nil, err
	}
	if o.TCPPhase == 0 {
		o.TCPPhase = 3 * time.Second
		if o.Quick {
			o.TCPPhase = time.Second
		}
	}
	if o.TCPCC == "" {
		o.TCPCC = DefaultTCPCC
	}
	for _, p := range o.Phases {
		if p != "all" && p != "udp" && !strings.HasPrefix(p, "tcp") {
			return nil, fmt.Errorf("phase selection %q: want all, udp, tcp or a prefix of a TCP phase name (tcp/log, tcp/dup/vxlan)", p)
		}
	}
	tools := []string{"ip"}
	if o.selected("udp", "") {
		tools = append(tools, "trafgen")
	}
	if o.anyTCP() {
		tools = append(tools, "iperf3", "ethtool", "nft")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found (scripts/deps.sh installs it)", tool)
		}
	}
	if o.anyTCP() {
		if err := checkCC(o.TCPCC); err != nil {
			return nil, err
		}
	}
	h := &harness{o: o, ctx: ctx, log: o.Log, warm: 500 * time.Millisecond}
	if o.Quick {
		h.warm = 250 * time.Millisecond
	}
	r := &Results{Started: time.Now().UTC(), CPUs: runtime.NumCPU(), Quick: o.Quick, PhaseSecs: o.Phase.Seconds(),
		Generator: "trafgen -P N on src:e0, 64-byte UDP frames 10.77.1.2:40000 -> 10.77.4.2:9 (eng:e0 MAC), forwarded by eng to col2",
		Ratios:    map[string]float64{}}
	if un, err := uname(); err == nil {
		r.Kernel = un
	}
	if err := h.prepare(); err != nil {
		return nil, err
	}

	if o.selected("udp", "") {
		if err := h.udpPhases(r); err != nil {
			return r, err
		}
	}
	if o.anyTCP() {
		r.TCPPhaseSecs, r.TCPCC = tcpSeconds(o.TCPPhase), o.TCPCC
		if err := h.tcpPhases(r); err != nil {
			return r, err
		}
	}

	h.derive(r)
	r.Elapsed = time.Since(r.Started).Seconds()
	if o.Out != "" {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return r, err
		}
		if err := os.WriteFile(o.Out, append(b, '\n'), 0o644); err != nil {
			return r, err
		}
	}
	return r, nil
}

// udpPhases runs the 64-byte UDP phases: saturating load, latency, the
// lossless search, overload and (if asked) the floods.
func (h *harness) udpPhases(r *Results) error {
	o := h.o
	// 1+2+4: saturating load, same generator settings for every method.
	for _, ph := range []struct {
		method string
		count  int
		vxlan  bool
	}{
		{"none", 0, false}, {"dup", 0, false}, {"queue", 1, false}, {"log", 0, false}, {"queue", 2, false},
		{"queue", 1, true}, {"log", 0, true},
	} {
		name := "saturate/" + ph.method
		if ph.count == 2 {
			name += "/count2"
		}
		if ph.vxlan {
			name += "/vxlan" // same session, a vxlan target to col instead of the gateway
		}
		lr, err := h.load(name, ph.method, ph.count, 0, 1)
		if err != nil {
			return err
		}
		r.Saturate = append(r.Saturate, lr)
	}
	// 3: latency at moderate load.
	for _, m := range []string{"none", "dup", "queue", "log"} {
		lat, err := h.latency(m)
		if err != nil {
			return err
		}
		r.Latency = append(r.Latency, lat)
	}
	// highest lossless dup load, and queue/log at that load.
	ll, err := h.lossless(findRun(r.Saturate, "saturate/dup"))
	if err != nil {
		return err
	}
	r.Lossless = ll
	// 4: queue under overload (the generator on every CPU).
	ov, err := h.load("overload/queue", "queue", 1, 0, runtime.NumCPU())
	if err != nil {
		return err
	}
	r.Overload = ov
	if o.Flood > 0 {
		phase := h.o.Phase
		h.o.Phase = o.Flood
		for _, ph := range []string{"dup", "queue", "log", "queue/rate", "log/rate", "queue/hold"} {
			m, _, _ := strings.Cut(ph, "/")
			fl, err := h.load("flood/"+ph, m, 1, 0, runtime.NumCPU())
			if err != nil {
				h.o.Phase = phase
				return err
			}
			r.Flood = append(r.Flood, fl)
		}
		h.o.Phase = phase
	}
	return nil
}

func uname() (string, error) {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "", err
	}
	b := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b), nil
}

func findRun(rs []*LoadRun, phase string) *LoadRun {
	for _, r := range rs {
		if r.Phase == phase {
			return r
		}
	}
	return nil
}

// prepare writes the trafgen packet file (eng:e0's MAC as destination).
func (h *harness) prepare() error {
	engMAC, err := runIn(h.ctx, h.o.Lab.Eng, "cat", "/sys/class/net/e0/address")
	if err != nil {
		return err
	}
	srcMAC, err := runIn(h.ctx, h.o.Lab.Src, "cat", "/sys/class/net/e0/address")
	if err != nil {
		return err
	}
	// Fill the destination's ARP entry on src and eng's for col2 before flooding.
	if _, err := runIn(h.ctx, h.o.Lab.Src, "ping", "-c", "1", "-W", "2", col2IP); err != nil {
		return fmt.Errorf("lab not forwarding src -> col2: %w", err)
	}
	cfg := fmt.Sprintf("{ eth(da=%s, sa=%s), ipv4(saddr=%s, daddr=%s, ttl=64), udp(sp=40000, dp=%d), fill(0x42, %d) }\n",
		strings.TrimSpace(engMAC), strings.TrimSpace(srcMAC), srcIP, col2IP, sinkUDP, probePayload)
	h.pktFile = filepath.Join(h.o.WorkDir, "flood.trafgen")
	return os.WriteFile(h.pktFile, []byte(cfg), 0o600)
}

// nfcloneConfig renders the session config of one method.
func (h *harness) nfcloneConfig(name, method string, count int) (string, error) {
	if count < 1 {
		count = 1
	}
	dir := filepath.Join(h.o.WorkDir, strings.ReplaceAll(name, "/", "-"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	rate := ""
	if strings.HasSuffix(name, "/rate") {
		n := h.o.FloodRate
		if n <= 0 {
			n = 50000
		}
		rate = fmt.Sprintf("\n    rate: %d/second", n)
	}
	if strings.HasSuffix(name, "/hold") {
		rate = "\n    hold: true" // the originals wait for nfclone
	}
	target := gatewayTarget
	if strings.HasSuffix(name, "/vxlan") {
		target = vxlanTarget
	}
	return writeConfig(dir, method, count, "{number: 1, action: accept, protocol: udp}", rate, target)
}

// The targets of the benchmark's sessions: all lead to col through eng:e1.
var (
	gatewayTarget = fmt.Sprintf("{kind: gateway, gateway: %s, device: e1}", colIP)
	deviceTarget  = "{kind: device, device: e1}"
	vxlanTarget   = fmt.Sprintf(`{kind: vxlan, remote: "%s:4789", vni: %d}`, colIP, benchVNI)
)

// writeConfig writes dir/nfclone.yaml: one session "bench" on e0 ingress
// with one rule and one target; extra is more session keys ("" or lines
// starting with a newline and indented to the session).
func writeConfig(dir, method string, count int, rule, extra, target string) (string, error) {
	yaml := fmt.Sprintf(`state_dir: %s
metrics: {listen: ""}
queue: {count: %d, cap: 8192, workers: 2}
sessions:
  - name: bench
    method: %s
    sources: [{interface: e0, direction: ingress}]
    rules: [%s]%s
    targets: [%s]
`, filepath.Join(dir, "state"), count, method, rule, extra, target)
	path := filepath.Join(dir, "nfclone.yaml")
	return path, os.WriteFile(path, []byte(yaml), 0o600)
}

// daemon is a running nfclone.
type daemon struct{ p *proc }

func (h *harness) startNfclone(name, method string, count int) (*daemon, error) {
	if method == "none" {
		return nil, nil
	}
	cfg, err := h.nfcloneConfig(name, method, count)
	if err != nil {
		return nil, err
	}
	return h.startDaemon(name, cfg)
}

// startDaemon starts nfclone run -c cfg in eng and waits for its rules.
func (h *harness) startDaemon(name, cfg string) (*daemon, error) {
	p, err := startIn(h.o.Lab.Eng, h.o.Nfclone, "run", "-c", cfg, "--log-format", "json")
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.stderr.String(), "rules installed") {
		if p.exited() {
			return nil, fmt.Errorf("%s: nfclone exited early:\n%s", name, p.stderr.String())
		}
		if time.Now().After(deadline) || h.ctx.Err() != nil {
			p.kill()
			return nil, fmt.Errorf("%s: nfclone did not install its rules:\n%s", name, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &daemon{p: p}, nil
}

// stop reads the peak RSS, sends SIGTERM, requires exit 0 and returns the ledger.
func (d *daemon) stop(name string) (hwm int64, led *Ledger, err error) {
	hwm, _ = procStatus(d.p.pid(), "VmHWM")
	code, werr := d.p.stop(syscall.SIGTERM, 20*time.Second)
	if werr != nil || code != 0 {
		return hwm, nil, fmt.Errorf("%s: nfclone after SIGTERM: exit %d %v\n%s", name, code, werr, d.p.stderr.String())
	}
	ls, err := parseLedgers(d.p.stderr.String())
	if err != nil {
		return hwm, nil, err
	}
	if len(ls) > 0 {
		led = &ls[0]
	}
	return hwm, led, nil
}

type counters struct {
	at                        time.Time
	engRx, engDrop, colRx, c2 uint64
	cpu                       float64
}

func (h *harness) sample(d *daemon) (counters, error) {
	var c counters
	var err error
	c.at = time.Now()
	read := func(ns, ifc, stat string) uint64 {
		if err != nil {
			return 0
		}
		var v uint64
		v, err = readStatIn(ns, ifc, stat)
		return v
	}
	c.engRx = read(h.o.Lab.Eng, "e0", "rx_packets")
	c.engDrop = read(h.o.Lab.Eng, "e0", "rx_dropped")
	c.colRx = read(h.o.Lab.Col, "e0", "rx_packets")
	c.c2 = read(h.o.Lab.Col2, "e0", "rx_packets")
	if d != nil && err == nil {
		c.cpu, _ = procCPU(d.p.pid())
	}
	return c, err
}

// sleep waits d or until the run is cancelled.
func (h *harness) sleep(d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-h.ctx.Done():
		return h.ctx.Err()
	}
}

// load runs one flood phase: nfclone (unless method none), trafgen at
// targetPPS (0: unlimited) with cpus forks, counters over o.Phase.
func (h *harness) load(name, method string, count, targetPPS, cpus int) (lr *LoadRun, err error) {
	lr = &LoadRun{Phase: name, Method: method, TargetPPS: targetPPS, GenCPUs: cpus}
	if method == "queue" {
		lr.QueueCount = count
	}
	d, err := h.startNfclone(name, method, count)
	if err != nil {
		return nil, err
	}
	defer func() {
		if d != nil && !d.p.exited() {
			d.p.kill()
		}
	}()
	c0, err := h.sample(d)
	if err != nil {
		return nil, err
	}
	// -q is trafgen's qdisc path (not "quiet"): it lets a tbf on src:e0
	// pace the flood when a rate is asked (trafgen's own -b/-t slow path
	// tops out near 130 kpps here). The frames are 60 bytes on the wire
	// counters (64 with FCS).
	args := []string{"-o", "e0", "-i", h.pktFile, "-P", fmt.Sprint(cpus), "-q", "-C"}
	if targetPPS > 0 {
		if _, err := runIn(h.ctx, h.o.Lab.Src, "tc", "qdisc", "replace", "dev", "e0", "root", "tbf",
			"rate", fmt.Sprintf("%dbit", targetPPS*60*8), "burst", "64kb", "latency", "20ms"); err != nil {
			return nil, err
		}
		defer func() { _, _ = runIn(context.Background(), h.o.Lab.Src, "tc", "qdisc", "del", "dev", "e0", "root") }()
	}
	gen, err := startIn(h.o.Lab.Src, "trafgen", args...)
	if err != nil {
		return nil, err
	}
	defer gen.kill()
	if err := h.sleep(h.warm); err != nil {
		return nil, err
	}
	if gen.exited() {
		return nil, fmt.Errorf("%s: trafgen exited: %s", name, gen.stderr.String())
	}
	c1, err := h.sample(d)
	if err != nil {
		return nil, err
	}
	if err := h.sleep(h.o.Phase); err != nil {
		return nil, err
	}
	c2, err := h.sample(d)
	if err != nil {
		return nil, err
	}
	if _, err := gen.stop(syscall.SIGINT, 10*time.Second); err != nil {
		return nil, err
	}
	_ = h.sleep(300 * time.Millisecond) // let held packets and queued copies finish
	c3, err := h.sample(d)
	if err != nil {
		return nil, err
	}
	dt := c2.at.Sub(c1.at).Seconds()
	lr.Seconds = dt
	lr.OfferedPPS = float64(c2.engRx-c1.engRx) / dt
	lr.OriginalsPPS = float64(c2.c2-c1.c2) / dt
	lr.CopiesPPS = float64(c2.colRx-c1.colRx) / dt
	if lr.OfferedPPS > 0 {
		lr.CopyFraction = lr.CopiesPPS / lr.OfferedPPS
	}
	lr.EngRxDropped = c2.engDrop - c1.engDrop
	lr.MatchedTotal = c3.engRx - c0.engRx
	lr.CopiesAtCol = c3.colRx - c0.colRx
	if d != nil {
		lr.NfcloneCPU = (c2.cpu - c1.cpu) / dt
		if method == "queue" {
			lr.KernelQueue = nfqueueProc(h.o.Lab.Eng)
		}
		hwm, led, err := d.stop(name)
		if err != nil {
			return nil, err
		}
		lr.VmHWMKiB = hwm
		lr.Ledger = led
		if led != nil {
			lr.UnledgeredLoss = int64(lr.MatchedTotal) - int64(led.Offered)
			lr.ColVsCopied = int64(lr.CopiesAtCol) - int64(led.Copied)
		}
	}
	h.logf("%-24s offered %9.0f pps  originals %9.0f pps  copies %9.0f/s (%5.1f%%)  nfclone cpu %.2f  VmHWM %d KiB%s",
		name, lr.OfferedPPS, lr.OriginalsPPS, lr.CopiesPPS, 100*lr.CopyFraction, lr.NfcloneCPU, lr.VmHWMKiB, ledgerText(lr.Ledger))
	return lr, nil
}

func ledgerText(l *Ledger) string {
	if l == nil {
		return ""
	}
	return fmt.Sprintf("  ledger offered %d copied %d (kernel_sent %d) drops %d (overflow %d send %d kq %d overrun %d user %d rate %d other %d) balanced=%v",
		l.Offered, l.Copied, l.KernelSent, l.Drops, l.QueueOverflow, l.SendErrors, l.KernelQueue, l.SocketOverrun, l.User, l.RateLimit, l.Other, l.Balanced)
}

// latency measures the one-way latency src → col2 through eng at o.ProbePPS.
func (h *harness) latency(method string) (*LatencyRun, error) {
	name := "latency/" + method
	d, err := h.startNfclone(name, method, 1)
	if err != nil {
		return nil, err
	}
	defer func() {
		if d != nil && !d.p.exited() {
			d.p.kill()
		}
	}()
	src := netip.AddrPortFrom(netip.MustParseAddr(srcIP), srcUDP)
	dst := netip.AddrPortFrom(netip.MustParseAddr(col2IP), probeUDP)
	lat, err := probeLatency(h.ctx, h.o.Lab.Src, h.o.Lab.Col2, src, dst, h.o.ProbePPS, h.warm, h.o.Phase)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	run := &LatencyRun{Method: method, Latency: lat}
	if d != nil {
		if run.VmHWMKiB, run.Ledger, err = d.stop(name); err != nil {
			return nil, err
		}
	}
	h.logf("%-24s %d probes at %.0f pps, lost %d: one-way p50 %.1f us p90 %.1f p99 %.1f p99.9 %.1f max %.1f%s",
		name, lat.Sent, lat.RatePPS, lat.Lost, lat.P50US, lat.P90US, lat.P99US, lat.P999US, lat.MaxUS, ledgerText(run.Ledger))
	return run, nil
}

// lossless steps the rate-limited generator down from dup's saturated load
// until dup copies everything (copies and originals >= 99.9 % of offered,
// and the generator reached >= 95 % of the rate asked), then runs queue and
// log at that rate.
func (h *harness) lossless(sat *LoadRun) (*Lossless, error) {
	ll := &Lossless{}
	if sat == nil || sat.OfferedPPS <= 0 {
		return ll, errors.New("no saturated dup figure to start the lossless search from")
	}
	rate := int(sat.OfferedPPS * 0.95)
	var good *LoadRun
	for step := 0; step < h.o.LosslessSteps && rate > 1000; step++ {
		lr, err := h.load(fmt.Sprintf("lossless/dup/%d", rate), "dup", 0, rate, 1)
		if err != nil {
			return ll, err
		}
		ll.Steps = append(ll.Steps, lr)
		if lr.CopiesPPS >= 0.999*lr.OfferedPPS && lr.OriginalsPPS >= 0.999*lr.OfferedPPS && lr.OfferedPPS >= 0.95*float64(rate) {
			good = lr
			break
		}
		rate = int(float64(rate) * 0.85)
	}
	if good == nil {
		// Report the last step anyway (quick mode has one step).
		good = ll.Steps[len(ll.Steps)-1]
	} else {
		ll.Found = true
	}
	ll.Dup = good
	ll.LoadPPS = good.OfferedPPS
	var err error
	if ll.Queue, err = h.load(fmt.Sprintf("lossless/queue/%d", good.TargetPPS), "queue", 1, good.TargetPPS, 1); err != nil {
		return ll, err
	}
	if ll.Log, err = h.load(fmt.Sprintf("lossless/log/%d", good.TargetPPS), "log", 1, good.TargetPPS, 1); err != nil {
		return ll, err
	}
	return ll, nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// derive computes the ratios, the targets and the problems seen.
func (h *harness) derive(r *Results) {
	get := func(p string) *LoadRun {
		if lr := findRun(r.Saturate, p); lr != nil {
			return lr
		}
		return &LoadRun{}
	}
	deriveTCP(r)
	if len(r.Saturate) > 0 {
		deriveUDP(r, get)
	}

	// Problems: ledgers that do not balance, matched packets the ledger never saw.
	all := append([]*LoadRun{}, r.Saturate...)
	if r.Lossless != nil {
		all = append(all, r.Lossless.Queue, r.Lossless.Log)
	}
	all = append(all, r.Overload)
	all = append(all, r.Flood...)
	for _, lr := range all {
		if lr == nil || lr.Ledger == nil {
			continue
		}
		l := lr.Ledger
		if !l.Balanced {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: ledger does not balance: offered %d != copied %d + drops %d", lr.Phase, l.Offered, l.Copied, l.Drops))
		}
		if lr.MatchedTotal > 0 && lr.UnledgeredLoss > int64(lr.MatchedTotal/1000)+16 {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %d of %d matched packets (%.1f%%) are not in the ledger (offered %d): copies lost without being counted (not even by the copy rule's counter, which kernel_lost comes from)",
				lr.Phase, lr.UnledgeredLoss, lr.MatchedTotal, 100*float64(lr.UnledgeredLoss)/float64(lr.MatchedTotal), l.Offered))
		}
		if lr.ColVsCopied < -int64(l.Copied/1000)-16 {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: col received %d copies but the ledger says %d copied", lr.Phase, lr.CopiesAtCol, l.Copied))
		}
	}
	for _, l := range r.Latency {
		if l.Ledger != nil && !l.Ledger.Balanced {
			r.Problems = append(r.Problems, fmt.Sprintf("latency/%s: ledger does not balance: %+v", l.Method, *l.Ledger))
		}
		if l.Lost > l.Sent/100 {
			r.Problems = append(r.Problems, fmt.Sprintf("latency/%s: %d of %d probes lost", l.Method, l.Lost, l.Sent))
		}
	}
	if r.Lossless != nil && !r.Lossless.Found && !r.Quick {
		r.Problems = append(r.Problems, "no lossless dup load found within the search steps")
	}
}

// deriveUDP computes the ratios and targets of the UDP phases.
func deriveUDP(r *Results, get func(string) *LoadRun) {
	none, dup, q, lg, q2 := get("saturate/none"), get("saturate/dup"), get("saturate/queue"), get("saturate/log"), get("saturate/queue/count2")
	r.Ratios["copies_queue_over_dup"] = ratio(q.CopiesPPS, dup.CopiesPPS)
	r.Ratios["copies_log_over_dup"] = ratio(lg.CopiesPPS, dup.CopiesPPS)
	r.Ratios["copies_queue2_over_dup"] = ratio(q2.CopiesPPS, dup.CopiesPPS)
	r.Ratios["originals_dup_over_none"] = ratio(dup.OriginalsPPS, none.OriginalsPPS)
	r.Ratios["originals_queue_over_none"] = ratio(q.OriginalsPPS, none.OriginalsPPS)
	r.Ratios["originals_log_over_none"] = ratio(lg.OriginalsPPS, none.OriginalsPPS)
	r.Ratios["originals_queue2_over_none"] = ratio(q2.OriginalsPPS, none.OriginalsPPS)
	r.Ratios["originals_queue_over_dup"] = ratio(q.OriginalsPPS, dup.OriginalsPPS)
	r.Ratios["originals_log_over_dup"] = ratio(lg.OriginalsPPS, dup.OriginalsPPS)
	qvx, lvx := get("saturate/queue/vxlan"), get("saturate/log/vxlan")
	r.Ratios["copies_vxlan_over_gateway_queue"] = ratio(qvx.CopiesPPS, q.CopiesPPS)
	r.Ratios["copies_vxlan_over_gateway_log"] = ratio(lvx.CopiesPPS, lg.CopiesPPS)
	if ll := r.Lossless; ll != nil && ll.Dup != nil && ll.Queue != nil && ll.Log != nil {
		r.Ratios["lossless_copies_queue_over_dup"] = ratio(ll.Queue.CopiesPPS, ll.Dup.CopiesPPS)
		r.Ratios["lossless_copies_log_over_dup"] = ratio(ll.Log.CopiesPPS, ll.Dup.CopiesPPS)
	}
	var base *LatencyRun
	for _, l := range r.Latency {
		if l.Method == "none" {
			base = l
		}
	}
	if base != nil {
		for _, l := range r.Latency {
			if l.Method == "none" {
				continue
			}
			r.Ratios["latency_p50_delta_us_"+l.Method] = l.P50US - base.P50US
			r.Ratios["latency_p99_delta_us_"+l.Method] = l.P99US - base.P99US
		}
	}
	tgt := func(name string, v float64, goal string, met bool) {
		r.Targets = append(r.Targets, Target{Name: name, Value: v, Goal: goal, Met: met})
	}
	if v, ok := r.Ratios["lossless_copies_queue_over_dup"]; ok {
		tgt("queue/dup copies at the highest lossless dup load", v, ">= 0.5 (aim 0.8)", v >= 0.5)
	}
	tgt("log/dup copies (saturating)", r.Ratios["copies_log_over_dup"], ">= 0.8", r.Ratios["copies_log_over_dup"] >= 0.8)
	for _, m := range []string{"queue", "log"} {
		v := r.Ratios["copies_vxlan_over_gateway_"+m]
		tgt("vxlan/gateway copies, "+m+" (saturating)", v, ">= 0.8", v >= 0.8)
	}
	tgt("originals with queue / with dup (saturating)", r.Ratios["originals_queue_over_dup"], ">= 0.9", r.Ratios["originals_queue_over_dup"] >= 0.9)
	for _, m := range []string{"dup", "queue", "log"} {
		if v, ok := r.Ratios["latency_p99_delta_us_"+m]; ok {
			tgt("added p99 latency, "+m+" (us)", v, "<= 50", v <= 50)
		}
	}
	if ov := r.Overload; ov != nil {
		mib := float64(ov.VmHWMKiB) / 1024
		bal := ov.Ledger != nil && ov.Ledger.Balanced
		tgt("queue peak RSS under overload (MiB), ledger balanced", mib, "<= 64 with the ledger exact", mib <= 64 && bal)
		r.Ratios["overload_factor_offered_over_copies"] = ratio(ov.OfferedPPS, ov.CopiesPPS)
	}

	if fd, fq, fl := findRun(r.Flood, "flood/dup"), findRun(r.Flood, "flood/queue"), findRun(r.Flood, "flood/log"); fd != nil && fq != nil && fl != nil {
		for _, x := range []*LoadRun{fq, fl, findRun(r.Flood, "flood/queue/rate"), findRun(r.Flood, "flood/log/rate")} {
			if x == nil {
				continue
			}
			m := strings.TrimPrefix(x.Phase, "flood/")
			v := ratio(x.OriginalsPPS, fd.OriginalsPPS)
			r.Ratios["flood_originals_"+m+"_over_dup"] = v
			tgt("flood: originals with "+m+" / with dup", v, ">= 0.9", v >= 0.9)
			mib := float64(x.VmHWMKiB) / 1024
			bal := x.Ledger != nil && x.Ledger.Balanced
			tgt("flood: "+m+" peak RSS (MiB), ledger balanced", mib, "<= 64 with the ledger exact", mib <= 64 && bal)
		}
		r.Ratios["flood_factor_offered_over_queue_copies"] = ratio(fq.OfferedPPS, fq.CopiesPPS)
	}
}
