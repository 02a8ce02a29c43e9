// Command nfbench runs nfclone's benchmark (package test/bench) in a lab that
// scripts/bench.sh built with scripts/lab.sh, and prints the table.
//
//	nfbench -nfclone BIN -src NS -eng NS -col NS -col2 NS [-out FILE]
//
// Environment: BENCH_DURATION (seconds or a Go duration, per phase; default
// 5 s), BENCH_QUICK=1 (about 1 s per phase), BENCH_OUT (JSON path),
// BENCH_PROBE_PPS (latency probe rate, default 5000), BENCH_FLOOD (seconds:
// add the flood phases, the generator on every CPU for that long),
// BENCH_PHASES (comma-separated: all, udp, tcp or a prefix of TCP phase
// names such as tcp/log or tcp/dup/vxlan; default all), BENCH_UNDERLAY_MTU (the
// collector link's MTU in the TCP phases), BENCH_TCP_CC (the
// senders' congestion control, default cubic), BENCH_TCP_RATES (extra
// offered rates in Gbit/s for every TCP case, "2,4,8"). BENCH_DURATION also
// sets the TCP phases' length (default 3 s, whole seconds).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nfclone/nfclone/test/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "nfbench:", err)
		os.Exit(1)
	}
}

func envDuration(name string) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return 0, nil
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: want seconds or a duration like 3s", name, v)
	}
	return d, nil
}

func run() error {
	var o bench.Options
	flag.StringVar(&o.Nfclone, "nfclone", "bin/nfclone", "nfclone binary")
	flag.StringVar(&o.Lab.Src, "src", "", "src namespace")
	flag.StringVar(&o.Lab.Eng, "eng", "", "eng namespace")
	flag.StringVar(&o.Lab.Col, "col", "", "col namespace")
	flag.StringVar(&o.Lab.Col2, "col2", "", "col2 namespace")
	flag.StringVar(&o.WorkDir, "workdir", "", "work directory (default: a temporary one)")
	flag.StringVar(&o.Out, "out", os.Getenv("BENCH_OUT"), "JSON results file")
	flag.Parse()
	if o.Lab.Src == "" || o.Lab.Eng == "" || o.Lab.Col == "" || o.Lab.Col2 == "" {
		return fmt.Errorf("-src, -eng, -col and -col2 are required (scripts/bench.sh sets them)")
	}
	o.Quick = os.Getenv("BENCH_QUICK") == "1"
	var err error
	if o.Phase, err = envDuration("BENCH_DURATION"); err != nil {
		return err
	}
	o.TCPPhase = o.Phase
	if v := os.Getenv("BENCH_PHASES"); v != "" {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				o.Phases = append(o.Phases, p)
			}
		}
	}
	o.TCPCC = os.Getenv("BENCH_TCP_CC")
	if v := os.Getenv("BENCH_UNDERLAY_MTU"); v != "" {
		if o.UnderlayMTU, err = strconv.Atoi(v); err != nil || o.UnderlayMTU < 1280 || o.UnderlayMTU > 65535 {
			return fmt.Errorf("BENCH_UNDERLAY_MTU: %q is no MTU (1280-65535)", v)
		}
	}
	if o.TCPRates, err = bench.ParseTCPRates(os.Getenv("BENCH_TCP_RATES")); err != nil {
		return fmt.Errorf("BENCH_TCP_RATES: %w", err)
	}
	if os.Getenv("BENCH_FLOOD") != "" {
		if o.Flood, err = envDuration("BENCH_FLOOD"); err != nil {
			return err
		}
	}
	if v := os.Getenv("BENCH_FLOOD_RATE"); v != "" {
		if o.FloodRate, err = strconv.Atoi(v); err != nil || o.FloodRate <= 0 {
			return fmt.Errorf("BENCH_FLOOD_RATE=%q: want a positive integer", v)
		}
	}
	if v := os.Getenv("BENCH_PROBE_PPS"); v != "" {
		if o.ProbePPS, err = strconv.Atoi(v); err != nil || o.ProbePPS <= 0 {
			return fmt.Errorf("BENCH_PROBE_PPS=%q: want a positive integer", v)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := bench.Run(ctx, o)
	if r != nil && err == nil {
		bench.Print(os.Stdout, r)
		if o.Out != "" {
			fmt.Printf("results written to %s\n", o.Out)
		}
	}
	return err
}
