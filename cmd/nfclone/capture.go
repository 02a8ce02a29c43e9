package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/engine"
)

// captureCommand is `nfclone capture`: a one-shot capture into pcap, in
// tcpdump's words.
func captureCommand(g *globals) *cobra.Command {
	var opts config.CaptureOptions
	var count uint64
	var duration time.Duration
	cmd := &cobra.Command{
		Use:   "capture [flags] -w FILE|-",
		Short: "One-shot troubleshooting capture of exactly the matching packets into pcap",
		Long: `Installs temporary rules (NFLOG by default) in tables of its own, writes what they
match to a pcap file (or standard output), and removes its rules on exit, also on
Ctrl-C and on errors. --host-only captures only what really reached or left this
host (after routing and the firewall) — which plain tcpdump cannot do.
In capture, -c is the packet count, as in tcpdump.`,
		Example: `  nfclone capture -i e0 --host-only -c 20 -w f.pcap && tcpdump -nr f.pcap
  nfclone capture -i e0 -i e2 --proto tcp --dport 443 --duration 30s -w - | tshark -r -
  nfclone capture -i e0 --direction ingress --src 10.0.0.0/8 -s 128 -w /tmp/head.pcap`,
		Args: cobra.ArbitraryArgs, // a tcpdump filter expression
		RunE: func(cmd *cobra.Command, args []string) error {
			c, words, err := captureConfig(&opts, args)
			if err != nil {
				return err
			}
			captureNotes(g.stderr, c, opts)
			if c.StateDir, err = engine.PrivateStateDir("", "nfclone-capture-"); err != nil {
				return err
			}
			defer os.Remove(c.StateDir) // if empty: a capture that failed early
			if !cmd.Flags().Changed("log-level") {
				g.logLevel = "warn"
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			return inWords("capture", capture(cmd.Context(), g.stderr, c, log, count, duration), words)
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&opts.Interfaces, "interface", "i", nil, "interface to capture on (repeatable, or comma-separated)")
	f.StringVar(&opts.Direction, "direction", "both", "ingress, egress or both")
	f.BoolVar(&opts.HostOnly, "host-only", false, "only packets to or from this host (not forwarded ones)")
	f.StringVar(&opts.Proto, "proto", "", "tcp, udp, icmp, icmpv6 or a protocol number")
	f.StringVar(&opts.Src, "src", "", "source address or CIDR")
	f.StringVar(&opts.Dst, "dst", "", "destination address or CIDR")
	f.StringVar(&opts.SPort, "sport", "", "source ports (80, 80,443, 1024-65535)")
	f.StringVar(&opts.DPort, "dport", "", "destination ports")
	f.IntVarP(&opts.Snaplen, "snaplen", "s", 0, "bytes kept of each packet (0: whole packet)")
	f.Uint64VarP(&count, "count", "c", 0, "stop after this many packets (0: until --duration or Ctrl-C)")
	f.Var(secondsFlag{&duration}, "duration", "stop after this long: seconds (5, 0.5) or a duration (30s, 2m)")
	f.StringVar(&opts.Method, "method", "log", "log (NFLOG) or queue (NFQUEUE of the kernel's clones); neither holds a packet")
	f.StringVarP(&opts.Output, "write", "w", "", "pcap file to write, or - for standard output")
	f.StringVar(&opts.Format, "format", "pcap", "pcap or pcapng")
	f.IntVar(&opts.FirstPackets, "first-packets", 0, "only the first N packets of each connection in each direction (0: all)")
	f.StringVar(&opts.Cgroup, "cgroup", "", "only this host's sockets in this cgroup v2 (a path below the cgroup2 mount; implies --host-only)")
	f.StringVar(&opts.User, "user", "", "only this host's sockets owned by this user (name or uid; implies --host-only)")
	return cmd
}

// captureConfig builds the capture's config from its flags and trailing
// arguments (a tcpdump filter expression), checks it against the host, and
// returns it with the function that puts later problems into the flags'
// words. -i any becomes every interface that is up, except lo.
func captureConfig(o *config.CaptureOptions, args []string) (*config.Config, func(config.Errors) config.Errors, error) {
	if err := expandAny(o); err != nil {
		return nil, nil, err
	}
	o.Filter = strings.Join(args, " ")
	words := func(errs config.Errors) config.Errors { return config.CaptureWords(errs, *o) }
	c, err := config.Capture(*o, os.Getpid())
	if err != nil {
		return nil, nil, inWords("capture", err, words)
	}
	if err := hostCheck(c, nil); err != nil { // a fresh state directory: nothing left
		return nil, nil, inWords("capture", err, words)
	}
	return c, words, nil
}

// expandAny replaces -i any with the interfaces that are up, lo excepted
// (as tcpdump's any, without the loopback chatter): each is hooked by name
// in the capture's chains, and the "capturing on" line lists them.
func expandAny(o *config.CaptureOptions) error {
	var out []string
	any := false
	for _, v := range o.Interfaces {
		for _, n := range strings.Split(v, ",") {
			switch n = strings.TrimSpace(n); {
			case n == "any":
				any = true
			case n != "":
				out = append(out, n)
			}
		}
	}
	if !any {
		return nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("-i any: listing interfaces: %w", err)
	}
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 || slices.Contains(out, ifi.Name) {
			continue
		}
		out = append(out, ifi.Name)
	}
	if len(out) == 0 {
		return usageError{fmt.Errorf("-i any: no interface is up besides lo (name lo to capture on it: -i lo)")}
	}
	o.Interfaces = out
	return nil
}

// secondsFlag is a duration flag that also takes a bare number of seconds
// (--duration 5, as timeout(1) and tcpdump's -G), or a Go duration (30s, 2m).
type secondsFlag struct{ d *time.Duration }

func (f secondsFlag) Set(v string) error {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if n < 0 || n > 1e9 {
			return fmt.Errorf("%q: want a number of seconds from 0 to 1e9", v)
		}
		*f.d = time.Duration(n * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("%q is not a number of seconds (5) or a duration (30s, 2m)", v)
	}
	*f.d = d
	return nil
}

func (f secondsFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return "0"
	}
	return f.d.String()
}

