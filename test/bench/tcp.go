package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// TCP bulk phases: iperf3 from src to a server in col2, forwarded by eng
// (the originals' path, offloads on), one nfclone session copying the data
// direction (tcp dport 5201) to a collector in col behind eng:e1, whose link
// runs with TSO/GSO/GRO and tx checksum offload off at both ends, so the
// collector receives wire packets. See docs/methods.md, "TCP bulk phases".

const (
	iperfPort = 5201
	benchVNI  = 1
	// tcpHeaders is the IPv4 and TCP header length of iperf3's data
	// segments: 20 + 20 + 12 (timestamps, on by default; the data direction
	// carries no other option once established).
	tcpHeaders = 52
	// colVXLAN is the VXLAN device in col that decapsulates the copies of
	// vxlan targets, so that they are counted like the others.
	colVXLAN = "nfbvx"
	// nftTable is the netdev table with the byte counters in col and col2.
	nftTable = "nfbench"
	// tcpModerate is the moderate offered rate, bit/s, split over the streams.
	tcpModerate = 1_000_000_000
)

// tcpCase is one TCP bulk phase.
type tcpCase struct {
	method, target string // dup | queue | hold (queue, hold: true) | log; gateway | device | vxlan
	streams        int
	rate           int64 // bit/s over all streams; 0: unlimited
}

func (c tcpCase) name() string {
	r := "max"
	if c.rate > 0 {
		r = fmt.Sprintf("%gG", float64(c.rate)/1e9)
	}
	return fmt.Sprintf("tcp/%s/%s/P%d/%s", c.method, c.target, c.streams, r)
}

// peer is the phase whose originals this one's are compared with: dup, same
// target, streams and rate.
func (c tcpCase) peer() string {
	c.method = "dup"
	return c.name()
}

// tcpCases lists the TCP phases in run order: for each target, streams and
// rate, dup first (the reference), then queue, hold and log. The rates are
// unlimited, 1 Gbit/s and the extra offered rates (bit/s over all streams,
// Options.TCPRates), ascending. Quick: dup and log to the gateway, one
// stream, unlimited and 1 Gbit/s (and the extra rates).
func tcpCases(quick bool, extra []int64) []tcpCase {
	targets, streams, methods := []string{"gateway", "device", "vxlan"}, []int{1, 4}, []string{"dup", "queue", "hold", "log"}
	if quick {
		targets, streams, methods = []string{"gateway"}, []int{1}, []string{"dup", "log"}
	}
	rates := []int64{0, tcpModerate}
	for _, r := range extra {
		if r > 0 && !slices.Contains(rates, r) {
			rates = append(rates, r)
		}
	}
	slices.Sort(rates[1:])
	var out []tcpCase
	for _, t := range targets {
		for _, n := range streams {
			for _, rate := range rates {
				for _, m := range methods {
					out = append(out, tcpCase{method: m, target: t, streams: n, rate: rate})
				}
			}
		}
	}
	return out
}

// maxTCPRate bounds an offered rate (bit/s): far above what veth forwards.
const maxTCPRate = 400e9

// ParseTCPRates parses BENCH_TCP_RATES: offered rates in Gbit/s over all
// streams, separated by commas ("2,4,8" or "2.5").
func ParseTCPRates(s string) ([]int64, error) {
	var out []int64
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		g, err := strconv.ParseFloat(f, 64)
		if err != nil || !(g > 0) || g*1e9 > maxTCPRate {
			return nil, fmt.Errorf("offered rate %q: want Gbit/s above 0 and at most %g", f, maxTCPRate/1e9)
		}
		out = append(out, int64(math.Round(g*1e9)))
	}
	return out, nil
}

// CompleteRatio is the share of the originals' bytes at or above which a
// phase's copies count as complete (the 1 Gbit/s target).
const CompleteRatio = 0.99

