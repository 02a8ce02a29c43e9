package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

func kpps(v float64) string { return fmt.Sprintf("%.1f k", v/1000) }

func mib(kib int64) string {
	if kib == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(kib)/1024)
}

func rat(v float64) string { return fmt.Sprintf("%.2f×", v) }

func ledgerCell(l *Ledger) string {
	if l == nil {
		return "-"
	}
	s := fmt.Sprintf("%d = %d + %d", l.Offered, l.Copied, l.Drops)
	var why []string
	for _, d := range []struct {
		n string
		v uint64
	}{{"overflow", l.QueueOverflow}, {"send", l.SendErrors}, {"kq", l.KernelQueue}, {"overrun", l.SocketOverrun}, {"user", l.User}, {"rate", l.RateLimit}, {"other", l.Other}} {
		if d.v > 0 {
			why = append(why, fmt.Sprintf("%s %d", d.n, d.v))
		}
	}
	if len(why) > 0 {
		s += " (" + strings.Join(why, ", ") + ")"
	}
	if l.Balanced {
		s += " ok"
	} else {
		s += " UNBALANCED"
	}
	return s
}

// Print writes the result tables.
func Print(w io.Writer, r *Results) {
	fmt.Fprintf(w, "\nnfclone benchmark — kernel %s, %d CPUs, %.1f s per phase%s\n", r.Kernel, r.CPUs, r.PhaseSecs, map[bool]string{true: " (QUICK)", false: ""}[r.Quick])
	if len(r.Saturate) > 0 {
		printUDP(w, r)
	}
	if len(r.TCP) > 0 {
		printTCP(w, r)
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintln(w, "\nratios")
	}
	keys := make([]string, 0, len(r.Ratios))
	for k := range r.Ratios {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-40s %8.3f\n", k, r.Ratios[k])
	}
	if r.Lossless != nil {
		fmt.Fprintf(w, "\nhighest lossless dup load: %.1f kpps (found: %v)\n", r.Lossless.LoadPPS/1000, r.Lossless.Found)
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(w, "\ntargets (reported, not asserted)")
	}
	for _, t := range r.Targets {
		fmt.Fprintf(w, "  %-4s %-58s %8.2f   goal %s\n", map[bool]string{true: "met", false: "MISS"}[t.Met], t.Name, t.Value, t.Goal)
	}
	if len(r.Problems) > 0 {
		fmt.Fprintln(w, "\nproblems seen")
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  - %s\n", p)
		}
	}
	fmt.Fprintf(w, "\nbench took %.0f s\n", r.Elapsed)
}

