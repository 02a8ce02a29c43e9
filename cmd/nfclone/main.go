// Command nfclone mirrors the packets that matter to a host. See README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/nfclone/nfclone/collect"
	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/engine"
	"github.com/nfclone/nfclone/metrics"
	"github.com/nfclone/nfclone/route"
	"github.com/nfclone/nfclone/rules"
	"github.com/nfclone/nfclone/statusapi"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(exitCode(run(os.Args[1:], os.Stdout, os.Stderr)))
}

// usageError marks bad flags or arguments (exit 1).
type usageError struct{ error }

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var cerr config.Errors
	var uerr usageError
	switch {
	case errors.Is(err, engine.ErrHost):
		return 2 // the config is valid, this host cannot run it
	case errors.As(err, &cerr), errors.As(err, &uerr):
		return 1
	}
	return 2
}

type globals struct {
	configPath  string
	logFormat   string
	logLevel    string
	cpuProfile  string
	stopProfile func()
	stdout      io.Writer
	stderr      io.Writer
}

func (g *globals) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(g.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.stderr, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text or json", g.logFormat)}
}

func (g *globals) load() (*config.Config, error) {
	if g.configPath == "" {
		return nil, usageError{errors.New("a config file is required: -c FILE")}
	}
	c, err := config.Load(g.configPath)
	if err != nil {
		var cerr config.Errors
		if !errors.As(err, &cerr) {
			return nil, usageError{err}
		}
		return nil, err
	}
	return c, nil
}

// loadOrDefaults loads -c if given, else the defaults (flush, status).
func (g *globals) loadOrDefaults() (*config.Config, error) {
	if g.configPath != "" {
		return g.load()
	}
	return config.DefaultsWithEnv()
}