// Completeness sums up one method's phases to one target with one stream
// count over the offered rates: up to which rate every copy arrived.
type Completeness struct {
	Method  string `json:"method"`
	Target  string `json:"target"`
	Streams int    `json:"streams"`
	// CompleteUpToBps is the highest offered rate at which this phase and
	// every one at a lower offered rate copied at least CompleteRatio of the
	// originals' bytes (0: not even the lowest).
	CompleteUpToBps int64 `json:"complete_up_to_bps"`
	// CompleteGbps is the originals' Gbit/s at CompleteUpToBps: below the
	// offered rate where the method held the originals (hold) or the
	// path could not carry more.
	CompleteGbps float64 `json:"complete_originals_gbps,omitempty"`
	// ShortAtBps is the lowest offered rate that copied less (0: none did)
	// and ShortRatio its copies/originals.
	ShortAtBps int64   `json:"short_at_bps,omitempty"`
	ShortRatio float64 `json:"short_copy_ratio,omitempty"`
	// SaturationRan says whether the unlimited phase ran; SaturationGbps
	// and SaturationRatio are its originals and copies/originals.
	SaturationGbps  float64 `json:"saturation_originals_gbps,omitempty"`
	SaturationRatio float64 `json:"saturation_copy_ratio,omitempty"`
	SaturationRan   bool    `json:"saturation_ran"`
	// CompleteHostCPU is the machine's busy CPU (TCPRun.HostCPU) at
	// CompleteUpToBps, and DupHostCPU dup's at the same target, streams and
	// offered rate (0: dup did not run there).
	CompleteHostCPU float64 `json:"complete_host_cpu,omitempty"`
	DupHostCPU      float64 `json:"dup_host_cpu,omitempty"`
	// AllCoresGbps is what every CPU of the machine would carry at the cost
	// measured at CompleteUpToBps (CPUs × CompleteGbps / CompleteHostCPU):
	// an estimate of the most the originals could reach with every byte
	// copied, whatever the scheduler does. DupSaturationGbps is dup's
	// unlimited phase with the same target and streams, for comparison.
	AllCoresGbps      float64 `json:"all_cores_gbps,omitempty"`
	DupSaturationGbps float64 `json:"dup_saturation_gbps,omitempty"`
}

// completeness derives one Completeness per method (dup aside), target and
// stream count that ran at an offered rate, on a machine with cpus CPUs.
func completeness(runs []*TCPRun, cpus int) []*Completeness {
	type key struct {
		method, target string
		streams        int
	}
	var order []key
	byKey := map[key][]*TCPRun{}
	dup := map[tcpCase]*TCPRun{}
	for _, t := range runs {
		if t.Method == "dup" {
			dup[tcpCase{target: t.Target, streams: t.Streams, rate: t.OfferedBps}] = t
			continue
		}
		k := key{t.Method, t.Target, t.Streams}
		if _, ok := byKey[k]; !ok {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], t)
	}
	var out []*Completeness
	for _, k := range order {
		c := &Completeness{Method: k.method, Target: k.target, Streams: k.streams}
		var rated []*TCPRun
		for _, t := range byKey[k] {
			if t.OfferedBps == 0 {
				c.SaturationRan, c.SaturationGbps, c.SaturationRatio = true, t.OriginalsGbps, t.CopyRatio
				continue
			}
			rated = append(rated, t)
		}
		if len(rated) == 0 {
			continue
		}
		slices.SortFunc(rated, func(a, b *TCPRun) int { return cmp.Compare(a.OfferedBps, b.OfferedBps) })
		for _, t := range rated {
			if t.CopyRatio < CompleteRatio {
				c.ShortAtBps, c.ShortRatio = t.OfferedBps, t.CopyRatio
				break
			}
			c.CompleteUpToBps, c.CompleteGbps, c.CompleteHostCPU = t.OfferedBps, t.OriginalsGbps, t.HostCPU
		}
		if d := dup[tcpCase{target: k.target, streams: k.streams, rate: c.CompleteUpToBps}]; d != nil && c.CompleteUpToBps > 0 {
			c.DupHostCPU = d.HostCPU
		}
		if d := dup[tcpCase{target: k.target, streams: k.streams}]; d != nil {
			c.DupSaturationGbps = d.OriginalsGbps
		}
		if c.CompleteHostCPU > 0 {
			c.AllCoresGbps = float64(cpus) * c.CompleteGbps / c.CompleteHostCPU
		}
		out = append(out, c)
	}
	return out
}

// DefaultTCPCC is the TCP phases' congestion control unless Options.TCPCC
// says otherwise: the kernel's own default, which most distributions keep.
const DefaultTCPCC = "cubic"

// availableCC is where the kernel lists the congestion controls it has
// (built in or loaded; the same in every network namespace).
const availableCC = "/proc/sys/net/ipv4/tcp_available_congestion_control"