// printUDP writes the tables of the UDP phases.
func printUDP(w io.Writer, r *Results) {
	fmt.Fprintf(w, "generator: %s\n\n", r.Generator)

	var dupCopies, dupOrig, noneOrig float64
	if d := findRun(r.Saturate, "saturate/dup"); d != nil {
		dupCopies, dupOrig = d.CopiesPPS, d.OriginalsPPS
	}
	if n := findRun(r.Saturate, "saturate/none"); n != nil {
		noneOrig = n.OriginalsPPS
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\toffered pps\toriginals pps\torig/none\torig/dup\tcopies/s\tcopies/dup\tcopied %\tnfclone CPU\tVmHWM MiB\tunledgered\tledger offered = copied + drops\t")
	rows := append([]*LoadRun{}, r.Saturate...)
	if r.Lossless != nil {
		rows = append(rows, r.Lossless.Steps...)
		if r.Lossless.Queue != nil {
			rows = append(rows, r.Lossless.Queue, r.Lossless.Log)
		}
	}
	if r.Overload != nil {
		rows = append(rows, r.Overload)
	}
	if len(r.Flood) > 0 {
		rows = append(rows, r.Flood...)
	}
	var llDup *LoadRun
	if r.Lossless != nil {
		llDup = r.Lossless.Dup
	}
	for _, lr := range rows {
		if lr == nil {
			continue
		}
		refC, refO := dupCopies, dupOrig
		if strings.HasPrefix(lr.Phase, "lossless/") && llDup != nil {
			refC, refO = llDup.CopiesPPS, llDup.OriginalsPPS
		}
		copies, cd := kpps(lr.CopiesPPS), rat(ratio(lr.CopiesPPS, refC))
		if lr.Method == "none" {
			copies, cd = "-", "-"
		}
		cpu := "-"
		if lr.Method != "none" && lr.Method != "dup" {
			cpu = fmt.Sprintf("%.2f", lr.NfcloneCPU)
		}
		unl := "-"
		if lr.Ledger != nil {
			unl = fmt.Sprint(lr.UnledgeredLoss)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%s\t%s\t%s\t%s\t\n", lr.Phase, kpps(lr.OfferedPPS), kpps(lr.OriginalsPPS),
			rat(ratio(lr.OriginalsPPS, noneOrig)), rat(ratio(lr.OriginalsPPS, refO)), copies, cd, 100*lr.CopyFraction, cpu, mib(lr.VmHWMKiB), unl, ledgerCell(lr.Ledger))
	}
	tw.Flush()

	fmt.Fprintf(w, "\none-way latency of originals src -> col2 through eng (col2 kernel rx timestamp - send time), UDP probes at ~%.0f pps\n", firstRate(r))
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "method\tprobes\tlost\tp50 us\tp90 us\tp99 us\tp99.9 us\tmax us\tΔp50 us\tΔp99 us\tVmHWM MiB\tledger\t")
	var base *LatencyRun
	for _, l := range r.Latency {
		if l.Method == "none" {
			base = l
		}
	}
	for _, l := range r.Latency {
		d50, d99 := "-", "-"
		if base != nil && l.Method != "none" {
			d50, d99 = fmt.Sprintf("%+.1f", l.P50US-base.P50US), fmt.Sprintf("%+.1f", l.P99US-base.P99US)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t\n", l.Method, l.Sent, l.Lost, l.P50US, l.P90US, l.P99US, l.P999US, l.MaxUS, d50, d99, mib(l.VmHWMKiB), ledgerCell(l.Ledger))
	}
	tw.Flush()

}

func firstRate(r *Results) float64 {
	for _, l := range r.Latency {
		return l.RatePPS
	}
	return 0
}

// printTCP writes the table of the TCP bulk phases.
func printTCP(w io.Writer, r *Results) {
	fmt.Fprintf(w, "\nTCP bulk: iperf3 src -> col2 (originals, offloads on) through eng, %.0f s per phase, congestion control %s; copies of tcp dport %d to col (collector link: TSO/GSO/GRO/tx csum off)\n", r.TCPPhaseSecs, r.TCPCC, iperfPort)
	fmt.Fprintf(w, "copy bytes = TCP payload (nft IP bytes - %d per packet) of the copies at col / of the originals at col2; orig/dup: same target, streams and rate\n", tcpHeaders)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\toffered\toriginals Gbit/s\torig/dup\tretransmits\tcopies/orig bytes\tcopy pkts\tnfclone CPU\thost CPU\tVmHWM MiB\tledger offered = copied + drops\t")
	for _, t := range r.TCP {
		offered := "max"
		if t.OfferedBps > 0 {
			offered = fmt.Sprintf("%.1f G", float64(t.OfferedBps)/1e9)
		}
		od := "-"
		if t.OriginalsOverDup > 0 {
			od = rat(t.OriginalsOverDup)
		}
		cpu := "-"
		if t.Method != "dup" {
			cpu = fmt.Sprintf("%.2f", t.NfcloneCPU)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%d\t%.2f\t%d\t%s\t%.2f\t%s\t%s\t\n", t.Phase, offered, t.OriginalsGbps, od, t.Retransmits,
			t.CopyRatio, t.CopyPackets, cpu, t.HostCPU, mib(t.VmHWMKiB), ledgerCell(t.Ledger))
	}
	tw.Flush()
	printComplete(w, r)
}

// gbps formats an offered rate (bit/s) as Gbit/s.
func gbps(bps int64) string { return fmt.Sprintf("%g", float64(bps)/1e9) }

// printComplete writes up to which offered rate each method copied
// everything (with an offered-rate sweep, BENCH_TCP_RATES).
func printComplete(w io.Writer, r *Results) {
	if len(r.TCPComplete) == 0 {
		return
	}
	fmt.Fprintf(w, "\nTCP copies complete (copies/originals >= %.2f) up to an offered rate, congestion control %s\n", CompleteRatio, r.TCPCC)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "method\ttarget\tstreams\tcomplete up to: offered Gbit/s (originals)\thost CPU there (dup's)\tall CPUs at that cost: Gbit/s (dup unlimited)\tfirst short: offered Gbit/s (copies/orig)\tunlimited: originals Gbit/s (copies/orig)\t")
	for _, c := range r.TCPComplete {
		up, cost, all, short, sat := "none", "-", "-", "-", "-"
		if c.CompleteHostCPU > 0 {
			cost = fmt.Sprintf("%.2f", c.CompleteHostCPU)
			if c.DupHostCPU > 0 {
				cost += fmt.Sprintf(" (%.2f)", c.DupHostCPU)
			}
			all = fmt.Sprintf("%.1f", c.AllCoresGbps)
			if c.DupSaturationGbps > 0 {
				all += fmt.Sprintf(" (%.1f)", c.DupSaturationGbps)
			}
		}
		if c.CompleteUpToBps > 0 {
			up = fmt.Sprintf("%s (%.2f)", gbps(c.CompleteUpToBps), c.CompleteGbps)
		}
		if c.ShortAtBps > 0 {
			short = fmt.Sprintf("%s (%.2f)", gbps(c.ShortAtBps), c.ShortRatio)
		}
		if c.SaturationRan {
			sat = fmt.Sprintf("%.2f (%.2f)", c.SaturationGbps, c.SaturationRatio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", c.Method, c.Target, c.Streams, up, cost, all, short, sat)
	}
	tw.Flush()
}