func (f secondsFlag) Type() string { return "seconds" }

// captureNotes says what a tcpdump user may expect and not get: on which
// interface a packet was seen is recorded only in pcapng, and only by log.
func captureNotes(w io.Writer, c *config.Config, o config.CaptureOptions) {
	if len(c.Sessions) == 0 || len(c.Sessions[0].Sources) < 2 {
		return
	}
	switch {
	case o.Format != "pcapng":
		fmt.Fprintln(w, "nfclone: note: a pcap file does not say on which interface each packet was seen; --format pcapng records it, with the direction")
	case c.Sessions[0].Method != config.MethodLog:
		fmt.Fprintln(w, "nfclone: note: with --method queue the pcapng file does not say on which interface each packet was seen (--method log does)")
	}
}

// capture runs a one-shot capture: the engine with a pcap target, stopped by
// the count, the duration or a signal, with a live count on a terminal. At
// the end it prints the session ledger as tcpdump prints its statistics.
func capture(parent context.Context, stderr io.Writer, c *config.Config, log *slog.Logger, count uint64, d time.Duration) error {
	ctx, stop := signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	e := &engine.Engine{Cfg: c, Log: log, Limit: count}
	tty := isTerminal(stderr)
	done := make(chan struct{})
	var wg sync.WaitGroup
	started := false
	ready := func() {
		started = true
		fmt.Fprintf(stderr, "nfclone: capturing on %s\n", sourcesOf(c))
		if !tty {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					fmt.Fprintf(stderr, "\r%d packets captured", e.Written())
				}
			}
		}()
	}
	err := e.Run(ctx, ready)
	close(done)
	wg.Wait()
	if err == nil {
		_ = os.RemoveAll(c.StateDir) // the capture's private state directory
	}
	if !started {
		return err // nothing was captured: no statistics before the error
	}
	if tty {
		fmt.Fprint(stderr, "\r\x1b[K") // the live count and a ^C the terminal echoed go
	}
	ledger, cut := e.Ledger()
	writeCaptureReport(stderr, ledger, cut, e.Written())
	return err
}

func sourcesOf(c *config.Config) string {
	var parts []string
	for _, s := range c.Sessions {
		for _, src := range s.Sources {
			parts = append(parts, src.Interface+" ("+string(src.Direction)+")")
		}
	}
	return strings.Join(parts, ", ")
}

// isTerminal reports whether w is a terminal (the progress line is shown
// only there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