// checkCC fails unless the kernel has the congestion control cc.
func checkCC(cc string) error {
	b, err := os.ReadFile(availableCC)
	if err != nil {
		return fmt.Errorf("TCP congestion control %q: %w", cc, err)
	}
	if !slices.Contains(strings.Fields(string(b)), cc) {
		return fmt.Errorf("TCP congestion control %q: the kernel has only %s", cc, strings.TrimSpace(string(b)))
	}
	return nil
}

// tcpSeconds is iperf3's -t for a phase length: whole seconds, at least 1.
func tcpSeconds(d time.Duration) float64 {
	return math.Max(1, math.Ceil(d.Seconds()))
}

// TCPSetup records how the TCP phases' lab was prepared.
type TCPSetup struct {
	// Offloads of the collector-facing link after the harness turned them
	// off (ethtool -k: tcp-segmentation-offload, generic-segmentation-offload,
	// generic-receive-offload, tx-checksumming), per "ns:dev".
	Offloads map[string]map[string]string `json:"collector_link_offloads"`
	// OriginalsOffloads are those of the originals' path (left as they were).
	OriginalsOffloads map[string]map[string]string `json:"originals_path_offloads"`
	Counting          string                       `json:"counting"`
	// UnderlayMTU is the collector link's MTU when the run set one
	// (Options.UnderlayMTU).
	UnderlayMTU int `json:"underlay_mtu,omitempty"`
}

// TCPRun is one TCP bulk phase.
type TCPRun struct {
	Phase   string `json:"phase"`
	Method  string `json:"method"`
	Target  string `json:"target"` // gateway | device | vxlan
	Streams int    `json:"streams"`
	// OfferedBps is iperf3's -b over all streams (0: unlimited).
	OfferedBps int64   `json:"offered_bps"`
	Seconds    float64 `json:"seconds"` // iperf3's receiver-side duration
	// OriginalsGbps is iperf3's receiver side (sum_received), the goodput of
	// the originals at col2; SenderGbps and Retransmits the sender side.
	OriginalsGbps float64 `json:"originals_gbps"`
	SenderGbps    float64 `json:"sender_gbps"`
	Retransmits   int64   `json:"retransmits"`
	// CC is the sender's congestion control as iperf3 reports it.
	CC string `json:"congestion_control"`
	// OriginalsOverDup is OriginalsGbps / that of dup with the same target,
	// streams and rate in the same run (0 if that phase did not run).
	OriginalsOverDup float64 `json:"originals_over_dup,omitempty"`
	// nft counters (netdev ingress, tcp dport 5201) over the whole iperf3
	// run: originals at col2:e0, copies at col:e0 (gateway, device) or at
	// col's VXLAN device (vxlan, after decapsulation). Bytes are IP-layer
	// bytes as the hook sees them: the originals arrive as GSO super-packets
	// (one set of headers per up to 64 KiB), the copies as wire packets.
	OrigPackets uint64 `json:"originals_packets"`
	OrigBytes   uint64 `json:"originals_ip_bytes"`
	CopyPackets uint64 `json:"copies_packets"`
	CopyBytes   uint64 `json:"copies_ip_bytes"`
	// OrigPayload and CopyPayload are the TCP payload bytes: IP bytes minus
	// 52 (IPv4 + TCP + timestamps) per packet counted, which is the same
	// whether a packet is a wire segment or a super-packet.
	OrigPayload uint64 `json:"originals_payload_bytes"`
	CopyPayload uint64 `json:"copies_payload_bytes"`
	// CopyRatio = CopyPayload / OrigPayload: the share of the originals'
	// bytes that reached the collector as copies.
	CopyRatio  float64 `json:"copy_ratio"`
	NfcloneCPU float64 `json:"nfclone_cpu"`
	// HostCPU is the whole machine's busy CPU while iperf3 ran (1.0 = one
	// core): sender, receiver, forwarding, copies and nfclone, every
	// namespace, softirq included.
	HostCPU  float64 `json:"host_cpu"`
	VmHWMKiB int64   `json:"vmhwm_kib,omitempty"`
	Ledger   *Ledger `json:"ledger,omitempty"`
	// KernelQueue is eng's /proc/net/netfilter/nfnetlink_queue (queue only).
	KernelQueue []string `json:"nfnetlink_queue,omitempty"`
	// CollectorLinkDrops is eng:e1's tx_dropped over the run: frames lost
	// on the lab's collector veth (its peer's receive backlog full), after
	// every ledger.
	CollectorLinkDrops uint64 `json:"collector_link_tx_dropped"`
}