func run(args []string, stdout, stderr io.Writer) error {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "nfclone",
		Short:         "Mirror the packets that matter to a host (nftables dup, NFQUEUE, NFLOG)",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version, // nfclone -v, --version
	}
	root.SetVersionTemplate("nfclone {{.Version}}\n")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.cpuProfile, "cpuprofile", "", "write a Go CPU profile to this file (for `make bench` investigations)")
	_ = root.PersistentFlags().MarkHidden("cpuprofile")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if g.cpuProfile == "" {
			return nil
		}
		f, err := os.Create(g.cpuProfile)
		if err != nil {
			return usageError{fmt.Errorf("--cpuprofile: %w", err)}
		}
		g.stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
		return pprof.StartCPUProfile(f)
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	configFlag := func(cmd *cobra.Command) {
		cmd.Flags().StringVarP(&g.configPath, "config", "c", "", "config file (YAML)")
	}

	runCmd := &cobra.Command{
		Use:   "run -c FILE",
		Short: "Apply the config and copy packets; SIGHUP reloads, SIGTERM/SIGINT clean up and exit",
		Example: `  nfclone run -c /etc/nfclone/nfclone.yaml
  NFCLONE_STATE_DIR=/tmp/nfc nfclone run -c mirror.yaml --log-format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			c, err := g.load()
			if err != nil {
				return err
			}
			e := &engine.Engine{Cfg: c, Log: log, Version: version, ConfigPath: g.configPath,
				Load: func() (*config.Config, error) { return config.Load(g.configPath) }}
			return runDaemon(cmd.Context(), e, log, c.Watch)
		},
	}
	configFlag(runCmd)

	renderCmd := &cobra.Command{
		Use:   "render -c FILE",
		Short: "Print the nft ruleset and the routing plan; touches nothing",
		Example: `  nfclone render -c mirror.yaml
  nfclone render -c mirror.yaml | nft -c -f -   # let nft check it`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.load()
			if err != nil {
				return err
			}
			return render(g.stdout, c)
		},
	}
	configFlag(renderCmd)

	checkCmd := &cobra.Command{
		Use:   "check -c FILE",
		Short: "Validate the config against this host and its kernel",
		Example: `  nfclone check -c mirror.yaml && echo ok
  ip netns exec eng nfclone check -c mirror.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.load()
			if err != nil {
				return err
			}
			return check(g.stdout, c)
		},
	}
	configFlag(checkCmd)

	var flushStateDir string
	flushCmd := &cobra.Command{
		Use:   "flush [-c FILE]",
		Short: "Remove everything nfclone installed (from its state file)",
		Example: `  nfclone flush
  nfclone flush -c mirror.yaml   # uses its table and state_dir`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			c, err := g.loadOrDefaults()
			if err != nil {
				return err
			}
			if flushStateDir != "" {
				c.StateDir = flushStateDir
			}
			rk, err := route.Open()
			if err != nil {
				return fmt.Errorf("%w: opening rtnetlink: %v", engine.ErrHost, err)
			}
			defer rk.Close()
			if err := engine.Reconcile(c, rk, log); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, "nfclone: nothing of nfclone is left")
			return nil
		},
	}
	configFlag(flushCmd)
	flushCmd.Flags().StringVar(&flushStateDir, "state-dir", "", "state directory (overrides the config's state_dir)")

	var tapOpts config.TapOptions
	var tapPrint, tapDry bool
	tapCmd := &cobra.Command{
		Use:   "tap 'SRC[,SRC]>DST[,DST]' ...",
		Short: "A software TAP in one line: copy whole frames from sources to targets (kernel dup)",
		Long: `Each argument maps sources to targets: 'e0,e2>agg0' aggregates e0 and e2 into agg0,
'e0>e2,e3' replicates e0 to e2 and e3. A target written '+agg0', or every target with
--create, is an interface nfclone creates (a veth pair: copies are read on agg0) and
removes on exit. Runs in the foreground like run, with the same cleanup guarantees.`,
		Example: `  nfclone tap 'e0,e2>agg0' --create        # then: tcpdump -i agg0
  nfclone tap 'e0>e3' 'e0,e2>+agg0' --direction ingress
  nfclone tap 'e0,e2>agg0' --create --print-config > tap.yaml && nfclone run -c tap.yaml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, maps []string) error {
			words := func(errs config.Errors) config.Errors { return config.TapWords(errs, maps) }
			c, err := config.Tap(maps, tapOpts)
			if err != nil {
				return inWords("tap", err, words)
			}
			c.Metrics.Listen = "" // a foreground tap serves no metrics (status works)
			if tapPrint {
				fmt.Fprint(g.stdout, config.TapYAML(c, maps))
				return nil
			}
			if tapDry {
				// What run would refuse on this host (interfaces a killed
				// tap left are removed by run before it starts).
				if err := hostCheck(c, leftLinks(c.StateDir)); err != nil {
					return inWords("tap", err, words)
				}
				return render(g.stdout, c)
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			return inWords("tap", runDaemon(cmd.Context(), &engine.Engine{Cfg: c, Log: log, Version: version}, log, false), words)
		},
	}
	tapCmd.Flags().BoolVar(&tapOpts.Create, "create", false, "create every target interface (refused if one exists)")
	tapCmd.Flags().StringVar(&tapOpts.Direction, "direction", "both", "ingress, egress or both")
	tapCmd.Flags().StringVar(&tapOpts.StateDir, "state-dir", "", "state directory (default "+config.DefaultStateDir+")")
	tapCmd.Flags().BoolVar(&tapPrint, "print-config", false, "print the equivalent config file and exit")
	tapCmd.Flags().BoolVar(&tapDry, "dry-run", false, "print the nft ruleset and routing plan (like render) and exit")

	var capOpts config.CaptureOptions
	var capCount uint64
	var capDuration time.Duration
	captureCmd := &cobra.Command{
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
			c, words, err := captureConfig(&capOpts, args)
			if err != nil {
				return err
			}
			captureNotes(g.stderr, c, capOpts)
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
			return inWords("capture", capture(cmd.Context(), g.stderr, c, log, capCount, capDuration), words)
		},
	}
	cf := captureCmd.Flags()
	cf.StringArrayVarP(&capOpts.Interfaces, "interface", "i", nil, "interface to capture on (repeatable, or comma-separated)")
	cf.StringVar(&capOpts.Direction, "direction", "both", "ingress, egress or both")
	cf.BoolVar(&capOpts.HostOnly, "host-only", false, "only packets to or from this host (not forwarded ones)")
	cf.StringVar(&capOpts.Proto, "proto", "", "tcp, udp, icmp, icmpv6 or a protocol number")
	cf.StringVar(&capOpts.Src, "src", "", "source address or CIDR")
	cf.StringVar(&capOpts.Dst, "dst", "", "destination address or CIDR")
	cf.StringVar(&capOpts.SPort, "sport", "", "source ports (80, 80,443, 1024-65535)")
	cf.StringVar(&capOpts.DPort, "dport", "", "destination ports")
	cf.IntVarP(&capOpts.Snaplen, "snaplen", "s", 0, "bytes kept of each packet (0: whole packet)")
	cf.Uint64VarP(&capCount, "count", "c", 0, "stop after this many packets (0: until --duration or Ctrl-C)")
	cf.Var(secondsFlag{&capDuration}, "duration", "stop after this long: seconds (5, 0.5) or a duration (30s, 2m)")
	cf.StringVar(&capOpts.Method, "method", "log", "log (NFLOG) or queue (NFQUEUE of the kernel's clones); neither holds a packet")
	cf.StringVarP(&capOpts.Output, "write", "w", "", "pcap file to write, or - for standard output")
	cf.StringVar(&capOpts.Format, "format", "pcap", "pcap or pcapng")
	cf.IntVar(&capOpts.FirstPackets, "first-packets", 0, "only the first N packets of each connection in each direction (0: all)")
	cf.StringVar(&capOpts.Cgroup, "cgroup", "", "only this host's sockets in this cgroup v2 (a path below the cgroup2 mount; implies --host-only)")
	cf.StringVar(&capOpts.User, "user", "", "only this host's sockets owned by this user (name or uid; implies --host-only)")

	var colCfg collect.Config
	var colAllow []string
	var colVNIs, colSessions []uint
	collectCmd := &cobra.Command{
		Use:   "collect --listen ADDR [--kind K] [--vni N | --session N] [--allow CIDR] (-w FILE | --tap NAME)",
		Short: "Receive VXLAN/GENEVE/ERSPAN copies, decapsulate, write the inner frames to pcap or a TAP device",
		Long: `A collector for nfclone's vxlan, geneve and erspan targets (and any RFC 7348 / RFC 8926
sender; ERSPAN type I, II and III over GRE with --kind erspan, read from a raw GRE socket:
--listen is then an address without a port, --session keeps session ids).
GENEVE carrying IPv4/IPv6 (a Gateway Load Balancer) or VXLAN (GWLB carrying Traffic
Mirroring) is decoded down to the innermost frame; --vni matches the inner VXLAN VNI.
Without --allow it refuses to start unless it listens on loopback (or --allow any is given):
a collector reachable by anyone lets anyone inject frames. Malformed datagrams, senders
outside --allow and VNIs outside --vni are counted and dropped.`,
		Example: `  nfclone collect --listen 10.77.4.2:4789 --allow 10.77.0.0/16 -w mirror.pcap
  nfclone collect --listen :6081 --allow 10.0.0.0/8 --vni 124 --tap mirror0   # then: tcpdump -i mirror0
  nfclone collect --listen 127.0.0.1:4789 -w - | tshark -r -
  nfclone collect --kind erspan --listen 10.77.4.2 --allow 10.77.0.0/16 --session 7 -w erspan.pcap`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if colCfg.Listen == "" {
				return usageError{errors.New(`required flag(s) "listen" not set`)}
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			prefixes, any, err := collect.ParseAllow(colAllow)
			if err != nil {
				return usageError{err}
			}
			colCfg.Allow, colCfg.AllowAny, colCfg.Logger = prefixes, any, log
			for _, v := range colVNIs {
				if v > config.MaxVNI {
					return usageError{fmt.Errorf("--vni %d is out of range 0-%d", v, config.MaxVNI)}
				}
				colCfg.VNIs = append(colCfg.VNIs, uint32(v))
			}
			for _, v := range colSessions {
				if v > 1023 {
					return usageError{fmt.Errorf("--session %d is out of range 0-1023", v)}
				}
				colCfg.Sessions = append(colCfg.Sessions, uint32(v))
			}
			if err := collect.Validate(colCfg); err != nil {
				return usageError{err}
			}
			c, err := collect.New(colCfg)
			if err != nil {
				return fmt.Errorf("%w: %v", engine.ErrHost, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			log.Info("collecting", "listen", c.Addr().String(), "pcap", colCfg.PcapPath, "tap", c.TapName())
			pctx, pstop := context.WithCancel(ctx)
			var pwg sync.WaitGroup
			pwg.Add(1)
			go func() { defer pwg.Done(); collectProgress(pctx, g.stderr, c, collectProgressEvery) }()
			runErr := c.Run(ctx)
			pstop()
			pwg.Wait()
			closeErr := c.Close()
			st := c.Stats()
			fmt.Fprintf(g.stderr, "nfclone collect: received %d, decapsulated %d, written %d, malformed %d, other VNI %d, denied senders %d, write errors %d, duplicates %d\n",
				st.Received, st.Decapsulated, st.Written, st.Malformed, st.FilteredVNI, st.DeniedSender, st.WriteErrors, st.Duplicates)
			return errors.Join(runErr, closeErr)
		},
	}
	colf := collectCmd.Flags()
	colf.StringVar(&colCfg.Listen, "listen", "", "UDP address to listen on (host:port)")
	colf.StringVar(&colCfg.Kind, "kind", "auto", "auto, vxlan, geneve (UDP) or erspan (GRE, raw socket)")
	colf.UintSliceVar(&colVNIs, "vni", nil, "keep only this VNI (repeatable)")
	colf.UintSliceVar(&colSessions, "session", nil, "keep only this ERSPAN session id (repeatable; --kind erspan)")
	colf.DurationVar(&colCfg.Dedup, "dedup", 0, "write a packet seen again within this window once (e.g. 50ms; TTL, IP checksum, VLAN tags and Ethernet addresses aside)")
	colf.StringArrayVar(&colAllow, "allow", nil, "accept datagrams only from this CIDR (repeatable; \"any\" for all)")
	colf.StringVarP(&colCfg.PcapPath, "write", "w", "", "pcap file for the inner frames, or - for standard output")
	colf.StringVar(&colCfg.PcapFormat, "format", "pcap", "pcap or pcapng")
	colf.StringVar(&colCfg.TapName, "tap", "", "create this TAP device and write the inner frames to it")

	var statusJSON bool
	var statusStateDir string
	statusCmd := &cobra.Command{
		Use:   "status [-c FILE] [--json]",
		Short: "Live per-session counters of the running daemon (through its unix socket in state_dir)",
		Long: `Reads the running daemon through state_dir/nfclone.sock: the state directory is
