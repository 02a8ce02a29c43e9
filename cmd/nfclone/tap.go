package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/engine"
)

// tapCommand is `nfclone tap`: a software TAP from its arguments, run in the
// foreground like run.
func tapCommand(g *globals) *cobra.Command {
	var opts config.TapOptions
	var printConfig, dryRun bool
	cmd := &cobra.Command{
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
			c, err := config.Tap(maps, opts)
			if err != nil {
				return inWords("tap", err, words)
			}
			c.Metrics.Listen = "" // a foreground tap serves no metrics (status works)
			if printConfig {
				fmt.Fprint(g.stdout, config.TapYAML(c, maps))
				return nil
			}
			if dryRun {
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
	f := cmd.Flags()
	f.BoolVar(&opts.Create, "create", false, "create every target interface (refused if one exists)")
	f.StringVar(&opts.Direction, "direction", "both", "ingress, egress or both")
	f.StringVar(&opts.StateDir, "state-dir", "", "state directory (default "+config.DefaultStateDir+")")
	f.BoolVar(&printConfig, "print-config", false, "print the equivalent config file and exit")
	f.BoolVar(&dryRun, "dry-run", false, "print the nft ruleset and routing plan (like render) and exit")
	return cmd
}