// offloadKeys are the ethtool -k lines the TCP phases set and record.
var offloadKeys = []string{"tcp-segmentation-offload", "generic-segmentation-offload", "generic-receive-offload", "tx-checksumming"}

// offloads reads offloadKeys of dev in ns ("on", "off", "off [fixed]").
func (h *harness) offloads(ns, dev string) (map[string]string, error) {
	out, err := runIn(h.ctx, ns, "ethtool", "-k", dev)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		for _, want := range offloadKeys {
			if strings.TrimSpace(k) == want {
				m[want] = strings.TrimSpace(v)
			}
		}
	}
	if len(m) != len(offloadKeys) {
		return m, fmt.Errorf("[%s] ethtool -k %s: found %d of %v", ns, dev, len(m), offloadKeys)
	}
	return m, nil
}

// ethtoolK maps offloadKeys to ethtool -K's short names.
var ethtoolK = map[string]string{
	"tcp-segmentation-offload":     "tso",
	"generic-segmentation-offload": "gso",
	"generic-receive-offload":      "gro",
	"tx-checksumming":              "tx",
}

// setOffloads sets every offloadKeys feature of dev in ns to state ("on",
// "off"), or to what was saved (a map from offloads).
func (h *harness) setOffloads(ctx context.Context, ns, dev string, state func(key string) string) error {
	args := []string{"-K", dev}
	for _, k := range offloadKeys {
		v := strings.Fields(state(k))
		if len(v) == 0 || len(v) > 1 && v[1] == "[fixed]" {
			continue
		}
		args = append(args, ethtoolK[k], v[0])
	}
	_, err := runIn(ctx, ns, "ethtool", args...)
	return err
}