--state-dir, else NFCLONE_STATE_DIR, else the config file's state_dir (read leniently:
a file that no longer validates, after a refused reload, still gives it), else the
default. The daemon needs nothing else: status shows the last reload and its error.`,
		Example: `  nfclone status
  nfclone status -c /etc/nfclone/nfclone.yaml --json | jq '.sessions[].copied'
  nfclone status --state-dir /run/nfclone-lab`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := fetchStatus(cmd.Context(), g, statusStateDir)
			if err != nil {
				return err
			}
			if statusJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return statusapi.WriteTable(g.stdout, st)
		},
	}
	configFlag(statusCmd)
	statusCmd.Flags().BoolVar(&statusJSON, "json", false, "print JSON for scripts")
	statusCmd.Flags().StringVar(&statusStateDir, "state-dir", "", "state directory (overrides the config's state_dir)")

	versionCmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintln(g.stdout, "nfclone", version)
		},
	}
	root.AddCommand(runCmd, renderCmd, checkCmd, flushCmd, statusCmd, tapCmd, captureCmd, collectCmd, versionCmd)
	root.AddCommand(shipCommands(g)...)
	// An unknown command is bad input, and so are the arguments a command's
	// validator refuses: usage errors (exit 1), never recognised by their text.
	root.Args = cobra.NoArgs
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	usageArgs(root)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(context.Background())
	if g.stopProfile != nil {
		g.stopProfile()
	}
	if err != nil {
		withLines(err, g.configPath)
		report(stderr, g.logFormat, err)
	}
	return err
}

// runDaemon runs the engine in the foreground: SIGTERM/SIGINT stop it
// cleanly (exit 0); a second one exits at once (the kernel drops the owned
// tables with the process; `nfclone flush` or the next start undoes the
// rest); SIGHUP — and a change of the config file with watch — reloads.
func runDaemon(parent context.Context, e *engine.Engine, log *slog.Logger, watch bool) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	if err := engine.SetNice(e.Cfg.Queue.Nice); err != nil {
		return err
	}
	engine.SetMemoryLimit()
	if listen := e.Cfg.Metrics.Listen; listen != "" {
		mc := metrics.New(e.Status)
		e.Services = append(e.Services, func(ctx context.Context) error { return metrics.Serve(ctx, listen, mc, log) })
	}
	stateDir := e.Cfg.StateDir
	e.Services = append(e.Services, func(ctx context.Context) error { return statusapi.Serve(ctx, stateDir, e.Status, log) })
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var wg sync.WaitGroup
	defer wg.Wait()
	done := make(chan struct{})
	defer close(done)
	wg.Add(1)
	go func() {
		defer wg.Done()
		stopping := false
		for {
			select {
			case <-done:
				return
			case sig := <-sigs:
				switch {
				case sig == syscall.SIGHUP:
					log.Info("SIGHUP: reloading")
					e.Reload()
				case !stopping:
					stopping = true
					log.Info("signal: stopping", "signal", sig.String())
					cancel()
				default:
					log.Warn("second signal: exiting now; the kernel removes the tables, `nfclone flush` undoes the rest")
					os.Exit(130)
				}
			}
		}
	}()
	if watch && e.ConfigPath != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			watchFile(ctx, e.ConfigPath, log, e.Reload)
		}()
	}
	err := e.Run(ctx, nil)
	cancel() // the watcher ends with ctx; the deferred wg.Wait waits for it
	return err
}

// watchFile calls changed when the file is written or replaced (editors
// rename a new file over the old one: the directory is watched).
func watchFile(ctx context.Context, path string, log *slog.Logger, changed func()) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		log.Error("watch: cannot watch the config file", "err", err)
		return
	}
	defer w.Close()
	abs, _ := filepath.Abs(path)
	if err := w.Add(filepath.Dir(abs)); err != nil {
		log.Error("watch: cannot watch the config file", "err", err)
		return
	}
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if filepath.Clean(ev.Name) == abs && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
				timer = time.After(200 * time.Millisecond) // editors write in several steps
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			log.Warn("watch", "err", err)
		case <-timer:
			timer = nil
			log.Info("config file changed: reloading", "path", abs)
			changed()
		}
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

func render(w io.Writer, c *config.Config) error {
	rs, err := rules.Compile(c, rules.Options{})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "# nfclone %s: nftables ruleset (nft -f syntax)\n", version)
	fmt.Fprint(w, rs.Render())
	plan := engine.RoutePlan(c)
	if !plan.Empty() {
		fmt.Fprintln(w, "# routing plan (applied through rtnetlink, undone on exit):")
		for _, l := range strings.Split(strings.TrimRight(plan.Render(), "\n"), "\n") {
			fmt.Fprintf(w, "#   %s\n", l)
		}
	}
	return nil
}

// markCheck reads the host's ruleset and warns about every rule that reads
// or changes bits of the packet mark in nfclone's field (mark_mask): those
// packets are not copied (queue sessions copy only packets whose field is
// clear) or the other user sees nfclone's marks on copies.
func markCheck(w io.Writer, c *config.Config) {
	uses, err := rules.HostMarkUses()
	if err != nil {
		fmt.Fprintf(w, "warning: cannot read the host's ruleset for other users of the packet mark: %v\n", err)
		return
	}
	over, others := rules.MarkOverlaps(uses, c.MarkMask, c.Table), 0
	for _, u := range uses {
		if u.Table != c.Table {
			others++
		}
	}
	fmt.Fprintf(w, "packet mark: nfclone uses mark_mask 0x%08x (copies 0x%08x); %d uses of the mark by other rules, %d overlapping\n", c.MarkMask, c.Mark, others, len(over))
	for _, u := range over {
		fmt.Fprintf(w, "warning: mark overlaps mark_mask 0x%08x: %s\n", c.MarkMask, u)
	}
}

// usageArgs makes every command's argument validator return usage errors
// (flags are covered by the root's flag error function).
func usageArgs(c *cobra.Command) {
	for _, sub := range c.Commands() {
		usageArgs(sub)
	}
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
}