// tcpLab prepares col and col2 for the TCP phases and returns the undo:
// offloads off on the collector link (eng:e1, col:e0), a VXLAN device in col
// that decapsulates the copies of vxlan targets, and the nft counters. The
// undo restores the offloads and removes the device and the tables, so that
// the UDP phases see the lab as lab.sh built it whatever the order. (All of
// it lives in the lab's namespaces and goes with them.)
func (h *harness) tcpLab(r *Results) (undo func(), err error) {
	lab := h.o.Lab
	var undos []func()
	undo = func() {
		for i := len(undos) - 1; i >= 0; i-- {
			undos[i]()
		}
	}
	defer func() {
		if err != nil {
			undo()
		}
	}()
	bg := context.Background() // the undo runs also when the run is cancelled
	setup := &TCPSetup{Offloads: map[string]map[string]string{}, OriginalsOffloads: map[string]map[string]string{}}
	for _, l := range []struct{ ns, dev string }{{lab.Eng, "e1"}, {lab.Col, "e0"}} {
		saved, err := h.offloads(l.ns, l.dev)
		if err != nil {
			return undo, err
		}
		if err := h.setOffloads(h.ctx, l.ns, l.dev, func(string) string { return "off" }); err != nil {
			return undo, err
		}
		undos = append(undos, func() {
			_ = h.setOffloads(bg, l.ns, l.dev, func(k string) string { return saved[k] })
		})
		now, err := h.offloads(l.ns, l.dev)
		if err != nil {
			return undo, err
		}
		for k, v := range now {
			if !strings.HasPrefix(v, "off") {
				return undo, fmt.Errorf("[%s] %s: %s is still %q after ethtool -K", l.ns, l.dev, k, v)
			}
		}
		setup.Offloads[l.ns+":"+l.dev] = now
	}
	if m := h.o.UnderlayMTU; m > 0 {
		for _, l := range []struct{ ns, dev string }{{lab.Eng, "e1"}, {lab.Col, "e0"}} {
			if _, err := runIn(h.ctx, l.ns, "ip", "link", "set", l.dev, "mtu", fmt.Sprint(m)); err != nil {
				return undo, err
			}
			undos = append(undos, func() { _, _ = runIn(bg, l.ns, "ip", "link", "set", l.dev, "mtu", "1500") })
		}
		setup.UnderlayMTU = m
	}
	for _, l := range []struct{ ns, dev string }{{lab.Src, "e0"}, {lab.Eng, "e0"}, {lab.Eng, "e3"}, {lab.Col2, "e0"}} {
		if m, err := h.offloads(l.ns, l.dev); err == nil {
			setup.OriginalsOffloads[l.ns+":"+l.dev] = m
		}
	}

	// The copies of vxlan targets are decapsulated by a VXLAN device in col
	// (VNI 1, port 4789; the kernel reassembles fragmented outer packets
	// first) and counted on it like the others on col:e0. Its GRO is off,
	// like the link's.
	if _, err := runIn(h.ctx, lab.Col, "ip", "link", "add", colVXLAN, "type", "vxlan", "id", fmt.Sprint(benchVNI),
		"dstport", "4789", "nolearning"); err != nil {
		return undo, err
	}
	undos = append(undos, func() { _, _ = runIn(bg, lab.Col, "ip", "link", "del", colVXLAN) })
	if _, err := runIn(h.ctx, lab.Col, "ip", "link", "set", colVXLAN, "mtu", "1500", "up"); err != nil {
		return undo, err
	}
	if _, err := runIn(h.ctx, lab.Col, "ethtool", "-K", colVXLAN, "gro", "off"); err != nil {
		return undo, err
	}

	match := fmt.Sprintf("ip protocol tcp tcp dport %d", iperfPort)
	colRules := fmt.Sprintf(`table netdev %[1]s {
	counter copies {}
	counter copies_vxlan {}
	chain e0 { type filter hook ingress device "e0" priority 0; %[2]s counter name copies; }
	chain vx { type filter hook ingress device %[3]q priority 0; %[2]s counter name copies_vxlan; }
}
`, nftTable, match, colVXLAN)
	col2Rules := fmt.Sprintf(`table netdev %[1]s {
	counter originals {}
	chain e0 { type filter hook ingress device "e0" priority 0; %[2]s counter name originals; }
}
`, nftTable, match)
	for _, l := range []struct{ ns, rules string }{{lab.Col, colRules}, {lab.Col2, col2Rules}} {
		f := filepath.Join(h.o.WorkDir, "counters-"+l.ns+".nft")
		if err := os.WriteFile(f, []byte(l.rules), 0o600); err != nil {
			return undo, err
		}
		if _, err := runIn(h.ctx, l.ns, "nft", "-f", f); err != nil {
			return undo, err
		}
		undos = append(undos, func() { _, _ = runIn(bg, l.ns, "nft", "delete", "table", "netdev", nftTable) })
	}
	setup.Counting = fmt.Sprintf("nft netdev ingress counters (%s): originals at col2:e0, copies at col:e0 (gateway, device) or at col:%s "+
		"after decapsulation (vxlan); payload = IP bytes - %d per packet", match, colVXLAN, tcpHeaders)
	r.TCPSetup = setup
	return undo, nil
}

// nftCounter reads a named counter of the netdev table in ns.
func (h *harness) nftCounter(ns, name string) (packets, bytes uint64, err error) {
	out, err := runIn(h.ctx, ns, "nft", "-j", "list", "counter", "netdev", nftTable, name)
	if err != nil {
		return 0, 0, err
	}
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Name    string `json:"name"`
				Packets uint64 `json:"packets"`
				Bytes   uint64 `json:"bytes"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return 0, 0, fmt.Errorf("[%s] nft -j list counter %s: %w", ns, name, err)
	}
	for _, o := range doc.Nftables {
		if o.Counter != nil && o.Counter.Name == name {
			return o.Counter.Packets, o.Counter.Bytes, nil
		}
	}
	return 0, 0, fmt.Errorf("[%s] no counter %s in nft's answer", ns, name)
}

type tcpCounters struct {
	at           time.Time
	origP, origB uint64
	copyP, copyB uint64
	nfcloneCPU   float64
	haveCPU      bool
}

func (h *harness) tcpSample(c tcpCase, d *daemon) (tcpCounters, error) {
	s := tcpCounters{at: time.Now()}
	var err error
	if s.origP, s.origB, err = h.nftCounter(h.o.Lab.Col2, "originals"); err != nil {
		return s, err
	}
	counter := "copies"
	if c.target == "vxlan" {
		counter = "copies_vxlan"
	}
	if s.copyP, s.copyB, err = h.nftCounter(h.o.Lab.Col, counter); err != nil {
		return s, err
	}
	if d != nil {
		s.nfcloneCPU, err = procCPU(d.p.pid())
		s.haveCPU = err == nil
	}
	return s, nil
}

// waitListen waits until something listens on TCP port in ns.
func (h *harness) waitListen(ns string, port int, p *proc) error {
	hex := fmt.Sprintf(":%04X ", port)
	deadline := time.Now().Add(5 * time.Second)
	for {
		found := false
		err := inNetns(ns, func() error {
			for _, f := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
				b, err := os.ReadFile(f)
				if err != nil {
					continue
				}
				for _, line := range strings.Split(string(b), "\n")[1:] {
					fs := strings.Fields(line)
					// local_address rem_address st: st 0A is LISTEN
					if len(fs) > 3 && strings.HasSuffix(fs[1]+" ", hex) && fs[3] == "0A" {
						found = true
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if found {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("iperf3 server exited: %s", p.stderr.String()+p.stdout.String())
		}
		if time.Now().After(deadline) || h.ctx.Err() != nil {
			return fmt.Errorf("iperf3 server in %s not listening on %d after 5 s", ns, port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// iperfResult is the part of iperf3 -J's output the harness uses.
type iperfResult struct {
	End struct {
		SenderCC string `json:"sender_tcp_congestion"`
		SumSent  struct {
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   int64   `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Seconds       float64 `json:"seconds"`
			Bytes         uint64  `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

func parseIperf(out string) (iperfResult, error) {
	var r iperfResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return r, fmt.Errorf("iperf3 -J output: %w", err)
	}
	if r.Error != "" {
		return r, fmt.Errorf("iperf3: %s", r.Error)
	}
	if r.End.SumReceived.Seconds <= 0 {
		return r, errors.New("iperf3: no receiver summary")
	}
	return r, nil
}

// payload is the TCP payload of bytes counted in packets (see tcpHeaders).
func payload(packets, bytes uint64) uint64 {
	if h := packets * tcpHeaders; bytes > h {
		return bytes - h
	}
	return 0
}

// tcpPhases runs the selected TCP bulk phases.
func (h *harness) tcpPhases(r *Results) error {
	var cases []tcpCase
	for _, c := range tcpCases(h.o.Quick, h.o.TCPRates) {
		if h.o.selected("tcp", c.name()) {
			cases = append(cases, c)
		}
	}
	if len(cases) == 0 {
		return nil
	}
	undo, err := h.tcpLab(r)
	if err != nil {
		return fmt.Errorf("preparing the TCP phases: %w", err)
	}
	defer undo()
	for _, c := range cases {
		tr, err := h.tcpRun(c)
		if err != nil {
			return err
		}
		r.TCP = append(r.TCP, tr)
	}
	return nil
}

// tcpRun runs one TCP phase: nfclone, an iperf3 server in col2 (one test),
// the client in src, the counters read before and after the client.
func (h *harness) tcpRun(c tcpCase) (*TCPRun, error) {
	name := c.name()
	tr := &TCPRun{Phase: name, Method: c.method, Target: c.target, Streams: c.streams, OfferedBps: c.rate}
	dir := filepath.Join(h.o.WorkDir, strings.ReplaceAll(name, "/", "-"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	target := map[string]string{"gateway": gatewayTarget, "device": deviceTarget, "vxlan": vxlanTarget}[c.target]
	method, extra := c.method, ""
	if c.method == "hold" {
		method, extra = "queue", "\n    hold: true"
	}
	cfg, err := writeConfig(dir, method, 1, fmt.Sprintf(`{number: 1, action: accept, protocol: tcp, destination_ports: "%d"}`, iperfPort), extra, target)
	if err != nil {
		return nil, err
	}
	d, err := h.startDaemon(name, cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if !d.p.exited() {
			d.p.kill()
		}
	}()
	srv, err := startIn(h.o.Lab.Col2, "iperf3", "-s", "-1", "-p", fmt.Sprint(iperfPort), "-B", col2IP)
	if err != nil {
		return nil, err
	}
	defer srv.kill()
	if err := h.waitListen(h.o.Lab.Col2, iperfPort, srv); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c0, err := h.tcpSample(c, d)
	if err != nil {
		return nil, err
	}
	host0, herr0 := sampleHost()
	e1Drop0, derr0 := readStatIn(h.o.Lab.Eng, "e1", "tx_dropped")
	secs := tcpSeconds(h.o.TCPPhase)
	args := []string{"-c", col2IP, "-p", fmt.Sprint(iperfPort), "-t", strconv.Itoa(int(secs)), "-P", strconv.Itoa(c.streams),
		"-J", "--connect-timeout", "3000", "-C", h.o.TCPCC}
	if c.rate > 0 {
		args = append(args, "-b", fmt.Sprint(c.rate/int64(c.streams))) // -b is per stream
	}
	out, err := runInFor(h.ctx, time.Duration(secs)*time.Second+30*time.Second, h.o.Lab.Src, "iperf3", args...)
	if err != nil {
		if cerr := h.ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("%s: %w", name, cerr)
		}
		if _, perr := parseIperf(out); perr != nil {
			err = fmt.Errorf("%w (%v)", err, perr)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	host1, herr1 := sampleHost()
	ir, err := parseIperf(out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if herr0 == nil && herr1 == nil {
		tr.HostCPU = host1.busySince(host0)
	}
	_ = h.sleep(300 * time.Millisecond) // copies still queued in nfclone
	c1, err := h.tcpSample(c, d)
	if err != nil {
		return nil, err
	}
	if e1Drop1, derr1 := readStatIn(h.o.Lab.Eng, "e1", "tx_dropped"); derr0 == nil && derr1 == nil {
		tr.CollectorLinkDrops = e1Drop1 - e1Drop0
	}
	_, _ = srv.stop(syscall.SIGTERM, 2*time.Second) // -1: it has exited already

	tr.Seconds = ir.End.SumReceived.Seconds
	tr.OriginalsGbps = ir.End.SumReceived.BitsPerSecond / 1e9
	tr.SenderGbps = ir.End.SumSent.BitsPerSecond / 1e9
	tr.Retransmits = ir.End.SumSent.Retransmits
	if tr.CC = ir.End.SenderCC; tr.CC != h.o.TCPCC {
		return nil, fmt.Errorf("%s: iperf3's sender used congestion control %q, not %q", name, tr.CC, h.o.TCPCC)
	}
	tr.OrigPackets, tr.OrigBytes = c1.origP-c0.origP, c1.origB-c0.origB
	tr.CopyPackets, tr.CopyBytes = c1.copyP-c0.copyP, c1.copyB-c0.copyB
	tr.OrigPayload, tr.CopyPayload = payload(tr.OrigPackets, tr.OrigBytes), payload(tr.CopyPackets, tr.CopyBytes)
	tr.CopyRatio = ratio(float64(tr.CopyPayload), float64(tr.OrigPayload))
	if c0.haveCPU && c1.haveCPU {
		tr.NfcloneCPU = (c1.nfcloneCPU - c0.nfcloneCPU) / c1.at.Sub(c0.at).Seconds()
	}
	if method == "queue" {
		tr.KernelQueue = nfqueueProc(h.o.Lab.Eng)
	}
	if tr.VmHWMKiB, tr.Ledger, err = d.stop(name); err != nil {
		return nil, err
	}
	h.logf("%-26s originals %6.2f Gbit/s (sender %.2f, %d retransmits)  copies/originals %.3f (payload %d / %d bytes; e1 tx_dropped %d)  nfclone cpu %.2f  VmHWM %d KiB%s",
		name, tr.OriginalsGbps, tr.SenderGbps, tr.Retransmits, tr.CopyRatio, tr.CopyPayload, tr.OrigPayload, tr.CollectorLinkDrops, tr.NfcloneCPU, tr.VmHWMKiB, ledgerText(tr.Ledger))
	return tr, nil
}

// deriveTCP sets each TCP phase's ratio to dup and notes ledgers that do
// not balance.
func deriveTCP(r *Results) {
	r.TCPComplete = completeness(r.TCP, r.CPUs)
	byName := map[string]*TCPRun{}
	for _, t := range r.TCP {
		byName[t.Phase] = t
	}
	for _, t := range r.TCP {
		c := tcpCase{method: t.Method, target: t.Target, streams: t.Streams, rate: t.OfferedBps}
		if d := byName[c.peer()]; d != nil {
			t.OriginalsOverDup = ratio(t.OriginalsGbps, d.OriginalsGbps)
		}
		if l := t.Ledger; l != nil && !l.Balanced {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: ledger does not balance: offered %d != copied %d + drops %d", t.Phase, l.Offered, l.Copied, l.Drops))
		}
	}
}
